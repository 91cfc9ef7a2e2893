#!/bin/sh
# A --ready-probe for gunicorn under hotsup: ready once every worker of the
# new arbiter ($HOTSUP_PID) has loaded the app, not only the first one.
# gunicorn.conf.py leaves a file <arbiter pid>.<worker pid> in
# $GUNICORN_READY_DIR for each worker that serves (and removes it when the
# worker exits); $GUNICORN_WORKERS is the worker count, 2 by default, as in
# gunicorn.conf.py.
#
#   GUNICORN_READY_DIR=/run/app-ready hotsup run --fds systemd \
#       -l http=127.0.0.1:8080 --chdir examples/recipes/gunicorn \
#       --ready-probe ./all-workers-ready.sh \
#       -- python3 -m gunicorn -c gunicorn.conf.py app:app
want=${GUNICORN_WORKERS:-2}
n=0
for f in "${GUNICORN_READY_DIR:?}/$HOTSUP_PID".*; do
    [ -e "$f" ] && n=$((n + 1))
done
[ "$n" -ge "$want" ] && exit 0
echo "$n of $want workers ready"
exit 1

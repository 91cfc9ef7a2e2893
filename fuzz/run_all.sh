#!/bin/sh
# Runs every target for $1 seconds (default 60), one after the other, on one
# core. Logs go to fuzz/logs/<target>.log.
set -u
cd "$(dirname "$0")"
secs=${1:-60}
mkdir -p logs
for t in ${TARGETS:-protocol_to_child protocol_from_child notify_datagram control_request listen_spec child_handoff}; do
    mkdir -p "corpus/$t"
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -jobs=1 -workers=1 >"logs/$t.cargo.log" 2>&1
    echo "$t: exit $?"
    mv fuzz-0.log "logs/$t.log"
    grep -E '^#[0-9]+' "logs/$t.log" | tail -1
    grep -E 'stat::number_of_executed_units|SUMMARY|panicked' "logs/$t.log"
done

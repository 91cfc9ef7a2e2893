// A Go net/http server run unmodified under hotsup, with the standard
// library only:
//
//	go build -o server ./examples/recipes/go
//	hotsup run --fds systemd -l http=127.0.0.1:8080 -- ./server
//
// It takes the listening socket hotsup passes as fd 3 (LISTEN_FDS), or
// binds PORT (default 8080) when run alone, and reports READY=1 on
// NOTIFY_SOCKET once it serves. Responses are "pid=<pid> generation=<g>";
// ?sleep_ms=N delays one.
//
// Drain (SIGTERM from hotsup, once the next generation is ready):
//
//   - http.Server.Shutdown, like SetKeepAlivesEnabled(false), closes every
//     idle keep-alive connection at once. A client may be sending its next
//     request on one at that very moment: it gets a reset or an EOF instead
//     of a response.
//   - The recipe: stop accepting (close the listener), answer every further
//     request with "Connection: close" (net/http then closes the
//     connection after the response), and wait until every connection
//     has been idle for idleClose before Shutdown closes what is left. A
//     client that keeps using its connection gets its answer and a clean
//     close; one that left it idle that long is not about to send.
//
// -plain-shutdown drains with Shutdown alone, to measure the difference.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	idleClose  = time.Second
	maxSleep   = 10 * time.Second
	drainLimit = 30 * time.Second
)

func main() {
	plain := flag.Bool("plain-shutdown", false, "drain with http.Server.Shutdown alone")
	flag.Parse()

	ln, err := listener()
	if err != nil {
		log.Fatal(err)
	}
	generation := os.Getenv("HOTSUP_GENERATION")
	var draining atomic.Bool
	conns := newTracker()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ms, err := strconv.Atoi(r.URL.Query().Get("sleep_ms")); err == nil && ms > 0 {
				d := time.Duration(ms) * time.Millisecond
				if d > maxSleep {
					d = maxSleep
				}
				time.Sleep(d)
			}
			if draining.Load() {
				w.Header().Set("Connection", "close")
			}
			fmt.Fprintf(w, "pid=%d generation=%s\n", os.Getpid(), generation)
		}),
		ConnState: conns.update,
	}
	go func() {
		// Returns once the listener is closed; connections carry on.
		_ = srv.Serve(ln)
	}()
	if err := notify("READY=1"); err != nil {
		log.Printf("cannot notify readiness: %v", err)
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	ctx, cancel := context.WithTimeout(context.Background(), drainLimit)
	defer cancel()
	if !*plain {
		draining.Store(true)
		_ = ln.Close()
		conns.waitIdle(ctx, idleClose)
	}
	if err := srv.Shutdown(ctx); err != nil {
		log.Printf("shutdown: %v", err)
	}
}

// listener is fd 3 under systemd socket activation (as hotsup --fds
// systemd provides it), or PORT otherwise.
func listener() (net.Listener, error) {
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()) {
		if n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS")); n >= 1 {
			for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				os.Unsetenv(k)
			}
			f := os.NewFile(3, "listener")
			defer f.Close()
			// A copy of the fd, in Go's own poller.
			return net.FileListener(f)
		}
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	return net.Listen("tcp", "127.0.0.1:"+port)
}

// notify sends a message to NOTIFY_SOCKET, as sd_notify(3) does.
func notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

// tracker knows, for every open connection, since when it has been idle
// (zero while a request is in progress).
type tracker struct {
	mu        sync.Mutex
	idleSince map[net.Conn]time.Time
}

func newTracker() *tracker {
	return &tracker{idleSince: map[net.Conn]time.Time{}}
}

func (t *tracker) update(c net.Conn, s http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch s {
	case http.StateNew, http.StateIdle:
		t.idleSince[c] = time.Now()
	case http.StateActive:
		t.idleSince[c] = time.Time{}
	case http.StateHijacked, http.StateClosed:
		delete(t.idleSince, c)
	}
}

// waitIdle returns once every connection has been idle for at least d (or
// is gone), or when ctx ends.
func (t *tracker) waitIdle(ctx context.Context, d time.Duration) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if t.allIdleFor(d) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (t *tracker) allIdleFor(d time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, since := range t.idleSince {
		if since.IsZero() || time.Since(since) < d {
			return false
		}
	}
	return true
}

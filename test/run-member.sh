#!/bin/sh
# make run: start a one-member cluster with cairnd's embedded defaults in a
# temporary data directory, open the shell against it, and stop the member
# (removing the directory) when the shell exits.
set -eu
BUILD=${1:-build}
DATA=$(mktemp -d "${TMPDIR:-/tmp}/cairn-run.XXXXXX")
LOG="$DATA/cairnd.log"
"$BUILD/cairnd" --data-dir "$DATA/data" --log-target stderr 2>"$LOG" &
PID=$!
cleanup() {
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT INT TERM

# Ready when the member answers on its client port (the shell or cairn-load would fail before).
i=0
until grep -q "serving clients" "$LOG" 2>/dev/null; do
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "cairnd exited; its log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    i=$((i + 1))
    if [ "$i" -gt 300 ]; then
        echo "cairnd did not start within 30 s; its log is $LOG" >&2
        exit 1
    fi
    sleep 0.1
done
echo "cairnd is running: clients on tcp://127.0.0.1:2479, data in $DATA/data, log in $LOG"
if [ -x "$BUILD/cairn" ]; then
    "$BUILD/cairn" --endpoints tcp://127.0.0.1:2479 || true
else
    echo "The shell (cairn) is not built yet.  Meanwhile, try:"
    echo "  $BUILD/cairn-load put hello world --endpoints tcp://127.0.0.1:2479"
    echo "  $BUILD/cairn-load get hello --endpoints tcp://127.0.0.1:2479"
    echo "Press Ctrl-C to stop the member."
    wait "$PID" || true
fi

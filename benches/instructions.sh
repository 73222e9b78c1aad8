#!/bin/sh
# User-space instructions per echoed message of each echo server, counted by valgrind's
# callgrind: a figure without the noise of CPU time (it does not depend on caches, the
# scheduler or the machine's other load), for comparing builds and runtimes exactly.
#
#   cargo build --profile bench -p benches --bins
#   benches/instructions.sh [N] [SIZE]          # N messages (10000) of SIZE bytes (1024)
#
# Each server runs under callgrind on 127.0.0.1; `pingpong` (benches/pingpong.rs) first
# sends 1000 messages to warm it up, then counters are reset (`callgrind_control --dump`),
# then N messages on one connection, and the instructions counted over those N, divided
# by N, are the figure. It counts only instructions the server executes in user space (its
# own code, the runtime, libc); the kernel's work per message (system calls, io_uring,
# TCP) is not in it: `cargo bench -p benches --bench echo` measures that with everything.
# BASELINE_DIR=<dir> adds the runtime's servers built in <dir> (as for the echo bench).
set -eu
N=${1:-10000}
SIZE=${2:-1024}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN_DIR:-$ROOT/target/release}
command -v valgrind > /dev/null || { echo "instructions.sh needs valgrind (apt-get install valgrind)" >&2; exit 2; }
[ -x "$BIN/pingpong" ] || { echo "no $BIN/pingpong: run cargo build --profile bench -p benches --bins" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PORT=$((30000 + $$ % 20000))

# count NAME EXE MODE [BACKEND]: prints one table row (MODE tcp or udp; BACKEND as
# RUNTIME_BACKEND, for the runtime's servers on epoll).
count() {
    name=$1 exe=$2 mode=$3 backend=${4:-}
    PORT=$((PORT + 1))
    out="$WORK/$name.$mode"
    env ${backend:+RUNTIME_BACKEND=$backend} valgrind --tool=callgrind --callgrind-out-file="$out" "$exe" "127.0.0.1:$PORT" \
        > "$WORK/log" 2>&1 &
    vg=$!
    udp=""
    [ "$mode" = udp ] && udp=udp
    if ! "$BIN/pingpong" "127.0.0.1:$PORT" 1000 "$SIZE" $udp \
        || ! callgrind_control --dump "$vg" > /dev/null 2>&1 \
        || ! "$BIN/pingpong" "127.0.0.1:$PORT" "$N" "$SIZE" $udp \
        || ! callgrind_control --dump "$vg" > /dev/null 2>&1; then
        kill -9 "$vg" 2> /dev/null || true
        echo "| $mode | $name | failed (see the output above) |"
        return
    fi
    kill -9 "$vg" 2> /dev/null || true
    wait "$vg" 2> /dev/null || true
    # The last dump holds the counts since the one before: the N measured messages.
    last=$(ls "$out".* | awk -F. '{ print $NF, $0 }' | sort -n | tail -1 | cut -d' ' -f2-)
    total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$last")
    echo "| $mode | $name | $((total / N)) |"
}

echo "| workload | server | user-space instructions per message |"
echo "|---|---|---:|"
for mode in tcp udp; do
    prefix=""
    [ "$mode" = udp ] && prefix=udp_
    count "runtime" "$BIN/${prefix}echo_runtime" "$mode"
    count "runtime-epoll" "$BIN/${prefix}echo_runtime" "$mode" epoll
    count "runtime-ring" "$BIN/${prefix}echo_ring" "$mode"
    count "tokio" "$BIN/${prefix}echo_tokio" "$mode"
    count "monoio" "$BIN/${prefix}echo_monoio" "$mode"
    if [ -n "${BASELINE_DIR:-}" ]; then
        count "runtime-base" "$BASELINE_DIR/${prefix}echo_runtime" "$mode"
        count "runtime-ring-base" "$BASELINE_DIR/${prefix}echo_ring" "$mode"
    fi
done

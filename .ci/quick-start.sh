#!/usr/bin/env bash
# The README's quick start as a new user runs it: the release binary with no arguments,
# from the repository root, serves config/portcullis.yaml on 127.0.0.1:8080 (admin on
# 9090). One allowed and one denied request, then SIGTERM, which must end it with 0.
# Run from the repository root:
#   bash .ci/quick-start.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --quiet
log=$(mktemp)
target/release/portcullis >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT

ready=""
for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    # Its own listeners, not something else on the same fixed ports.
    if grep -q 'admin listening addr=127.0.0.1:9090' "$log" &&
        curl -sf --max-time 2 http://127.0.0.1:9090/readyz >/dev/null; then
        ready=yes
        break
    fi
    sleep 0.1
done
[ -n "$ready" ] || { echo "portcullis with no arguments did not serve:"; cat "$log"; exit 1; }

expect() { # status, reason header or "", curl arguments...
    local want=$1 reason=$2 got headers
    shift 2
    headers=$(curl -s --max-time 10 -o /dev/null -D - "$@" || true)
    got=$(printf '%s\n' "$headers" | head -1 | cut -d' ' -f2)
    [ "$got" = "$want" ] || { echo "curl $*: answered $got, expected $want"; exit 1; }
    if [ -n "$reason" ]; then
        printf '%s\n' "$headers" | grep -qi "^x-portcullis-reason: $reason" ||
            { echo "curl $*: expected reason $reason:"; echo "$headers"; exit 1; }
    fi
}
expect 200 "" http://127.0.0.1:8080/public/hello
expect 403 ip_not_allowed http://127.0.0.1:8080/admin/users

kill -TERM "$pid"
wait "$pid" || { echo "portcullis did not exit 0 on SIGTERM:"; cat "$log"; exit 1; }
if grep -q $'\e\[' "$log"; then echo "colour codes in a log written to a file:"; cat -v "$log"; exit 1; fi
echo "quick start: portcullis with no arguments serves the demo"

#!/usr/bin/env bash
# The container image. With a working docker or podman, the real image is built and run
# read-only, and must turn healthy and answer. Without one (CI has no engine), the
# Dockerfile is played by .ci/play-dockerfile.py: its build stage builds from exactly the
# files its COPY lines name (what .dockerignore lets through), and the runtime stage's
# files become a directory standing for the image's root. Then the image's own command
# serves from there, its HEALTHCHECK command must pass, an allowed and a denied request
# are answered, nothing in the root is written, and the image's config with its policy
# files passes `portcullis validate` and `portcullis test`. Run from the repository root:
#   bash .ci/image-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    if [ -n "${container:-}" ]; then "$engine" rm -f "$container" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

expect() { # status, curl arguments...
    local want=$1 got
    shift
    got=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$@" || true)
    [ "$got" = "$want" ] || { echo "curl $*: answered $got, expected $want"; exit 1; }
}

engine=""
for candidate in docker podman; do
    if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then
        engine=$candidate
        break
    fi
done
if [ -n "$engine" ]; then
    echo "-- $engine works here: building and running the real image"
    format=()
    [ "$engine" = podman ] && format=(--format docker) # podman keeps HEALTHCHECK only so
    "$engine" build "${format[@]}" -t portcullis:ci .
    container=$("$engine" run -d --read-only --cap-drop ALL --security-opt no-new-privileges \
        -p 127.0.0.1::8080 -p 127.0.0.1::9090 portcullis:ci)
    addr=$("$engine" port "$container" 8080/tcp | head -1)
    health=""
    for _ in $(seq 120); do
        health=$("$engine" inspect -f '{{.State.Health.Status}}' "$container")
        [ "$health" = healthy ] && break
        sleep 0.5
    done
    [ "$health" = healthy ] || { echo "the container is $health"; "$engine" logs "$container"; exit 1; }
    expect 200 "http://$addr/public/hello"
    expect 403 "http://$addr/admin/users"
fi

echo "-- playing the Dockerfile without a container engine"
python3 .ci/play-dockerfile.py "$work/play"
# One line per word of a list field (none for an empty list), or the field's value.
field() {
    python3 -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print(*(v if isinstance(v, list) else [v]), sep="\n")' \
        "$work/play/image.json" "$1"
}
root=$(field root)
mapfile -t command < <(field command)
mapfile -t healthcheck < <(field healthcheck)
[ "${#command[@]}" -gt 0 ] || { echo "the image has no ENTRYPOINT or CMD"; exit 1; }
[ "${#healthcheck[@]}" -gt 0 ] || { echo "the image has no HEALTHCHECK"; exit 1; }

# The image runs as a non-root user: everything it holds must be readable by others, and
# what it runs executable by them.
unreadable=$(find "$root" -type f ! -perm -o=r; find "$root" -type d ! -perm -o=rx)
[ -z "$unreadable" ] || { echo "a non-root user cannot read: $unreadable"; exit 1; }
[ -x "${command[0]}" ] && [ "$(stat -c %A "${command[0]}" | cut -c10)" = x ] ||
    { echo "${command[0]} is not executable by others"; exit 1; }

config=""
for i in "${!command[@]}"; do
    [ "${command[$i]}" = -c ] && config=${command[$((i + 1))]}
done
[ -f "$config" ] || { echo "the image's command names no config file it holds: ${command[*]}"; exit 1; }
"${command[0]}" validate -c "$config"
"${command[0]}" test -c "$config" config/tests/*.yaml

# A read-only root filesystem: the gateway must write nothing under the image's root.
snapshot() { find "$root" -printf '%p %s %T@\n' | sort; }
snapshot >"$work/before"
(cd "$root" && exec "${command[@]}") >"$work/image.log" 2>&1 &
pid=$!
ready=""
for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    # The image's own listeners, not something else on the same fixed ports.
    if grep -q '"message":"admin listening"' "$work/image.log" && "${healthcheck[@]}" >/dev/null 2>&1; then
        ready=yes
        break
    fi
    sleep 0.2
done
[ -n "$ready" ] || { echo "the image's HEALTHCHECK never passed:"; cat "$work/image.log"; exit 1; }
expect 200 "http://127.0.0.1:8080/public/hello"
expect 403 "http://127.0.0.1:8080/admin/users"
kill "$pid"
wait "$pid" || { echo "the gateway did not exit cleanly:"; cat "$work/image.log"; exit 1; }
pid=""
snapshot >"$work/after"
diff "$work/before" "$work/after" || { echo "the gateway wrote under the image's root"; exit 1; }
grep -q '"message":"listening"' "$work/image.log" || { echo "no JSON log:"; cat "$work/image.log"; exit 1; }
echo "image: built from the files the Dockerfile names; serves, turns healthy, writes nothing"

# Sourced by the CI checks that run a gateway: makes a scratch directory "$work" and an
# EXIT trap that stops the gateway and removes it.
# start_gateway BINARY CONFIG runs BINARY with CONFIG, logging JSON to "$work/log", waits
# until it listens, and sets pid, addr (the client listener) and admin.
# start_demo_gateway does so with the shipped demo config, on free loopback ports, from a
# copy in "$work".
pid=""
work=$(mktemp -d)
trap 'stop_gateway; rm -rf "$work"' EXIT

# Stops the gateway, if one was started; never fails, so the EXIT trap goes on.
stop_gateway() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

start_gateway() { # binary, config
    "$1" --log-format json run -c "$2" >"$work/log" 2>&1 &
    pid=$!
    addr="" admin=""
    for _ in $(seq 100); do
        addr=$(grep -m1 '"message":"listening"' "$work/log" | sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' || true)
        admin=$(grep -m1 '"message":"admin listening"' "$work/log" | sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' || true)
        [ -n "$addr" ] && [ -n "$admin" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] && [ -n "$admin" ] || { echo "the gateway did not start:"; cat "$work/log"; exit 1; }
}

start_demo_gateway() {
    cargo build --quiet --locked
    cp -r config/policies "$work/policies"
    cp -r config/keys "$work/keys"
    sed -e 's/addr: 127.0.0.1:8080/addr: 127.0.0.1:0/' -e 's/addr: 127.0.0.1:9090/addr: 127.0.0.1:0/' \
        config/portcullis.yaml >"$work/gw.yaml"
    start_gateway target/debug/portcullis "$work/gw.yaml"
}

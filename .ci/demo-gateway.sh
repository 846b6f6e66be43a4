# Sourced by the CI checks that need the demo running: makes a scratch directory "$work"
# and an EXIT trap that stops the gateway and removes it; start_demo_gateway starts the
# shipped demo config on free loopback ports from a copy in "$work", logging JSON to
# "$work/log", and sets pid, addr (the client listener) and admin.
pid=""
work=$(mktemp -d)
trap 'stop_demo_gateway; rm -rf "$work"' EXIT

# Stops the gateway, if one was started; never fails, so the EXIT trap goes on.
stop_demo_gateway() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

start_demo_gateway() {
    cargo build --quiet --locked
    cp -r config/policies "$work/policies"
    cp -r config/keys "$work/keys"
    sed -e 's/addr: 127.0.0.1:8080/addr: 127.0.0.1:0/' -e 's/addr: 127.0.0.1:9090/addr: 127.0.0.1:0/' \
        config/portcullis.yaml >"$work/gw.yaml"
    target/debug/portcullis --log-format json run -c "$work/gw.yaml" >"$work/log" 2>&1 &
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

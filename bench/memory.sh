#!/usr/bin/env bash
# Memory per idle keep-alive connection, and after a burst of them leaves: nginx and
# portcullis in turn, one worker each, in front of the same upstream (an nginx that
# answers every request itself).
#
#   bash bench/memory.sh                      # HTTP1=5000 H2=10000 connections
#
# For each proxy and protocol, bench/idle_clients.py opens the connections, sends one
# request on each, reads the answer and keeps them open and idle; it reports the proxy's
# resident memory before, with them idle (and so per connection), 1 s after the clients
# closed them, and 30 s after. "Each one more" is the growth from half the connections
# to all of them, per connection: what a proxy sets up once is not in it. HTTP/2 is h2c
# with prior knowledge on both proxies. Every proxy is started afresh for each row.
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP1=${HTTP1:-5000}
H2=${H2:-10000}
UPSTREAM_PORT=18581
PROXY_PORT=18582
ADMIN_PORT=18592

. bench/common.sh
need nginx nginx-light
need python3 python3

cargo build --release --quiet --locked
BINARY=$PWD/target/release/portcullis
scratch_and_servers
# Each connection is a socket in the clients' process and one in the proxy's.
ulimit -n "$(ulimit -Hn)"
FILES=$(ulimit -n)
if [ "$FILES" -le "$H2" ] || [ "$FILES" -le "$HTTP1" ]; then
    echo "open files are limited to $FILES: too few for the connections asked for" >&2
    exit 1
fi

nginx_conf() { # name, server block
    mkdir -p "$WORK/$1"
    cat >"$WORK/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
worker_rlimit_nofile $FILES;
events { worker_connections 30000; }
http {
    access_log off;
    client_body_temp_path $WORK/$1/body;
    proxy_temp_path $WORK/$1/proxy;
    fastcgi_temp_path $WORK/$1/fastcgi;
    uwsgi_temp_path $WORK/$1/uwsgi;
    scgi_temp_path $WORK/$1/scgi;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    $2
}
CONF
}
nginx_conf upstream "
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / { default_type text/plain; return 200 'hello from the upstream\n'; }
    }"
nginx_conf proxy "
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
    http2_idle_timeout 300s;
    server {
        listen 127.0.0.1:$PROXY_PORT http2;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
# nginx speaks h2c on a port, or HTTP/1.1, not both: a second config for HTTP/1.1.
sed 's/ http2;/;/' "$WORK/proxy/nginx.conf" >"$WORK/proxy/nginx-http1.conf"
echo 'rules: [{ id: all, effect: allow }]' >"$WORK/allow-all.yaml"
cat >"$WORK/portcullis.yaml" <<CONF
listen: [{ addr: 127.0.0.1:$PROXY_PORT }]
admin: { addr: 127.0.0.1:$ADMIN_PORT }
workers: 1
upstreams: { app: { targets: ["http://127.0.0.1:$UPSTREAM_PORT"] } }
routes: [{ id: all, upstream: app }]
policy: { files: [allow-all.yaml], watch: false }
limits: { idle_timeout: 300s, max_connections: 30000 }
log: { decisions: off, recent: 0 }
CONF

nginx -c "$WORK/upstream/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)

wait_for_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    exit 1
}
wait_for_port $UPSTREAM_PORT

row() { # proxy, protocol, connections
    local pid pids
    case $1 in
    nginx)
        local conf=$WORK/proxy/nginx.conf
        [ "$2" = http1 ] && conf=$WORK/proxy/nginx-http1.conf
        nginx -c "$conf" >/dev/null 2>&1 &
        pid=$!
        ;;
    portcullis)
        "$BINARY" --log-level warn run -c "$WORK/portcullis.yaml" 2>"$WORK/portcullis.err" &
        pid=$!
        ;;
    esac
    wait_for_port $PROXY_PORT
    sleep 0.5
    # nginx's master and worker both count, as portcullis's one process does.
    pids="$pid $(pgrep -P "$pid" || true)"
    # shellcheck disable=SC2086
    result=$(python3 bench/idle_clients.py $PROXY_PORT "$3" "$2" $pids)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    python3 - "$1" "$2" "$result" <<'PY'
import json, sys
proxy, protocol, found = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
mb = lambda kib: f"{kib / 1024:.1f} MB"
print(f"| {proxy} | {'HTTP/1.1' if protocol == 'http1' else 'HTTP/2'} | {found['connections']:,} | "
      f"{mb(found['before_kib'])} | {mb(found['idle_kib'])} | {found['per_connection_bytes'] / 1024:.2f} KB | "
      f"{found['each_more_bytes'] / 1024:.2f} KB | "
      f"{mb(found['closed_1s_kib'])} | {mb(found['closed_30s_kib'])} |")
PY
}

echo
echo "bash bench/memory.sh: one worker each, the same upstream; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| proxy | protocol | idle connections | RSS before | RSS with them idle | per connection | each one more | 1 s after they closed | 30 s after |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
row nginx http1 "$HTTP1"
row portcullis http1 "$HTTP1"
row nginx h2 "$H2"
row portcullis h2 "$H2"

#!/usr/bin/env bash
# User-space instructions per proxied request, for portcullis and for nginx doing the
# same job, counted by valgrind's callgrind. Unlike req/s, the count does not move with
# whatever else the machine is doing, so it shows small changes reliably.
#
#   bash bench/instructions.sh
#
# The deny rows send /admin/bench, which the demo policy denies, against nginx answering
# `return 403` with a small JSON body itself.
#
# Rows without a log set `log.recent: 0` too, so that no decision-log line is made at all;
# the log rows keep the default ring of recent decisions, as a default deployment does.
#
# The xff and country rows come as from a trusted proxy, with X-Forwarded-For naming a
# public address: the demo policy, then the demo policy with a country rule and the
# public country database (.ci/geoip-database.sh), so that every request is looked up.
#
# Each proxy runs under callgrind twice, serving N1 and then N2 keep-alive requests from
# ab (8 connections); the difference of the two totals divided by N2 - N1 leaves out
# start-up and shutdown. Kernel time is not counted: both proxies make the same system
# calls per request (one read and one write on each side). Each proxy is pinned to one CPU
# as in bench/load.sh, so portcullis runs one worker, as it does there.
#
# What it cannot see: contention. Under callgrind every thread runs in turn on one CPU,
# so a cache line that two cores write (a shared counter, a lock, a reference count) costs
# no more instructions than one only one core writes, though on a real machine it costs
# cache misses and stalls that grow with the cores. `WORKERS=2 bash bench/load.sh` shows
# those.
set -euo pipefail
cd "$(dirname "$0")/.."

N1=${N1:-1000}
N2=${N2:-5000}
UPSTREAM_PORT=18181
PROXY_PORT=18182
ADMIN_PORT=18192

. bench/common.sh
need nginx nginx-light
need ab apache2-utils
need valgrind valgrind
need taskset util-linux
if [ "$(nproc)" -lt 2 ]; then echo "needs 2 CPUs (the proxy is pinned to the second, as in bench/load.sh)" >&2; exit 1; fi

cargo build --release --quiet --locked
BINARY=$PWD/target/release/portcullis
GEOIP_DATABASE=$(bash .ci/geoip-database.sh)

WORK=$(mktemp -d)
UPSTREAM_PID=
cleanup() {
    [ -n "$UPSTREAM_PID" ] && kill "$UPSTREAM_PID" 2>/dev/null && wait "$UPSTREAM_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

common="error_log $WORK/error.log warn;
events { worker_connections 1024; }"
temp="access_log off; client_body_temp_path $WORK/body; proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi; uwsgi_temp_path $WORK/uwsgi; scgi_temp_path $WORK/scgi;
    keepalive_requests 1000000;"
cat >"$WORK/upstream.conf" <<CONF
daemon off; pid $WORK/upstream.pid; $common
http { $temp server { listen 127.0.0.1:$UPSTREAM_PORT;
    location / { default_type text/plain; return 200 'hello from the upstream\n'; } } }
CONF
# The deny rows: nginx answers 403 itself, as a policy that denies the path would.
cat >"$WORK/deny.conf" <<CONF
daemon off; master_process off; pid $WORK/proxy.pid; $common
http { $temp
    server { listen 127.0.0.1:$PROXY_PORT; location / {
        default_type application/problem+json; add_header X-Request-Id \$request_id always;
        return 403 '{"type":"urn:portcullis:reason:no_matching_allow","status":403,"request_id":"\$request_id"}'; } } }
CONF
cat >"$WORK/proxy.conf" <<CONF
daemon off; master_process off; pid $WORK/proxy.pid; $common
http { $temp
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
    server { listen 127.0.0.1:$PROXY_PORT; location / {
        proxy_pass http://app; proxy_http_version 1.1;
        proxy_set_header Connection ""; proxy_set_header Host \$http_host;
        proxy_set_header X-Forwarded-For \$remote_addr; proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_set_header X-Forwarded-Host \$http_host; proxy_set_header X-Request-Id \$request_id;
        add_header X-Request-Id \$request_id always; } } }
CONF
for variant in allow-all demo jwt; do
    cat >"$WORK/$variant.yaml" <<CONF
listen: [{ addr: 127.0.0.1:$PROXY_PORT }]
admin: { addr: 127.0.0.1:$ADMIN_PORT }
upstreams: { app: { targets: ["http://127.0.0.1:$UPSTREAM_PORT"] } }
routes: [{ id: all, upstream: app }]
policy: { files: ["$variant-policies/*.yaml"] }
log: { decisions: off, recent: 0 }   # no decision record at all
CONF
done
# The demo policy has a rule for API-key callers, the jwt variant needs the demo token
# issuer: give them the demo config's identity section.
for variant in demo jwt; do
    sed -n '/^identity:/,/^$/p' config/portcullis.yaml >>"$WORK/$variant.yaml"
done
# The log rows: nginx with a buffered access log, portcullis with its decision log, both
# written to a file.
for conf in proxy deny; do
    sed "s|access_log off;|access_log $WORK/access.log combined buffer=64k;|" "$WORK/$conf.conf" >"$WORK/$conf-log.conf"
done
# The xff and country rows: the demo policy behind a trusted proxy, and with a country rule.
mkdir -p "$WORK/country-policies"
cp config/policies/*.yaml "$WORK/country-policies/"
echo 'rules: [{ id: embargo, effect: deny, when: { countries: [KP, IR, SY, CU] } }]' >"$WORK/country-policies/zz-embargo.yaml"
sed 's|^log: .*|&\nnetwork: { trusted_proxies: [127.0.0.1] }|' "$WORK/demo.yaml" >"$WORK/xff.yaml"
sed -e 's|demo-policies|country-policies|' \
    -e "s|^log: .*|&\\nnetwork: { trusted_proxies: [127.0.0.1], geoip: { database: $GEOIP_DATABASE } }|" \
    "$WORK/demo.yaml" >"$WORK/country.yaml"
# The log goes outside the configs' directory, which the gateway watches for changes.
mkdir -p "$WORK/out"
sed "s|^log: .*|log: { decisions: $WORK/out/decisions.log }|" "$WORK/demo.yaml" >"$WORK/demo-log.yaml"
mkdir -p "$WORK/allow-all-policies" "$WORK/demo-policies" "$WORK/jwt-policies"
echo 'rules: [{ id: allow-all, effect: allow }]' >"$WORK/allow-all-policies/allow-all.yaml"
echo 'rules: [{ id: token-holders, effect: allow, when: { scopes: { all: ["bench:read"] } } }]' >"$WORK/jwt-policies/token-holders.yaml"
# One token for every request of the jwt variant: after the first, each check is a cache hit.
TOKEN=$("$BINARY" token --key config/keys/demo-signing-key.pem --kid demo \
    --issuer https://demo.portcullis.local/ --audience demo-api --sub bench --scope bench:read --ttl 2h)
AB_HEADERS=()
cp config/policies/*.yaml "$WORK/demo-policies/"
cp -r config/keys "$WORK/keys"

nginx -c "$WORK/upstream.conf" >/dev/null 2>&1 &
UPSTREAM_PID=$!

run() { # requests, stop signal, command... → total instructions
    local requests=$1 signal=$2; shift 2
    taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" "$@" >"$WORK/run.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT/public/" 2>/dev/null && break
        sleep 0.1
    done
    ab -q -k -c 8 -n "$requests" "${AB_HEADERS[@]}" "http://127.0.0.1:$PROXY_PORT$BENCH_PATH" >"$WORK/ab.txt" 2>&1
    local refused
    refused=$(awk '/^Non-2xx responses:/ { print $3 }' "$WORK/ab.txt")
    if [ "${DENY:-0}" = 1 ]; then
        [ "${refused:-0}" = "$requests" ] || { echo "answers that are not denials:" >&2; cat "$WORK/ab.txt" >&2; exit 1; }
    elif [ -n "$refused" ]; then
        echo "non-2xx answers:" >&2; cat "$WORK/ab.txt" >&2; exit 1
    fi
    kill "-$signal" "$pid"
    wait "$pid" || true
    local total
    total=$(awk '/^summary:/ { print $2 }' "$WORK/callgrind.out")
    [ -n "$total" ] && [ "$total" -gt 0 ] || { echo "the run under callgrind failed:" >&2; cat "$WORK/run.log" >&2; exit 1; }
    echo "$total"
}

per_request() { # name, signal, command...
    local name=$1 signal=$2; shift 2
    local small large
    small=$(run "$N1" "$signal" "$@")
    large=$(run "$N2" "$signal" "$@")
    echo "$name $(( (large - small) / (N2 - N1) ))"
}

# The demo policy's public-read rule allows this path; nothing allows /admin/ from here.
BENCH_PATH=/public/bench
read -r _ nginx < <(per_request nginx QUIT nginx -c "$WORK/proxy.conf")
read -r _ portcullis < <(per_request portcullis TERM "$BINARY" --log-level warn run -c "$WORK/allow-all.yaml")
read -r _ demo < <(per_request demo TERM "$BINARY" --log-level warn run -c "$WORK/demo.yaml")
read -r _ nginx_log < <(per_request nginx-log QUIT nginx -c "$WORK/proxy-log.conf")
read -r _ demo_log < <(per_request demo-log TERM "$BINARY" --log-level warn run -c "$WORK/demo-log.yaml")
BENCH_PATH=/admin/bench DENY=1
read -r _ nginx_deny < <(per_request nginx-deny QUIT nginx -c "$WORK/deny.conf")
read -r _ demo_deny < <(per_request demo-deny TERM "$BINARY" --log-level warn run -c "$WORK/demo.yaml")
read -r _ nginx_deny_log < <(per_request nginx-deny-log QUIT nginx -c "$WORK/deny-log.conf")
read -r _ demo_deny_log < <(per_request demo-deny-log TERM "$BINARY" --log-level warn run -c "$WORK/demo-log.yaml")
BENCH_PATH=/public/bench DENY=0
AB_HEADERS=(-H "Authorization: Bearer $TOKEN")
read -r _ jwt < <(per_request jwt TERM "$BINARY" --log-level warn run -c "$WORK/jwt.yaml")
AB_HEADERS=(-H "X-Forwarded-For: 81.2.69.142")
read -r _ xff < <(per_request xff TERM "$BINARY" --log-level warn run -c "$WORK/xff.yaml")
read -r _ country < <(per_request country TERM "$BINARY" --log-level warn run -c "$WORK/country.yaml")

echo
echo "callgrind, ab -k -c 8, ($N2 - $N1) requests; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| proxy | user-space instructions per request | vs nginx |"
echo "|---|---:|---:|"
echo "| nginx proxy | $nginx | 1.00 |"
echo "| portcullis (allow all) | $portcullis | $(awk -v a="$portcullis" -v b="$nginx" 'BEGIN { printf "%.2f", a / b }') |"
echo "| portcullis (demo policy) | $demo | $(awk -v a="$demo" -v b="$nginx" 'BEGIN { printf "%.2f", a / b }') |"
echo "| portcullis (JWT, warm cache) | $jwt | $(awk -v a="$jwt" -v b="$nginx" 'BEGIN { printf "%.2f", a / b }') |"
echo "| portcullis (demo policy, X-Forwarded-For from a trusted proxy) | $xff | $(awk -v a="$xff" -v b="$nginx" 'BEGIN { printf "%.2f", a / b }') |"
echo "| portcullis (the same, and a country rule: a lookup per request) | $country | $(awk -v a="$country" -v b="$nginx" 'BEGIN { printf "%.2f", a / b }') |"
echo "| nginx proxy, access log (buffer=64k) | $nginx_log | 1.00 |"
echo "| portcullis (demo policy, decision log to a file) | $demo_log | $(awk -v a="$demo_log" -v b="$nginx_log" 'BEGIN { printf "%.2f", a / b }') |"
echo
echo "| denial | user-space instructions per request | vs nginx |"
echo "|---|---:|---:|"
echo "| nginx return 403 | $nginx_deny | 1.00 |"
echo "| portcullis (demo policy, 403 problem+json) | $demo_deny | $(awk -v a="$demo_deny" -v b="$nginx_deny" 'BEGIN { printf "%.2f", a / b }') |"
echo "| nginx return 403, access log (buffer=64k) | $nginx_deny_log | 1.00 |"
echo "| portcullis (demo policy, decision log to a file) | $demo_deny_log | $(awk -v a="$demo_deny_log" -v b="$nginx_deny_log" 'BEGIN { printf "%.2f", a / b }') |"
echo
echo "What a log adds per request: nginx's access log $(( nginx_log - nginx )) (allow), $(( nginx_deny_log - nginx_deny )) (deny);"
echo "A country rule adds $(( country - xff )) ($(awk -v a="$country" -v b="$xff" 'BEGIN { printf "%.3f", a / b }')x)."
echo "portcullis's decision log $(( demo_log - demo )) (allow, $(awk -v a="$demo_log" -v b="$demo" 'BEGIN { printf "%.2f", a / b }')x), $(( demo_deny_log - demo_deny )) (deny, $(awk -v a="$demo_deny_log" -v b="$demo_deny" 'BEGIN { printf "%.2f", a / b }')x)."

#!/usr/bin/env bash
# Load test: portcullis against nginx doing the same job, on loopback.
#
#   bash bench/load.sh                     # 5 rounds of 6 s per row, one worker each
#   WORKERS=2 bash bench/load.sh           # two workers for every server
#   ROUNDS=9 DURATION=10s ROWS="nginx demo" bash bench/load.sh
#
# Rows (ROWS picks some; the ratio of a row needs its nginx row too):
#   direct            wrk → upstream                       (the ceiling)
#   nginx             wrk → nginx reverse proxy → upstream, no access log
#   nginx-log         the same, with a buffered access log (buffer=64k)
#   portcullis        wrk → portcullis → upstream          (a policy that allows everything)
#   demo              wrk → portcullis → upstream          (the bench policy decides; no decision log)
#   demo-log          the same, with the default decision log (JSON lines to stderr, to a file)
#   jwt               wrk → portcullis → upstream          (every request carries a bearer token,
#                     EdDSA, verified against the demo key set; a rule requires its scope)
#   nginx-deny        wrk → nginx, which answers 403 for /admin (the same policy), no access log
#   nginx-deny-log    the same, with the buffered access log
#   deny              wrk → portcullis, whose policy denies /admin/bench; no decision log
#   deny-log          the same, with the default decision log
#   nginx-tls         wrk → nginx terminating TLS (kept-alive connections), then as nginx
#   tls               wrk → portcullis terminating TLS with the same certificate, then as demo
#   xff               wrk → portcullis as a trusted proxy's next hop: every request carries
#                     X-Forwarded-For with a public address (in GB); the bench policy decides
#   country           the same, with a country rule added (an embargo on four countries)
#                     and the public ip-location-db database (.ci/geoip-database.sh): every
#                     request is looked up; compared with the xff row
#
# With the TLS rows, new TLS handshakes per second are measured too, after the rounds:
# openssl s_time, a new connection per request, full handshakes and resumed ones.
#
# The bench policy, the same in both proxies: a block list of 1,000 networks (none of
# them loopback), /admin from one office network only (not loopback: so /admin is a
# 403), /public readable by anyone, everything else denied. Allow rows send
# /public/bench, deny rows /admin/bench.
#
# Rows are measured in turn, round after round, in the opposite order every other round
# (so no row always runs right after another), and each figure is the median over the
# rounds, so a noisy neighbour on a shared machine skews one sample, not the result. The
# ratios to nginx are paired: each round's row against the same round's matching nginx row
# (with or without logs, allow or deny), then the median of those, which cancels drift
# in the machine's speed between rounds. Besides req/s and latency, each proxy's CPU time
# per request is read from /proc: the figure least disturbed by noise.
#
# Every server (the upstream, nginx, portcullis) runs WORKERS workers. When the machine
# has more CPUs than WORKERS, the load generator is pinned to CPU 0 and every server to
# CPUs 1..WORKERS, so the ratio compares CPU spent per request. When it has not (WORKERS=2
# on a 2-CPU machine), nothing is pinned: wrk shares the CPUs with the servers, req/s
# measures the whole machine's share each proxy gets, and only ratios paired by round
# compare. The upstream is nginx returning a static body. Both proxies do the same work:
# keep-alive upstream pool, X-Forwarded-For/-Proto/-Host, a request id sent upstream and
# returned.
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6s}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
WORKERS=${WORKERS:-1}
ALL_ROWS="direct nginx nginx-log portcullis demo demo-log jwt nginx-deny nginx-deny-log deny deny-log nginx-tls tls xff country"
read -r -a ROWS <<<"${ROWS:-$ALL_ROWS}"
UPSTREAM_PORT=18081
NGINX_PROXY_PORT=18082
NGINX_LOG_PORT=18087
PORTCULLIS_PORT=18083
PORTCULLIS_ADMIN_PORT=18093
DEMO_PORT=18084
DEMO_ADMIN_PORT=18094
DEMO_LOG_PORT=18085
DEMO_LOG_ADMIN_PORT=18095
JWT_PORT=18086
JWT_ADMIN_PORT=18096
NGINX_TLS_PORT=18088
TLS_PORT=18089
TLS_ADMIN_PORT=18099
XFF_PORT=18090
XFF_ADMIN_PORT=18100
COUNTRY_PORT=18091
COUNTRY_ADMIN_PORT=18101
# A public address, in GB in the database: the client every xff and country request is from.
CLIENT_ADDRESS=81.2.69.142

. bench/common.sh
need nginx nginx-light
need wrk wrk
need taskset util-linux
need openssl openssl
if [ "$(nproc)" -gt "$WORKERS" ]; then
    LOAD_CPUS=0
    SERVER_CPUS="1-$WORKERS"
    PINNING="wrk on CPU 0, servers on CPUs $SERVER_CPUS"
else
    LOAD_CPUS="0-$(($(nproc) - 1))"
    SERVER_CPUS=$LOAD_CPUS
    PINNING="wrk and the servers share CPUs $LOAD_CPUS: compare the paired ratios, not req/s"
fi

cargo build --release --quiet --locked
BINARY=target/release/portcullis
GEOIP_DATABASE=$(bash .ci/geoip-database.sh)

scratch_and_servers

# The block list: 1,000 /24 networks in 10.0.0.0/8, as policy lines and as nginx geo lines.
for i in $(seq 0 999); do echo "10.$((i / 250)).$((i % 250)).0/24"; done >"$WORK/blocklist.txt"
sed 's/$/ 1;/' "$WORK/blocklist.txt" >"$WORK/blocklist.conf"
OFFICE=203.0.113.0/24

nginx_conf() { # name, access log (on/off), server block
    mkdir -p "$WORK/$1"
    local log="access_log off;"
    [ "$2" = on ] && log="access_log $WORK/$1/access.log bench buffer=64k;"
    cat > "$WORK/$1/nginx.conf" <<CONF
worker_processes $WORKERS;
daemon off;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
    log_format bench escape=json '{"time":"\$time_iso8601","request_id":"\$request_id",'
        '"method":"\$request_method","path":"\$uri","client":"\$remote_addr",'
        '"status":\$status,"upstream_time":"\$upstream_response_time"}';
    $log
    client_body_temp_path $WORK/$1/body;
    proxy_temp_path $WORK/$1/proxy;
    fastcgi_temp_path $WORK/$1/fastcgi;
    uwsgi_temp_path $WORK/$1/uwsgi;
    scgi_temp_path $WORK/$1/scgi;
    keepalive_requests 1000000;
    $3
}
CONF
}

nginx_conf upstream off "
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / { default_type text/plain; return 200 'hello from the upstream\n'; }
    }"

# The bench policy in nginx: the block list, /admin from the office, /public for anyone,
# the rest denied; a denial is a small problem+json body with the request id (portcullis
# answers at its default detail, standard, which also names the rule and a hint).
proxy_server() { # port, [TLS directives: the listener's, then the server's]
    echo "
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
    geo \$blocked { default 0; include $WORK/blocklist.conf; }
    server {
        listen 127.0.0.1:$1 ${2:-};
        ${3:-}
        if (\$blocked) { return 403; }
        error_page 403 = @denied;
        location @denied {
            default_type application/problem+json;
            add_header X-Request-Id \$request_id always;
            return 403 '{\"type\":\"urn:portcullis:reason:ip_not_allowed\",\"status\":403,\"request_id\":\"\$request_id\"}';
        }
        location /admin/ { allow $OFFICE; deny all; proxy_pass http://app; }
        location /public/ {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;
        }
        location / { return 403; }
    }"
}
nginx_conf proxy off "$(proxy_server $NGINX_PROXY_PORT)"
# One certificate for both TLS rows (ECDSA P-256, the usual choice at the edge), and
# nginx's usual session settings: a shared cache and tickets.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$WORK/tls.key" -out "$WORK/tls.pem" 2>/dev/null
nginx_conf proxy-tls off "$(proxy_server $NGINX_TLS_PORT ssl "ssl_certificate $WORK/tls.pem;
        ssl_certificate_key $WORK/tls.key; ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m; ssl_session_tickets on;")"
nginx_conf proxy-log on "$(proxy_server $NGINX_LOG_PORT)"

portcullis_conf() { # name, port, admin port, policy files, decision log, [listener's TLS], [network section]
    # Rows without the log keep no recent decisions either: no line is made at all.
    local recent=""
    if [ "$5" = off ]; then recent=", recent: 0"; fi
    cat > "$WORK/$1.yaml" <<CONF
listen: [{ addr: 127.0.0.1:$2${6:+, tls: $6} }]
admin: { addr: 127.0.0.1:$3 }
workers: $WORKERS
upstreams:
  app: { targets: ["http://127.0.0.1:$UPSTREAM_PORT"] }
routes:
  - { id: all, path_prefix: /, upstream: app }
policy: { files: [$4] }
log: { decisions: $5$recent }
${7:+network: $7}
CONF
}
mkdir -p "$WORK/policies"
cp -r config/keys "$WORK/keys"
cat >"$WORK/policies/bench.yaml" <<POLICY
lists:
  blocklist: { file: ../blocklist.txt }
  office: [$OFFICE]
rules:
  - { id: block-listed, effect: deny, when: { ip: ["@blocklist"] } }
  - { id: admin-console, effect: allow, match: { paths: ["/admin/**"] }, when: { ip: ["@office"] } }
  - { id: public-read, effect: allow, match: { paths: ["/public/**"], methods: [GET, HEAD] } }
POLICY
echo 'rules: [{ id: allow-all, effect: allow }]' >"$WORK/allow-all.yaml"
portcullis_conf portcullis $PORTCULLIS_PORT $PORTCULLIS_ADMIN_PORT allow-all.yaml off
portcullis_conf demo $DEMO_PORT $DEMO_ADMIN_PORT "policies/bench.yaml" off
portcullis_conf demo-log $DEMO_LOG_PORT $DEMO_LOG_ADMIN_PORT "policies/bench.yaml" log
portcullis_conf tls $TLS_PORT $TLS_ADMIN_PORT "policies/bench.yaml" off "{ cert: tls.pem, key: tls.key }"
mkdir -p "$WORK/country"
{ cat "$WORK/policies/bench.yaml"; echo '  - { id: embargo, effect: deny, when: { countries: [KP, IR, SY, CU] } }'; } \
    >"$WORK/country/bench.yaml"
portcullis_conf xff $XFF_PORT $XFF_ADMIN_PORT "policies/bench.yaml" off "" "{ trusted_proxies: [127.0.0.1] }"
portcullis_conf country $COUNTRY_PORT $COUNTRY_ADMIN_PORT "country/bench.yaml" off "" \
    "{ trusted_proxies: [127.0.0.1], geoip: { database: $GEOIP_DATABASE } }"
echo 'rules: [{ id: token-holders, effect: allow, when: { scopes: { all: ["bench:read"] } } }]' >"$WORK/token-holders.yaml"
portcullis_conf jwt $JWT_PORT $JWT_ADMIN_PORT token-holders.yaml off
# The jwt row needs the demo token issuer: give it the demo config's identity section.
sed -n '/^identity:/,/^$/p' config/portcullis.yaml >>"$WORK/jwt.yaml"
# One token for the whole run, as a client reusing its access token would send it.
TOKEN=$("$BINARY" token --key config/keys/demo-signing-key.pem --kid demo \
    --issuer https://demo.portcullis.local/ --audience demo-api --sub bench --scope bench:read --ttl 2h)

# The servers' output goes to a directory of its own: the configs' directory is watched
# for changes, and a log written there on every request would have every instance look
# at each line (a production layout keeps logs elsewhere too).
mkdir -p "$WORK/logs"
start() { # log name, command...
    local name=$1; shift
    taskset -c "$SERVER_CPUS" "$@" >"$WORK/logs/$name.out" 2>&1 &
    PIDS+=($!)
}

wait_for() { # port
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1; logs:" >&2
    tail -n 20 "$WORK"/logs/*.out >&2 || true
    exit 1
}

for port in $UPSTREAM_PORT $NGINX_PROXY_PORT $NGINX_LOG_PORT $PORTCULLIS_PORT $PORTCULLIS_ADMIN_PORT \
    $DEMO_PORT $DEMO_ADMIN_PORT $DEMO_LOG_PORT $DEMO_LOG_ADMIN_PORT $JWT_PORT $JWT_ADMIN_PORT \
    $NGINX_TLS_PORT $TLS_PORT $TLS_ADMIN_PORT $XFF_PORT $XFF_ADMIN_PORT $COUNTRY_PORT $COUNTRY_ADMIN_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is already in use; stop whatever listens there first" >&2
        exit 1
    fi
done

start upstream nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf"
start nginx-proxy nginx -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf"
start nginx-proxy-log nginx -p "$WORK/proxy-log" -c "$WORK/proxy-log/nginx.conf"
start nginx-proxy-tls nginx -p "$WORK/proxy-tls" -c "$WORK/proxy-tls/nginx.conf"
start portcullis "$BINARY" --log-level warn run -c "$WORK/portcullis.yaml"
PORTCULLIS_PID=$!
start demo "$BINARY" --log-level warn run -c "$WORK/demo.yaml"
DEMO_PID=$!
start demo-log "$BINARY" --log-level warn run -c "$WORK/demo-log.yaml"
DEMO_LOG_PID=$!
start jwt "$BINARY" --log-level warn run -c "$WORK/jwt.yaml"
JWT_PID=$!
start tls "$BINARY" --log-level warn run -c "$WORK/tls.yaml"
TLS_PID=$!
start xff "$BINARY" --log-level warn run -c "$WORK/xff.yaml"
XFF_PID=$!
start country "$BINARY" --log-level warn run -c "$WORK/country.yaml"
COUNTRY_PID=$!
for port in $UPSTREAM_PORT $NGINX_PROXY_PORT $NGINX_LOG_PORT $PORTCULLIS_PORT $DEMO_PORT $DEMO_LOG_PORT $JWT_PORT \
    $NGINX_TLS_PORT $TLS_PORT $XFF_PORT $COUNTRY_PORT; do
    wait_for $port
done

# Check each path answers as it should before measuring it.
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
for port in $UPSTREAM_PORT $NGINX_PROXY_PORT $NGINX_LOG_PORT $PORTCULLIS_PORT $DEMO_PORT $DEMO_LOG_PORT; do
    [ "$(status "http://127.0.0.1:$port/public/bench")" = 200 ] || { echo "port $port does not answer 200" >&2; exit 1; }
done
for port in $NGINX_TLS_PORT $TLS_PORT; do
    [ "$(status --cacert "$WORK/tls.pem" "https://localhost:$port/public/bench")" = 200 ] ||
        { echo "port $port does not answer 200 over TLS" >&2; exit 1; }
done
for port in $NGINX_PROXY_PORT $NGINX_LOG_PORT $DEMO_PORT $DEMO_LOG_PORT; do
    [ "$(status "http://127.0.0.1:$port/admin/bench")" = 403 ] || { echo "port $port does not deny /admin" >&2; exit 1; }
done
[ "$(status -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$JWT_PORT/public/bench")" = 200 ] ||
    { echo "the jwt row does not answer 200 with the token" >&2; exit 1; }
[ "$(status "http://127.0.0.1:$JWT_PORT/public/bench")" = 401 ] ||
    { echo "the jwt row answers without a token" >&2; exit 1; }
for port in $XFF_PORT $COUNTRY_PORT; do
    [ "$(status -H "X-Forwarded-For: $CLIENT_ADDRESS" "http://127.0.0.1:$port/public/bench")" = 200 ] ||
        { echo "port $port does not answer 200 for $CLIENT_ADDRESS" >&2; exit 1; }
done
# The country row looks every request up: an embargoed address is stopped, and the
# database counts a lookup.
[ "$(status -H "X-Forwarded-For: 175.45.176.1" "http://127.0.0.1:$COUNTRY_PORT/public/bench")" = 403 ] ||
    { echo "the country row does not stop an embargoed address" >&2; exit 1; }
# Read whole first: `grep -q` stops at its match, and curl, cut off, would fail the pipe.
metrics=$(curl -s "http://127.0.0.1:$COUNTRY_ADMIN_PORT/metrics")
grep -q '^portcullis_geoip_lookups_total{result="found"} [1-9]' <<<"$metrics" ||
    { echo "the country row counts no lookups" >&2; exit 1; }
sleep 0.3
grep -q '"decision":"allow"' "$WORK/logs/demo-log.out" || { echo "the demo-log row writes no decision log" >&2; exit 1; }

to_ms() { # wrk latency such as 812.00us, 1.20ms, 1.01s
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { printf "nan" } }'
}

cpu_ticks() { # pids... → their user and system time, summed
    local total=0 pid
    for pid in "$@"; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
    echo $total
}
nginx_workers() { # pid file → the workers' pids
    ps -o pid= --ppid "$(cat "$1")" | tr -d ' ' | tr '\n' ' '
}

measure() { # row name, base URL, path, expected status, proxy pids (or -), [header] → "rps p50 p99 cpu_us_per_request"
    local header=()
    [ -n "${6:-}" ] && header=(-H "$6")
    local wrk=(taskset -c "$LOAD_CPUS" wrk -t"$WORKERS" -c"$CONNECTIONS" "${header[@]}")
    "${wrk[@]}" -d"$WARMUP" "$2$3" >/dev/null
    local out ticks_before ticks_after
    # shellcheck disable=SC2086 # the pids are words
    [ "$5" != - ] && ticks_before=$(cpu_ticks $5)
    out=$("${wrk[@]}" -d"$DURATION" --latency "$2$3")
    # shellcheck disable=SC2086
    [ "$5" != - ] && ticks_after=$(cpu_ticks $5)
    echo "$out" >>"$WORK/wrk-$1.txt"
    # wrk counts every status but 2xx and 3xx as "Non-2xx": a deny row expects all of them.
    local errors
    errors=$(echo "$out" | awk '/Non-2xx/ { print $NF }')
    if { [ "$4" = 200 ] && [ -n "$errors" ]; } || { [ "$4" = 403 ] && [ -z "$errors" ]; }; then
        echo "$1: not every answer was $4:" >&2; echo "$out" >&2; exit 1
    fi
    local rps p50 p99 requests cpu
    rps=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 }')
    requests=$(echo "$out" | awk '/requests in/ { print $1 }')
    if [ "$4" = 403 ] && [ "$errors" != "$requests" ]; then
        echo "$1: $errors of $requests answers were not 2xx; all should be 403:" >&2; echo "$out" >&2; exit 1
    fi
    p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" { print $2 }')")
    p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')")
    if [ "$5" != - ]; then
        cpu=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    else
        cpu=""
    fi
    echo "$rps $p50 $p99 $cpu"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

NGINX_PIDS=$(nginx_workers "$WORK/proxy/nginx.pid")
NGINX_LOG_PIDS=$(nginx_workers "$WORK/proxy-log/nginx.pid")
NGINX_TLS_PIDS=$(nginx_workers "$WORK/proxy-tls/nginx.pid")
# On a virtual machine, time the hypervisor gives to other guests ("steal" in /proc/stat)
# slows whichever row is running; the run reports how much there was.
cpu_times() { awk '$1 == "cpu" { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9 }' /proc/stat; }
read -r TOTAL_BEFORE STEAL_BEFORE < <(cpu_times)
measure_row() { # row name
    local http=http://127.0.0.1 https=https://127.0.0.1
    case $1 in
        direct) measure direct $http:$UPSTREAM_PORT /public/bench 200 - ;;
        nginx) measure nginx $http:$NGINX_PROXY_PORT /public/bench 200 "$NGINX_PIDS" ;;
        nginx-log) measure nginx-log $http:$NGINX_LOG_PORT /public/bench 200 "$NGINX_LOG_PIDS" ;;
        portcullis) measure portcullis $http:$PORTCULLIS_PORT /public/bench 200 "$PORTCULLIS_PID" ;;
        demo) measure demo $http:$DEMO_PORT /public/bench 200 "$DEMO_PID" ;;
        demo-log) measure demo-log $http:$DEMO_LOG_PORT /public/bench 200 "$DEMO_LOG_PID" ;;
        jwt) measure jwt $http:$JWT_PORT /public/bench 200 "$JWT_PID" "Authorization: Bearer $TOKEN" ;;
        nginx-deny) measure nginx-deny $http:$NGINX_PROXY_PORT /admin/bench 403 "$NGINX_PIDS" ;;
        nginx-deny-log) measure nginx-deny-log $http:$NGINX_LOG_PORT /admin/bench 403 "$NGINX_LOG_PIDS" ;;
        deny) measure deny $http:$DEMO_PORT /admin/bench 403 "$DEMO_PID" ;;
        deny-log) measure deny-log $http:$DEMO_LOG_PORT /admin/bench 403 "$DEMO_LOG_PID" ;;
        nginx-tls) measure nginx-tls $https:$NGINX_TLS_PORT /public/bench 200 "$NGINX_TLS_PIDS" ;;
        tls) measure tls $https:$TLS_PORT /public/bench 200 "$TLS_PID" ;;
        xff) measure xff $http:$XFF_PORT /public/bench 200 "$XFF_PID" "X-Forwarded-For: $CLIENT_ADDRESS" ;;
        country) measure country $http:$COUNTRY_PORT /public/bench 200 "$COUNTRY_PID" "X-Forwarded-For: $CLIENT_ADDRESS" ;;
        *) echo "unknown row $1; rows: $ALL_ROWS" >&2; exit 2 ;;
    esac
}
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    order=("${ROWS[@]}")
    if [ $((round % 2)) = 0 ]; then
        order=()
        for ((i = ${#ROWS[@]} - 1; i >= 0; i--)); do order+=("${ROWS[i]}"); done
    fi
    for row in "${order[@]}"; do
        measure_row "$row" >>"$WORK/$row.txt"
        # The logs grow by a line per request: each row starts them empty.
        : >"$WORK/logs/demo-log.out"
        : >"$WORK/proxy-log/access.log"
    done
done
read -r TOTAL_AFTER STEAL_AFTER < <(cpu_times)
column_median() { awk -v c="$2" '{ print $c }' "$WORK/$1.txt" | median; }

# The median over rounds of a row's column divided by another row's in the same round.
paired() { # row, column, base row
    [ -f "$WORK/$3.txt" ] || return 0
    paste -d ' ' "$WORK/$1.txt" "$WORK/$3.txt" |
        awk -v c="$2" -v n=$((4 + $2)) '$n > 0 { printf "%.4f\n", $c / $n }' | median |
        awk '{ printf "%.2f", $1 }'
}
# How many rounds the row met the goal in: req/s at least its nginx row's, p99 no worse.
rounds_met() { # row, base row
    [ -f "$WORK/$2.txt" ] || return 0
    paste -d ' ' "$WORK/$1.txt" "$WORK/$2.txt" |
        awk '$1 >= $5 && $3 <= $7 { met++ } END { printf "%d of %d", met, NR }'
}

echo
echo "WORKERS=$WORKERS; wrk -t$WORKERS -c$CONNECTIONS -d$DURATION; $PINNING; median of $ROUNDS rounds; ratios paired by round; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| path | req/s | p50 ms | p99 ms | proxy CPU µs/request | compared with | req/s | p99 | CPU | rounds meeting the goal |"
echo "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"
row() { # label, row, [base row]
    [ -f "$WORK/$2.txt" ] || return 0
    local figures
    figures="$(column_median "$2" 1) | $(column_median "$2" 2) | $(column_median "$2" 3) | $(column_median "$2" 4)"
    if [ -n "${3:-}" ]; then
        echo "| $1 | $figures | $3 | $(paired "$2" 1 "$3") | $(paired "$2" 3 "$3") | $(paired "$2" 4 "$3") | $(rounds_met "$2" "$3") |"
    else
        echo "| $1 | $figures | | | | | |"
    fi
}
row "direct to upstream" direct
row "nginx proxy" nginx
row "nginx proxy, access log" nginx-log
row "portcullis (allow all)" portcullis nginx
row "portcullis (bench policy)" demo nginx
row "portcullis (bench policy, decision log)" demo-log nginx-log
row "portcullis (JWT, warm cache)" jwt nginx
row "nginx deny" nginx-deny
row "nginx deny, access log" nginx-deny-log
row "portcullis deny" deny nginx-deny
row "portcullis deny, decision log" deny-log nginx-deny-log
row "nginx proxy, TLS" nginx-tls
row "portcullis (bench policy, TLS)" tls nginx-tls
row "portcullis (bench policy, X-Forwarded-For)" xff nginx
row "portcullis (bench policy + country rule, X-Forwarded-For)" country xff
echo
[ -f "$WORK/demo-log.txt" ] && [ -f "$WORK/demo.txt" ] &&
    echo "The decision log, paired by round: allow req/s $(paired demo-log 1 demo)×, CPU per request $(paired demo-log 4 demo)×"
[ -f "$WORK/deny-log.txt" ] && [ -f "$WORK/deny.txt" ] &&
    echo "The decision log, paired by round: deny req/s $(paired deny-log 1 deny)×, CPU per request $(paired deny-log 4 deny)×"
[ -f "$WORK/nginx-log.txt" ] && [ -f "$WORK/nginx.txt" ] &&
    echo "nginx's access log, paired by round: allow req/s $(paired nginx-log 1 nginx)×, CPU per request $(paired nginx-log 4 nginx)×"
[ -f "$WORK/jwt.txt" ] && [ -f "$WORK/portcullis.txt" ] &&
    echo "JWT row vs allow-all row, paired by round: req/s $(paired jwt 1 portcullis)×, CPU per request $(paired jwt 4 portcullis)×"
[ -f "$WORK/tls.txt" ] && [ -f "$WORK/demo.txt" ] &&
    echo "TLS against plain HTTP, paired by round: req/s $(paired tls 1 demo)×, CPU per request $(paired tls 4 demo)×"
if [ -f "$WORK/country.txt" ] && [ -f "$WORK/xff.txt" ]; then
    echo "A country rule against the same policy without it, paired by round: req/s $(paired country 1 xff)×, p99 $(paired country 3 xff)×, CPU per request $(paired country 4 xff)×"
    rss() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
    echo "Resident memory after the run: $(rss "$XFF_PID") MiB without the database, $(rss "$COUNTRY_PID") MiB with it ($(du -m "$GEOIP_DATABASE" | cut -f1) MiB file)"
fi

# New TLS connections per second: openssl s_time opens a connection per request, each a
# full handshake (-new) or a resumed one (-reuse), for HANDSHAKE_TIME seconds, in turn
# for nginx and portcullis, ROUNDS times; the median.
handshakes() { # port, -new or -reuse → connections per second
    taskset -c "$LOAD_CPUS" openssl s_time -connect "127.0.0.1:$1" "$2" -time "${HANDSHAKE_TIME:-5}" \
        -www /public/bench 2>/dev/null |
        awk '/connections in .* real seconds/ { printf "%.1f\n", $1 / $4; exit }'
}
if [ -f "$WORK/tls.txt" ] && [ -f "$WORK/nginx-tls.txt" ]; then
    for round in $(seq 1 "$ROUNDS"); do
        for kind in -new -reuse; do
            handshakes $NGINX_TLS_PORT $kind >>"$WORK/hs-nginx$kind.txt"
            handshakes $TLS_PORT $kind >>"$WORK/hs-portcullis$kind.txt"
        done
    done
    echo
    echo "New TLS connections per second (openssl s_time, one client, a GET each; median of $ROUNDS rounds of ${HANDSHAKE_TIME:-5} s):"
    echo
    echo "| handshake | nginx | portcullis | vs nginx |"
    echo "|---|---:|---:|---:|"
    for kind in -new -reuse; do
        n=$(median <"$WORK/hs-nginx$kind.txt")
        p=$(median <"$WORK/hs-portcullis$kind.txt")
        label=full; [ "$kind" = -reuse ] && label=resumed
        echo "| $label | $n | $p | $(awk -v a="$p" -v b="$n" 'BEGIN { if (b > 0) printf "%.2f", a / b }') |"
    done
fi
awk -v s=$((STEAL_AFTER - STEAL_BEFORE)) -v t=$((TOTAL_AFTER - TOTAL_BEFORE)) \
    'BEGIN { if (t > 0) printf "CPU time taken by other guests of the host during the run (steal): %.1f%%\n", 100 * s / t }'

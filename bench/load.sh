#!/usr/bin/env bash
# Load test: portcullis against nginx doing the same job, on loopback.
#
#   bash bench/load.sh                     # 5 rounds of 6 s per row
#   ROUNDS=9 DURATION=10s bash bench/load.sh
#
# Rows:
#   direct      wrk → upstream                      (the ceiling)
#   nginx       wrk → nginx reverse proxy → upstream
#   portcullis  wrk → portcullis → upstream         (a policy that allows everything)
#   demo        wrk → portcullis → upstream         (config/policies/demo.yaml decides)
#   demo-log    the same, with the decision log on (JSON, one line per request, to a file)
#   jwt         wrk → portcullis → upstream         (every request carries a bearer token,
#               EdDSA, verified against the demo key set; a rule requires its scope)
#
# Rows are measured in turn, round after round, in the opposite order every other round
# (so no row always runs right after another), and each figure is the median over the
# rounds, so a noisy neighbour on a shared machine skews one sample, not the result. The
# ratios to nginx are paired: each round's row against the same round's nginx, then the
# median of those, which cancels drift in the machine's speed between rounds. Besides
# req/s and latency, each proxy's CPU time per request is read from /proc: the figure
# least disturbed by noise.
#
# The upstream is nginx returning a static body. The load generator is pinned to CPU 0,
# every server to CPU 1, one worker each, so the ratio compares CPU spent per request.
# Both proxies do the same work: keep-alive upstream pool, X-Forwarded-For/-Proto/-Host,
# a request id sent upstream and returned, no access log (portcullis with
# `log.decisions: off`, except in the demo-log row). Requests go to /public/bench,
# which the demo policy's public-read rule allows.
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6s}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
UPSTREAM_PORT=18081
NGINX_PROXY_PORT=18082
PORTCULLIS_PORT=18083
PORTCULLIS_ADMIN_PORT=18093
DEMO_PORT=18084
DEMO_ADMIN_PORT=18094
DEMO_LOG_PORT=18085
DEMO_LOG_ADMIN_PORT=18095
JWT_PORT=18086
JWT_ADMIN_PORT=18096
LOAD_CPU=0
SERVER_CPU=1

. bench/common.sh
need nginx nginx-light
need wrk wrk
need taskset util-linux
if [ "$(nproc)" -lt 2 ]; then echo "needs 2 CPUs (load on one, servers on the other)" >&2; exit 1; fi

cargo build --release --quiet --locked
BINARY=target/release/portcullis

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

nginx_conf() { # name, server block
    mkdir -p "$WORK/$1"
    cat > "$WORK/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/$1/body;
    proxy_temp_path $WORK/$1/proxy;
    fastcgi_temp_path $WORK/$1/fastcgi;
    uwsgi_temp_path $WORK/$1/uwsgi;
    scgi_temp_path $WORK/$1/scgi;
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
    server {
        listen 127.0.0.1:$NGINX_PROXY_PORT;
        location / {
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
    }"

portcullis_conf() { # name, port, admin port, policy files, decision log (default off)
    cat > "$WORK/$1.yaml" <<CONF
listen: [{ addr: 127.0.0.1:$2 }]
admin: { addr: 127.0.0.1:$3 }
upstreams:
  app: { targets: ["http://127.0.0.1:$UPSTREAM_PORT"] }
routes:
  - { id: all, path_prefix: /, upstream: app }
policy: { files: [$4] }
log: { decisions: ${5:-off} }
CONF
}
mkdir -p "$WORK/policies"
cp config/policies/*.yaml "$WORK/policies/"
cp -r config/keys "$WORK/keys"
echo 'rules: [{ id: allow-all, effect: allow }]' >"$WORK/allow-all.yaml"
portcullis_conf portcullis $PORTCULLIS_PORT $PORTCULLIS_ADMIN_PORT allow-all.yaml
portcullis_conf demo $DEMO_PORT $DEMO_ADMIN_PORT "policies/*.yaml"
portcullis_conf demo-log $DEMO_LOG_PORT $DEMO_LOG_ADMIN_PORT "policies/*.yaml" log
echo 'rules: [{ id: token-holders, effect: allow, when: { scopes: { all: ["bench:read"] } } }]' >"$WORK/token-holders.yaml"
portcullis_conf jwt $JWT_PORT $JWT_ADMIN_PORT token-holders.yaml
# The demo policy has a rule for API-key callers, the jwt row needs the demo token
# issuer: give them the demo config's identity section.
for name in demo demo-log jwt; do
    sed -n '/^identity:/,/^$/p' config/portcullis.yaml >>"$WORK/$name.yaml"
done
# One token for the whole run, as a client reusing its access token would send it.
TOKEN=$("$BINARY" token --key config/keys/demo-signing-key.pem --kid demo \
    --issuer https://demo.portcullis.local/ --audience demo-api --sub bench --scope bench:read --ttl 2h)

# The servers' output goes to a directory of its own: the configs' directory is watched
# for changes, and a log written there on every request would have every instance look
# at each line (a production layout keeps logs elsewhere too).
mkdir -p "$WORK/logs"
start() { # log name, command...
    local name=$1; shift
    taskset -c "$SERVER_CPU" "$@" >"$WORK/logs/$name.out" 2>&1 &
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

for port in $UPSTREAM_PORT $NGINX_PROXY_PORT $PORTCULLIS_PORT $PORTCULLIS_ADMIN_PORT \
    $DEMO_PORT $DEMO_ADMIN_PORT $DEMO_LOG_PORT $DEMO_LOG_ADMIN_PORT $JWT_PORT $JWT_ADMIN_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is already in use; stop whatever listens there first" >&2
        exit 1
    fi
done

start upstream nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf"
start nginx-proxy nginx -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf"
start portcullis "$BINARY" --log-level warn run -c "$WORK/portcullis.yaml"
PORTCULLIS_PID=$!
start demo "$BINARY" --log-level warn run -c "$WORK/demo.yaml"
DEMO_PID=$!
start demo-log "$BINARY" --log-format json run -c "$WORK/demo-log.yaml"
DEMO_LOG_PID=$!
start jwt "$BINARY" --log-level warn run -c "$WORK/jwt.yaml"
JWT_PID=$!
for port in $UPSTREAM_PORT $NGINX_PROXY_PORT $PORTCULLIS_PORT $DEMO_PORT $DEMO_LOG_PORT $JWT_PORT; do
    wait_for $port
done

# Check each path answers before measuring it.
for port in $UPSTREAM_PORT $NGINX_PROXY_PORT $PORTCULLIS_PORT $DEMO_PORT $DEMO_LOG_PORT; do
    curl -sf "http://127.0.0.1:$port/public/bench" >/dev/null || { echo "port $port does not answer 200" >&2; exit 1; }
done
curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$JWT_PORT/public/bench" >/dev/null ||
    { echo "the jwt row does not answer 200 with the token" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$JWT_PORT/public/bench")" = 401 ] ||
    { echo "the jwt row answers without a token" >&2; exit 1; }
grep -q '"decision":"allow"' "$WORK/logs/demo-log.out" || { echo "the demo-log row writes no decision log" >&2; exit 1; }

to_ms() { # wrk latency such as 812.00us, 1.20ms, 1.01s
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { printf "nan" } }'
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
nginx_worker() { # pid file → the worker's pid
    local master
    master=$(cat "$1")
    ps -o pid= --ppid "$master" | tr -d ' ' | head -n 1
}

measure() { # row name, port, pid of the proxy (or -), [header] → "rps p50 p99 cpu_us_per_request"
    local header=()
    [ -n "${4:-}" ] && header=(-H "$4")
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "${header[@]}" "http://127.0.0.1:$2/public/bench" >/dev/null
    local out ticks_before ticks_after
    [ "$3" != - ] && ticks_before=$(cpu_ticks "$3")
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${header[@]}" "http://127.0.0.1:$2/public/bench")
    [ "$3" != - ] && ticks_after=$(cpu_ticks "$3")
    echo "$out" >>"$WORK/wrk-$1.txt"
    if echo "$out" | grep -q "Non-2xx"; then echo "$1: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
    local rps p50 p99 requests cpu
    rps=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 }')
    requests=$(echo "$out" | awk '/requests in/ { print $1 }')
    p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" { print $2 }')")
    p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')")
    if [ "$3" != - ]; then
        cpu=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    else
        cpu=""
    fi
    echo "$rps $p50 $p99 $cpu"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

NGINX_PID=$(nginx_worker "$WORK/proxy/nginx.pid")
# On a virtual machine, time the hypervisor gives to other guests ("steal" in /proc/stat)
# slows whichever row is running; the run reports how much there was.
cpu_times() { awk '$1 == "cpu" { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9 }' /proc/stat; }
read -r TOTAL_BEFORE STEAL_BEFORE < <(cpu_times)
ROWS=(direct nginx portcullis demo demo-log jwt)
measure_row() { # row name
    case $1 in
        direct) measure direct $UPSTREAM_PORT - ;;
        nginx) measure nginx $NGINX_PROXY_PORT "$NGINX_PID" ;;
        portcullis) measure portcullis $PORTCULLIS_PORT "$PORTCULLIS_PID" ;;
        demo) measure demo $DEMO_PORT "$DEMO_PID" ;;
        demo-log)
            # The decision log grows by a line per request; each row starts it empty.
            : >"$WORK/logs/demo-log.out"
            measure demo-log $DEMO_LOG_PORT "$DEMO_LOG_PID"
            ;;
        jwt) measure jwt $JWT_PORT "$JWT_PID" "Authorization: Bearer $TOKEN" ;;
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
    done
done
read -r TOTAL_AFTER STEAL_AFTER < <(cpu_times)
column_median() { awk -v c="$2" '{ print $c }' "$WORK/$1.txt" | median; }
for row in "${ROWS[@]}"; do
    for column in 1 2 3 4; do
        printf -v "${row//-/_}_$column" '%s' "$(column_median "$row" "$column")"
    done
done

# The median over rounds of a row's column divided by another row's (nginx unless named)
# in the same round.
paired() { # row, column, [base row]
    paste -d ' ' "$WORK/$1.txt" "$WORK/${3:-nginx}.txt" |
        awk -v c="$2" -v n=$((4 + $2)) '$n > 0 { printf "%.4f\n", $c / $n }' | median |
        awk '{ printf "%.2f", $1 }'
}
# How many rounds the row met the goal in: req/s at least nginx's, p99 no worse.
rounds_met() { # row
    paste -d ' ' "$WORK/$1.txt" "$WORK/nginx.txt" |
        awk '$1 >= $5 && $3 <= $7 { met++ } END { printf "%d of %d", met, NR }'
}

echo
echo "wrk -t1 -c$CONNECTIONS -d$DURATION on CPU $LOAD_CPU; servers on CPU $SERVER_CPU; median of $ROUNDS rounds; ratios paired by round; $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| path | req/s | p50 ms | p99 ms | proxy CPU µs/request | req/s vs nginx | p99 vs nginx | CPU vs nginx | rounds meeting the goal |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
echo "| direct to upstream | $direct_1 | $direct_2 | $direct_3 | | | | | |"
echo "| nginx proxy | $nginx_1 | $nginx_2 | $nginx_3 | $nginx_4 | 1.00 | 1.00 | 1.00 | |"
row() { # label, row
    local v=${2//-/_}
    local rps=${v}_1 p50=${v}_2 p99=${v}_3 cpu=${v}_4
    echo "| $1 | ${!rps} | ${!p50} | ${!p99} | ${!cpu} | $(paired "$2" 1) | $(paired "$2" 3) | $(paired "$2" 4) | $(rounds_met "$2") |"
}
row "portcullis (allow all)" portcullis
row "portcullis (demo policy)" demo
row "portcullis (demo policy, decision log)" demo-log
row "portcullis (JWT, warm cache)" jwt
echo
echo "JWT row vs allow-all row, paired by round: req/s $(paired jwt 1 portcullis)×, CPU per request $(paired jwt 4 portcullis)×"
awk -v s=$((STEAL_AFTER - STEAL_BEFORE)) -v t=$((TOTAL_AFTER - TOTAL_BEFORE)) \
    'BEGIN { if (t > 0) printf "CPU time taken by other guests of the host during the run (steal): %.1f%%\n", 100 * s / t }'

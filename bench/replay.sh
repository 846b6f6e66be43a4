#!/usr/bin/env bash
# Replay speed: `portcullis replay` deciding LINES decision-log lines again under a
# candidate policy, on one CPU.
#
#   bash bench/replay.sh            # LINES=1000000 by default
#
# The lines are real: the demo gateway (config/portcullis.yaml, on ports of its own)
# answers a mix of requests (public pages, denials by IP, method and explicit deny,
# a staging header, an API key, tokens for the right and the wrong tenant, no
# credentials), writing its decision log to a file. That log is repeated to LINES lines.
# The candidate drops the reports rule and lets /admin in from anywhere, so replay finds
# changes in both directions and builds its groups, as it would before a real change.
#
# Reported: wall time, lines a second and peak memory of the replay, pinned to one CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

LINES=${LINES:-1000000}
PROXY_PORT=18281
ADMIN_PORT=18291

. bench/common.sh
need curl curl
need taskset util-linux
need /usr/bin/time time

cargo build --release -q
BINARY=$PWD/target/release/portcullis
WORK=$(mktemp -d)
GATEWAY=""
cleanup() {
    if [ -n "$GATEWAY" ]; then kill "$GATEWAY" 2>/dev/null || true; wait "$GATEWAY" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The recorded config: the demo's, on the bench ports, logging decisions to a file.
cp -r config/keys config/policies "$WORK/"
sed -e "s|addr: 127.0.0.1:8080|addr: 127.0.0.1:$PROXY_PORT|" \
    -e "s|addr: 127.0.0.1:9090|addr: 127.0.0.1:$ADMIN_PORT|" \
    -e "s|decisions: log |decisions: $WORK/decisions.log |" \
    -e "s|watch: true|watch: false|" \
    config/portcullis.yaml >"$WORK/recorded.yaml"
grep -q "decisions: $WORK/decisions.log" "$WORK/recorded.yaml"

# The candidate: the same config and policy, less the reports rule, the admin console
# open to every address.
mkdir "$WORK/candidate"
cp -r config/keys "$WORK/candidate/"
mkdir "$WORK/candidate/policies"
sed -e '/^  - id: reports$/,/^$/d' -e 's|when: { ip: \["@office"\] }|when: {}|' \
    config/policies/demo.yaml >"$WORK/candidate/policies/demo.yaml"
grep -q 'id: reports' "$WORK/candidate/policies/demo.yaml" && { echo "candidate still has the reports rule" >&2; exit 1; }
cp "$WORK/recorded.yaml" "$WORK/candidate/candidate.yaml"
"$BINARY" validate -c "$WORK/candidate/candidate.yaml" >/dev/null

"$BINARY" --log-level error run -c "$WORK/recorded.yaml" 2>"$WORK/gateway.err" &
GATEWAY=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break
    sleep 0.05
done
curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null || { cat "$WORK/gateway.err" >&2; exit 1; }

token() { # subject, tenant
    "$BINARY" token --key config/keys/demo-signing-key.pem --kid demo \
        --issuer https://demo.portcullis.local/ --audience demo-api --sub "$1" \
        --role editor --role reader --scope orders:write --scope reports:read --claim "tenant=$2"
}
ACME=$(token alice acme)
GLOBEX=$(token bob globex)
URL=http://127.0.0.1:$PROXY_PORT
for i in $(seq 10); do
    curl -s -o /dev/null "$URL/public/page-$i?q=$i"
    curl -s -o /dev/null "$URL/admin/users/$i"
    curl -s -o /dev/null "$URL/public/internal/notes-$i"
    curl -s -o /dev/null -X POST "$URL/public/form-$i"
    curl -s -o /dev/null -H 'X-Environment: staging' "$URL/api/items/$i"
    curl -s -o /dev/null -H 'X-Environment: production' "$URL/api/items/$i"
    curl -s -o /dev/null -H 'X-Api-Key: demo-key' "$URL/reports/q$i"
    curl -s -o /dev/null "$URL/reports/q$i"
    curl -s -o /dev/null -H "Authorization: Bearer $ACME" "$URL/tenants/acme/orders/$i"
    curl -s -o /dev/null -H "Authorization: Bearer $GLOBEX" "$URL/tenants/acme/orders/$i"
    curl -s -o /dev/null -H "Authorization: Bearer $ACME" "$URL/exports/e$i"
done
kill "$GATEWAY"
wait "$GATEWAY" 2>/dev/null || true
GATEWAY=""

RECORDED=$(wc -l <"$WORK/decisions.log")
[ "$RECORDED" -ge 100 ] || { echo "only $RECORDED decision lines were recorded" >&2; exit 1; }
awk -v lines="$LINES" '{ line[NR] = $0 } END { for (i = 0; i < lines; i++) print line[i % NR + 1] }' \
    "$WORK/decisions.log" >"$WORK/replay.log"
SIZE=$(du -m "$WORK/replay.log" | cut -f1)

taskset -c 1 /usr/bin/time -f "%e %M" -o "$WORK/time" \
    "$BINARY" replay -c "$WORK/candidate/candidate.yaml" --format json "$WORK/replay.log" >"$WORK/report" || true
read -r TAKEN PEAK_KB <"$WORK/time"

echo "recorded $RECORDED decision lines, repeated to $LINES ($SIZE MB)"
python3 - "$WORK/report" "$LINES" "$TAKEN" "$PEAK_KB" <<'PY'
import json, sys
report, lines, taken, peak_kb = json.load(open(sys.argv[1])), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
if report["lines"] != lines:
    sys.exit(f"replay read {report['lines']} lines of {lines}")
changed = report["changed"]
print(f"replayed {report['replayed']}, unchanged {report['unchanged']}, allow→deny {changed['allow_to_deny']}, "
      f"deny→allow {changed['deny_to_allow']}, reason or rule {changed['reason_or_rule']}, "
      f"undecidable {report['undecidable']['count']}, not replayed {sum(report['not_replayed'].values())}")
print(f"replay: {lines} lines in {taken:.2f} s on one CPU = {lines / taken:,.0f} lines/s, peak RSS {peak_kb / 1024:.1f} MB")
PY

#!/usr/bin/env bash
# Prometheus checks: the /metrics text of a gateway that has served allowed, denied and
# refused requests passes `promtool check metrics` with no warnings; the scrape config
# and the alert rules in deploy/prometheus/ load, the alerts' unit tests pass, and the
# Grafana dashboard's queries parse.
# Installs Debian's prometheus package (for promtool) when it is missing. Run from the
# repository root:
#   bash .ci/prometheus-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

. .ci/gateway.sh

if ! command -v promtool >/dev/null; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq prometheus >/dev/null
fi

promtool check config deploy/prometheus/prometheus.yaml
promtool test rules deploy/prometheus/alerts.test.yaml

# The dashboard's queries parse: each becomes a recording rule for promtool to check, with
# Grafana's variables given values.
python3 - deploy/grafana/portcullis.json >"$work/dashboard-rules.yaml" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
exprs += [annotation["expr"] for annotation in dashboard["annotations"]["list"] if "expr" in annotation]
print("groups:\n  - name: dashboard\n    rules:")
for index, expr in enumerate(exprs):
    expr = expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$instance", ".*")
    print(f"      - record: dashboard:query_{index}\n        expr: {json.dumps(expr)}")
PY
promtool check rules "$work/dashboard-rules.yaml"

start_demo_gateway

# Traffic of every kind the demo makes: allowed, denied (403 and 401), refused (400:
# a standard method in another case), and a reload.
expect() { # status, curl arguments...
    local want=$1 got
    shift
    got=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$@")
    [ "$got" = "$want" ] || { echo "curl $*: answered $got, expected $want"; exit 1; }
}
expect 200 "http://$addr/public/docs"
expect 403 "http://$addr/admin/users"
expect 401 "http://$addr/reports/q3"
expect 200 -H 'X-Api-Key: demo-key' "http://$addr/reports/q3"
expect 400 -X delete "http://$addr/public/docs"
curl -sf --max-time 30 -X POST "http://$admin/reload" >/dev/null

curl -sf --max-time 10 "http://$admin/metrics" >"$work/metrics"
# promtool prints lint findings (and may still exit 0): any output is a failure.
problems=$(promtool check metrics <"$work/metrics" 2>&1) || true
[ -z "$problems" ] || { echo "promtool check metrics:"; echo "$problems"; exit 1; }
for name in portcullis_requests_total portcullis_rule_matches_total portcullis_decision_duration_seconds \
    portcullis_request_duration_seconds portcullis_policy_reloads_total portcullis_policy_info \
    portcullis_policy_rules portcullis_connections_active portcullis_build_info; do
    grep -q "^$name" "$work/metrics" || { echo "/metrics lacks $name"; exit 1; }
done
# Exactly the one reload asked for: nothing the gateway writes (its log sits beside the
# config) made it reload again.
grep -qx 'portcullis_policy_reloads_total{result="ok"} 1' "$work/metrics" ||
    { echo "expected exactly one reload:"; grep portcullis_policy_reloads_total "$work/metrics"; exit 1; }
echo "prometheus: metrics, scrape config, alert rules and their tests ok"

#!/usr/bin/env bash
# The shipped YAML files against `portcullis schema`, and the decision-log lines of every
# sink (and of GET /decisions) against `portcullis schema decision-log`, with a JSON Schema
# validator (python3-jsonschema, installed from Debian when missing). Run from the
# repository root:
#   bash .ci/schema-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import jsonschema, yaml' 2>/dev/null; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-jsonschema python3-yaml >/dev/null
fi

source .ci/gateway.sh
cargo build --quiet --locked
for kind in config policy cases api-keys decision-log; do
    target/debug/portcullis schema "$kind" >"$work/$kind.json"
done

python3 - "$work" <<'PY'
import glob, json, sys
import jsonschema, yaml

work = sys.argv[1]
files = {
    "config": ["config/portcullis.yaml", "deploy/docker/portcullis.yaml",
               "deploy/kubernetes/base/config/portcullis.yaml", "deploy/compose/config/portcullis.yaml"],
    "policy": sorted(glob.glob("config/policies/*.yaml") + glob.glob("deploy/kubernetes/base/policies/*.yaml")),
    "cases": sorted(glob.glob("config/tests/*.yaml")),
    "api-keys": sorted(glob.glob("deploy/kubernetes/base/secrets/*.yaml")),
}
failed = 0
for kind, paths in files.items():
    schema = json.load(open(f"{work}/{kind}.json"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in paths:
        errors = list(validator.iter_errors(yaml.safe_load(open(path))))
        for error in errors:
            print(f"{path}: {'.'.join(map(str, error.absolute_path))}: {error.message}")
        failed += len(errors)
        print(f"{path}: {'ok' if not errors else 'INVALID'} against the {kind} schema")
# The schema must also say no to what portcullis refuses.
bad = {"listen": [{"addr": "127.0.0.1:0", "tsl": True}]}
config_schema = json.load(open(f"{work}/config.json"))
if jsonschema.Draft202012Validator(config_schema).is_valid(bad):
    print("the config schema accepts an unknown key")
    failed += 1
sys.exit(1 if failed else 0)
PY

# Decision lines from the demo gateway, with each sink: allowed, denied, 401s (no key, a
# refused token), a token's caller with claims, and a request refused before deciding.
token=$(target/debug/portcullis token --key config/keys/demo-signing-key.pem --kid demo \
    --issuer https://demo.portcullis.local/ --audience demo-api --sub alice \
    --role editor --scope orders:write --claim tenant=acme)
for sink in log stdout decisions.log; do
    start_demo_gateway
    sed -i "s|^  decisions: log |  decisions: $sink |" "$work/gw.yaml"
    curl -fsS -X POST "http://$admin/reload" >/dev/null
    for path in /public/hello /admin /reports/q3 /public/internal/x; do
        curl -s -o /dev/null "http://$addr$path"
    done
    curl -s -o /dev/null -H 'X-Api-Key: demo-key' -H 'X-Environment: staging' "http://$addr/reports/q3"
    curl -s -o /dev/null -H "Authorization: Bearer $token" "http://$addr/tenants/acme/orders/7"
    curl -s -o /dev/null -H "Authorization: Bearer $token" "http://$addr/tenants/globex/orders/7"
    curl -s -o /dev/null -H 'Authorization: Bearer not.a.token' "http://$addr/tenants/acme/orders/7"
    curl -s -o /dev/null "http://$addr/a%2fb"
    curl -fsS "http://$admin/decisions?limit=1000" >"$work/recent.json"
    stop_gateway
    pid=""
    case "$sink" in
        decisions.log) lines="$work/decisions.log" ;;
        *) lines="$work/log" ;;
    esac
    python3 - "$work/decision-log.json" "$lines" "$work/recent.json" "$sink" <<'PY'
import json, sys
import jsonschema

schema_path, lines_path, recent_path, sink = sys.argv[1:]
validator = jsonschema.Draft202012Validator(json.load(open(schema_path)),
                                            format_checker=jsonschema.FormatChecker())
lines = []
for text in open(lines_path):
    try:
        line = json.loads(text)
    except ValueError:
        continue
    if "decision.reason" in line:
        lines.append(line)
recent = json.load(open(recent_path))["decisions"]
failed = 0
for where, found in ((f"sink {sink}", lines), ("GET /decisions", recent)):
    if len(found) != 9:
        print(f"{where}: {len(found)} decision lines, not 9")
        failed += 1
    for line in found:
        for error in validator.iter_errors(line):
            print(f"{where}: {line['request.id']}: {'.'.join(map(str, error.absolute_path))}: {error.message}")
            failed += 1
kinds = sorted({line["decision.reason"] for line in lines})
print(f"sink {sink}: {len(lines)} lines ({', '.join(kinds)}) and GET /decisions: "
      f"{'ok' if not failed else 'INVALID'} against the decision-log schema")
sys.exit(1 if failed else 0)
PY
done

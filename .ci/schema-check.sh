#!/usr/bin/env bash
# The shipped YAML files against `portcullis schema`, with a JSON Schema validator
# (python3-jsonschema, installed from Debian when missing). Run from the repository root:
#   bash .ci/schema-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import jsonschema, yaml' 2>/dev/null; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-jsonschema python3-yaml >/dev/null
fi

cargo build --quiet --locked
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for kind in config policy cases api-keys; do
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

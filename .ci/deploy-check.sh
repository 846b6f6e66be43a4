#!/usr/bin/env bash
# The deployment kits, each through a real tool of its own kind:
# - Kubernetes: the kustomize base and overlay rendered by `kubectl kustomize` (Debian's
#   kubernetes-client is installed when no kubectl is present), every manifest and the
#   rendered output validated by kubernetes-validate (PyPI) in strict mode against
#   Kubernetes 1.30 (the oldest the kit supports: preStop sleep) and the newest it knows,
#   and the ServiceMonitor against the Prometheus Operator's own schema
#   (@kubernetes-models/prometheus-operator, npm).
# - Compose: `docker compose config` where the plugin is present, else the compose-spec
#   parser (PyPI compose-spec, which refuses unknown keys); the Prometheus config it
#   mounts goes through promtool as mounted.
# - systemd: `systemd-analyze verify` and `systemd-analyze security` (exposure at most
#   2.0) when systemd-analyze is present.
# The files the kits hold for portcullis itself (configs, policies, key files) are loaded
# by the deploy tests of `cargo test`. Python and npm tools go to target/ci-tools.
# Run from the repository root:
#   bash .ci/deploy-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tools=target/ci-tools
mkdir -p "$tools"
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"

venv="$tools/venv"
if ! "$venv/bin/python" -c 'import kubernetes_validate, compose_spec, yaml' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        kubernetes-validate==1.37.0 compose-spec==0.2.1 PyYAML
fi
py="$venv/bin/python"

echo "-- Kubernetes"
if ! command -v kubectl >/dev/null; then
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq kubernetes-client >/dev/null
fi
kube=deploy/kubernetes
kubectl kustomize "$kube/base" >"$work/base.yaml"
# An old kubectl (Debian's) knows only files as resources; the overlay names a directory.
if kubectl kustomize "$kube/overlays/prometheus-operator" >"$work/overlay.yaml" 2>"$work/overlay.err"; then
    rendered=("$work/base.yaml" "$work/overlay.yaml")
    what="the rendered base and overlay"
else
    echo "this kubectl cannot render the overlay (it needs kustomize 4 or later):"
    cat "$work/overlay.err"
    rendered=("$work/base.yaml")
    what="the rendered base (not the overlay)"
fi
# Every resource file, and what the kustomizations render.
mapfile -t manifests < <(find "$kube" -name '*.yaml' ! -name kustomization.yaml ! -path '*/config/*' \
    ! -path '*/policies/*' ! -path '*/secrets/*' ! -name servicemonitor.yaml | sort)
for version in 1.30.0 1.37.0; do
    "$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" \
        "${manifests[@]}" "${rendered[@]}" 2>&1 |
        { grep -v "Couldn't find schema for kind ServiceMonitor" || true; } | tee "$work/validate.out"
    if grep -q . "$work/validate.out"; then exit 1; fi
done
echo "kubernetes-validate --strict: ${#manifests[@]} manifests and $what are valid for 1.30 and 1.37"
# The rendered base holds what the kit promises.
"$py" - "$work/base.yaml" <<'PY'
import sys, yaml
kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in yaml.safe_load_all(open(sys.argv[1])) if d)
want = ["ConfigMap/portcullis-config", "ConfigMap/portcullis-policies", "Deployment/portcullis",
        "HorizontalPodAutoscaler/portcullis", "NetworkPolicy/portcullis", "PodDisruptionBudget/portcullis",
        "Secret/portcullis-secrets", "Service/portcullis", "Service/portcullis-admin",
        "ServiceAccount/portcullis"]
if kinds != want:
    sys.exit(f"the base renders {kinds}, expected {want}")
PY

npm_dir="$tools/npm"
if [ ! -d "$npm_dir/node_modules/@kubernetes-models/prometheus-operator" ]; then
    npm install --silent --no-audit --no-fund --prefix "$npm_dir" @kubernetes-models/prometheus-operator@6.0.0
fi
cat >"$npm_dir/check-servicemonitor.mjs" <<'JS'
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
for (const doc of JSON.parse(readFileSync(0, "utf8"))) {
  new ServiceMonitor(doc).validate();
}
JS
"$py" -c 'import json, sys, yaml; print(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d and d["kind"] == "ServiceMonitor"]))' \
    "$kube/overlays/prometheus-operator/servicemonitor.yaml" "${rendered[@]}" >"$work/monitors.json"
node "$npm_dir/check-servicemonitor.mjs" <"$work/monitors.json"
echo "ServiceMonitor: valid against the Prometheus Operator's schema"

echo "-- Compose"
compose=deploy/compose/compose.yaml
if docker compose version >/dev/null 2>&1; then
    docker compose -f "$compose" config --quiet
    echo "docker compose config: $compose is valid"
else
    "$py" - "$compose" <<'PY'
import sys
from compose_spec import PyCompose
path = sys.argv[1]
try:
    project = PyCompose.from_yaml(open(path).read())
except Exception as err:
    sys.exit(f"{path}: {err}")
print(f"compose-spec: {path} is valid ({', '.join(project.service_names())})")
PY
fi
# Every file or directory the compose file mounts exists.
"$py" - "$compose" <<'PY'
import os, sys, yaml
path = sys.argv[1]
base = os.path.dirname(path)
for name, service in yaml.safe_load(open(path))["services"].items():
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith(".") and not os.path.exists(os.path.join(base, source)):
            sys.exit(f"{path}: services.{name} mounts {source}, which does not exist")
PY
# The Prometheus config as the container sees it: the alert rules beside it.
mkdir -p "$work/prometheus"
cp deploy/compose/prometheus.yaml "$work/prometheus/prometheus.yml"
cp deploy/prometheus/alerts.yaml "$work/prometheus/alerts.yaml"
if ! command -v promtool >/dev/null; then
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq prometheus >/dev/null
fi
promtool check config "$work/prometheus/prometheus.yml"

echo "-- systemd"
unit=deploy/systemd/portcullis.service
if command -v systemd-analyze >/dev/null; then
    cargo build --quiet --locked
    # verify wants the commands to exist: the unit names the installed path.
    mkdir -p "$work/systemd"
    sed "s|/usr/local/bin/portcullis|$PWD/target/debug/portcullis|g" "$unit" >"$work/systemd/portcullis.service"
    # verify exits 0 on unknown keys and only says so: anything it prints is a failure.
    problems=$(systemd-analyze verify "$work/systemd/portcullis.service" 2>&1) || true
    [ -z "$problems" ] || { echo "systemd-analyze verify $unit:"; echo "$problems"; exit 1; }
    systemd-analyze security --offline=yes --threshold=20 "$work/systemd/portcullis.service" >"$work/security" ||
        { cat "$work/security"; echo "$unit: exposure above 2.0"; exit 1; }
    echo "systemd-analyze: $unit verifies; $(tail -1 "$work/security" | sed 's/^→ //')"
else
    echo "systemd-analyze is not present: $unit is checked by the deploy tests only"
fi
echo "deploy kits: Kubernetes, Compose and systemd files are valid"

#!/usr/bin/env bash
# Country rules against a real public database: the CC0 ip-location-db country file from
# the npm registry (see .ci/geoip-database.sh).
# The release binary serves with it behind a trusted proxy (this script, sending
# X-Forwarded-For); for each well-known address, the country in its decision log must be
# what the Python maxminddb reader (PyPI) finds in the same file. Run from the repository
# root:
#   bash .ci/geoip-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

database=$(bash .ci/geoip-database.sh)

venv=target/ci-tools/venv
if ! "$venv/bin/python" -c 'import maxminddb' 2>/dev/null; then
    mkdir -p target/ci-tools
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check maxminddb==3.2.0
fi

. .ci/gateway.sh
fail() { echo "geoip check: $*"; [ -f "$work/log" ] && tail -20 "$work/log"; exit 1; }

cat >"$work/policy.yaml" <<'POLICY'
rules:
  - { id: embargo, effect: deny, when: { countries: [KP] } }
  - { id: everyone-else, effect: allow }
POLICY
cat >"$work/gw.yaml" <<CONF
listen: [{ addr: 127.0.0.1:0 }]
admin: { addr: 127.0.0.1:0 }
network:
  trusted_proxies: [127.0.0.1]
  geoip: { database: $database }
upstreams: { app: { targets: ["builtin:echo"] } }
routes: [{ id: main, upstream: app }]
policy: { files: [policy.yaml] }
log: { decisions: decisions.log }
CONF

cargo build --release --quiet --locked
start_gateway target/release/portcullis "$work/gw.yaml"
ready=$(curl -s --max-time 10 "http://$admin/readyz")
[ "$ready" = "ready" ] || fail "not ready with the database: $ready"

# Resolvers, registries and networks on every continent, IPv4 and IPv6, an IPv4-mapped
# address, a private one (XX), and one the embargo names.
addresses=(8.8.8.8 1.1.1.1 9.9.9.9 81.2.69.142 193.0.6.139 5.62.56.1 200.160.0.8
    133.242.0.1 41.0.0.1 175.45.176.1 10.0.0.1 2001:4860:4860::8888 2a00:1450:4001::1
    ::ffff:8.8.8.8)
for address in "${addresses[@]}"; do
    status=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -H "X-Forwarded-For: $address" "http://$addr/x")
    case "$address" in
    175.45.176.1) [ "$status" = "403" ] || fail "$address (KP) was not stopped by the embargo: $status" ;;
    *) [ "$status" = "200" ] || fail "$address: $status" ;;
    esac
done
for _ in $(seq 50); do
    [ "$(wc -l <"$work/decisions.log")" -ge "${#addresses[@]}" ] && break
    sleep 0.1
done
curl -s --max-time 10 "http://$admin/metrics" >"$work/metrics"

"$venv/bin/python" - "$database" "$work/decisions.log" "$work/metrics" "${#addresses[@]}" <<'CHECK'
import ipaddress, json, sys
import maxminddb

database, log, metrics, expected_lines = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
reader = maxminddb.open_database(database)
lines = [json.loads(line) for line in open(log)]
if len(lines) != expected_lines:
    sys.exit(f"geoip check: {len(lines)} decision-log lines, not {expected_lines}")
found = 0
for line in lines:
    ip = ipaddress.ip_address(line["client.ip"])
    # The gateway looks up an IPv4-mapped address as the IPv4 address it carries.
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    record = reader.get(str(ip)) or {}
    expected = record.get("country_code") or "XX"
    got = line["client.geo.country_iso_code"]
    print(f"  {line['client.ip']:<22} portcullis {got}  python maxminddb {expected}")
    if got != expected:
        sys.exit(f"geoip check: {line['client.ip']}: the gateway says {got}, maxminddb says {expected}")
    found += expected != "XX"
if found < expected_lines - 1:
    sys.exit(f"geoip check: only {found} addresses had a country; the database looks wrong")
series = {}
for text in open(metrics):
    if text.startswith("portcullis_geoip_"):
        name, value = text.rsplit(" ", 1)
        series[name] = float(value)
label = '{database="' + database + '"}'
build = series.get("portcullis_geoip_database_build_timestamp_seconds" + label)
if build != reader.metadata().build_epoch:
    sys.exit(f"geoip check: build timestamp {build}, metadata says {reader.metadata().build_epoch}")
if series.get('portcullis_geoip_lookups_total{result="found"}') != found:
    sys.exit(f"geoip check: lookups found {series}, expected {found}")
print(f"geoip: {len(lines)} addresses agree with python maxminddb; build epoch {int(build)}")
CHECK

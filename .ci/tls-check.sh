#!/usr/bin/env bash
# TLS with real clients: the release binary terminates TLS with certificates made here by
# openssl, and curl and openssl s_client speak to it: HTTPS verified with --cacert, HTTP/2
# by ALPN, a client certificate for an mtls rule, plain HTTP on the TLS port, and TLS 1.1
# refused. Installs Debian's curl and openssl when they are missing. Run from the
# repository root:
#   bash .ci/tls-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

. .ci/gateway.sh
fail() { echo "tls check: $*"; [ -f "$work/log" ] && tail -20 "$work/log"; exit 1; }

# A CA, a server certificate for localhost, and a client certificate with a SPIFFE ID.
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=portcullis CI CA" -keyout ca.key -out ca.pem 2>/dev/null
issue() { # name, subject, extensions
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
        -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
issue server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1"
issue client "/CN=ci-client" "subjectAltName=URI:spiffe://example.org/ns/ci/sa/client
extendedKeyUsage=clientAuth"
cd - >/dev/null

cat >"$work/policy.yaml" <<'POLICY'
rules:
  - { id: public, effect: allow, match: { paths: ["/public/**"] } }
  - id: workloads
    effect: allow
    match: { paths: ["/workloads/**"] }
    when: { mtls: { spiffe_ids: ["spiffe://example.org/ns/ci/*"] } }
POLICY
cat >"$work/gw.yaml" <<'CONF'
listen:
  - addr: 127.0.0.1:0
    tls: { cert: server.pem, key: server.key, client_ca: ca.pem }
admin: { addr: 127.0.0.1:0 }
upstreams: { app: { targets: ["builtin:echo"] } }
routes: [{ id: main, upstream: app }]
policy: { files: [policy.yaml] }
log: { decisions: off }
# Idle watchdog ticks every 250ms, for the idle HTTP/2 connection below.
limits: { header_read_timeout: 1s }
CONF

cargo build --release --quiet --locked
start_gateway target/release/portcullis "$work/gw.yaml"
port=${addr##*:}
url="https://localhost:$port"

# HTTPS, verified against the CA; the upstream hears https.
body=$(curl -sS --max-time 10 --cacert "$work/ca.pem" --http1.1 "$url/public/x")
grep -q '"x-forwarded-proto": "https"' <<<"$body" || fail "no X-Forwarded-Proto: https upstream: $body"
# HTTP/2 by ALPN.
version=$(curl -sS --max-time 10 --cacert "$work/ca.pem" --http2 -o /dev/null -w '%{http_version}' "$url/public/x")
[ "$version" = "2" ] || fail "curl --http2 spoke HTTP/$version"
# One HTTP/2 connection, a request every second. Between requests the connection goes
# idle: it frees its buffers and empties its HPACK table, and nghttp2 must follow.
answers=$(curl -sS --max-time 20 --cacert "$work/ca.pem" --http2 --rate 60/m \
    -o /dev/null -o /dev/null -o /dev/null -w '%{http_code} %{http_version} %{num_connects} %header{content-type}\n' \
    "$url/public/a" "$url/public/b" "$url/public/c")
[ "$answers" = $'200 2 1 application/json\n200 2 0 application/json\n200 2 0 application/json' ] ||
    fail "three HTTP/2 requests, an idle second apart, on one connection: $answers"
# A client certificate for the mtls rule; without one, 403 mtls_required.
status=$(curl -s --max-time 10 --cacert "$work/ca.pem" --cert "$work/client.pem" --key "$work/client.key" \
    -o /dev/null -w '%{http_code}' "$url/workloads/jobs")
[ "$status" = "200" ] || fail "with the client certificate: $status"
answer=$(curl -s --max-time 10 --cacert "$work/ca.pem" -D - "$url/workloads/jobs")
grep -q '^HTTP/2 403' <<<"$answer" && grep -qi '^x-portcullis-reason: mtls_required' <<<"$answer" ||
    fail "without a client certificate: $answer"
# Plain HTTP on the TLS port: a 400 that says to use https.
answer=$(curl -s --max-time 10 -D - "http://127.0.0.1:$port/public/x")
grep -q '^HTTP/1.1 400' <<<"$answer" && grep -q 'tls_required' <<<"$answer" || fail "plain HTTP: $answer"
# openssl s_client: ALPN h2 agreed, TLS 1.1 refused.
alpn=$(openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$work/ca.pem" \
    -alpn h2,http/1.1 </dev/null 2>/dev/null | grep -a '^ALPN protocol' || true)
[ "$alpn" = "ALPN protocol: h2" ] || fail "s_client -alpn h2: '$alpn'"
if openssl s_client -connect "127.0.0.1:$port" -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' </dev/null 2>/dev/null |
    grep -aq '^ *Protocol *: TLSv1.1'; then
    fail "a TLS 1.1 handshake succeeded"
fi
metrics=$(curl -s --max-time 10 "http://$admin/metrics")
grep -Eq '^portcullis_tls_handshake_errors_total\{listener="127.0.0.1:0",reason="protocol_version"\} [1-9]' <<<"$metrics" ||
    fail "the TLS 1.1 attempt was not counted: $(grep tls_handshake <<<"$metrics")"
grep -Eq '^portcullis_tls_handshake_errors_total\{listener="127.0.0.1:0",reason="plain_http"\} 1$' <<<"$metrics" ||
    fail "the plain HTTP request was not counted"
grep -q '^portcullis_tls_certificate_expiry_timestamp_seconds{host="localhost",listener="127.0.0.1:0"}' <<<"$metrics" ||
    fail "no certificate expiry gauge"
echo "tls: curl (HTTPS, HTTP/2, client certificate, plain HTTP) and openssl s_client (ALPN, TLS 1.1) ok"

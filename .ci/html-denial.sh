#!/usr/bin/env bash
# The HTML denial page in a real browser: serves the demo policy, loads a denied URL in
# headless Chromium, and checks the rendered text, that nothing but the page itself was
# loaded, and a screenshot.
# Installs Debian's chromium when it is missing. Run from the repository root:
#   bash .ci/html-denial.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi

. .ci/gateway.sh
start_demo_gateway

url="http://$addr/admin/users"
browse() {
    timeout 60 chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --no-first-run --user-data-dir="$work/profile" "$@" 2>/dev/null
}
browse --dump-dom "$url" >"$work/dom.html"
for text in "403 Forbidden" "Your network is not allowed for this path." \
    "ip_not_allowed" "admin-console" "Request ID" "How to request access"; do
    grep -qF "$text" "$work/dom.html" || { echo "the rendered page lacks: $text"; cat "$work/dom.html"; exit 1; }
done
if grep -qiE '<script|<link|<img|<iframe|src=' "$work/dom.html"; then
    echo "the page loads scripts or other assets:"; cat "$work/dom.html"; exit 1
fi
# The page names the request id of its own decision-log line (written within about
# 100 ms of the request).
for _ in $(seq 1 50); do
    grep -qF '"url.path":"/admin/users"' "$work/log" && break
    sleep 0.1
done
request_id=$(grep -F '"url.path":"/admin/users"' "$work/log" | head -1 |
    grep -o '"request.id":"[0-9A-Z]\{26\}"' | cut -d'"' -f4)
grep -qF "$request_id" "$work/dom.html" || { echo "the page lacks the request id $request_id"; exit 1; }

mkdir -p target
browse --screenshot="$work/denied.png" --window-size=900,700 "$url" >/dev/null
cp "$work/denied.png" target/html-denial.png
size=$(stat -c %s target/html-denial.png)
signature=$(head -c 8 target/html-denial.png | od -An -tx1 | tr -d ' \n')
[ "$signature" = "89504e470d0a1a0a" ] || { echo "the screenshot is not a PNG"; exit 1; }
# A blank 900x700 page compresses to about 3 KB; rendered text makes it several times larger.
[ "$size" -gt 8000 ] || { echo "the screenshot looks blank ($size bytes)"; exit 1; }
echo "html denial page: rendered text and screenshot ok (target/html-denial.png, $size bytes)"

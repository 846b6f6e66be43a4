#!/usr/bin/env bash
# The gateway's HTTP/1.1 framing decisions against the Python h11 library's, on a
# generated corpus of request heads and bodies (see .ci/framing-check.py).
# Installs h11 from PyPI into target/ci-tools/venv when it is missing. Run from the
# repository root:
#   bash .ci/framing-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/ci-tools/venv
if ! "$venv/bin/python" -c 'import h11' 2>/dev/null; then
    mkdir -p target/ci-tools
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check h11==0.16.0
fi

cargo build --quiet --locked
"$venv/bin/python" .ci/framing-check.py target/debug/portcullis 5000 15

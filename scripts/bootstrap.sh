#!/usr/bin/env bash
# Creates .venv (if needed) and installs polycache with every extra and the dev tools.
# Safe to run again: it only installs what is missing. Used by demo.sh, test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "polycache needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# uv resolves aioboto3's exact botocore pins in seconds where pip backtracks for minutes.
if [ ! -x .venv/bin/uv ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
fi
.venv/bin/uv pip install --quiet --python .venv/bin/python -e '.[all]' --group dev
# cargo-lambda's wheel carries only its binary; its Python dependencies (ziglang) are not
# needed for `cargo lambda watch --only-lambda-apis`, the Lambda APIs stand-in.
.venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps 'cargo-lambda==1.9.2'

# `cargo lambda ...` is dispatched by cargo itself.
if ! command -v cargo >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq cargo >/dev/null
    else
        echo "warning: cargo is not on PATH; the Lambda API tests need it (apt-get install cargo)" >&2
    fi
fi

# The Redis backend's tests start real redis-server processes (standalone, TLS, ACL, cluster).
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    else
        echo "warning: redis-server is not on PATH; the Redis tests need it (apt-get install redis-server)" >&2
    fi
fi

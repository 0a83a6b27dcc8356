#!/usr/bin/env bash
# The whole test suite: lint, types, the documentation build, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

# One command a line: under `set -e`, a failure inside an `a && b` list would not stop the script.
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy --strict"
mypy
echo "== mkdocs build --strict"
site="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
echo "== pytest"
status=0
pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here, not a pass" >&2
    exit 1
fi
exit "$status"

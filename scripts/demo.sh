#!/usr/bin/env bash
# The main job: a simulated run of Lambda invocations on the embedded default (memory backend,
# loaders against a local moto server), printing hits, misses, stale serves and load counts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"

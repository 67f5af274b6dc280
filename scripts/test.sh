#!/usr/bin/env bash
# Set up (when needed) and run the test suite: `bash scripts/test.sh [pytest args]`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"
# every core (pytest-xdist); a module's tests share one worker, so a module-scoped fixture (the shared trainer runs)
# runs once (--dist loadfile: loadgroup's xdist_group marks are ignored under pytest 9); modules in the order
# tests/conftest.py gives them (the real trainer runs first), not reordered by their number of tests
exec "${RPG_VENV:-$repo/.venv}/bin/python" -m pytest tests -n auto --dist loadfile --no-loadscope-reorder "$@"

#!/usr/bin/env bash
# Set up (when needed) and run the test suite: `bash scripts/test.sh [pytest args]`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"
exec "${RPG_VENV:-$repo/.venv}/bin/python" -m pytest tests "$@"

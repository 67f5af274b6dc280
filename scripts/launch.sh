#!/usr/bin/env bash
# The one launcher of the paper's experiments: sets up Python when needed, then runs recipe/rpg/launch.py, which
# turns a few variables into the Hydra command of `python -m recipe.rpg.main_rpg` (dry run, run directory).
#   METHOD=rpg_rkl CONTEXT=4k bash scripts/launch.sh [--dry-run] [--dump-config PATH] [--skip-data-check] [key=value ...]
# The presets scripts/run_*.sh only set METHOD. Variables: see recipe/rpg/launch.py or the README.
# Python: $RPG_RUN_PYTHON if set; else the active virtualenv/conda env if it has rpg_ext and verl; else
# scripts/setup.sh (idempotent) and ${RPG_VENV:-<repo>/.venv}/bin/python.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

py=""
if [ -n "${RPG_RUN_PYTHON:-}" ]; then
    py="$RPG_RUN_PYTHON"
else
    for env_dir in "${VIRTUAL_ENV:-}" "${CONDA_PREFIX:-}"; do
        if [ -n "$env_dir" ] && [ -x "$env_dir/bin/python" ] \
            && "$env_dir/bin/python" -c "import rpg_ext, verl" >/dev/null 2>&1; then
            py="$env_dir/bin/python"
            break
        fi
    done
fi
if [ -z "$py" ]; then
    bash "$repo/scripts/setup.sh"
    py="${RPG_VENV:-$repo/.venv}/bin/python"
fi

export RPG_PRESET_SCRIPT="${RPG_PRESET_SCRIPT:-scripts/launch.sh}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m recipe.rpg.launch "$@"

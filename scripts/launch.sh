#!/usr/bin/env bash
# The one launcher of the paper's experiments: finds (or sets up) the Python environment, then runs
#   python -m recipe.rpg.launch [--dry-run] [--dump-config PATH] [--skip-data-check] [--verbose] [key=value ...]
# Every key=value is a Hydra override of recipe/rpg/config/rpg_trainer.yaml (method=..., context=..., any verl key);
# the short variables (MODEL, CONTEXT, STEPS, BETA, ...) are aliases for such overrides: recipe/rpg/launch.py ALIASES.
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

export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m recipe.rpg.launch "$@"

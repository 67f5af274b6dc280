#!/usr/bin/env bash
# DAPO baseline (vanilla loss, clip-higher (0.2, 0.28), dynamic sampling, overlong shaping, no KL).
# Usage: bash scripts/run_dapo.sh [--dry-run] [--dump-config PATH] [--skip-data-check] [key=value ...]
# Variables (CONTEXT=2k|4k|8k, MODEL, CLIP, BETA, LR, GPUS_PER_NODE, NNODES, BACKEND, ...): scripts/launch.sh.
export METHOD=dapo
export RPG_PRESET_SCRIPT="scripts/run_dapo.sh"
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" "$@"

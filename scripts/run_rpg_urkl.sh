#!/usr/bin/env bash
# RPG-URKL (fully differentiable RPG loss rpg_urkl, Algorithm 1; paper Tables 3 (8k), 5 (4k), 6 (2k), 7, 8).
# Usage: bash scripts/run_rpg_urkl.sh [--dry-run] [--dump-config PATH] [--skip-data-check] [key=value ...]
# Variables (CONTEXT=2k|4k|8k, MODEL, CLIP, BETA, LR, GPUS_PER_NODE, NNODES, BACKEND, ...): scripts/launch.sh.
export METHOD=rpg_urkl
export RPG_PRESET_SCRIPT="scripts/run_rpg_urkl.sh"
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" "$@"

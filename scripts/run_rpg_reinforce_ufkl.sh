#!/usr/bin/env bash
# RPG-REINFORCE-UFKL (REINFORCE-style loss rpg_reinforce_ufkl with RPG-Style Clip, Algorithm 2; Tables 3 (8k), 5 (4k), 6 (2k), 7, 8).
# Usage: bash scripts/run_rpg_reinforce_ufkl.sh [--dry-run] [--dump-config PATH] [--skip-data-check] [key=value ...]
# Variables (CONTEXT=2k|4k|8k, MODEL, CLIP, BETA, LR, GPUS_PER_NODE, NNODES, BACKEND, ...): scripts/launch.sh.
export METHOD=rpg_reinforce_ufkl
export RPG_PRESET_SCRIPT="scripts/run_rpg_reinforce_ufkl.sh"
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" "$@"

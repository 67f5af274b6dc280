#!/usr/bin/env bash
# RPG-REINFORCE-FKL (REINFORCE-style loss rpg_reinforce_fkl with RPG-Style Clip, Algorithm 2; Table 8, Qwen2.5-7B-Instruct).
# Usage: bash scripts/run_rpg_reinforce_fkl.sh [--dry-run] [--dump-config PATH] [--skip-data-check] [key=value ...]
# Variables (CONTEXT=2k|4k|8k, MODEL, CLIP, BETA, LR, GPUS_PER_NODE, NNODES, BACKEND, ...): scripts/launch.sh.
export METHOD=rpg_reinforce_fkl
export RPG_PRESET_SCRIPT="scripts/run_rpg_reinforce_fkl.sh"
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" "$@"

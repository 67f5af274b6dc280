#!/usr/bin/env bash
# REINFORCE++-baseline (verl's reinforce_plus_plus_baseline estimator, token-level KL in the reward).
# Usage: bash scripts/run_reinforce_pp_baseline.sh [--dry-run] [--dump-config PATH] [--skip-data-check] [key=value ...]
# Variables (CONTEXT=2k|4k|8k, MODEL, CLIP, BETA, LR, GPUS_PER_NODE, NNODES, BACKEND, ...): scripts/launch.sh.
export METHOD=reinforce_pp_baseline
export RPG_PRESET_SCRIPT="scripts/run_reinforce_pp_baseline.sh"
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" "$@"

#!/usr/bin/env bash
# GRPO baseline (vanilla loss, std-normalized group advantages, low_var_kl KL loss 1e-3 against the initial model).
# Clip (0.2, 0.2) as in Section 5; Appendix H states (0.1, 0.1): CLIP=0.1,0.1 bash scripts/run_grpo.sh
# Usage: bash scripts/run_grpo.sh [--dry-run] [--dump-config PATH] [--skip-data-check] [key=value ...]
# Variables (CONTEXT=2k|4k|8k, MODEL, CLIP, BETA, LR, GPUS_PER_NODE, NNODES, BACKEND, ...): scripts/launch.sh.
export METHOD=grpo
export RPG_PRESET_SCRIPT="scripts/run_grpo.sh"
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" "$@"

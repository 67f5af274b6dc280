#!/usr/bin/env bash
# GRPO with its KL corrected (paper Section 2.2): verl's vanilla loss + 1e-3 x the importance-weighted k3 (RPG's
# urkl) against the fixed initial model, in place of verl's unweighted low_var_kl loss. Compare with run_grpo.sh.
# Usage: bash scripts/run_grpo_corrected.sh [--dry-run] [--dump-config PATH] [--skip-data-check] [key=value ...]
export METHOD=grpo_corrected
export RPG_PRESET_SCRIPT="scripts/run_grpo_corrected.sh"
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" "$@"

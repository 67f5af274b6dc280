#!/usr/bin/env bash
# GRPO: verl's vanilla loss, std-normalized group advantages, low_var_kl KL loss 1e-3 (Tables 3, 5-8).
# Clip (0.2, 0.2) as in Section 5; Appendix H's (0.1, 0.1): CLIP=0.1,0.1 bash scripts/run_grpo.sh
# Settings: recipe/rpg/config/method/grpo.yaml. Extra arguments: --dry-run, --dump-config PATH, key=value ...
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" method=grpo "$@"

#!/usr/bin/env bash
# GRPO with its KL corrected (Section 2.2): importance-weighted k3 (urkl) 1e-3 against the initial model.
# Settings: recipe/rpg/config/method/grpo_corrected.yaml. Extra arguments: --dry-run, --dump-config PATH, key=value ...
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" method=grpo_corrected "$@"

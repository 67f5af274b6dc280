#!/usr/bin/env bash
# RPG-REINFORCE-FKL: REINFORCE-style RPG loss, forward KL (Algorithm 2; Table 8).
# Settings: recipe/rpg/config/method/rpg_reinforce_fkl.yaml. Extra arguments: --dry-run, --dump-config PATH, key=value ...
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" method=rpg_reinforce_fkl "$@"

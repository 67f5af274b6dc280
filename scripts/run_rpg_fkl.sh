#!/usr/bin/env bash
# RPG-FKL: fully differentiable RPG loss, forward KL (Algorithm 1; paper Table 8).
# Settings: recipe/rpg/config/method/rpg_fkl.yaml. Extra arguments: --dry-run, --dump-config PATH, key=value ...
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" method=rpg_fkl "$@"

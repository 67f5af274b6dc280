#!/usr/bin/env bash
# RPG-UFKL: fully differentiable RPG loss, unnormalized forward KL (Algorithm 1; Tables 3, 5-8).
# Settings: recipe/rpg/config/method/rpg_ufkl.yaml. Extra arguments: --dry-run, --dump-config PATH, key=value ...
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" method=rpg_ufkl "$@"

#!/usr/bin/env bash
# RPG-URKL: fully differentiable RPG loss, unnormalized reverse KL (Algorithm 1; Tables 3, 5-8).
# Settings: recipe/rpg/config/method/rpg_urkl.yaml. Extra arguments: --dry-run, --dump-config PATH, key=value ...
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" method=rpg_urkl "$@"

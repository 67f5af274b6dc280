#!/usr/bin/env bash
# RPG-REINFORCE-URKL: REINFORCE-style RPG loss, unnormalized reverse KL (Algorithm 2; Tables 3, 5-8).
# Settings: recipe/rpg/config/method/rpg_reinforce_urkl.yaml. Extra arguments: --dry-run, --dump-config PATH, key=value ...
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" method=rpg_reinforce_urkl "$@"

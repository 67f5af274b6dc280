#!/usr/bin/env bash
# RPG-REINFORCE-UFKL: REINFORCE-style RPG loss, unnormalized forward KL (Algorithm 2; Tables 3, 5-8).
# Settings: recipe/rpg/config/method/rpg_reinforce_ufkl.yaml. Extra arguments: --dry-run, --dump-config PATH, key=value ...
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" method=rpg_reinforce_ufkl "$@"

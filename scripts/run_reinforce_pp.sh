#!/usr/bin/env bash
# REINFORCE++: verl's reinforce_plus_plus estimator, k1 KL penalty 1e-3 in the reward (Tables 5, 7, 8).
# Settings: recipe/rpg/config/method/reinforce_pp.yaml. Extra arguments: --dry-run, --dump-config PATH, key=value ...
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" method=reinforce_pp "$@"

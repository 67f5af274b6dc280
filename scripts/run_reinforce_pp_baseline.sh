#!/usr/bin/env bash
# REINFORCE++-baseline: verl's reinforce_plus_plus_baseline estimator (Tables 5, 7, 8).
# Settings: recipe/rpg/config/method/reinforce_pp_baseline.yaml. Extra arguments: --dry-run, --dump-config PATH, key=value ...
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" method=reinforce_pp_baseline "$@"

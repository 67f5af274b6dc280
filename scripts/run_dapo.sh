#!/usr/bin/env bash
# DAPO: verl's vanilla loss with clip-higher (0.2, 0.28), std-normalized group advantages, no KL (Tables 3, 5-8).
# Settings: recipe/rpg/config/method/dapo.yaml. Extra arguments: --dry-run, --dump-config PATH, key=value ...
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" method=dapo "$@"

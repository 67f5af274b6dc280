#!/usr/bin/env python
"""The paper's "Last / Best" table and training-curve figures from your runs: the command line of recipe/rpg/tables.

    python scripts/make_tables.py --run RPG-UFKL=runs/rpg_ufkl-qwen3-4b-8k --run DAPO=runs/dapo-vanilla-qwen3-4b-8k --out report/
"""

import sys

import _python

_python.ensure("yaml")

from recipe.rpg.tables.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

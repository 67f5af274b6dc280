#!/usr/bin/env python
"""Build the paper's training and evaluation files (verl RL parquet) into data/: the command line of recipe/rpg/data.py.

    python scripts/prepare_data.py --eval-from ../shared/data/eval --train-from PATH/TO/DAPO-Math-17k.parquet
"""

import sys

import _python

_python.ensure("pyarrow")

from recipe.rpg.data import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

"""The project's Python for the command-line scripts (imported first by each of them).

When the running Python lacks the project's environment, the script is run again with the project's own
(``$RPG_VENV``, default ``<repo>/.venv``, as the launchers find it); where there is none, it stops with a message
that says which Python to use, instead of a bare import error.
"""

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ensure(*modules: str) -> None:
    """Make sure ``modules`` import: re-run this script with the project's Python if needed, else exit with a message."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))  # run from a checkout without installing
        return
    venv = Path(os.environ.get("RPG_VENV", REPO / ".venv"))
    python = venv / "bin" / "python"
    if python.is_file() and Path(sys.prefix).resolve() != venv.resolve() and not os.environ.get("RPG_SCRIPT_REEXEC"):
        os.environ["RPG_SCRIPT_REEXEC"] = "1"  # once: a broken environment must not loop
        os.execv(str(python), [str(python), *sys.argv])
    script = Path(sys.argv[0]).name
    sys.exit(f"{script}: this Python ({sys.executable}) lacks {', '.join(missing)}. Run it with the project's "
             f"environment: `bash scripts/setup.sh` (creates {venv}), then `{python} {' '.join(sys.argv)}`")

import os
import stat
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Tests never reach a model/data hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture
def fake_gpu_path(tmp_path) -> str:
    """A PATH on which `nvidia-smi` exists and succeeds: what verl and rpg_ext see on a GPU host."""
    smi = tmp_path / "fake-gpu-bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (fake)'\nexit 0\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    return f"{smi.parent}{os.pathsep}{os.environ.get('PATH', '')}"


#: The longest modules (minutes to tens of seconds on two busy cores: real trainer runs, the preset compositions, verl
#: in fresh processes), longest first; every other module follows in its usual order.
LONGEST_FIRST = ("scripts/test_gpu_check.py", "recipe/test_config.py", "rpg_ext/test_plugin.py",
                 "scripts/test_launchers.py", "rpg_ext/test_cpu.py", "recipe/test_launch.py", "rpg_ext/test_hf_rollout.py",
                 "recipe/test_reference_config.py")


def pytest_collection_modifyitems(config, items):
    """The longest modules first: with several workers (scripts/test.sh: ``-n auto --dist loadfile
    --no-loadscope-reorder``) each worker starts on a long module and the short ones fill in around them, instead of a
    long module trailing at the end with the other workers idle."""
    missing = [name for name in LONGEST_FIRST if not (REPO / "tests" / name).is_file()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names modules that do not exist: {missing}")
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item):
        return rank.get(Path(str(item.path)).relative_to(REPO / "tests").as_posix(), len(rank))

    items.sort(key=key)

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


def pytest_collection_modifyitems(config, items):
    """The real trainer runs (marked slow) first: with several workers (scripts/test.sh runs ``-n auto``) they overlap
    the rest of the suite instead of trailing it."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow") else 1)

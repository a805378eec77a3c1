import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def ping():
    from bifnet.model import load_model

    return load_model("ngnmm_ping")


@pytest.fixture(scope="session")
def toy_model():
    """Load a test model from tests/data by name."""
    from bifnet.model import load_model

    return lambda name: load_model(DATA / f"{name}.toml")

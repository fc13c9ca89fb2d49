"""Shared test fixtures. Tests run on CPU; `SHARED_DATA` points at ../shared/data when present."""
import os
import pathlib

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("PATCHFUSE_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(*parts: str) -> pathlib.Path:
    """Path under ../shared/data, skipping the calling test when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


@pytest.fixture
def shared():
    return shared_data

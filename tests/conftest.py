"""Test set-up: 8 virtual CPU devices, float32 defaults, a shared data dir.

XLA_FLAGS must be set before JAX initialises its backend, so this module sets
it at import time (pytest imports conftest.py before any test module).
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One TFDS data dir per test session; small datasets are built into it once."""
    return str(tmp_path_factory.mktemp("tfds"))

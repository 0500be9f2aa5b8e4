"""Test set-up: 8 virtual CPU devices, float32 defaults, a shared data dir.

XLA_FLAGS must be set before JAX initialises its backend, so this module sets
it at import time (pytest imports conftest.py before any test module).
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache per test session (a fresh directory, so nothing carries
# over between sessions): the many tiny end-to-end runs, in this process and in the
# subprocesses that inherit the environment, compile the same train step once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxclr-test-xla-cache-")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One TFDS data dir per test session; small datasets are built into it once."""
    return str(tmp_path_factory.mktemp("tfds"))

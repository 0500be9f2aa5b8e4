"""libtpu on a machine without TPUs: where it lives, how to install it, the environment it loads in.

libtpu holds XLA:TPU, so with it JAX compiles for a named TPU topology on a CPU
(`jaxclr.bench.plan`). It is installed OUT of the venv's import path, into `<venv>/libtpu`
(`pip install --target`, the `install_command` below), never into site-packages. Why: jax
finds libtpu by importing the `libtpu` package (or through TPU_LIBRARY_PATH); were it
importable, every jax process of the venv, the CPU trainer of `make train` included, would try
to start a TPU backend whenever JAX_PLATFORMS is unset: warnings that the accelerator type and
worker hostnames are unknown, and, on a cloud VM, a query to the metadata server. Outside the
import path only a process that points TPU_LIBRARY_PATH at it loads it, and `environment`
gives that process everything libtpu would otherwise look up: the accelerator type, this host
as the only worker, and TPU_SKIP_MDS_QUERY=1 (no metadata-server query). Nothing leaves the
machine (tests/bench/test_tpu_compile.py traces the compile's network calls).

No JAX import here: the install hint prints in a blink.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys

DIR_VAR = "JAXCLR_LIBTPU_DIR"   # where `install_command` put libtpu; default <venv>/libtpu


def install_dir() -> str:
    """The folder libtpu is installed into with `pip install --target` ($JAXCLR_LIBTPU_DIR, else <venv>/libtpu)."""
    return os.environ.get(DIR_VAR) or os.path.join(sys.prefix, "libtpu")


def library_path() -> str | None:
    """libtpu.so from `install_dir()`, else from an importable `libtpu` package (a TPU VM's jax[tpu]); None
    when neither has it. Finding the package does not import it (its import sets TPU_LIBRARY_PATH)."""
    candidate = os.path.join(install_dir(), "libtpu", "libtpu.so")
    if os.path.isfile(candidate):
        return candidate
    spec = importlib.util.find_spec("libtpu")
    if spec is not None and spec.origin:
        candidate = os.path.join(os.path.dirname(spec.origin), "libtpu.so")
        if os.path.isfile(candidate):
            return candidate
    return None


def requirement() -> str:
    """The libtpu release that matches the installed jax: the pin of jax's own `tpu` extra."""
    for req in importlib.metadata.requires("jax") or ():
        if re.match(r"libtpu\b", req) and 'extra == "tpu"' in req:
            return req.split(";")[0].strip()
    return "libtpu"


def install_command() -> str:
    """The pip command that installs libtpu where `library_path` looks first (no dependencies: jax is here)."""
    return f"{sys.executable} -m pip install --no-deps --target {install_dir()} '{requirement()}'"


def missing_message() -> str:
    """One line: libtpu is missing and how to install it."""
    return (f"libtpu (XLA:TPU) is not installed, so nothing can be compiled for a TPU: run `make test` "
            f"(it installs it) or `{install_command()}`")


def accelerator_type(generation: str, chips: int) -> str:
    """Cloud TPU's accelerator-type name of a slice, e.g. ('v5e', 16) -> 'v5litepod-16'. v4 and v5p
    names count TensorCores (two per chip), v5e and v6e count chips."""
    if generation == "v5e":
        return f"v5litepod-{chips}"
    cores = 2 * chips if generation in ("v4", "v5p") else chips
    return f"{generation}-{cores}"


def environment(library: str, generation: str, chips: int) -> dict[str, str]:
    """The variables libtpu reads at start-up, set so it asks nobody (see the module docstring)."""
    return {"TPU_LIBRARY_PATH": library,
            "TPU_SKIP_MDS_QUERY": "1",                      # no metadata-server query
            "TPU_ACCELERATOR_TYPE": accelerator_type(generation, chips),
            "TPU_WORKER_HOSTNAMES": "localhost",            # this host is the only worker
            "TPU_WORKER_ID": "0",
            # compile only, no chips to guard: plans and tests may load libtpu side by side (its lockfile
            # in /tmp otherwise admits one process at a time)
            "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
            # fatal messages only: a program over HBM otherwise dumps its whole buffer assignment to
            # stderr; the plan reports the overflow itself and a failed compile raises with its reason
            "TPU_STDERR_LOG_LEVEL": os.environ.get("TPU_STDERR_LOG_LEVEL", "3"),
            "TPU_MIN_LOG_LEVEL": os.environ.get("TPU_MIN_LOG_LEVEL", "3")}

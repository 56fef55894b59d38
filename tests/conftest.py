"""Test configuration: float64 available, JAX strict about ranks and dtypes.

Equivalence tests run in float64 (docs/math.md, "Numerics"); float32 cases build float32 arrays
explicitly.
Strict promotion (as in equinox's test suite) makes any silent float32/float64 mixing or rank
broadcasting inside the package an error. jaxtyping checks every annotated shape at runtime
(``--jaxtyping-packages`` in pyproject.toml).
"""

import os
import shutil
import tempfile

from tests.compile_flags import TEST_COMPILE_FLAGS

#: One XLA compilation cache for every process of a test run (the xdist workers, the notebook
#: kernels, the command-line subprocesses), created empty by the first process, which removes it
#: at the end: a program two processes need is compiled once per run, never taken from an
#: earlier run. Measured on 2 cores: the suite 6:21 -> 5:31. Set before JAX is imported, since
#: JAX reads these variables then; the processes started later inherit them.
_CACHE_OWNER = "MMDSTYLE_TEST_CACHE_OWNER"
if _CACHE_OWNER not in os.environ:
    os.environ[_CACHE_OWNER] = str(os.getpid())
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmdstyle-tests-xla-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    # Quick compilation for every program the test processes compile (see tests/compile_flags.py)
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *TEST_COMPILE_FLAGS]).strip()

#: Each xdist worker on a core of its own (gw0 on the first, gw1 on the second, ...), and with it
#: the notebook kernels and subprocesses it starts. Unpinned, every process runs XLA's thread pool
#: across all the cores, and with two workers busy their threads wait on each other. Measured on
#: the 2-core machine, back to back: the suite 5:35 unpinned, 5:04 and 5:00 pinned. Before JAX
#: starts, which sizes its thread pool by the cores the process may use.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and hasattr(os, "sched_setaffinity"):
    _cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {_cores[int(_worker[2:]) % len(_cores)]})

import jax  # noqa: E402
import jaxtyping  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import TINY_VGG_WIDTHS  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20170101)


@pytest.fixture
def as_a_user():
    """Call the package as a user does: without this test run's runtime type checks.

    Public functions validate their inputs and raise ValueErrors that say what to do; with the
    runtime checks on, a wrong type would be stopped earlier by a TypeCheckError no user sees.
    """
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


@pytest.fixture
def standard_dtype_promotion():
    """For tests that run optax's L-BFGS on float32 images.

    It keeps its curvature weights in the default float dtype, float64 in this x64 run, beside
    float32 images. Standard promotion handles that as a user's run does; the suite's strict
    mode would call it an error.
    """
    with jax.numpy_dtype_promotion("standard"):
        yield


@pytest.fixture
def tiny_vgg():
    """Registers ``tiny-vgg`` (a seeded random VGG-19 of TINY_VGG_WIDTHS) for this test only."""
    from mmdstyle.features import random_vgg19, register_extractor, registry_scope

    with registry_scope():
        register_extractor("tiny-vgg", lambda **options: random_vgg19(0, widths=TINY_VGG_WIDTHS, **options))
        yield "tiny-vgg"


def pytest_collection_modifyitems(items):
    """Notebook executions first, then every file's tests in order.

    ``--dist worksteal`` gives each worker a contiguous part of this order (files stay together,
    so their tests share compiled programs), and a worker that runs out takes tests from the end
    of another's. The notebook executions, a minute or more each, go first: last, they would
    leave one worker running them alone at the end.
    """
    items.sort(key=lambda item: item.get_closest_marker("notebooks") is None)


def pytest_unconfigure(config):
    if os.environ.get(_CACHE_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

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


#: Seconds each notebook's execution takes in the suite (one core each; measured 2026-12-01 in a
#: fresh .ci/run): what spreads them over the workers. A notebook not listed counts as a minute.
NOTEBOOK_SECONDS = {
    "03_style_transfer_with_kernels": 148,
    "02_kernels_and_estimators": 47,
    "04_two_sample_tests": 38,
    "05_beyond_mmd": 25,
    "01_gram_is_mmd": 12,
}


def pytest_collection_modifyitems(items):
    """Each worker's notebook executions first, the notebooks spread over the workers by time.

    ``--dist worksteal`` gives each worker a contiguous part of this order (worker i of n: what
    is left divided by n - i; files stay together, so their tests share compiled programs), and
    a worker that runs out takes tests from the end of another's. The notebook executions, a
    minute or more each, go at the start of the parts, longest first onto the least loaded
    worker: all at the start of the first part, one worker ran them one after another (270 s)
    while the other finished everything else, and the suite took 5:16 instead of about 4:40.
    """
    notebooks = [item for item in items if item.get_closest_marker("notebooks") is not None]
    others = [item for item in items if item.get_closest_marker("notebooks") is None]
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2 or not notebooks:
        items[:] = notebooks + others
        return

    def seconds(item) -> float:
        path = getattr(item, "callspec", None) and item.callspec.params.get("path")
        return NOTEBOOK_SECONDS.get(getattr(path, "stem", ""), 60)

    loads, parts = [0.0] * workers, [[] for _ in range(workers)]
    for notebook in sorted(notebooks, key=seconds, reverse=True):
        least = loads.index(min(loads))
        parts[least].append(notebook)
        loads[least] += seconds(notebook)
    order, rest, remaining = [], iter(others), len(items)
    for worker, part in enumerate(parts):
        size = remaining // (workers - worker)  # what worksteal sends this worker first
        order += part + [item for _, item in zip(range(size - len(part)), rest, strict=False)]
        remaining -= size
    items[:] = order + list(rest)


def pytest_unconfigure(config):
    if os.environ.get(_CACHE_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

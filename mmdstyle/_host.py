"""NumPy inside compiled programs on the CPU, where XLA's CPU sort is the slow part.

XLA's CPU backend sorts slowly: 256 rows of 18,432 float32 values with their indices take it 3 s,
NumPy 0.1 s; XLA needs 0.22 s to find the m-th smallest of 800 random keys in each of 10,000 rows,
NumPy's partition 0.02 s. The sliced route's orders and the permutation test's random subsets
therefore come from NumPy on the CPU (``lax.platform_dependent``), from JAX elsewhere.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import jax
import numpy as np
from jax.experimental.buffer_callback import buffer_callback
from jaxtyping import Array

__all__ = ["on_host", "over_row_chunks", "sort_rows", "writes_result"]


def on_host(into: Callable[..., None], shape: jax.ShapeDtypeStruct, *operands: Array) -> Array:
    """A NumPy computation inside a compiled program: ``into(context, result, *operands)``, on the CPU.

    ``into`` receives XLA's own buffers (read and written through ``np.asarray``) and fills the
    result buffer in place; :func:`writes_result` makes one from a function of arrays. Batched
    (vmap) operands arrive with the batch axes, unbatched ones with axes of size 1 there.

    Not ``jax.pure_callback``: that one first copies its operands into new device arrays, and
    reading those waits on XLA's CPU thread pool, which is running the callback itself. In a
    process restricted to one core the pool has one thread, and the program never returns.
    """
    return buffer_callback(into, shape, vmap_method="expand_dims")(*operands)


def writes_result(function: Callable[..., np.ndarray]) -> Callable[..., None]:
    """A callback for :func:`on_host` that writes ``function(*operands)`` into the result buffer."""

    def into(context: Any, result: Any, *operands: Any) -> None:
        del context
        np.asarray(result)[...] = function(*(np.asarray(operand) for operand in operands))

    return into


def sort_rows(array: np.ndarray, workers: int | None = None) -> None:
    """Sort every row of a C-contiguous ``array`` (along its last axis) in place, rows split over threads.

    NumPy's sort releases the GIL, so threads sort rows side by side: 256 rows of 131,072 packed
    int64 keys take 1.42 s in one call and 0.85 s on two cores (``benchmarks/bench_routes.py``,
    item 2, sorts such rows). ``workers`` defaults to the cores this process may use (at most
    8); a process restricted to one core sorts in one call.
    """
    rows = array.reshape(-1, array.shape[-1])  # a view: the array is contiguous
    over_row_chunks(lambda chunk: chunk.sort(axis=-1), rows, workers=workers)


def over_row_chunks(function: Callable[..., Any], *arrays: np.ndarray, workers: int | None = None) -> None:
    """``function(*chunks)`` on matching chunks of the 2-D ``arrays``' rows, the chunks on threads.

    For NumPy work that releases the GIL (sorts, binary searches, gathers); ``function`` writes
    its results into its chunks (views). ``workers`` defaults to the cores this process may use
    (at most 8); with one worker or one row, one call on the whole arrays.
    """
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = min(cores, 8)
    count = arrays[0].shape[0]
    if workers < 2 or count < 2:
        function(*arrays)
        return
    bounds = np.linspace(0, count, min(workers, count) + 1).astype(int)
    chunks = [[array[start:stop] for array in arrays] for start, stop in itertools.pairwise(bounds)]
    list(_sorting_threads(workers).map(lambda chunk: function(*chunk), chunks))


@cache
def _sorting_threads(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmdstyle-sort")

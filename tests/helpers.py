"""What the tests share: small networks, one relative error, property-test shapes, a compile counter."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import numpy as np
from hypothesis import strategies as st

#: VGG-19's layout with a few channels per convolution: every layer exists, nothing is slow.
TINY_VGG_WIDTHS = ((4, 4), (8, 8), (8,) * 4, (8,) * 4, (8,) * 4)


def max_norm_relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max |actual - expected| / max |expected|``: the largest deviation against the largest entry.

    0 when the two are equal (also when both are all zeros); the deviation itself when only
    ``expected`` is all zeros.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    deviation = float(np.max(np.abs(actual - expected), initial=0.0))
    scale = float(np.max(np.abs(expected), initial=0.0))
    return deviation / scale if scale > 0 else deviation


# Property tests draw shapes from small fixed sets, so that a compiled program serves many
# examples (compilation, not arithmetic, is what costs time); the data vary freely.
#: Sample counts m: a single sample (every estimator's edge) and a few.
SAMPLE_COUNTS = st.sampled_from([1, 6])
#: Sample counts n of the other side, unequal to m's.
OTHER_SAMPLE_COUNTS = st.sampled_from([1, 5])
#: Channels d: one (no cross-channel terms) and a few.
CHANNELS = st.sampled_from([1, 3])


# ---------------------------------------------------------------- compilations

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_counters: list[list[int]] = []


def _count_compilation(event: str, duration: float, **kwargs: object) -> None:
    if event == _COMPILE_EVENT:
        for counter in _counters:
            counter[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compilation)


@contextlib.contextmanager
def count_compilations() -> Iterator[list[int]]:
    """Count the XLA compilations (every program, eager operations too) inside the block.

    ``with count_compilations() as count: ...`` then ``count[0]``. A guard for compiled-program
    reuse, in the spirit of optax's ``test_utils.log_compilations``.
    """
    counter = [0]
    _counters.append(counter)
    try:
        yield counter
    finally:
        _counters.remove(counter)

"""Validation at the public boundary: clear ValueErrors, nothing checked twice inside."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

#: The MMD^2 estimators (docs/math.md, "Estimators").
ESTIMATORS = ("biased", "unbiased", "linear")
#: The estimators that sum the kernel over all pairs: the Gram identity is the biased one's.
ALL_PAIRS_ESTIMATORS = ("biased", "unbiased")


def is_traced(value: Any) -> bool:
    """Whether ``value`` is a tracer, whose number is unknown until the computation runs."""
    return isinstance(value, jax.core.Tracer)


def check_scalar(name: str, value: Any, *, positive: bool, hint: str = "") -> Any:
    """Check a numeric hyperparameter: a finite real scalar, > 0 or >= 0.

    Python and NumPy numbers come back as Python floats, so they stay weakly typed and follow
    the dtype of the data (float32 or float64) instead of promoting it. JAX arrays are kept as
    they are, so a bandwidth computed from data can be differentiated. Traced values cannot be
    checked here and are passed through.
    """
    if is_traced(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):
        raise ValueError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}.")
    array = np.asarray(value)
    if array.shape != ():
        raise ValueError(f"{name} must be a scalar, got an array of shape {array.shape}.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must be a real number, got dtype {array.dtype}.")
    number = float(array)
    bound_ok = number > 0 if positive else number >= 0
    if not math.isfinite(number) or not bound_ok:
        relation = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {relation}, got {number}.{hint}")
    return value if isinstance(value, jax.Array) else number


def as_float_array(name: str, value: Any) -> Array:
    """``value`` as a JAX array of a floating dtype (integers and booleans become default floats)."""
    try:
        array = jnp.asarray(value)
    except TypeError as error:
        raise ValueError(f"{name} must be an array of numbers, got {type(value).__name__}.") from error
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.result_type(float))
    return array


def common_dtype(*arrays: Array) -> list[Array]:
    """Cast arrays to their widest floating dtype explicitly (strict dtype promotion allows no mixing)."""
    dtype = jnp.result_type(*(a.dtype for a in arrays))
    return [a.astype(dtype) for a in arrays]


def as_samples(feature_map: Any) -> Any:
    """A feature map ``(h, w, c)`` (or samples ``(m, c)``) as samples ``(h * w, c)``: one row per position.

    The one reshape every caller shares (docs/math.md, "Samples, not feature maps"): rows are
    spatial positions, columns are channels. NumPy arrays stay NumPy arrays, JAX arrays (and
    tracers) stay JAX arrays.
    """
    return feature_map.reshape(-1, feature_map.shape[-1])


def check_samples(name: str, value: Any, *, allow_feature_map: bool) -> Float[Array, "m d"]:
    """Samples (m, d); with ``allow_feature_map`` a feature map (h, w, d) becomes (h*w, d) samples."""
    array = as_float_array(name, value)
    if allow_feature_map and array.ndim == 3:
        return as_samples(array)
    if array.ndim != 2:
        accepted = "samples (m, d) or a feature map (h, w, d)" if allow_feature_map else "samples (m, d)"
        advice = (
            " Reshape a feature map (h, w, d) with mmdstyle.as_samples(x), i.e. x.reshape(-1, d)."
            if not allow_feature_map
            else ""
        )
        raise ValueError(
            f"{name} must be {accepted}: rows are samples, columns are channels; "
            f"got shape {tuple(array.shape)}.{advice}"
        )
    return array


def check_sample_pair(
    x: Any, y: Any, *, allow_feature_map: bool = False
) -> tuple[Float[Array, "m d"], Float[Array, "n d"]]:
    """Two sample sets with the same number of channels, cast to one floating dtype."""
    x = check_samples("x", x, allow_feature_map=allow_feature_map)
    y = check_samples("y", y, allow_feature_map=allow_feature_map)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same number of channels d: x has shape {tuple(x.shape)} "
            f"and y has shape {tuple(y.shape)}. Compare features of the same layer."
        )
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError(f"x and y need at least one sample each, got m={x.shape[0]}, n={y.shape[0]}.")
    x, y = common_dtype(x, y)
    return x, y


def check_finite_value(value: Array, what: str, samples: dict[str, Array]) -> Array:
    """A computed scalar, refused if it is concrete and not finite, with the reason.

    Either the samples hold NaN or infinite values, or the value (or a term on the way to it)
    overflows the dtype, and inf or NaN would be a silently wrong number. Traced values (inside
    ``jit``, ``grad``, ``vmap``) pass unchecked.
    """
    if is_traced(value) or bool(jnp.isfinite(value)):
        return value
    for name, array in samples.items():
        bad = int(jnp.sum(~jnp.isfinite(array)))
        if bad:
            raise ValueError(
                f"{name} holds {bad} NaN or infinite value{'s' if bad > 1 else ''}, so {what} is "
                f"{float(value)}. Remove or replace them first (e.g. with jnp.nan_to_num)."
            )
    largest = max(float(jnp.max(jnp.abs(array))) for array in samples.values())
    dtype = jnp.dtype(value.dtype)
    remedy = "Scale the samples down first."
    if dtype != jnp.float64:
        remedy = (
            "Compute in float64 (jax.config.update('jax_enable_x64', True) and float64 samples) or "
            "scale the samples down first."
        )
    raise ValueError(
        f"{what} came out {float(value)} for samples as large as {largest:.3g}: the value, or a "
        f"kernel value on the way, overflows {dtype.name} (largest {float(jnp.finfo(dtype).max):.3g}). "
        f"{remedy}"
    )


def check_estimator(estimator: str, m: int, n: int) -> None:
    """The estimator is known and there are enough samples for it."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    if estimator == "unbiased" and min(m, n) < 2:
        raise ValueError(
            f"The unbiased estimator needs at least 2 samples in x and in y (it averages over "
            f"pairs i != j), got m={m}, n={n}. Use estimator='biased' or pass more samples."
        )
    if estimator == "linear" and min(m, n) < 2:
        raise ValueError(
            f"The linear-time estimator needs at least 2 samples in x and in y (it pairs "
            f"consecutive samples), got m={m}, n={n}. Use estimator='biased' or pass more samples."
        )


def check_integer(name: str, value: Any, *, minimum: int = 1, hint: str = "") -> int:
    """``value`` as an int, checked to be a whole number >= ``minimum`` (booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"a whole number >= {minimum}"
        raise ValueError(f"{name} must be {what}{hint}, got {value!r}.")
    return int(value)


def check_block_size(block_size: Any) -> None:
    """``block_size`` is None (automatic) or a positive integer."""
    if block_size is not None:
        check_integer("block_size", block_size, hint=" or None (automatic)")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value``, checked to be one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    return value


def check_max_samples(max_samples: Any) -> None:
    """``max_samples``: a whole number >= 2, or None for all samples."""
    if max_samples is not None:
        check_integer("max_samples", max_samples, minimum=2, hint=" (or None for all)")


def check_key(key: Any, needed_by: str) -> jax.Array:
    """``key``, checked to be a ``jax.random`` key (a typed key, or a legacy uint32 key of shape (2,)).

    Args:
      key: the key a random estimate draws from.
      needed_by: what draws from it, for the message (e.g. ``"route='rff'"``).
    """
    if key is None:
        raise ValueError(
            f"{needed_by} draws random numbers, so it needs an explicit key: pass key=jax.random.key(0) "
            "(the same key gives the same estimate on every machine)."
        )
    if is_traced(key):
        return key
    if (
        isinstance(key, jax.Array)
        and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        and key.shape == ()
    ):
        return key
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.shape == (2,):
        return jnp.asarray(key)
    raise ValueError(
        f"key for {needed_by} must be one jax.random key such as jax.random.key(0), got "
        f"{type(key).__name__}{getattr(key, 'shape', '')!s}."
    )

"""The sliced route: the energy distance as a mean of 1-D energy distances, each by sorting.

With the kernel ``k(a, b) = |a| + |b| - |a - b|`` (:class:`~mmdstyle.kernels.Energy`) the biased
MMD^2 is the energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|``. For theta uniform on the
sphere S^(d-1), ``E_theta |theta^T v| = |v| / c_d`` for every v in R^d, with

    c_d = sqrt(pi) Gamma((d + 1)/2) / Gamma(d/2)        (c_1 = 1, c_2 = pi/2, c_3 = 2, ~ sqrt(pi d / 2))

so every distance in the estimators is ``c_d`` times the mean over directions of the projected
1-D distances, and the estimators themselves (biased and unbiased, linear in the distances) are

    MMD^2 = c_d E_theta[ MMD^2 of the projections theta^T x_i, theta^T y_j ]

Drawing L directions gives an unbiased estimate (over the directions) of the exact value of the
same estimator, with a standard deviation shrinking like L^(-1/2).

In 1-D the energy distance is twice the Cramér distance, the squared L2 distance between the
empirical CDFs. With the pooled values sorted, ``t_0 <= ... <= t_(N-1)`` (N = m + n), and
``p_k``, ``q_k`` the numbers of x and y values among ``t_0..t_k``:

    biased     MMD_b^2 = 2 sum_k (t_(k+1) - t_k) (p_k/m - q_k/n)^2
    unbiased   MMD_u^2 = MMD_b^2 - S_xx / (m^2 (m-1)) - S_yy / (n^2 (n-1))
               S_xx = sum_ij |x_i - x_j| = 2 sum_k (t_(k+1) - t_k) p_k (m - p_k)    (likewise S_yy)

(the unbiased estimator drops the zero terms ``|x_i - x_i|`` from averages over m^2 pairs and
divides by m(m-1) instead; ``p_k (m - p_k)`` counts the pairs of x values on either side of the
gap). One sort of the pooled values per direction: ``O(N log N)``. The biased sum has only
non-negative terms, so it does not cancel as ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` would; the
counts are integers, exact. Cost: ``O(N d L)`` for the projections (one matmul) plus
``O(L N log N)`` for the sorts, ``O(N L)`` memory, against ``O(m n d)`` time for the pairwise route.

Relation to the sliced Wasserstein loss. Heitz et al. (2021) compare style features through the
same random projections, but match the sorted projections of x and y in L2: per direction the
squared 2-Wasserstein distance ``int_0^1 (F_x^-1(u) - F_y^-1(u))^2 du`` between the quantile
functions (Rabin et al. 2011 introduced the sliced Wasserstein distance for texture mixing). The
sliced energy distance compares the CDFs instead, ``int (F_x(t) - F_y(t))^2 dt``: the same sort,
the other axis. It is a kernel MMD with a characteristic kernel and an unbiased estimator, which
needs no equal sample sizes (the quantile matching pairs the i-th smallest values). geomloss's
``SamplesLoss("energy")`` is half the biased energy distance.

References:
  Székely, Rizzo, "Energy statistics: A class of statistics based on distances", Journal of
  Statistical Planning and Inference 143(8), 2013. https://doi.org/10.1016/j.jspi.2013.03.018
  Sejdinovic, Sriperumbudur, Gretton, Fukumizu, "Equivalence of distance-based and RKHS-based
  statistics in hypothesis testing", Annals of Statistics 41(5), 2013. https://arxiv.org/abs/1207.6076
  Heitz, Vanhoey, Chambon, Belcour, "A Sliced Wasserstein Loss for Neural Texture Synthesis",
  CVPR 2021. https://arxiv.org/abs/2006.07229
  Rabin, Peyré, Delon, Bernot, "Wasserstein Barycenter and its Application to Texture Mixing",
  SSVM 2011. https://hal.science/hal-00476064
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import DTypeLike
from jaxtyping import Array, ArrayLike, Float, Int

from mmdstyle._checks import check_integer
from mmdstyle._host import on_host, over_row_chunks, sort_rows, writes_result
from mmdstyle._pytrees import pytree_dataclass
from mmdstyle.kernels import HIGHEST, AbstractKernel, Energy, ScaledKernel, orthogonal_normal, pooled_mean

__all__ = [
    "DirectionTarget",
    "argsort",
    "check_sliced_kernel",
    "direction_target",
    "energy_constant",
    "energy_distance_1d",
    "merge_order",
    "random_directions",
    "sliced_mmd2",
    "sliced_mmd2_to_target",
    "sorted_projections",
]


def energy_constant(dimension: int) -> float:
    """``c_d = sqrt(pi) Gamma((d + 1)/2) / Gamma(d/2)``, the ratio ``|v| / E_theta |theta^T v|``.

    theta is uniform on the unit sphere of R^d. ``c_1 = 1``, ``c_2 = pi/2``, ``c_3 = 2``, and
    ``c_d ~ sqrt(pi d / 2)`` for large d. Computed through ``math.lgamma``, since Gamma itself
    overflows a float from d = 343 on.

    Args:
      dimension: d >= 1.

    Returns:
      c_d as a Python float (weakly typed: it keeps the samples' dtype).
    """
    d = check_integer("dimension", dimension)
    return math.sqrt(math.pi) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))


def random_directions(key: jax.Array, count: int, dimension: int, dtype: DTypeLike) -> Float[Array, "L d"]:
    """``count`` directions drawn uniformly from the unit sphere of R^d: normalised Gaussian vectors.

    The standard normal distribution is rotation invariant, so its direction is uniform. The
    directions are orthogonal within blocks of d (:func:`~mmdstyle.kernels.orthogonal_normal`):
    each is still uniform, so the estimate stays unbiased, with several times less variance.

    Args:
      key: ``jax.random`` key.
      count: number of directions L.
      dimension: d.
      dtype: floating dtype of the directions (the samples').

    Returns:
      The directions as rows, each of norm 1.
    """
    gaussian = orthogonal_normal(key, count, dimension, dtype)
    norms = jnp.sqrt(jnp.sum(gaussian * gaussian, axis=-1, keepdims=True))
    # A Gaussian vector is 0 with probability 0, but a float one can be (d = 1, float32): take
    # the first axis then rather than a 0/0.
    first_axis = (jnp.arange(dimension) == 0).astype(dtype)[None, :]
    return jnp.where(norms > 0, gaussian / jnp.where(norms > 0, norms, 1.0), first_axis)


def argsort(values: Float[Array, "*batch N"]) -> Int[Array, "*batch N"]:
    """The permutation that sorts ``values`` along the last axis (ties in index order).

    Differentiating a sort needs only this permutation (a gather carries the gradient back).
    XLA's CPU sort is slow for what the sliced route asks of it: ordering 256 rows of 18,432
    float32 values takes it 3 s with the index as a second operand, while NumPy, given the
    float's order-preserving integer key and the index packed into one int64, sorts them in 0.1 s
    (``benchmarks/bench_routes.py`` measures the route). On the CPU the order therefore comes from
    NumPy (:func:`mmdstyle._host.on_host`); other backends sort with ``jnp.argsort``.
    """
    shape = jax.ShapeDtypeStruct(values.shape, jnp.int32)
    values = lax.stop_gradient(values)  # an order has no gradient; the gather that uses it has

    def on_the_host(values: Array) -> Array:
        return on_host(_host_argsort_into, shape, values)

    return lax.platform_dependent(
        values, cpu=on_the_host, default=lambda v: jnp.argsort(v, axis=-1).astype(jnp.int32)
    )


def _host_argsort(values: ArrayLike) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype != np.float32 or values.shape[-1] >= 2**31:
        return np.argsort(values, axis=-1, kind="stable").astype(np.int32)
    packed = (_float32_keys(values).astype(np.int64) << 32) | np.arange(values.shape[-1], dtype=np.int64)
    sort_rows(packed)
    return (packed & 0xFFFFFFFF).astype(np.int32)


def _float32_keys(values: np.ndarray) -> np.ndarray:
    """int32 keys that order as the float32 ``values`` do (-0.0 and 0.0 as one key)."""
    # flip the magnitude bits of negative floats: the int32 keys then order as the floats do.
    # -0.0 becomes 0.0 first, which the floats' order does not tell apart; by its bits, not by
    # adding 0.0: this runs on an XLA thread, which flushes subnormal operands of arithmetic to 0
    bits = np.ascontiguousarray(values).view(np.int32)
    bits = np.where(bits == np.iinfo(np.int32).min, np.int32(0), bits)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def energy_distance_1d(
    x_proj: Float[Array, " m"], y_proj: Float[Array, " n"], *, unbiased: bool
) -> Float[Array, ""]:
    """The energy-distance MMD^2 of 1-D samples from one sort of the pooled values.

    With the pooled values sorted, ``t_0 <= ... <= t_(N-1)``, and ``p_k``, ``q_k`` the numbers of
    x and y values among ``t_0..t_k``:

        biased     2 sum_k (t_(k+1) - t_k) (p_k/m - q_k/n)^2
                   = 2 E|X - Y| - E|X - X'| - E|Y - Y'| = 2 int (F_x(t) - F_y(t))^2 dt
        unbiased   biased - 2 sum_k (t_(k+1) - t_k) [p_k (m - p_k) / (m^2 (m-1))
                                                   + q_k (n - q_k) / (n^2 (n-1))]
                   = 2 E|X - Y| - E_(i!=j)|x_i - x_j| - E_(i!=j)|y_i - y_j|

    Ties need no care: the gap between tied values is 0, whatever their order. Differentiable in
    the values (the sort permutes the gradient back); O(N log N) for N = m + n (see :func:`argsort`).

    Args:
      x_proj: samples (m,).
      y_proj: samples (n,), in the same dtype.
      unbiased: the U-statistic (needs m, n >= 2) instead of the V-statistic.

    Returns:
      The scalar estimate.
    """
    values = jnp.concatenate([x_proj, y_proj])
    return _energy_distance_in_order(values, argsort(values), x_proj.shape[0], unbiased=unbiased)


def _energy_distance_in_order(
    values: Float[Array, " N"], order: Int[Array, " N"], m: int, *, unbiased: bool
) -> Float[Array, ""]:
    """:func:`energy_distance_1d` of ``values = [x, y]`` (x the first m), given their sorting order."""
    n = values.shape[0] - m
    dtype = values.dtype
    sorted_values, sorted_from_x = values[order], (order < m).astype(jnp.int32)
    gaps = sorted_values[1:] - sorted_values[:-1]
    # Integer counts, exact: x and y values at or below t_k, for k = 0..N-2 (the gap after t_k).
    count_x = jnp.cumsum(sorted_from_x)[:-1].astype(dtype)
    count_y = jnp.arange(1, m + n, dtype=dtype) - count_x
    mf, nf = float(m), float(n)
    integrand = (count_x / mf - count_y / nf) ** 2
    if unbiased:
        integrand = (
            integrand
            - count_x * (mf - count_x) / (mf * mf * (mf - 1.0))
            - count_y * (nf - count_y) / (nf * nf * (nf - 1.0))
        )
    return 2.0 * jnp.sum(gaps * integrand)


def merge_order(
    x_proj: Float[Array, "*batch m"], y_sorted: Float[Array, "*batch n"]
) -> Int[Array, "*batch N"]:
    """The order that sorts ``[x_proj, y_sorted]`` along the last axis, ``y_sorted`` already sorted.

    Ties put an x value before an equal y value. Only x is sorted, and each of its values placed
    among y's by binary search: on the CPU in NumPy (:func:`_host_merge_order`), elsewhere in
    JAX. A loss against a fixed style projects and sorts the style's side once
    (:func:`direction_target`).
    """
    m = x_proj.shape[-1]
    shape = jax.ShapeDtypeStruct((*x_proj.shape[:-1], m + y_sorted.shape[-1]), jnp.int32)
    x_proj, y_sorted = lax.stop_gradient(x_proj), lax.stop_gradient(y_sorted)

    def on_the_host(x: Array, y: Array) -> Array:
        return on_host(_host_merge_order_into, shape, x, y)

    return lax.platform_dependent(x_proj, y_sorted, cpu=on_the_host, default=_device_merge_order)


def _device_merge_order(x: Array, y: Array) -> Array:
    """:func:`merge_order` in JAX, for backends whose sort is fast."""
    m, n = x.shape[-1], y.shape[-1]
    order_x = jnp.argsort(x, axis=-1).astype(jnp.int32)
    sorted_x = jnp.take_along_axis(x, order_x, axis=-1)
    left = jnp.vectorize(functools.partial(jnp.searchsorted, side="left"), signature="(n),(k)->(k)")
    right = jnp.vectorize(functools.partial(jnp.searchsorted, side="right"), signature="(n),(k)->(k)")
    below_x, below_y = left(y, sorted_x).astype(jnp.int32), right(sorted_x, y).astype(jnp.int32)
    place_x = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), below_x.shape) + below_x
    place_y = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), below_y.shape) + below_y
    from_y = jnp.broadcast_to(m + jnp.arange(n, dtype=jnp.int32), place_y.shape)
    order = jnp.zeros((*x.shape[:-1], m + n), jnp.int32)
    order = jnp.put_along_axis(order, place_x, order_x, axis=-1, inplace=False)
    return jnp.put_along_axis(order, place_y, from_y, axis=-1, inplace=False)


def _host_merge_order(x: ArrayLike, y_sorted: ArrayLike) -> np.ndarray:
    """:func:`merge_order` in NumPy: the stable order of ``[x, y_sorted]``.

    float32: only x is sorted (its packed keys, see :func:`argsort`), and each sorted x value
    placed among y's by a binary search in its row, rows split over threads. Half the keys of
    sorting the pooled values: 64 rows of 16,384 + 16,384 values 0.051 -> 0.038 s, 256 rows of
    65,536 + 65,536 0.90 -> 0.78 s (2 cores, best of three). Other dtypes sort the pooled values.
    """
    x, y_sorted = np.asarray(x), np.asarray(y_sorted)
    batch = np.broadcast_shapes(x.shape[:-1], y_sorted.shape[:-1])  # under vmap, either may be batched
    x = np.broadcast_to(x, (*batch, x.shape[-1]))
    y_sorted = np.broadcast_to(y_sorted, (*batch, y_sorted.shape[-1]))
    m, n = x.shape[-1], y_sorted.shape[-1]
    if x.dtype != np.float32 or m + n >= 2**31:
        return _host_argsort(np.concatenate([x, y_sorted], axis=-1))
    order = np.empty((*batch, m + n), np.int32)
    over_row_chunks(
        _merge_rows,
        _float32_keys(x).reshape(-1, m),
        _float32_keys(y_sorted).reshape(-1, n),
        order.reshape(-1, m + n),
    )
    return order


def _merge_rows(x_keys: np.ndarray, y_keys: np.ndarray, order: np.ndarray) -> None:
    """Row by row, the stable order of ``[x, y]`` from their keys (y's sorted) into ``order``."""
    rows, m = x_keys.shape
    n = y_keys.shape[1]
    packed = (x_keys.astype(np.int64) << 32) | np.arange(m, dtype=np.int64)
    packed.sort(axis=-1)
    sorted_keys = (packed >> 32).astype(np.int32)
    # ties: an x value goes before an equal y value (the count of y values strictly below it)
    below = np.stack([np.searchsorted(y_keys[row], sorted_keys[row], side="left") for row in range(rows)])
    place_x = np.arange(m) + below
    is_x = np.zeros(order.shape, bool)
    np.put_along_axis(order, place_x, (packed & 0xFFFFFFFF).astype(np.int32), axis=-1)
    np.put_along_axis(is_x, place_x, True, axis=-1)
    order[~is_x] = np.tile(np.arange(m, m + n, dtype=np.int32), rows)  # y's places, in y's order


_host_argsort_into = writes_result(_host_argsort)
_host_merge_order_into = writes_result(_host_merge_order)


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class DirectionTarget:
    """One sample set's side of the sliced route, computed once: for a loss against a fixed target.

    Attributes:
      directions: the L directions (L, d).
      centre: the target's mean (1, d); the estimate does not depend on the centre.
      projections: the target's centred projections, each row sorted (L, n).
      factor: ``t`` of ``t * Energy()``.
    """

    # plain annotations: under JAX's transformations the fields hold tracers and placeholders
    directions: Any
    centre: Any
    projections: Any
    factor: Any


def direction_target(
    y: Float[Array, "n d"], kernel: AbstractKernel, key: jax.Array, num_directions: int
) -> DirectionTarget:
    """The directions of :func:`sliced_mmd2` for ``key`` and ``y``'s sorted projections on them."""
    check_sliced_kernel(kernel)
    return DirectionTarget(*_directions_and_projections(y, key, num_directions), _energy_factor(kernel))


@functools.partial(jax.jit, static_argnames="num_directions")
def _directions_and_projections(
    y: Float[Array, "n d"], key: jax.Array, num_directions: int
) -> tuple[Float[Array, "L d"], Float[Array, "1 d"], Float[Array, "L n"]]:
    """:func:`direction_target`'s arrays, one compiled program (not one per operation)."""
    directions = random_directions(key, num_directions, y.shape[1], y.dtype)
    centre = jnp.mean(y, axis=0, keepdims=True)
    return directions, centre, sorted_projections(y - centre, directions)


def sorted_projections(samples: Float[Array, "n d"], directions: Float[Array, "L d"]) -> Float[Array, "L n"]:
    """``samples`` projected on each direction, each row sorted, (L, n).

    The order comes from :func:`argsort` (NumPy's sort on the CPU); the gradient flows through
    the sorted values to the samples and the directions.
    """
    projections = jnp.matmul(directions, samples.T, precision=HIGHEST)
    return jnp.take_along_axis(projections, argsort(projections), axis=-1)


def sliced_mmd2_to_target(
    x: Float[Array, "m d"], target: DirectionTarget, *, unbiased: bool
) -> Float[Array, ""]:
    """:func:`sliced_mmd2` of x against the target whose side :func:`direction_target` computed.

    The same value as ``sliced_mmd2(x, y, ...)`` with the same key, up to rounding; only x is
    projected and sorted.
    """
    m = x.shape[0]
    x_proj = jnp.matmul(target.directions, (x - target.centre).T, precision=HIGHEST)
    order = merge_order(x_proj, target.projections)
    values = jnp.concatenate([x_proj, target.projections], axis=-1)
    distance = functools.partial(_energy_distance_in_order, m=m, unbiased=unbiased)
    per_direction = jax.vmap(distance)(values, order)
    return target.factor * energy_constant(x.shape[1]) * jnp.mean(per_direction)


def _energy_factor(kernel: AbstractKernel) -> ArrayLike | None:
    """``t`` if ``kernel`` is ``t * Energy()`` (positive scalings, possibly nested), else None."""
    if isinstance(kernel, Energy):
        return 1.0
    if isinstance(kernel, ScaledKernel):
        inner = _energy_factor(kernel.kernel)
        return None if inner is None else kernel.factor * inner
    return None


def check_sliced_kernel(kernel: AbstractKernel) -> None:
    """A ValueError naming the kernels that have the sliced route, unless ``kernel`` is one of them."""
    if _energy_factor(kernel) is None:
        raise ValueError(
            f"route='sliced' cannot take {kernel!r}: the sliced route estimates the energy distance, "
            "the MMD of mmdstyle.Energy() and its positive scalings t * Energy(), from 1-D projections. "
            "Use route='pairwise' (exact, any kernel) or route='rff' (random Fourier features, for "
            "Gaussian and Laplacian kernels and their mixtures)."
        )


def sliced_mmd2(
    x: Float[Array, "m d"],
    y: Float[Array, "n d"],
    kernel: AbstractKernel,
    key: jax.Array,
    *,
    num_directions: int,
    unbiased: bool,
) -> Float[Array, ""]:
    """The energy-distance MMD^2 as ``t c_d`` times the mean of 1-D energy distances over L directions.

    For ``kernel = t * Energy()`` (``t = 1`` for ``Energy()`` itself):

        MMD^2 ~ t c_d (1/L) sum_l MMD^2(theta_l^T x, theta_l^T y),   theta_l uniform on S^(d-1)

    an unbiased estimate over the directions of the exact (pairwise) value of the same estimator;
    for a fixed key a deterministic, differentiable function of x, y and t.

    Args:
      x: samples (m, d).
      y: samples (n, d).
      kernel: ``Energy()`` or a positive scaling of it (see :func:`check_sliced_kernel`).
      key: ``jax.random`` key for the directions.
      num_directions: L.
      unbiased: the U-statistic instead of the V-statistic.

    Returns:
      The scalar estimate.
    """
    factor = _energy_factor(kernel)
    d = x.shape[1]
    # Exact (the 1-D distances see only differences), and it keeps the projections' differences
    # accurate in float32 for samples far from the origin, as the pairwise route's centring does.
    centre = pooled_mean(x, y)
    directions = random_directions(key, num_directions, d, x.dtype)
    # one row per direction: each 1-D problem contiguous in memory
    x_proj = jnp.matmul(directions, (x - centre).T, precision=HIGHEST)
    y_proj = jnp.matmul(directions, (y - centre).T, precision=HIGHEST)
    distance = functools.partial(energy_distance_1d, unbiased=unbiased)
    per_direction = jax.vmap(distance)(x_proj, y_proj)
    return factor * energy_constant(d) * jnp.mean(per_direction)

"""Maximum Mean Discrepancy estimators (Gretton et al., 2012) with two exact routes.

    biased    MMD_b^2 = 1/m^2 sum_ij k(x_i,x_j) + 1/n^2 sum_ij k(y_i,y_j) - 2/(mn) sum_ij k(x_i,y_j)
    unbiased  MMD_u^2 = 1/(m(m-1)) sum_{i!=j} k(x_i,x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i,y_j)
                        - 2/(mn) sum_ij k(x_i,y_j)
    linear    MMD_l^2 = 1/P sum_p h(z_{2p-1}, z_{2p}),  P = floor(min(m, n) / 2)

Routes for the biased and unbiased estimators (the first two exact, the last two random,
unbiased estimates of the exact value, each drawn from an explicit ``key``):

- ``"feature"``: kernels ``k = c_0 + c_1 a^T b + c_2 (a^T b)^2`` have an exact finite feature
  space; the sums are read off the means and Gram matrices in O((m + n) d^2) time and O(d^2)
  memory, never an m x n matrix.
- ``"pairwise"``: any kernel. Kernel values are summed block by block inside ``lax.scan``; each
  block is rematerialised in the backward pass (``jax.checkpoint``), so the value and the gradient
  both run in O(block_size * max(m, n)) memory. The x-x and y-y sums evaluate each unordered pair
  of blocks once. A block of all the rows sums whole matrices instead, without the scans.
- ``"rff"``: translation-invariant kernels with a spectral density (Gaussian, Laplacian, their
  mixtures and positive scalings, plus exact inner-product terms) through random Fourier features
  (:mod:`mmdstyle.random_features`): O((m + n) d D) time, O(d D) memory.
- ``"sliced"``: the energy distance (:class:`~mmdstyle.kernels.Energy`) as a mean over random
  directions of 1-D energy distances, each by sorting (:mod:`mmdstyle.sliced`): O((m + n) d L +
  L (m + n) log(m + n)) for L directions.

References:
  Gretton, Borgwardt, Rasch, Schölkopf, Smola, "A Kernel Two-Sample Test", JMLR 13, 2012.
  https://jmlr.org/papers/v13/gretton12a.html
  Li, Wang, Liu, Hou, "Demystifying Neural Style Transfer", IJCAI 2017.
  https://arxiv.org/abs/1701.01036
  Rahimi, Recht, "Random Features for Large-Scale Kernel Machines", NeurIPS 2007.
  Sejdinovic, Sriperumbudur, Gretton, Fukumizu, "Equivalence of distance-based and RKHS-based
  statistics in hypothesis testing", Annals of Statistics 41(5), 2013.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float

from mmdstyle import random_features, sliced
from mmdstyle._checks import (
    check_block_size,
    check_choice,
    check_estimator,
    check_finite_value,
    check_integer,
    check_key,
    check_sample_pair,
    check_samples,
    is_traced,
)
from mmdstyle._pytrees import pytree_dataclass
from mmdstyle._rows import RowSums, pad_rows
from mmdstyle.kernels import HIGHEST, AbstractKernel, check_kernel, pooled_mean, scale_samples
from mmdstyle.sharded import Placement, device_count, place_samples, ring_pair_sum, ring_self_sum

__all__ = [
    "RANDOM_ROUTES",
    "ROUTES",
    "PairwiseTarget",
    "default_block_size",
    "mmd2",
    "pairwise_mmd2_to_target",
    "pairwise_target",
    "select_route",
]

ROUTES = ("auto", "feature", "pairwise", "rff", "sliced")
#: The routes that estimate the exact value from random draws (frequencies, directions).
RANDOM_ROUTES = ("rff", "sliced")
#: The routes that run on samples split over a device mesh (:mod:`mmdstyle.sharded`).
SHARDED_ROUTES = ("feature", "pairwise", "rff")
#: Default number of random frequencies (route "rff") and directions (route "sliced").
DEFAULT_NUM_FEATURES = 1024
DEFAULT_NUM_DIRECTIONS = 256

#: Kernel values in one tile of the pairwise route: 2^18, 1 MiB in float32, so that a tile stays
#: in cache between the matmul that makes it and the reduction that consumes it.
TILE_ELEMENTS = 2**18
#: Rows per block at most (the default block size).
MAX_BLOCK_ROWS = 128
#: At least this many blocks per sample set where possible, so that the symmetric x-x and y-y
#: sums, which visit floor(nb/2) + 1 of nb blocks per block row, skip close to half the pairs.
MIN_BLOCKS = 16


#: Pairs up to which a caller that evaluates a program only a few times may ask for one tile
#: (``block_size >= max(m, n)``): one tile compiles several times faster than the blocked scans
#: (the identity check's value and gradient at 1024 x 64: 0.3 s against 1.1 s), but runs slower,
#: since whole kernel matrices leave the cache (a Gaussian MMD^2 of 1000 x 2 samples: 36 ms
#: against 9 ms), so it is not the default.
ONE_TILE_PAIRS = 2**20


def default_block_size(m: int, n: int, devices: int = 1) -> int:
    """Rows per block: all of them up to ``MAX_BLOCK_ROWS``; beyond, fewer, for ``MIN_BLOCKS`` blocks or more.

    With the sets split over ``devices``, each device's share (``ceil(m / devices)`` rows) is what
    its blocks divide.

    Sets of at most ``MAX_BLOCK_ROWS`` samples are summed in one tile, whose kernel matrices
    (at most 2^14 values each) stay in cache anyway: measured on one core, m = n in 17 ... 128,
    d = 5 and 64, float32 and float64, one tile compiles 2-3x faster than the blocked scans
    (0.6-1.9 s against 2.0-2.5 s for a value and gradient), runs its value and gradient 1.5-3x
    faster, and its value alone within 15 % either way.
    """
    largest = -(-max(m, n) // devices)
    if largest <= MAX_BLOCK_ROWS:
        return int(max(1, largest))
    return int(min(MAX_BLOCK_ROWS, -(-largest // MIN_BLOCKS)))


def _feature_coefficients(kernel: AbstractKernel) -> tuple[ArrayLike, ...] | None:
    coefficients = kernel.inner_product_coefficients()
    if coefficients is None or len(coefficients) > 3:
        return None
    return coefficients


def select_route(kernel: AbstractKernel, estimator: str = "biased", route: str = "auto") -> str:
    """The route :func:`mmd2` takes: feature, pairwise, rff, sliced or paired (linear-time).

    Args:
      kernel: the kernel.
      estimator: ``"biased"``, ``"unbiased"`` or ``"linear"``.
      route: ``"auto"`` picks the feature route whenever the kernel has one, else the pairwise
        route: it never picks a random route, which needs a key.

    Raises:
      ValueError: a route the kernel does not have (the message names the kernels that have it),
        or a random route with the linear-time estimator.
    """
    check_choice("route", route, ROUTES)
    if route in RANDOM_ROUTES:
        if estimator == "linear":
            raise ValueError(
                f"route={route!r} estimates the biased or unbiased MMD^2; the linear-time estimator "
                "evaluates the kernel on m/2 pairs and has no random route. Use estimator='biased' "
                "or 'unbiased', or route='auto'."
            )
        if route == "rff":
            random_features.check_kernel_has_features(kernel)
        else:
            sliced.check_sliced_kernel(kernel)
        return route
    if estimator == "linear":
        return "paired"
    has_features = _feature_coefficients(kernel) is not None
    if route == "feature" and not has_features:
        raise ValueError(
            f"route='feature' needs a kernel of the form c0 + c1 a^T b + c2 (a^T b)^2 (Linear, "
            f"Polynomial of degree <= 2, and their sums, products and positive scalings); "
            f"{kernel!r} has none. Use route='auto' or route='pairwise'."
        )
    if route == "auto":
        return "feature" if has_features else "pairwise"
    return route


def mmd2(
    x: ArrayLike,
    y: ArrayLike,
    kernel: AbstractKernel,
    estimator: str = "biased",
    block_size: int | None = None,
    route: str = "auto",
    *,
    num_features: int = DEFAULT_NUM_FEATURES,
    num_directions: int = DEFAULT_NUM_DIRECTIONS,
    key: jax.Array | None = None,
    mesh: Mesh | None = None,
) -> Float[Array, ""]:
    """Squared Maximum Mean Discrepancy between the samples x and y under ``kernel``.

    Args:
      x: samples (m, d): m positions of a feature map, each a vector of d channels.
      y: samples (n, d); n may differ from m.
      kernel: any :class:`~mmdstyle.kernels.AbstractKernel`.
      estimator: ``"biased"`` (V-statistic, >= 0 in exact arithmetic for a positive
        definite kernel; the Gram loss is its poly2 case),
        ``"unbiased"`` (U-statistic) or ``"linear"`` (linear-time, Gretton 2012 Lemma 14:
        consecutive pairs ``z_p = (x_p, y_p)`` in the given order; shuffle first if the order
        carries structure, as Li et al.'s code does).
      block_size: rows per block of the pairwise route (default: at most 128, and at least 16
        blocks where possible); each block meets the columns in tiles of about 2^18 kernel
        values. Memory is O(block_size * max(m, n)) at most. ``block_size >= max(m, n)`` sums
        whole kernel matrices, one tile, without scans: faster to compile, slower to run.
        Ignored by the other routes.
      route: ``"auto"`` (feature route when the kernel has one, else pairwise), ``"feature"``,
        ``"pairwise"``, ``"rff"`` (random Fourier features) or ``"sliced"`` (random directions,
        for :class:`~mmdstyle.kernels.Energy`). See :func:`select_route`.
      num_features: frequencies D of the ``"rff"`` route (2D features: sin/cos pairs); the
        error of the estimate shrinks like D^(-1/2).
      num_directions: directions L of the ``"sliced"`` route; the error shrinks like L^(-1/2).
      key: ``jax.random`` key for the random routes' draws (required there, ignored by the
        exact routes). The same key gives the same frequencies or directions, so with a fixed
        key the estimate is a deterministic, differentiable function of x, y and the kernel.
      mesh: a ``jax.sharding.Mesh`` to split the samples' rows over (all its axes). By default
        the rows stay where x and y lie: samples placed with ``NamedSharding(mesh,
        PartitionSpec(axes, None))`` are summed on that mesh, in one process or several. There
        the feature and random-feature routes total each device's rows and add the totals, and
        the pairwise route passes blocks of rows round a ring of devices (:mod:`mmdstyle.sharded`),
        so no device holds more than two blocks of a set; m and n need not divide by the device
        count. The value is the one-device value, up to the order of the sums. The sliced route
        and the linear-time estimator run on the whole arrays, which XLA partitions as it sees fit.

    Returns:
      The scalar estimate, in the dtype of the samples. Jit-compiled; differentiable in x, y
      and the kernel's parameters. On the random routes it is an unbiased estimate (over keys)
      of the exact route's value of the same estimator. Computed on the samples scaled by a
      power of two into (-1, 1), with the kernel rescaled to match, so samples of any magnitude
      give the same value, exactly (docs/math.md, "Numerics": "Range").

    Raises:
      ValueError: bad samples, estimator, block size, kernel, route or key; a ``mesh`` that is
        not a Mesh, samples split along their channels or over different meshes; and, where the
        call is not traced, a value that is not finite: NaN or infinite samples (the message
        counts them), or a value beyond the dtype's range.
    """
    x, y, placement = place_samples(x, y, mesh)
    check_estimator(estimator, x.shape[0], y.shape[0])
    check_block_size(block_size)
    check_kernel("kernel", kernel)
    chosen = select_route(kernel, estimator, route)
    draws = None
    if chosen in RANDOM_ROUTES:
        key = check_key(key, f"route={chosen!r}")
        if chosen == "rff":
            draws = check_integer("num_features", num_features)
            random_features.check_enough_features(kernel, draws)
        else:
            draws = check_integer("num_directions", num_directions)
    if chosen not in SHARDED_ROUTES:
        placement = None
    if block_size is None:
        block_size = default_block_size(x.shape[0], y.shape[0], device_count(placement))
    powers = _nonzero_powers(kernel) if chosen == "feature" else None
    value = _mmd2(
        x,
        y,
        kernel,
        key,
        estimator=estimator,
        route=chosen,
        block_size=block_size,
        powers=powers,
        draws=draws,
        placement=placement,
    )
    return check_finite_value(value, f"MMD^2 under {kernel!r}", {"x": x, "y": y})


def _nonzero_powers(kernel: AbstractKernel) -> tuple[int, ...]:
    """Powers p of a^T b whose coefficient is not a concrete 0 (read before jit traces them)."""
    coefficients = _feature_coefficients(kernel)
    return tuple(p for p, c in enumerate(coefficients) if is_traced(c) or not np.all(np.asarray(c) == 0.0))


@functools.partial(
    jax.jit, static_argnames=("estimator", "route", "block_size", "powers", "draws", "placement")
)
def _mmd2(
    x: Float[Array, "m d"],
    y: Float[Array, "n d"],
    kernel: AbstractKernel,
    key: jax.Array | None,
    *,
    estimator: str,
    route: str,
    block_size: int,
    powers: tuple[int, ...] | None,
    draws: int | None,
    placement: Placement | None = None,
) -> Float[Array, ""]:
    # the samples brought into (-1, 1) by a power of two, which rounds nothing; the value
    # multiplied back (docs/math.md, "Numerics")
    scaled = scale_samples(x, y, kernel)
    if scaled is not None:
        x, y, kernel, undo = scaled
    unbiased = estimator == "unbiased"
    if route == "paired":
        value = linear_time_mmd2(x, y, kernel)
    elif route == "rff":
        # MMD^2 is linear in the kernel: the spectral terms by random features, the rest exactly
        spectral, exact = random_features.split_kernel(kernel)
        value = random_features.rff_mmd2(
            x, y, spectral, key, num_features=draws, unbiased=unbiased, placement=placement
        )
        if exact is not None:
            value = value + _feature_route(x, y, _feature_coefficients(exact), unbiased, None, placement)
    elif route == "sliced":
        value = sliced.sliced_mmd2(x, y, kernel, key, num_directions=draws, unbiased=unbiased)
    elif route == "feature":
        value = _feature_route(x, y, _feature_coefficients(kernel), unbiased, powers, placement)
    else:
        value = pairwise_mmd2(x, y, kernel, unbiased=unbiased, block_size=block_size, placement=placement)
    return value if scaled is None else undo(value)


def _feature_route(
    x: Float[Array, "m d"],
    y: Float[Array, "n d"],
    coefficients: tuple[ArrayLike, ...],
    unbiased: bool,
    powers: tuple[int, ...] | None,
    placement: Placement | None,
) -> Float[Array, ""]:
    """:func:`feature_mmd2`, on one device or from each device's totals of its rows."""
    if placement is None:
        return feature_mmd2(x, y, coefficients, unbiased=unbiased, powers=powers)

    def on_device(
        coefficients: tuple[Array, ...], x: Array, x_rows: RowSums, y: Array, y_rows: RowSums
    ) -> Array:
        return feature_mmd2(
            x, y, coefficients, unbiased=unbiased, powers=powers, x_rows=x_rows, y_rows=y_rows
        )

    return placement.over_rows(on_device, x, y, tuple(jnp.asarray(c) for c in coefficients))


# ----------------------------------------------------------------------------------------------
# Feature route


def feature_mmd2(
    x: Float[Array, "m d"],
    y: Float[Array, "n d"],
    coefficients: tuple[ArrayLike, ...],
    *,
    unbiased: bool,
    powers: tuple[int, ...] | None = None,
    x_rows: RowSums | None = None,
    y_rows: RowSums | None = None,
) -> Float[Array, ""]:
    """MMD^2 for ``k(a, b) = c_0 + c_1 a^T b + c_2 (a^T b)^2`` from means and Gram matrices.

    ``powers`` lists the p whose c_p may be nonzero (default: all); terms known to vanish, such
    as the linear one of ``Polynomial(2)``, then cost nothing. ``x_rows`` and ``y_rows`` say how
    to total over each set's rows (default: all rows are real and on this device; inside
    ``shard_map``, padded rows weigh 0 and the devices' totals are added).

    The biased estimate is written without cancelling sums (docs/math.md, "Feature route"):

        MMD_b^2 = c_2 ||Gx/m - Gy/n||_F^2 + c_1 ||mean(x) - mean(y)||^2      (c_0 cancels)

    and the unbiased one adds, for x and likewise for y, ``(Kxx/m - Dx) / (m(m-1))`` where
    Kxx = sum_ij k(x_i, x_j) and Dx = sum_i k(x_i, x_i):

        Kxx/m - Dx = -c_1 sum_i ||x_i - mean(x)||^2 + c_2 (m ||Gx/m||_F^2 - sum_i ||x_i||^4)
    """
    c = tuple(coefficients) + (0.0,) * (3 - len(coefficients))
    powers = range(len(coefficients)) if powers is None else powers
    has_linear, has_quadratic = 1 in powers, 2 in powers
    x_rows = RowSums(x.shape[0]) if x_rows is None else x_rows
    y_rows = RowSums(y.shape[0]) if y_rows is None else y_rows
    mean_x, mean_y = x_rows.mean(x)[None, :], y_rows.mean(y)[None, :]
    gram_x = x_rows.gram(x) / float(x_rows.count) if has_quadratic else None
    gram_y = y_rows.gram(y) / float(y_rows.count) if has_quadratic else None
    value = jnp.zeros((), x.dtype)
    if has_linear:
        value = value + c[1] * jnp.sum((mean_x - mean_y) ** 2)
    if has_quadratic:
        value = value + c[2] * jnp.sum((gram_x - gram_y) ** 2)
    if not unbiased:
        return value

    def diagonal_correction(samples: Array, rows: RowSums, mean: Array, gram: Array | None) -> Array:
        size = float(rows.count)
        correction = jnp.zeros((), samples.dtype)
        if has_linear:
            correction = correction - c[1] * rows.sum(jnp.sum((samples - mean) ** 2, axis=-1))
        if has_quadratic:
            fourth_powers = rows.sum(jnp.sum(samples * samples, axis=-1) ** 2)
            correction = correction + c[2] * (size * jnp.sum(gram**2) - fourth_powers)
        return correction / (size * (size - 1.0))

    return (
        value
        + diagonal_correction(x, x_rows, mean_x, gram_x)
        + diagonal_correction(y, y_rows, mean_y, gram_y)
    )


# ----------------------------------------------------------------------------------------------
# Pairwise route


def _weighted_sum(
    matrix: Float[Array, "r c"], row_weights: Float[Array, " r"], column_weights: Float[Array, " c"] | None
) -> Float[Array, ""]:
    """``sum_ij u_i K_ij v_j`` (v = 1 if None), the products with ``u`` and ``v`` at HIGHEST precision.

    Without HIGHEST, GPUs would sum in TF32.
    """
    if column_weights is None:
        row_sums = jnp.sum(matrix, axis=1)
    else:
        row_sums = jnp.matmul(matrix, column_weights, precision=HIGHEST)
    return jnp.dot(row_weights, row_sums, precision=HIGHEST)


def _tiled_kernel_sum(
    kernel: AbstractKernel,
    rows: Float[Array, "r d"],
    row_weights: Float[Array, " r"],
    columns: Float[Array, "c d"],
    column_weights: Float[Array, " c"] | None,
    *,
    block: int,
    chunk: int,
    span: int,
    window: Float[Array, " s"] | None,
    include_own_block: bool,
) -> Float[Array, ""]:
    """``sum_I sum_{j < span} sum_i u_i k(rows_i, columns_{s_I + j}) v_{s_I + j} w_j`` over row blocks I.

    Each block of ``block`` rows meets ``span`` consecutive columns in tiles of ``block x chunk``
    kernel values (small enough to stay in cache), starting at ``s_I = I * block + block`` when a
    ``window`` of relative weights w is given (the symmetric sums) and at 0 otherwise (w = 1).
    With ``include_own_block`` the block is also compared with itself, self-pairs masked out.
    Every tile is rematerialised in the backward pass, so memory stays O(block * chunk).
    """
    num_blocks = rows.shape[0] // block
    off_diagonal = jnp.asarray(~np.eye(block, dtype=bool))

    def add_row_block(total: Array, index: Array) -> tuple[Array, None]:
        start = index * block
        block_rows = lax.dynamic_slice_in_dim(rows, start, block)
        block_weights = lax.dynamic_slice_in_dim(row_weights, start, block)
        first_column = start + block if window is not None else 0

        @jax.checkpoint
        def add_tile(total: Array, offset: Array) -> tuple[Array, None]:
            tile_columns = lax.dynamic_slice_in_dim(columns, first_column + offset, chunk)
            tile_weights = None
            if column_weights is not None:
                tile_weights = lax.dynamic_slice_in_dim(column_weights, first_column + offset, chunk)
            if window is not None:
                tile_weights = tile_weights * lax.dynamic_slice_in_dim(window, offset, chunk)
            return total + _weighted_sum(kernel(block_rows, tile_columns), block_weights, tile_weights), None

        if include_own_block:
            own = jax.checkpoint(lambda r, w: _weighted_sum(jnp.where(off_diagonal, kernel(r, r), 0.0), w, w))
            total = total + own(block_rows, block_weights)
        total, _ = lax.scan(add_tile, total, jnp.arange(0, span, chunk))
        return total, None

    total, _ = lax.scan(add_row_block, jnp.zeros((), rows.dtype), jnp.arange(num_blocks))
    return total


def _chunk_size(span: int, block: int) -> int:
    """Columns per tile: about ``TILE_ELEMENTS / block``, a multiple of ``block``, at most span."""
    return int(max(block, min(span, (TILE_ELEMENTS // block) // block * block)))


def symmetric_kernel_sum(
    kernel: AbstractKernel, x: Float[Array, "m d"], block_size: int, weights: Float[Array, " m"] | None = None
) -> Float[Array, ""]:
    """``sum_{i != j} u_i u_j k(x_i, x_j)`` with each unordered block pair once.

    The weights u default to 1; padding rows weigh 0. The self-pairs' sum is :func:`diagonal_sum`.

    Block row I is compared with itself and with the cyclic window of the next floor(nb/2)
    blocks (mod nb): over all I this meets every unordered pair of distinct blocks once (counted
    twice), except, for even nb, the opposite block at distance nb/2, which both ends meet
    (counted once each). Within block I the self-pairs are masked out rather than subtracted
    afterwards (with a small bandwidth they would dominate the sum and swamp the rest in
    float32); :func:`diagonal_sum` computes them exactly, from ``kernel.paired``, where needed.
    """
    m = x.shape[0]
    if block_size >= m:  # one block: one tile, self-pairs masked out as below
        matrix = jnp.where(jnp.asarray(~np.eye(m, dtype=bool)), kernel(x, x), 0.0)
        if weights is None:
            return jnp.sum(matrix)
        return _weighted_sum(matrix, weights, weights)
    block = block_size
    num_blocks = -(-m // block)
    padded, valid = pad_rows(x, num_blocks * block, weights)
    other_blocks = num_blocks // 2
    block_weights = np.full(other_blocks, 2.0)
    if num_blocks % 2 == 0 and other_blocks:
        block_weights[-1] = 1.0
    span = other_blocks * block  # > 0: there are at least two blocks
    chunk = _chunk_size(span, block)
    span = -(-span // chunk) * chunk  # whole tiles; the columns past the window weigh 0
    window = np.zeros(span)
    window[: other_blocks * block] = np.repeat(block_weights, block)
    # The windows of the last blocks run past the end: append the first rows again.
    repeats = -(-(num_blocks * block + span) // (num_blocks * block))
    wrapped, wrapped_valid = jnp.tile(padded, (repeats, 1)), jnp.tile(valid, repeats)
    off_diagonal_sum = _tiled_kernel_sum(
        kernel,
        padded,
        valid,
        wrapped,
        wrapped_valid,
        block=block,
        chunk=chunk,
        span=span,
        window=jnp.asarray(window, x.dtype),
        include_own_block=True,
    )
    return off_diagonal_sum


def diagonal_sum(
    kernel: AbstractKernel, x: Float[Array, "m d"], weights: Float[Array, " m"] | None = None
) -> Float[Array, ""]:
    """``sum_i u_i k(x_i, x_i)`` (u defaults to 1): the self-pairs the biased estimator counts."""
    diagonal = kernel.paired(x, x)
    return jnp.sum(diagonal) if weights is None else jnp.dot(weights, diagonal, precision=HIGHEST)


def cross_kernel_sum(
    kernel: AbstractKernel,
    x: Float[Array, "m d"],
    y: Float[Array, "n d"],
    block_size: int,
    x_weights: Float[Array, " m"] | None = None,
    y_weights: Float[Array, " n"] | None = None,
) -> Float[Array, ""]:
    """``sum_ij u_i v_j k(x_i, y_j)`` (u, v default 1): a block of rows of x against all of y at a time."""
    m, n = x.shape[0], y.shape[0]
    if block_size >= max(m, n):  # one tile
        matrix = kernel(x, y)
        if x_weights is None and y_weights is None:
            return jnp.sum(matrix)
        return _weighted_sum(matrix, jnp.ones(m, x.dtype) if x_weights is None else x_weights, y_weights)
    block = min(block_size, m)
    rows, rows_valid = pad_rows(x, -(-m // block) * block, x_weights)
    # Without symmetry to exploit, the columns are visited in the fewest tiles that keep a tile
    # under 16 TILE_ELEMENTS (an unweighted row sum streams well even when it leaves the cache).
    chunk = n if block * n <= 16 * TILE_ELEMENTS else _chunk_size(n, block)
    columns, columns_valid = pad_rows(y, -(-n // chunk) * chunk, y_weights)
    return _tiled_kernel_sum(
        kernel,
        rows,
        rows_valid,
        columns,
        columns_valid if columns.shape[0] != n or y_weights is not None else None,
        block=block,
        chunk=chunk,
        span=columns.shape[0],
        window=None,
        include_own_block=False,
    )


def pairwise_mmd2(
    x: Float[Array, "m d"],
    y: Float[Array, "n d"],
    kernel: AbstractKernel,
    *,
    unbiased: bool,
    block_size: int,
    placement: Placement | None = None,
) -> Float[Array, ""]:
    """MMD^2 from blocked kernel sums; works for every kernel. On a ``placement``, by rings of devices."""
    if kernel.mmd_shift_invariant:
        # Exact for such kernels, and it shrinks ||a||^2 + ||b||^2 - 2 a^T b cancellation.
        centre = pooled_mean(x, y)
        x, y = x - centre, y - centre
    x_within = within_term(kernel, x, block_size, unbiased=unbiased, placement=placement)
    y_within = within_term(kernel, y, block_size, unbiased=unbiased, placement=placement)
    return x_within + y_within - cross_term(kernel, x, y, block_size, placement=placement)


def within_term(
    kernel: AbstractKernel,
    samples: Float[Array, "n d"],
    block_size: int,
    *,
    unbiased: bool,
    placement: Placement | None = None,
) -> Float[Array, ""]:
    """One sample set's own term of MMD^2: ``sum_jj' k(s_j, s_j') / n^2``, or over j != j' by n(n-1)."""
    n = float(samples.shape[0])
    weights = None
    if placement is None:
        off_diagonal = symmetric_kernel_sum(kernel, samples, block_size)
    else:
        samples, weights = placement.spread(samples)
        off_diagonal = ring_self_sum(
            _block_pair_sum(block_size),
            lambda kernel, a, u: symmetric_kernel_sum(kernel, a, block_size, u),
            kernel,
            samples,
            weights,
            placement,
        )
    if unbiased:
        return off_diagonal / (n * (n - 1.0))
    return (off_diagonal + diagonal_sum(kernel, samples, weights)) / n**2


def cross_term(
    kernel: AbstractKernel,
    x: Float[Array, "m d"],
    y: Float[Array, "n d"],
    block_size: int,
    *,
    placement: Placement | None = None,
) -> Float[Array, ""]:
    """The cross term of MMD^2 (either estimator): ``2 sum_ij k(x_i, y_j) / (m n)``."""
    if placement is None:
        total = cross_kernel_sum(kernel, x, y, block_size)
    else:
        total = ring_pair_sum(
            _block_pair_sum(block_size), kernel, *placement.spread(x), *placement.spread(y), placement
        )
    return 2.0 * total / (float(x.shape[0]) * float(y.shape[0]))


def _block_pair_sum(block_size: int) -> Callable[..., Array]:
    """One device's ``sum_ij u_i v_j k(a_i, b_j)`` for the ring, in blocks of ``block_size`` rows."""
    return lambda kernel, a, u, b, v: cross_kernel_sum(kernel, a, b, block_size, u, v)


@pytree_dataclass
@dataclass(frozen=True)
class PairwiseTarget:
    """One sample set's side of the pairwise route, computed once: for a loss against a fixed target.

    A style loss or measure compares changing images with the same style features under the same
    kernel: the style's own kernel sum, a quarter of the pairs when m = n, is a constant.

    Attributes:
      samples: the target's samples y, (n, d).
      kernel: the kernel the estimate takes.
      centre: for a kernel whose MMD is unchanged by a common shift, the shift every call
        applies to both sets (y's mean, (1, d)); else None. For the energy kernel the terms are
        not shift-invariant one by one, only their combination: one centre for all three.
      within: y's own term, ``sum_jj' k(y_j, y_j') / n^2`` (biased) or over j != j' by n(n-1)
        (unbiased), of y shifted by ``centre``, in the units of y (computed on y scaled like
        :func:`mmd2`'s samples).
      unbiased: the estimator.
    """

    # plain annotations: under JAX's transformations the fields hold tracers and placeholders
    samples: Any  # (n, d)
    kernel: Any  # AbstractKernel
    centre: Any  # (1, d) or None
    within: Any  # ()
    unbiased: bool = field(metadata={"static": True})


def pairwise_target(
    y: ArrayLike, kernel: AbstractKernel, estimator: str = "biased", block_size: int | None = None
) -> PairwiseTarget:
    """The target y's side of :func:`mmd2`'s pairwise route, for :func:`pairwise_mmd2_to_target`.

    Args:
      y: the target samples (n, d).
      kernel: any kernel (the pairwise route takes every kernel).
      estimator: ``"biased"`` or ``"unbiased"`` (the linear-time estimator forms no such sum).
      block_size: rows per block of y's sum, as in :func:`mmd2`.

    Raises:
      ValueError: bad samples, kernel, estimator or block size.
    """
    y = check_samples("y", y, allow_feature_map=False)
    check_kernel("kernel", kernel)
    check_choice("estimator", estimator, ("biased", "unbiased"))
    check_estimator(estimator, y.shape[0], y.shape[0])
    check_block_size(block_size)
    block_size = default_block_size(y.shape[0], y.shape[0]) if block_size is None else block_size
    return _pairwise_target(y, kernel, unbiased=estimator == "unbiased", block_size=block_size)


@functools.partial(jax.jit, static_argnames=("unbiased", "block_size"))
def _pairwise_target(
    y: Float[Array, "n d"], kernel: AbstractKernel, *, unbiased: bool, block_size: int
) -> PairwiseTarget:
    centre = lax.stop_gradient(jnp.mean(y, axis=0, keepdims=True)) if kernel.mmd_shift_invariant else None
    shifted = y if centre is None else y - centre
    scaled = scale_samples(shifted, shifted, kernel)
    if scaled is None:
        within = within_term(kernel, shifted, block_size, unbiased=unbiased)
    else:
        samples, _, scaled_kernel, undo = scaled
        within = undo(within_term(scaled_kernel, samples, block_size, unbiased=unbiased))
    return PairwiseTarget(y, kernel, centre, within, unbiased)


def pairwise_mmd2_to_target(
    x: ArrayLike, target: PairwiseTarget, block_size: int | None = None
) -> Float[Array, ""]:
    """:func:`mmd2` of x against the target whose side :func:`pairwise_target` computed.

    The same value as ``mmd2(x, y, kernel, estimator, route="pairwise")``, up to rounding, at
    about three quarters of the cost for m = n: only the x-x and x-y sums are formed. The
    target's term is a constant: the gradient in x is the same as mmd2's, but none flows to y
    or to the kernel's parameters (use :func:`mmd2` for those).

    Args:
      x: samples (m, d), with the target's d.
      target: from :func:`pairwise_target`.
      block_size: rows per block, as in :func:`mmd2`.

    Raises:
      ValueError: bad samples or block size; where the call is not traced, a value that is not
        finite (as :func:`mmd2`).
    """
    x, y = check_sample_pair(x, target.samples)
    check_estimator("unbiased" if target.unbiased else "biased", x.shape[0], y.shape[0])
    check_block_size(block_size)
    block_size = default_block_size(x.shape[0], y.shape[0]) if block_size is None else block_size
    value = _pairwise_mmd2_to_target(x, target, block_size=block_size)
    return check_finite_value(value, f"MMD^2 under {target.kernel!r}", {"x": x, "y": y})


@functools.partial(jax.jit, static_argnames="block_size")
def _pairwise_mmd2_to_target(
    x: Float[Array, "m d"], target: PairwiseTarget, *, block_size: int
) -> Float[Array, ""]:
    y, kernel = target.samples.astype(x.dtype), target.kernel
    if target.centre is not None:  # the centre the target's own term was taken about
        centre = target.centre.astype(x.dtype)
        x, y = x - centre, y - centre
    scaled = scale_samples(x, y, kernel)
    if scaled is not None:
        x, y, kernel, undo = scaled
    x_within = within_term(kernel, x, block_size, unbiased=target.unbiased)
    partial = x_within - cross_term(kernel, x, y, block_size)
    partial = partial if scaled is None else undo(partial)
    return partial + jnp.asarray(target.within, x.dtype)


# ----------------------------------------------------------------------------------------------
# Linear-time estimator


def linear_time_mmd2(
    x: Float[Array, "m d"], y: Float[Array, "n d"], kernel: AbstractKernel
) -> Float[Array, ""]:
    """MMD_l^2 = 1/P sum_p [k(x, x') + k(y, y') - k(x, y') - k(x', y)].

    The p-th term pairs z = (x, y) = (x_{2p-1}, y_{2p-1}) with z' = (x', y') = (x_{2p}, y_{2p}),
    in the order given (Gretton et al. 2012, Lemma 14).
    """
    pairs = min(x.shape[0], y.shape[0]) // 2
    x_odd, x_even = x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2]
    y_odd, y_even = y[0 : 2 * pairs : 2], y[1 : 2 * pairs : 2]
    h = (
        kernel.paired(x_odd, x_even)
        + kernel.paired(y_odd, y_even)
        - kernel.paired(x_odd, y_even)
        - kernel.paired(x_even, y_odd)
    )
    return jnp.mean(h)

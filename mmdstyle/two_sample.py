"""The kernel two-sample test: is MMD(x, y) larger than under random relabelling?

Under the null hypothesis that x and y come from one distribution, the labels "x" and "y" are
exchangeable, so the statistic of every relabelling of the pooled samples is a draw from its null
distribution. With B random relabellings the p-value

    p = (1 + #{b : MMD^2_b >= MMD^2_observed}) / (1 + B)

is exact (valid at every sample size), counting the observed labelling as one of the draws.

With ``route="rff"`` the statistic is MMD^2 under one draw of random Fourier features (the
kernel ``z(a)^T z(b)`` is then fixed, whatever the labels, so the test stays exact). The pooled
features are formed once; each relabelling then only sums them over its x rows:

    S_x = a^T Z,    S_y = 1^T Z - S_x,    MMD^2 = mmd2_from_means(S_x/m, S_y/n)

with a the 0/1 indicator of the samples labelled x and Z the (m + n) x 2R feature matrix (R
frequencies): O(N d R) for the features and O(B N R) for the B relabellings (N = m + n), in
chunks of relabellings, one matrix product each, against O(B N^2 d) pairwise. 2 x 100k samples
of d = 64, 999 relabellings, R = 512, float32: about 30 s and 1.2 GB of buffers on 2 CPU cores.

References:
  Gretton, Borgwardt, Rasch, Schölkopf, Smola, "A Kernel Two-Sample Test", JMLR 13, 2012.
  Phipson, Smyth, "Permutation p-values should never be zero", Stat. Appl. Genet. Mol. Biol., 2010.
  https://doi.org/10.2202/1544-6115.1585
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, ArrayLike, Bool, Float

from mmdstyle import random_features
from mmdstyle._checks import (
    check_block_size,
    check_choice,
    check_estimator,
    check_finite_value,
    check_integer,
)
from mmdstyle._host import on_host, writes_result
from mmdstyle._pytrees import pytree_dataclass
from mmdstyle._rows import RowSums
from mmdstyle.kernels import HIGHEST, AbstractKernel, check_kernel, pooled_mean, scale_samples
from mmdstyle.mmd import (
    DEFAULT_NUM_FEATURES,
    ROUTES,
    default_block_size,
    feature_mmd2,
    linear_time_mmd2,
    mmd2,
    select_route,
)
from mmdstyle.sharded import Placement, device_count, place_samples

__all__ = ["METHODS", "TwoSampleTestResult", "mmd2_test", "random_labels", "select_method"]

METHODS = ("auto", "matrix", "permutation")

#: ``method="auto"`` builds the pooled kernel matrix up to this many pooled samples (128 MiB in
#: float64), and recomputes MMD^2 per relabelling in bounded memory above it.
MATRIX_SAMPLES = 4096

#: Entries of the 0/1 label matrix of one chunk of relabellings (relabellings x pooled samples) on
#: the ``"rff"`` route: 2^24, 64 MiB in float32. Each chunk reads the whole pooled feature matrix
#: once, so chunks as large as memory allows read it fewest times (2 x 100k samples, 999
#: relabellings: 12 chunks of 84).
LABEL_CHUNK_ELEMENTS = 2**24


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class TwoSampleTestResult:
    """The outcome of :func:`mmd2_test`.

    Attributes:
      statistic: MMD^2 of the observed labelling.
      p_value: ``(1 + #{permuted >= statistic}) / (1 + num_permutations)``.
      permuted_statistics: MMD^2 of each random relabelling, shape (num_permutations,) (with
        leading batch axes when the test runs under ``jax.vmap``).
      estimator: the estimator of the statistic.
    """

    statistic: Float[Array, "*batch"]
    p_value: Float[Array, "*batch"]
    permuted_statistics: Float[Array, "*batch B"]
    estimator: str = dataclasses.field(metadata={"static": True})

    @property
    def num_permutations(self) -> int:
        """The number B of random relabellings (the last axis of ``permuted_statistics``)."""
        return int(self.permuted_statistics.shape[-1])


def mmd2_test(
    x: ArrayLike,
    y: ArrayLike,
    kernel: AbstractKernel,
    num_permutations: int = 1000,
    key: jax.Array | None = None,
    estimator: str = "unbiased",
    block_size: int | None = None,
    method: str = "auto",
    route: str = "auto",
    *,
    num_features: int = DEFAULT_NUM_FEATURES,
    mesh: Mesh | None = None,
) -> TwoSampleTestResult:
    """Permutation two-sample test with the MMD^2 statistic; jit-compiled.

    Args:
      x: samples (m, d).
      y: samples (n, d).
      kernel: any kernel; a characteristic one (Gaussian, Laplacian) makes the test consistent
        against every alternative; Polynomial(2, c=1) only against differences in the first two moments,
        Polynomial(2) (c = 0) only against differences in the second moments.
      num_permutations: B, the number of random relabellings (>= 1). The smallest p-value
        possible is 1 / (B + 1).
      key: PRNG key (default ``jax.random.key(0)``: reproducible). Relabelling b labels x the
        samples ``random_labels(keys[b], m, m + n)`` (each set in its pooled order), with ``keys =
        jax.random.split(key, B)``; for the linear-time estimator, which pairs samples in their
        order, the first m of ``jax.random.permutation(keys[b], m + n)``, in that order. On the
        ``"rff"`` route ``jax.random.split(key)`` first gives two keys: the first draws the
        frequencies (it is the ``key`` of :func:`mmdstyle.mmd2`), the second takes ``key``'s
        place for the relabellings.
      estimator: ``"unbiased"`` (default), ``"biased"`` or ``"linear"``.
      block_size: for the ``"permutation"`` method (see :func:`mmdstyle.mmd2`).
      method: how the relabelled statistics are computed (see :func:`select_method`):
        ``"matrix"`` builds the pooled (m + n) x (m + n) kernel matrix once and evaluates every
        relabelling with two matrix products (fast, O((m + n)^2) memory; not for the linear
        estimator, which never forms pairs across the sample); ``"permutation"`` computes MMD^2
        afresh for each relabelling with :func:`mmdstyle.mmd2`'s routes (bounded memory);
        ``"auto"`` takes whichever costs less (see :func:`select_method`).
      route: the route of :func:`mmdstyle.mmd2` the statistics take. ``"auto"`` (default), or an
        exact route, ``"feature"`` or ``"pairwise"``, used by the ``"permutation"`` method (the
        pooled matrix gives the same values). ``"rff"``: the statistic is the random-feature
        MMD^2 of one draw of ``num_features / 2`` frequencies, the same for every relabelling;
        the pooled features are formed once and each relabelling sums them over its x rows
        (O((m + n) d R + B (m + n) R) for R frequencies; ``method`` ``"auto"`` or
        ``"permutation"``). The sliced route is refused.
      num_features: 2R, the random features of the ``"rff"`` route (even; ignored otherwise).
      mesh: a device mesh to split the pooled samples' rows over (default: the mesh x and y lie
        on, if any; see :func:`mmdstyle.mmd2`). On the ``"rff"`` route each device forms the
        features of its own rows, once, and a relabelling's feature sums are each device's
        indicator-weighted sum added across devices: every relabelling for one pass over the
        samples. The ``"permutation"`` method of the exact routes computes each relabelled
        statistic with :func:`mmdstyle.mmd2` on the mesh; the ``"matrix"`` method runs as XLA
        partitions it. The statistics are the one-device ones up to the order of the sums; so is
        the p-value, except where a relabelling reproduces the observed split (likely only for
        a few samples), whose statistic ties the observed one up to rounding either way.

    Returns:
      A :class:`TwoSampleTestResult` with the statistic, the p-value and the permuted statistics.
      On the ``"rff"`` route the statistic equals ``mmdstyle.mmd2(x, y, kernel, estimator,
      route="rff", num_features=num_features, key=jax.random.split(key)[0])``.

    Raises:
      ValueError: bad samples, kernel, estimator, block size or number of permutations; a route
        the kernel does not have, the sliced route, ``method="matrix"`` with the ``"rff"`` route,
        or an odd ``num_features`` (see :func:`mmdstyle.mmd2`); a statistic that is not finite
        (NaN or infinite samples, or beyond the dtype's range), as :func:`mmdstyle.mmd2` refuses it.
    """
    x, y, placement = place_samples(x, y, mesh)
    check_estimator(estimator, x.shape[0], y.shape[0])
    check_block_size(block_size)
    check_integer("num_permutations", num_permutations)
    check_kernel("kernel", kernel)
    chosen = select_method(method, kernel, estimator, x.shape[0] + y.shape[0], x.shape[1], route)
    route = select_route(kernel, estimator, route)
    draws = None
    if route == "rff":
        draws = check_integer("num_features", num_features)
        random_features.check_enough_features(kernel, draws)
    key = jax.random.key(0) if key is None else key
    if block_size is None:
        block_size = default_block_size(x.shape[0], y.shape[0], device_count(placement))
    result = _mmd2_test(
        x, y, kernel, key, num_permutations, estimator, block_size, chosen, route, draws, placement
    )
    check_finite_value(result.statistic, f"The MMD^2 statistic under {kernel!r}", {"x": x, "y": y})
    return result


def select_method(
    method: str,
    kernel: AbstractKernel,
    estimator: str,
    pooled_samples: int,
    channels: int,
    route: str = "auto",
) -> str:
    """The method :func:`mmd2_test` uses: ``"matrix"`` or ``"permutation"``.

    ``"auto"`` weighs what one relabelling costs. From the pooled matrix it is O(N) per sample
    (N = m + n pooled samples), after O(N^2 d) to build the matrix once, which then takes O(N^2)
    memory: up to ``MATRIX_SAMPLES`` samples. Recomputed through :func:`mmdstyle.mmd2`, it is
    O(N d^2) in all for a kernel with the exact feature route (linear, polynomial of degree
    <= 2), so that route wins while ``d^2 < N``; for any other kernel it is O(N^2 d), and the
    matrix wins wherever it fits. The linear-time estimator forms no pairs: always the
    permutation method. An exact ``route`` says which of mmd2's routes the permutation method
    takes (``"pairwise"`` never wins over the matrix). The ``"rff"`` route is always the
    permutation method, each relabelling's statistic read off the pooled random features in
    O(N R) (:func:`mmd2_test`); the matrix of the exact kernel would test another statistic.

    Args:
      method: ``"auto"``, ``"matrix"`` or ``"permutation"``.
      kernel: the test's kernel.
      estimator: the test's estimator.
      pooled_samples: N = m + n.
      channels: d.
      route: the route of :func:`mmdstyle.mmd2` the statistics take (default ``"auto"``).

    Raises:
      ValueError: an unknown method or route, ``"matrix"`` with the linear-time estimator or
        with the ``"rff"`` route, the ``"sliced"`` route, or a route the kernel does not have.
    """
    check_choice("method", method, METHODS)
    check_choice("route", route, ROUTES)
    if route == "sliced":
        raise ValueError(
            "the permutation test takes route='rff' or an exact route ('auto', 'feature', 'pairwise'), "
            "not route='sliced'. For Energy() use the exact route (route='auto')."
        )
    chosen_route = select_route(kernel, estimator, route)
    if method == "matrix" and estimator == "linear":
        raise ValueError(
            "method='matrix' sums kernel values over all pairs, which the linear-time estimator never "
            "forms; use method='permutation' (or 'auto') with estimator='linear'."
        )
    if chosen_route == "rff":
        if method == "matrix":
            raise ValueError(
                "method='matrix' tabulates the exact kernel, while route='rff' tests the random-feature "
                "statistic; use method='auto' (or 'permutation') with route='rff', or an exact route "
                "with method='matrix'."
            )
        return "permutation"
    if method != "auto":
        return method
    if estimator == "linear" or pooled_samples > MATRIX_SAMPLES:
        return "permutation"
    cheap_features = chosen_route == "feature" and channels**2 < pooled_samples
    return "permutation" if cheap_features else "matrix"


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7, 8, 9, 10))
def _mmd2_test(
    x: Float[Array, "m d"],
    y: Float[Array, "n d"],
    kernel: AbstractKernel,
    key: jax.Array,
    num_permutations: int,
    estimator: str,
    block_size: int,
    method: str,
    route: str,
    draws: int | None,
    placement: Placement | None = None,
) -> TwoSampleTestResult:
    # as in mmd2: every statistic computed on the samples scaled into (-1, 1), then scaled back
    # (exact, so the order of the statistics, and with it the p-value, is unchanged)
    scaled = scale_samples(x, y, kernel)
    if scaled is not None:
        x, y, kernel, undo = scaled
    m = x.shape[0]
    pooled = jnp.concatenate([x, y])
    size = pooled.shape[0]
    unbiased = estimator == "unbiased"
    if route == "rff":
        frequency_key, permutation_key = jax.random.split(key)
        keys = jax.random.split(permutation_key, num_permutations)
        observed, permuted = _rff_statistics(
            x, y, kernel, frequency_key, keys, draws, unbiased=unbiased, placement=placement
        )
    else:
        keys = jax.random.split(key, num_permutations)
        if method == "matrix":
            observed_labels = jnp.arange(size) < m
            labels = jnp.concatenate([observed_labels[None, :], _labellings(keys, m, size)])
            statistics = _statistics_from_matrix(pooled, m, kernel, labels, unbiased=unbiased)
            observed, permuted = statistics[0], statistics[1:]
        else:

            def statistic(a: Float[Array, "m d"], b: Float[Array, "n d"]) -> Array:
                if route == "paired":
                    return linear_time_mmd2(a, b, kernel)
                mesh = None if placement is None else placement.mesh
                return mmd2(a, b, kernel, estimator, block_size=block_size, route=route, mesh=mesh)

            def relabelled(key: jax.Array) -> tuple[Array, Array]:
                if route == "paired":  # the linear-time estimator pairs samples in order: permute
                    order = jax.random.permutation(key, size)
                    return pooled[order[:m]], pooled[order[m:]]
                return _split(pooled, random_labels(key, m, size), m)

            observed = statistic(x, y)
            permuted = lax.map(lambda key: statistic(*relabelled(key)), keys)
    exceed = jnp.sum(permuted >= observed, dtype=observed.dtype)
    p_value = (1.0 + exceed) / (1.0 + num_permutations)
    if scaled is not None:
        observed, permuted = undo(observed), undo(permuted)
    return TwoSampleTestResult(observed, p_value, permuted, estimator)


# ----------------------------------------------------------------------------------------------
# Random-feature route


def _rff_statistics(
    x: Float[Array, "m d"],
    y: Float[Array, "n d"],
    kernel: AbstractKernel,
    frequency_key: jax.Array,
    keys: jax.Array,
    num_features: int,
    *,
    unbiased: bool,
    placement: Placement | None = None,
) -> tuple[Float[Array, ""], Float[Array, " B"]]:
    """The observed and the relabelled random-feature MMD^2, from the pooled features formed once.

    Relabelling b labels x the samples ``random_labels(keys[b], m, m + n)``. With the centred
    features ``Z~ = Z - c`` (c close to their pooled mean, :func:`_centred_features`), their
    column sums T = 1^T Z~ and u = a^T Z~ for the 0/1 indicator a of the x rows, the mean
    features are

        S_x/m = c + u/m,    S_y/n = c + (T - u)/n

    so one product per relabelling gives both, and u sums centred values, which keeps float32
    accurate. Chunks of relabellings stack their indicators (chunk x N, at most
    ``LABEL_CHUNK_ELEMENTS``) and multiply them by Z~ at once. Exact inner-product terms of a sum
    kernel (:func:`~mmdstyle.random_features.split_kernel`) are added per relabelling through the
    feature route of the uncentred samples, as :func:`mmdstyle.mmd2` adds them: O(N d^2) each.
    On a ``placement`` the features stay on the devices of their rows (:func:`_features_on_mesh`).
    """
    m, n = x.shape[0], y.shape[0]
    size = m + n
    spectral, exact = random_features.split_kernel(kernel)
    frequencies, weights = random_features.draw_frequencies(
        spectral, frequency_key, num_features, x.shape[1], x.dtype
    )
    pooled = jnp.concatenate([x, y])
    if placement is None:
        features, centre, total = _centred_features(pooled - pooled_mean(x, y), frequencies)
        rows = features.shape[0]  # N, or N rounded up to whole row blocks (rows no indicator selects)

        def label_sums(indicators: Float[Array, "C P"]) -> Float[Array, "C F"]:
            return jnp.matmul(indicators, features, precision=HIGHEST)

        observed_sums = jnp.sum(features[:m], axis=0)
    else:
        label_sums, centre, total, rows = _features_on_mesh(
            pooled - pooled_mean(x, y), frequencies, placement
        )
        observed_sums = label_sums(jnp.asarray(np.arange(rows) < m, x.dtype)[None, :])[0]
    coefficients = None if exact is None else exact.inner_product_coefficients()

    def statistics_from_sums(sums: Float[Array, "C F"]) -> Float[Array, " C"]:
        count = weights.shape[0]
        means_x = centre[None, :] + sums / float(m)
        means_y = centre[None, :] + (total[None, :] - sums) / float(n)
        return jax.vmap(
            lambda mean_x, mean_y: random_features.mmd2_from_means(
                mean_x.reshape(2, count), mean_y.reshape(2, count), weights, m, n, unbiased=unbiased
            )
        )(means_x, means_y)

    def exact_statistic(labels: Bool[Array, " N"]) -> Float[Array, ""]:
        return feature_mmd2(*_split(pooled, labels, m), coefficients, unbiased=unbiased)

    observed = statistics_from_sums(observed_sums[None, :])[0]
    if exact is not None:
        observed = observed + feature_mmd2(x, y, coefficients, unbiased=unbiased)

    num_permutations = keys.shape[0]
    chunks = -(-num_permutations // max(1, min(num_permutations, LABEL_CHUNK_ELEMENTS // rows)))
    chunk = -(-num_permutations // chunks)
    # The last chunk is filled up with copies of the last key; their statistics are dropped.
    padding = jnp.broadcast_to(keys[-1:], (chunks * chunk - num_permutations, *keys.shape[1:]))
    chunked_keys = jnp.concatenate([keys, padding]).reshape(chunks, chunk, *keys.shape[1:])

    def chunk_statistics(chunk_keys: jax.Array) -> Float[Array, " C"]:
        labels = _labellings(chunk_keys, m, size)  # (C, N)
        indicators = jnp.zeros((chunk, rows), x.dtype).at[:, :size].set(labels.astype(x.dtype))
        statistics = statistics_from_sums(label_sums(indicators))
        if exact is not None:
            statistics = statistics + lax.map(exact_statistic, labels)
        return statistics

    if chunks == 1:  # no loop to compile
        return observed, chunk_statistics(chunked_keys[0])[:num_permutations]
    permuted = lax.map(chunk_statistics, chunked_keys).reshape(-1)[:num_permutations]
    return observed, permuted


@functools.partial(jax.jit, static_argnums=(1, 2))
def random_labels(key: jax.Array, m: int, size: int) -> Bool[Array, " N"]:
    """A uniformly random labelling of ``size`` pooled samples: True for the m labelled x.

    The m samples with the smallest keys ``(u_i, v_i, i)`` in lexicographic order, for u and v
    independent uniform 32-bit integers (one draw of 64 bits per sample): a uniformly random
    m-subset, up to collisions of the 64-bit keys (probability below size^2 / 2^65, as for
    ``jax.random.permutation``'s two rounds). It needs only the m-th smallest key: on the CPU a
    NumPy partition, O(N), instead of the two key-value sorts of a permutation (999 labellings of
    2000 samples: 0.20 s, most of it drawing the random bits, against 0.86 s; benchmarks/
    bench_mmd.py, item 7).

    Args:
      key: ``jax.random`` key.
      m: samples labelled x, 1 <= m <= size.
      size: pooled samples N.

    Returns:
      A boolean array (size,) with exactly m True.
    """
    first, second = jax.random.bits(key, (2, size), jnp.uint32)
    return _smallest_keys(first, second, m)


def _labellings(keys: jax.Array, m: int, size: int) -> Bool[Array, "B N"]:
    """``random_labels(keys[b], m, size)`` for each key, as rows.

    ``lax.map``, not ``vmap``: one labelling's random keys exist at a time, not B x N of them.
    """
    return lax.map(lambda key: random_labels(key, m, size), keys)


def _split(pooled: Float[Array, "N d"], labels: Bool[Array, " N"], m: int) -> tuple[Array, Array]:
    """The m samples a labelling labels x, and the others, each in their pooled order."""
    n = pooled.shape[0] - m
    return pooled[jnp.nonzero(labels, size=m)[0]], pooled[jnp.nonzero(~labels, size=n)[0]]


def _smallest_keys(first: Array, second: Array, m: int) -> Bool[Array, "*batch N"]:
    """True for the m smallest keys ``(first_i, second_i, i)`` (32-bit integers), in lexicographic order.

    On the CPU NumPy selects the m-th smallest of the 64-bit keys ``first_i * 2^32 + second_i``
    (a partition, O(N)); the rare samples tied with it at all 64 bits are taken in index order.
    Elsewhere one sort of the three keys finds the m-th smallest triple.
    """
    shape = jax.ShapeDtypeStruct(first.shape, jnp.bool_)

    def on_the_host(first: Array, second: Array) -> Array:
        return on_host(writes_result(functools.partial(_host_smallest_keys, m=m)), shape, first, second)

    return lax.platform_dependent(
        first, second, cpu=on_the_host, default=functools.partial(_device_smallest_keys, m=m)
    )


def _device_smallest_keys(first: Array, second: Array, m: int) -> Bool[Array, "*batch N"]:
    """:func:`_smallest_keys` in JAX, for backends whose sort is fast."""
    index = lax.broadcasted_iota(jnp.int32, first.shape, first.ndim - 1)
    at = (value[..., m - 1 : m] for value in lax.sort((first, second, index), num_keys=3))
    first_t, second_t, index_t = at
    return (first < first_t) | (
        (first == first_t) & ((second < second_t) | ((second == second_t) & (index <= index_t)))
    )


def _host_smallest_keys(first: np.ndarray, second: np.ndarray, *, m: int) -> np.ndarray:
    """:func:`_smallest_keys` in NumPy."""
    first, second = np.broadcast_arrays(first, second)  # under vmap, either may be batched
    keys = (first.astype(np.uint64) << np.uint64(32)) | second.astype(np.uint64)
    threshold = np.partition(keys, m - 1, axis=-1)[..., m - 1 : m]
    below, tied = keys < threshold, keys == threshold
    needed = m - np.sum(below, axis=-1, keepdims=True)  # >= 1 of the tied samples, in index order
    return below | (tied & (np.cumsum(tied, axis=-1) <= needed))


def _centred_features(
    samples: Float[Array, "N d"], frequencies: Float[Array, "R d"]
) -> tuple[Float[Array, "P 2*R"], Float[Array, " 2*R"], Float[Array, " 2*R"]]:
    """``Z~ = Z - c`` for the features ``Z_i = [cos(omega_r^T s_i)]_r ++ [sin(omega_r^T s_i)]_r``; c; 1^T Z~.

    Unweighted (the weights enter :func:`~mmdstyle.random_features.mmd2_from_means`). The
    centre c is the mean feature of every k-th sample, one block's worth: close enough to the
    pooled mean that sums of rows of Z~ stay small (float32), and known before the blocks are
    formed, so that Z~ is written once, in one pass (a second N x 2R buffer for Z - c would
    double the memory). Formed in blocks of ``ROW_BLOCK_ELEMENTS / R`` rows, so that only one
    block's phases exist at a time; the rows are padded to P, whole blocks, with rows that no
    relabelling counts and the column sums 1^T Z~ (over the N real rows) leave out.
    """
    size, count = samples.shape[0], frequencies.shape[0]
    block_features = functools.partial(_unweighted_features, frequencies=frequencies)

    rows = max(1, random_features.ROW_BLOCK_ELEMENTS // count)
    if size <= rows:
        features = block_features(samples)
        centre = jnp.mean(features, axis=0)
        centred = features - centre[None, :]
        return centred, centre, jnp.sum(centred, axis=0)
    centre = jnp.mean(block_features(samples[:: -(-size // rows)]), axis=0)
    blocks = -(-size // rows)
    padded = jnp.concatenate([samples, jnp.zeros((blocks * rows - size, samples.shape[1]), samples.dtype)])

    def centred_block(index: Array) -> tuple[Array, Array]:
        start = index * rows
        block = block_features(lax.dynamic_slice_in_dim(padded, start, rows)) - centre[None, :]
        valid = (start + jnp.arange(rows)) < size
        return block, jnp.sum(jnp.where(valid[:, None], block, 0.0), axis=0)

    centred, block_sums = lax.map(centred_block, jnp.arange(blocks))
    return centred.reshape(blocks * rows, 2 * count), centre, jnp.sum(block_sums, axis=0)


def _unweighted_features(
    block: Float[Array, "r d"], frequencies: Float[Array, "R d"]
) -> Float[Array, "r 2*R"]:
    """``Z_i = [cos(omega_r^T s_i)]_r ++ [sin(omega_r^T s_i)]_r`` for each row of ``block``."""
    cosine, sine = random_features.cos_sin(jnp.matmul(block, frequencies.T, precision=HIGHEST))
    return jnp.concatenate([cosine, sine], axis=-1)


def _features_on_mesh(
    samples: Float[Array, "N d"], frequencies: Float[Array, "R d"], placement: Placement
) -> tuple[Callable[[Array], Array], Float[Array, " 2*R"], Float[Array, " 2*R"], int]:
    """:func:`_centred_features` with each device forming its own rows' features, and their sums by label.

    Returns ``(label_sums, c, 1^T Z~, P)``: ``label_sums(A)`` is ``A Z~`` for indicators A
    (C, P) over the P padded rows, each device multiplying its columns of A by its rows of Z~
    and ``psum`` adding the products, so Z~ never leaves its devices. The centre c is the exact
    pooled mean feature (a ``psum``), and padding rows are zero in Z~.
    """
    padded, valid = placement.spread(samples)
    rows_of = functools.partial(RowSums, samples.shape[0], axes=placement.axes)

    def featurize(frequencies: Array, block: Array, valid: Array) -> tuple[Array, Array, Array]:
        features = _unweighted_features(block, frequencies)
        rows = rows_of(valid)
        centre = rows.mean(features)
        centred = (features - centre[None, :]) * valid[:, None]
        return centred, centre, rows.sum(centred)

    run = placement.map(featurize, (P(), placement.rows, placement.weights), (placement.rows, P(), P()))
    centred, centre, total = run(frequencies, padded, valid)

    def local_sums(indicators: Array, centred: Array) -> Array:
        return lax.psum(jnp.matmul(indicators, centred, precision=HIGHEST), placement.axes)

    label_columns = P(None, placement.axes)
    sums = placement.map(local_sums, (label_columns, placement.rows), P())
    return (lambda indicators: sums(indicators, centred)), centre, total, padded.shape[0]


def _statistics_from_matrix(
    pooled: Float[Array, "N d"],
    m: int,
    kernel: AbstractKernel,
    labels: Bool[Array, "B N"],
    *,
    unbiased: bool,
) -> Float[Array, " B"]:
    """MMD^2 of each labelling from one pooled kernel matrix K, all labellings in one matrix product.

    ``labels[b]`` is True for the m samples labelling b labels x. With a the 0/1 indicator of the
    samples labelled x and b = 1 - a:
    sum_xx = a^T K a, sum_yy = b^T K b, sum_xy = a^T K b. Only the smaller sample's indicators
    are multiplied: the larger sample's products are the row sums of K minus those (K b = K 1 -
    K a), and since it holds at least half the samples the subtraction loses at most a factor 2.
    """
    size = pooled.shape[0]
    n = size - m
    if kernel.mmd_shift_invariant:  # as the pairwise route does: the statistics are unchanged
        pooled = pooled - jnp.mean(pooled, axis=0, keepdims=True)
    matrix = kernel(pooled, pooled)
    diagonal = kernel.paired(pooled, pooled)
    matrix = jnp.where(jnp.eye(size, dtype=bool), diagonal[None, :], matrix)
    labels_x = labels.T.astype(pooled.dtype)  # column b: the indicator a of labelling b
    labels_y = 1.0 - labels_x
    row_sums = jnp.sum(matrix, axis=1, keepdims=True)
    if m <= n:
        kernel_x = jnp.matmul(matrix, labels_x, precision=HIGHEST)
        kernel_y = row_sums - kernel_x
    else:
        kernel_y = jnp.matmul(matrix, labels_y, precision=HIGHEST)
        kernel_x = row_sums - kernel_y
    sum_xx = jnp.sum(labels_x * kernel_x, axis=0)
    sum_yy = jnp.sum(labels_y * kernel_y, axis=0)
    sum_xy = jnp.sum(labels_x * kernel_y, axis=0)
    mf, nf = float(m), float(n)
    if unbiased:
        diagonal_x = jnp.matmul(diagonal, labels_x, precision=HIGHEST)
        diagonal_y = jnp.sum(diagonal) - diagonal_x
        within = (sum_xx - diagonal_x) / (mf * (mf - 1.0)) + (sum_yy - diagonal_y) / (nf * (nf - 1.0))
    else:
        within = sum_xx / mf**2 + sum_yy / nf**2
    return within - 2.0 * sum_xy / (mf * nf)

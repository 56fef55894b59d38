"""The kernel two-sample test: is MMD(x, y) larger than under random relabelling?

Under the null hypothesis that x and y come from one distribution, the labels "x" and "y" are
exchangeable, so the statistic of every relabelling of the pooled samples is a draw from its null
distribution. With B random relabellings the p-value

    p = (1 + #{b : MMD^2_b >= MMD^2_observed}) / (1 + B)

is exact (valid at every sample size), counting the observed labelling as one of the draws.

References:
  Gretton, Borgwardt, Rasch, Schölkopf, Smola, "A Kernel Two-Sample Test", JMLR 13, 2012.
  Phipson, Smyth, "Permutation p-values should never be zero", Stat. Appl. Genet. Mol. Biol., 2010.
  https://doi.org/10.2202/1544-6115.1585
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int

from mmdstyle._checks import check_block_size, check_choice, check_estimator, check_integer, check_sample_pair
from mmdstyle.kernels import HIGHEST, AbstractKernel, check_kernel
from mmdstyle.mmd import default_block_size, linear_time_mmd2, mmd2, select_route

__all__ = ["METHODS", "TwoSampleTestResult", "mmd2_test", "select_method"]

METHODS = ("auto", "matrix", "permutation")

#: ``method="auto"`` builds the pooled kernel matrix up to this many pooled samples (128 MiB in
#: float64), and recomputes MMD^2 per relabelling in bounded memory above it.
MATRIX_SAMPLES = 4096


@jax.tree_util.register_dataclass
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
      key: PRNG key (default ``jax.random.key(0)``: reproducible).
      estimator: ``"unbiased"`` (default), ``"biased"`` or ``"linear"``.
      block_size: for the ``"permutation"`` method (see :func:`mmdstyle.mmd2`).
      method: how the relabelled statistics are computed (see :func:`select_method`):
        ``"matrix"`` builds the pooled (m + n) x (m + n) kernel matrix once and evaluates every
        relabelling with two matrix products (fast, O((m + n)^2) memory; not for the linear
        estimator, which never forms pairs across the sample); ``"permutation"`` computes MMD^2
        afresh for each relabelling with :func:`mmdstyle.mmd2`'s routes (bounded memory);
        ``"auto"`` takes whichever costs less (see :func:`select_method`).

    Returns:
      A :class:`TwoSampleTestResult` with the statistic, the p-value and the permuted statistics.
    """
    x, y = check_sample_pair(x, y)
    check_estimator(estimator, x.shape[0], y.shape[0])
    check_block_size(block_size)
    check_integer("num_permutations", num_permutations)
    check_kernel("kernel", kernel)
    chosen = select_method(method, kernel, estimator, x.shape[0] + y.shape[0], x.shape[1])
    key = jax.random.key(0) if key is None else key
    if block_size is None:
        block_size = default_block_size(x.shape[0], y.shape[0])
    return _mmd2_test(x, y, kernel, key, num_permutations, estimator, block_size, chosen)


def select_method(
    method: str, kernel: AbstractKernel, estimator: str, pooled_samples: int, channels: int
) -> str:
    """The method :func:`mmd2_test` uses: ``"matrix"`` or ``"permutation"``.

    ``"auto"`` weighs what one relabelling costs. From the pooled matrix it is O(N) per sample
    (N = m + n pooled samples), after O(N^2 d) to build the matrix once, which then takes O(N^2)
    memory: up to ``MATRIX_SAMPLES`` samples. Recomputed through :func:`mmdstyle.mmd2`, it is
    O(N d^2) in all for a kernel with the exact feature route (linear, polynomial of degree
    <= 2), so that route wins while ``d^2 < N``; for any other kernel it is O(N^2 d), and the
    matrix wins wherever it fits. The linear-time estimator forms no pairs: always the
    permutation method.

    Args:
      method: ``"auto"``, ``"matrix"`` or ``"permutation"``.
      kernel: the test's kernel.
      estimator: the test's estimator.
      pooled_samples: N = m + n.
      channels: d.

    Raises:
      ValueError: an unknown method, or ``"matrix"`` with the linear-time estimator.
    """
    check_choice("method", method, METHODS)
    if method == "matrix" and estimator == "linear":
        raise ValueError(
            "method='matrix' sums kernel values over all pairs, which the linear-time estimator never "
            "forms; use method='permutation' (or 'auto') with estimator='linear'."
        )
    if method != "auto":
        return method
    if estimator == "linear" or pooled_samples > MATRIX_SAMPLES:
        return "permutation"
    cheap_features = select_route(kernel, estimator) == "feature" and channels**2 < pooled_samples
    return "permutation" if cheap_features else "matrix"


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _mmd2_test(
    x: Float[Array, "m d"],
    y: Float[Array, "n d"],
    kernel: AbstractKernel,
    key: jax.Array,
    num_permutations: int,
    estimator: str,
    block_size: int,
    method: str,
) -> TwoSampleTestResult:
    m = x.shape[0]
    pooled = jnp.concatenate([x, y])
    size = pooled.shape[0]
    keys = jax.random.split(key, num_permutations)
    permutations = jax.vmap(lambda k: jax.random.permutation(k, size))(keys)
    identity = jnp.arange(size)[None, :]
    orders = jnp.concatenate([identity, permutations])  # row 0 is the observed labelling

    if method == "matrix":
        statistics = _statistics_from_matrix(pooled, m, kernel, orders, unbiased=estimator == "unbiased")
    else:
        route = select_route(kernel, estimator)

        def statistic(order: Int[Array, " N"]) -> Array:
            relabelled = pooled[order]
            a, b = relabelled[:m], relabelled[m:]
            if route == "paired":
                return linear_time_mmd2(a, b, kernel)
            return mmd2(a, b, kernel, estimator, block_size=block_size, route=route)

        statistics = lax.map(statistic, orders)
    observed, permuted = statistics[0], statistics[1:]
    exceed = jnp.sum(permuted >= observed, dtype=observed.dtype)
    p_value = (1.0 + exceed) / (1.0 + num_permutations)
    return TwoSampleTestResult(observed, p_value, permuted, estimator)


def _statistics_from_matrix(
    pooled: Float[Array, "N d"],
    m: int,
    kernel: AbstractKernel,
    orders: Int[Array, "B N"],
    *,
    unbiased: bool,
) -> Float[Array, " B"]:
    """MMD^2 of each labelling from one pooled kernel matrix K, all labellings in a few matrix products.

    With a the 0/1 indicator of the samples labelled x and b = 1 - a:
    sum_xx = a^T K a, sum_yy = b^T K b, sum_xy = a^T K b.
    """
    size = pooled.shape[0]
    n = size - m
    if kernel.translation_invariant:
        pooled = pooled - jnp.mean(pooled, axis=0, keepdims=True)
    matrix = kernel(pooled, pooled)
    diagonal = kernel.paired(pooled, pooled)
    matrix = jnp.where(jnp.eye(size, dtype=bool), diagonal[None, :], matrix)
    # labels[i, b] = 1 where sample i is labelled x in labelling b
    labels_x = jnp.zeros((size, orders.shape[0]), pooled.dtype)
    labels_x = labels_x.at[orders[:, :m].T, jnp.arange(orders.shape[0])[None, :]].set(1.0)
    labels_y = 1.0 - labels_x
    kernel_x = jnp.matmul(matrix, labels_x, precision=HIGHEST)
    kernel_y = jnp.matmul(matrix, labels_y, precision=HIGHEST)
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

"""The random-feature route: MMD^2 of translation-invariant kernels in linear time.

Bochner's theorem: a continuous translation-invariant kernel ``k(a, b) = psi(a - b)`` is the
Fourier transform of a finite positive measure, ``psi(v) = psi(0) E_omega[cos(omega^T v)]`` with
omega drawn from the normalised spectral density. Each built-in kernel with such a density
(:class:`~mmdstyle.kernels.AbstractSpectralKernel`) draws frequencies ``omega_r`` with weights
``w_r`` such that ``sum_r w_r cos(omega_r^T v)`` is an unbiased estimate of ``psi(v)``:

    Gaussian   exp(-|v|^2 / (2 sigma^2))    omega ~ N(0, I / sigma^2),          w_r = 1/R
    Laplacian  exp(-|v| / sigma)            omega = g / (sigma |s|), g ~ N(0, I), s ~ N(0, 1)
                                            (multivariate Cauchy),              w_r = 1/R

With ``z(a) = [sqrt(w_r) cos(omega_r^T a), sqrt(w_r) sin(omega_r^T a)]_r`` (sin/cos pairs, so
``num_features = 2R``), ``z(a)^T z(b) = sum_r w_r cos(omega_r^T (a - b))`` and
``|z(a)|^2 = W = sum_r w_r = psi(0)`` exactly. With ``S_x = sum_i z(x_i)``, ``S_y = sum_j z(y_j)``:

    biased     |S_x/m - S_y/n|^2
    unbiased   (|S_x|^2 - m W) / (m(m-1)) + (|S_y|^2 - n W) / (n(n-1)) - 2 S_x^T S_y / (mn)
             = biased + (|S_x/m|^2 - W) / (m - 1) + (|S_y/n|^2 - W) / (n - 1)

Each is exactly the pairwise estimator of the same name under the approximate kernel
``z(a)^T z(b)``, and so, over the frequencies, an unbiased estimate of the exact one. Sums and
positive scalings of spectral kernels share the ``R`` frequencies round robin: term ``c`` of
weight ``t_c`` draws ``R_c`` of them and scales its weights by ``t_c``. Exact inner-product terms of
a sum (``Linear``, ``Polynomial`` of degree <= 2) are added through the feature route, which is
what appending their exact features to ``z`` would give. Cost: ``O((m + n) d R)`` time and,
summing ``z`` in blocks of rows, ``O(R (d + block))`` memory for the value and the gradient.

References:
  Rahimi, Recht, "Random Features for Large-Scale Kernel Machines", NeurIPS 2007.
  https://papers.nips.cc/paper/3182-random-features-for-large-scale-kernel-machines
  Sutherland, Schneider, "On the Error of Random Fourier Features", UAI 2015 (sin/cos pairs
  have lower variance than cosines with random phases). https://arxiv.org/abs/1506.02785
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
from jaxtyping import Array, ArrayLike, Float

from mmdstyle._pytrees import pytree_dataclass
from mmdstyle._rows import RowSums, pad_rows
from mmdstyle.kernels import (
    HIGHEST,
    AbstractKernel,
    AbstractSpectralKernel,
    ScaledKernel,
    SumKernel,
    pooled_mean,
)
from mmdstyle.sharded import Placement

__all__ = [
    "FeatureTarget",
    "check_enough_features",
    "check_gradients_have_finite_variance",
    "check_kernel_has_features",
    "cos_sin",
    "draw_frequencies",
    "feature_target",
    "mmd2_from_means",
    "random_fourier_features",
    "rff_mmd2",
    "rff_mmd2_to_target",
    "split_kernel",
]

#: Phases ``omega_r^T x_i`` formed at once at most (4 MiB in float32): rows are summed in blocks
#: of ``ROW_BLOCK_ELEMENTS / R``, each recomputed in the backward pass.
ROW_BLOCK_ELEMENTS = 2**20

SpectralTerms = tuple[tuple[ArrayLike, AbstractSpectralKernel], ...]

# Taylor coefficients of cos and sin in r, to degree 16 and 17 (polynomials of degree 8 in r^2):
# on [-pi, pi] they leave a truncation error of pi^18/18! = 1.3e-7 and pi^19/19! = 2.3e-8, below
# float32's rounding of the phase itself (which is |phase| * 6e-8).
_COS_TAYLOR = tuple((-1) ** n / math.factorial(2 * n) for n in range(9))
_SIN_TAYLOR = tuple((-1) ** n / math.factorial(2 * n + 1) for n in range(9))
# 2 pi split Cody-Waite style: k * _TWO_PI_HIGH is exact in float32 for |k| < 2^16 (6.28125 has
# 8 significant bits), and the tail carries the rest of 2 pi to float32 precision.
_TWO_PI_HIGH = 6.28125
_TWO_PI_LOW = 2.0 * math.pi - 6.28125
#: Phases up to which the reduction keeps the error below 1e-6 (k = phase / 2 pi < 2^14: the
#: rounding of k * _TWO_PI_LOW grows with k). Beyond it (heavy-tailed Laplacian frequencies can
#: get there) a block of phases takes XLA's own cosine and sine.
_POLYNOMIAL_RANGE = 1e5


@jax.custom_jvp
def cos_sin(phases: Float[Array, "*shape"]) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"]]:
    """``(cos(phases), sin(phases))``; in float32 from one shared range reduction and two polynomials.

    The random-feature route spends most of its time here. XLA's CPU cosine and sine each reduce
    the argument on their own; one reduction to ``r = phase - 2 pi k`` in ``[-pi, pi]`` and two
    Horner polynomials in ``r^2``, which vectorise, cut the route's value and gradient at
    m = 16384, d = 64, 1024 features from 0.69 s to 0.16 s on the project's 2-core machine. The
    absolute error stays below 1e-6 for phases up to 1e5 (XLA's: about 1e-7); a block with a
    larger phase takes ``jnp.cos`` and ``jnp.sin``, and so does float64, so the identities of the
    tests hold to float64 rounding. The derivative reuses the values: ``(-sin, cos)``.
    """
    if phases.dtype != jnp.float32:
        return jnp.cos(phases), jnp.sin(phases)
    return lax.cond(
        jnp.max(jnp.abs(phases)) < _POLYNOMIAL_RANGE,
        _polynomial_cos_sin,
        lambda phases: (jnp.cos(phases), jnp.sin(phases)),
        phases,
    )


def _polynomial_cos_sin(
    phases: Float[Array, "*shape"],
) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"]]:
    turns = jnp.round(phases * np.float32(1.0 / (2.0 * math.pi)))
    r = (phases - turns * np.float32(_TWO_PI_HIGH)) - turns * np.float32(_TWO_PI_LOW)
    r2 = r * r
    cosine, sine = np.float32(_COS_TAYLOR[-1]), np.float32(_SIN_TAYLOR[-1])
    for c, s in zip(_COS_TAYLOR[-2::-1], _SIN_TAYLOR[-2::-1], strict=True):
        cosine, sine = cosine * r2 + np.float32(c), sine * r2 + np.float32(s)
    return cosine, sine * r


@cos_sin.defjvp
def _cos_sin_jvp(
    primals: tuple[Array], tangents: tuple[Array]
) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    (phases,), (tangent,) = primals, tangents
    cosine, sine = cos_sin(phases)
    return (cosine, sine), (-sine * tangent, cosine * tangent)


def _sum_terms(kernel: AbstractKernel, factor: ArrayLike = 1.0) -> list[tuple[ArrayLike, AbstractKernel]]:
    """``kernel`` as ``sum_c t_c k_c``: sums flattened, positive scalings pushed down to the terms."""
    if isinstance(kernel, SumKernel):
        return _sum_terms(kernel.first, factor) + _sum_terms(kernel.second, factor)
    if isinstance(kernel, ScaledKernel):
        return _sum_terms(kernel.kernel, kernel.factor if _is_one(factor) else factor * kernel.factor)
    return [(factor, kernel)]


def _is_one(factor: ArrayLike) -> bool:
    return isinstance(factor, float) and factor == 1.0


def _has_exact_features(kernel: AbstractKernel) -> bool:
    coefficients = kernel.inner_product_coefficients()
    return coefficients is not None and len(coefficients) <= 3


def split_kernel(kernel: AbstractKernel) -> tuple[SpectralTerms, AbstractKernel | None]:
    """``kernel`` as spectral terms ``((t_c, k_c), ...)`` plus an exact inner-product kernel (or None).

    Raises:
      ValueError: a term that is neither (see :func:`check_kernel_has_features`).
    """
    spectral, exact = [], None
    for factor, term in _sum_terms(kernel):
        if isinstance(term, AbstractSpectralKernel):
            spectral.append((factor, term))
        elif _has_exact_features(term):
            scaled = term if _is_one(factor) else ScaledKernel(factor, term)
            exact = scaled if exact is None else exact + scaled
        else:
            raise ValueError(_no_route_message(kernel, f"its term {term!r} has no spectral density"))
    if not spectral:
        raise ValueError(
            _no_route_message(kernel, "it has no translation-invariant term to draw features for")
        )
    return tuple(spectral), exact


def _no_route_message(kernel: AbstractKernel, reason: str) -> str:
    return (
        f"route='rff' cannot take {kernel!r}: {reason}. Random Fourier features exist for "
        "Gaussian, Laplacian and MultiGaussian kernels, their positive scalings and sums, plus "
        "Linear and Polynomial(degree <= 2) terms added to them (computed exactly). Use "
        "route='pairwise' (exact, any kernel), route='feature' for inner-product kernels, or "
        "route='sliced' for Energy()."
    )


def check_gradients_have_finite_variance(kernel: AbstractKernel) -> None:
    """A ValueError if a spectral term's frequencies lack a second moment (the Laplacian's).

    The estimate's gradient with respect to a sample is ``sum_r w_r omega_r (...)``: with Cauchy
    frequencies one huge ``omega_r`` dominates it, and over keys its variance is infinite. A loss
    optimised through such gradients follows noise; the values themselves are fine (measured:
    relative gradient error median 6 and up to 1700 for a Laplacian at 1024 features, 0.15 for
    a Gaussian).
    """
    spectral, _ = split_kernel(kernel)
    heavy = [term for _, term in spectral if not term.finite_second_moment]
    if heavy:
        raise ValueError(
            f"route='rff' gives {heavy[0]!r} gradients of infinite variance (its random frequencies are "
            "Cauchy, without a mean), so it cannot drive a loss: use the Laplacian on the exact route "
            "('@pairwise'), a Gaussian or several ('gaussian(sigma=median*(0.25,0.5,1,2,4))@rff'), or "
            "'energy@sliced'."
        )


def check_kernel_has_features(kernel: AbstractKernel) -> None:
    """A ValueError naming the kernels that have random features, unless ``kernel`` is one of them."""
    split_kernel(kernel)


def _frequency_counts(spectral: SpectralTerms, num_features: int) -> list[int]:
    """Frequencies per spectral term: the ``num_features / 2`` dealt round robin.

    Each of the K terms gets R // K of the R frequencies, the first R % K terms one more.
    """
    frequencies, terms = num_features // 2, len(spectral)
    return [frequencies // terms + (index < frequencies % terms) for index in range(terms)]


def check_enough_features(kernel: AbstractKernel, num_features: int) -> None:
    """``num_features`` is even and gives every spectral term (and mixture component) a frequency."""
    if num_features % 2:
        raise ValueError(
            f"num_features must be even: the random Fourier features come in sin/cos pairs, one pair "
            f"per frequency; got {num_features}. Use "
            + (f"{num_features + 1} or {num_features - 1}." if num_features > 1 else "2 or more.")
        )
    spectral, _ = split_kernel(kernel)
    needed = len(spectral) * max(term.min_frequencies for _, term in spectral)
    counts = _frequency_counts(spectral, num_features)
    if any(count < term.min_frequencies for count, (_, term) in zip(counts, spectral, strict=True)):
        raise ValueError(
            f"num_features={num_features} gives {num_features // 2} frequencies, too few for "
            f"{kernel!r}: each of its {len(spectral)} spectral terms (and each bandwidth of a "
            f"MultiGaussian) needs at least one. Use num_features >= {2 * needed}."
        )


def draw_frequencies(
    kernel: AbstractKernel | SpectralTerms,
    key: jax.Array,
    num_features: int,
    dimension: int,
    dtype: DTypeLike,
) -> tuple[Float[Array, "R d"], Float[Array, " R"]]:
    """The ``R = num_features / 2`` frequencies ``omega_r`` and weights ``w_r`` of the route.

    ``sum_r w_r cos(omega_r^T (a - b))`` is then an unbiased estimate of ``k(a, b)`` for the
    spectral part of ``kernel``. Term ``c`` draws from ``jax.random.fold_in(key, c)``.
    """
    spectral = kernel if isinstance(kernel, tuple) else split_kernel(kernel)[0]
    omegas, weights = [], []
    for index, ((factor, term), count) in enumerate(
        zip(spectral, _frequency_counts(spectral, num_features), strict=True)
    ):
        omega, weight = term.sample_frequencies(jax.random.fold_in(key, index), count, dimension, dtype)
        omegas.append(omega)
        weights.append(weight if _is_one(factor) else factor * weight)
    # in the samples' dtype, whatever the kernel's parameters are (a float64 bandwidth with
    # float32 samples would otherwise promote every phase)
    return jnp.concatenate(omegas).astype(dtype), jnp.concatenate(weights).astype(dtype)


def random_fourier_features(
    x: Float[Array, "m d"], frequencies: Float[Array, "R d"], weights: Float[Array, " R"]
) -> Float[Array, "m 2*R"]:
    """``z(x_i) = [sqrt(w_r) cos(omega_r^T x_i)]_r ++ [sqrt(w_r) sin(omega_r^T x_i)]_r`` for each row.

    The route never forms this (m, 2R) matrix; it is the definition the route's sums agree with.
    """
    cosine, sine = cos_sin(jnp.matmul(x, frequencies.T, precision=HIGHEST))
    root = jnp.sqrt(weights)[None, :]
    return jnp.concatenate([root * cosine, root * sine], axis=-1)


def feature_means(
    samples: Float[Array, "m d"], frequencies: Float[Array, "R d"], rows: RowSums | None = None
) -> Float[Array, "2 R"]:
    """``[mean_i cos(omega_r^T x_i), mean_i sin(omega_r^T x_i)]``, in blocks of rows.

    ``rows`` says how to total over the rows (default: all real, on this device; see
    :class:`mmdstyle._rows.RowSums`).
    """
    rows = RowSums(samples.shape[0]) if rows is None else rows
    m, count = samples.shape[0], frequencies.shape[0]

    def block_sums(block: Array, valid: Array | None) -> Array:
        trigonometric = jnp.stack(
            cos_sin(jnp.matmul(block, frequencies.T, precision=HIGHEST))
        )  # (2, rows, R)
        if valid is None:
            return jnp.sum(trigonometric, axis=1)
        return jnp.einsum("r,trf->tf", valid, trigonometric, precision=HIGHEST)

    block = max(1, ROW_BLOCK_ELEMENTS // count)
    if m <= block:
        return rows.total(block_sums(samples, rows.weights)) / float(rows.count)
    blocks = -(-m // block)
    padded, valid = pad_rows(samples, blocks * block, rows.weights)

    @jax.checkpoint
    def add_block(total: Array, index: Array) -> tuple[Array, None]:
        start = index * block
        return total + block_sums(
            lax.dynamic_slice_in_dim(padded, start, block), lax.dynamic_slice_in_dim(valid, start, block)
        ), None

    total, _ = lax.scan(add_block, rows.zeros((2, count), samples.dtype), jnp.arange(blocks))
    return rows.total(total) / float(rows.count)


def rff_mmd2(
    x: Float[Array, "m d"],
    y: Float[Array, "n d"],
    spectral: SpectralTerms,
    key: jax.Array,
    *,
    num_features: int,
    unbiased: bool,
    placement: Placement | None = None,
) -> Float[Array, ""]:
    """MMD^2 of the spectral terms under random Fourier features (see the module docstring).

    Both samples are first shifted by their pooled mean: the approximate kernel is exactly
    translation invariant, so the value is unchanged, while the phases ``omega^T x`` stay small
    enough for float32 cosines to be accurate. With a ``placement`` each device forms its rows'
    features and the mean features are totalled across devices (:mod:`mmdstyle.sharded`).
    """
    frequencies, weights = draw_frequencies(spectral, key, num_features, x.shape[1], x.dtype)
    centre = pooled_mean(x, y)
    if placement is None:
        target = _feature_target(y, frequencies, weights, centre)
        return rff_mmd2_to_target(x, target, unbiased=unbiased)

    def on_device(
        frequencies: Array,
        weights: Array,
        centre: Array,
        x: Array,
        x_rows: RowSums,
        y: Array,
        y_rows: RowSums,
    ) -> Array:
        mean_x = feature_means(x - centre, frequencies, x_rows)
        mean_y = feature_means(y - centre, frequencies, y_rows)
        return mmd2_from_means(mean_x, mean_y, weights, x_rows.count, y_rows.count, unbiased=unbiased)

    return placement.over_rows(on_device, x, y, frequencies, weights, centre)


def mmd2_from_means(
    mean_x: Float[Array, "2 R"],
    mean_y: Float[Array, "2 R"],
    weights: Float[Array, " R"],
    m: int,
    n: int,
    *,
    unbiased: bool,
) -> Float[Array, ""]:
    """The biased or unbiased estimate from the mean features ``S_x/m``, ``S_y/n`` and the weights."""
    weights = weights[None, :]  # the same weight for the cosine and the sine of a frequency
    value = jnp.sum(weights * (mean_x - mean_y) ** 2)
    if not unbiased:
        return value
    # |S_x|^2 - m W over m(m-1), written as a correction to the biased term (no large cancellation)
    total_weight = jnp.sum(weights)  # W = |z(a)|^2 = sum_r w_r (cos^2 + sin^2)
    within_x = (jnp.sum(weights * mean_x**2) - total_weight) / (float(m) - 1.0)
    within_y = (jnp.sum(weights * mean_y**2) - total_weight) / (float(n) - 1.0)
    return value + within_x + within_y


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class FeatureTarget:
    """One sample set's side of the route, computed once: for a loss against a fixed target.

    A style loss compares a changing image with the same style features at every step; with the
    draws fixed, the style's mean features are a constant. Centred on the target's own mean
    (the estimate does not depend on the centre; see :func:`rff_mmd2`).

    Attributes:
      frequencies, weights: the draws (:func:`draw_frequencies`).
      centre: the target's mean, (1, d).
      means: the target's mean features ``S_y/n``, (2, R).
      count: n.
    """

    # plain annotations: under JAX's transformations the fields hold tracers and placeholders
    frequencies: Any  # (R, d)
    weights: Any  # (R,)
    centre: Any  # (1, d)
    means: Any  # (2, R)
    count: int = dataclasses.field(metadata={"static": True})


def feature_target(
    y: Float[Array, "n d"], kernel: AbstractKernel, key: jax.Array, num_features: int
) -> FeatureTarget:
    """The draws for ``kernel``'s spectral terms and ``y``'s mean features under them.

    Args:
      y: the target samples (n, d).
      kernel: a kernel with random features (:func:`check_kernel_has_features`); its exact
        inner-product terms, if any, are not included (add them with the feature route).
      key: ``jax.random`` key of the draws.
      num_features: 2R, even.
    """
    check_enough_features(kernel, num_features)  # here, where its message can show the kernel's numbers
    return _drawn_feature_target(y, kernel, key, num_features)


@functools.partial(jax.jit, static_argnames="num_features")
def _drawn_feature_target(
    y: Float[Array, "n d"], kernel: AbstractKernel, key: jax.Array, num_features: int
) -> FeatureTarget:
    """:func:`feature_target` after its check, one compiled program (not one per operation)."""
    frequencies, weights = draw_frequencies(kernel, key, num_features, y.shape[1], y.dtype)
    return _feature_target(y, frequencies, weights, jnp.mean(y, axis=0, keepdims=True))


def _feature_target(
    y: Float[Array, "n d"],
    frequencies: Float[Array, "R d"],
    weights: Float[Array, " R"],
    centre: Float[Array, "1 d"],
) -> FeatureTarget:
    """The target side of the estimate for samples y under the given draws, phases from ``centre``."""
    return FeatureTarget(frequencies, weights, centre, feature_means(y - centre, frequencies), y.shape[0])


def rff_mmd2_to_target(x: Float[Array, "m d"], target: FeatureTarget, *, unbiased: bool) -> Float[Array, ""]:
    """:func:`rff_mmd2` of x against the target whose side :func:`feature_target` computed.

    The same value as ``rff_mmd2(x, y, ...)`` with the same draws, up to rounding; only x's
    features are formed, so a loss step costs half as many phases.
    """
    mean_x = feature_means(x - target.centre, target.frequencies)
    return mmd2_from_means(mean_x, target.means, target.weights, x.shape[0], target.count, unbiased=unbiased)

"""Positive-definite kernels as immutable pytrees.

A kernel is anything with the :class:`AbstractKernel` interface. Its core is the scalar
``compute_elementwise(a, b)`` on two vectors; the (m, n) matrix ``kernel(x, y)`` and the row-wise
``kernel.paired(x, y)`` follow from it, and built-in kernels override them with faster exact forms
(one matmul instead of m * n vector operations).

Numeric hyperparameters (``sigma``, ``c``, ``scale``, composition factors) are pytree children:
they are traced by ``jit`` without recompiling and can be differentiated. Flags that change the
program (the polynomial degree, a user function) are static.

Kernels of the form ``k(a, b) = sum_p c_p (a^T b)^p`` (linear, polynomial, and sums, products
and positive scalings of these) advertise their coefficients through
:meth:`AbstractKernel.inner_product_coefficients`. Where the degree is at most 2,
:func:`mmdstyle.mmd2` takes the exact feature route (docs/math.md, "Feature route") and never
builds an m x n matrix; higher degrees go through the pairwise route.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int

from mmdstyle._checks import check_scalar, is_traced
from mmdstyle._pytrees import register_fields

__all__ = [
    "AbstractKernel",
    "AbstractPairKernel",
    "AbstractSpectralKernel",
    "FunctionKernel",
    "Gaussian",
    "Laplacian",
    "Linear",
    "MultiGaussian",
    "Polynomial",
    "ProductKernel",
    "ScaledKernel",
    "SumKernel",
    "from_function",
    "orthogonal_normal",
    "pooled_mean",
    "squared_distances",
]

HIGHEST = lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------
# Geometry shared by the distance-based kernels


def _number_text(value: Any) -> str:
    """A kernel parameter as text: concrete scalars as plain numbers (``2.5``, not ``Array(2.5, ...)``)."""
    if is_traced(value):
        return "<traced>"
    if isinstance(value, jax.Array | float) and jnp.ndim(value) == 0:
        return f"{float(value):.6g}"
    return repr(value)


def _safe_sqrt(squared: Array) -> Array:
    """Square root with gradient 0 (not inf or NaN) where the argument is 0: coinciding samples."""
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def pooled_mean(x: Float[Array, "m d"], y: Float[Array, "n d"]) -> Float[Array, "1 d"]:
    """The mean of the m + n samples of x and y together, as one row, without a gradient.

    Routes whose value is unchanged when both samples shift by the same vector subtract it first:
    distances and phases are then formed from small numbers, which keeps float32 accurate. Since
    the value does not depend on the shift, neither does its gradient, exactly: the shift is a
    constant to differentiation (``lax.stop_gradient``). Otherwise it would tie y's own kernel
    sum to x and the backward pass would differentiate that sum too, for nothing (a Gaussian
    MMD^2's value and gradient in x, m = n = 16384, d = 64: 5.2 s -> 3.3 s on 2 cores,
    ``benchmarks/bench_centre_gradient.py``).
    """
    total = jnp.sum(x, axis=0, keepdims=True) + jnp.sum(y, axis=0, keepdims=True)
    return lax.stop_gradient(total / float(x.shape[0] + y.shape[0]))


def squared_distances(
    x: Float[Array, "m d"], y: Float[Array, "n d"], *, zero_below_rounding: bool = False
) -> Float[Array, "m n"]:
    """All-pairs ``||x_i - y_j||^2`` through one matmul: ``||x_i||^2 + ||y_j||^2 - 2 x_i^T y_j``.

    The expansion cancels catastrophically for near points: its rounding error is about
    ``eps * (||x_i||^2 + ||y_j||^2)``, and it can go negative, so it is clamped at 0. When
    ``x is y`` the diagonal is set to exactly 0. With ``zero_below_rounding`` every value below
    that rounding noise is set to 0, so coinciding samples are at distance exactly 0: a square
    root (the Laplacian's) would otherwise turn 1e-16 into 1e-8, or 1e-7 into 3e-4 in float32.
    (It costs a few operations per entry; the Gaussian does not need it, since exp(-t) moves
    by only t there.) Callers that care (the MMD pairwise route) centre the samples first,
    which shrinks the norms and so the noise.
    """
    x_norms = jnp.sum(x * x, axis=-1)
    y_norms = x_norms if x is y else jnp.sum(y * y, axis=-1)
    cross = jnp.matmul(x, y.T, precision=HIGHEST)
    norms = x_norms[:, None] + y_norms[None, :]
    distances = norms - 2.0 * cross
    if zero_below_rounding:
        noise = 4.0 * jnp.finfo(distances.dtype).eps * norms
        distances = jnp.where(distances > noise, distances, 0.0)
    else:
        distances = jnp.maximum(distances, 0.0)
    if x is y:
        distances = jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, distances)
    return distances


#: The signed integer type of each float's width, to read and write its exponent bits.
_INTEGERS = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}


def magnitude_exponent(*arrays: Array, scale_up: bool = True) -> Int[Array, ""]:
    """The integer e with ``2^(e-1) <= max |entry| < 2^e``: the arrays times ``2^-e`` lie in (-1, 1).

    Read off the largest entry's exponent bits (a few integer operations, quick to compile).
    Clipped so that ``2^-e`` and ``2^e`` are normal numbers of the dtype, and, unless
    ``scale_up``, at 0 from below (arrays of small numbers are then left as they are). It is a
    piecewise constant of the entries: no gradient flows through it.
    """
    # on constants: no tangent is formed for the maximum, only to be dropped
    largest = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(lax.stop_gradient(array))) for array in arrays])
    info = jnp.finfo(largest.dtype)
    bits = lax.bitcast_convert_type(largest, _INTEGERS[largest.dtype.itemsize])
    biased = lax.shift_right_logical(bits, bits.dtype.type(info.nmant)) & ((1 << info.nexp) - 1)
    exponent = biased.astype(jnp.int32) - (info.maxexp - 2)  # largest = m 2^exponent, 1/2 <= m < 1
    return jnp.clip(exponent, info.minexp if scale_up else 0, -info.minexp)


def power_of_two(exponent: Int[Array, ""], dtype: Any) -> Float[Array, ""]:
    """``2^exponent`` as a scalar of ``dtype``, written into its exponent bits: exact.

    ``exponent`` must be that of a normal number (``minexp <= exponent < maxexp``).
    """
    info = jnp.finfo(dtype)
    integer = _INTEGERS[jnp.dtype(dtype).itemsize]
    biased = (exponent + (info.maxexp - 1)).astype(integer)
    return lax.bitcast_convert_type(lax.shift_left(biased, integer(info.nmant)), dtype)


def _times(parameter: ArrayLike, factor: Float[Array, ""]) -> ArrayLike:
    """A kernel parameter times a power of two, exactly, in the wider of the two dtypes.

    A Python number (weakly typed) takes the factor's dtype.
    """
    parameter = jnp.asarray(parameter)
    if jax.typeof(parameter).weak_type:
        return parameter * factor
    dtype = np.promote_types(parameter.dtype, factor.dtype)
    return parameter.astype(dtype) * factor.astype(dtype)


def scale_samples(
    x: Float[Array, "m d"], y: Float[Array, "n d"], kernel: AbstractKernel
) -> tuple[Float[Array, "m d"], Float[Array, "n d"], AbstractKernel, Callable[[Array], Array]] | None:
    """The samples scaled by a power of two into (-1, 1), with the kernel that keeps their MMD^2.

    Returns ``(x', y', k', undo)`` with ``x' = 2^-e x``, ``y' = 2^-e y`` (e from
    :func:`magnitude_exponent`) and ``k'`` from :meth:`AbstractKernel.for_scaled_samples`, so that
    ``k(a, b) = 2^(e q) k'(a', b')`` for every pair; every MMD^2 estimate of x and y under k is
    then ``undo`` of that of x' and y' under k' (MMD^2 is linear in the kernel's values).
    ``undo`` multiplies by ``2^e`` q times: each product is exact, and none overflows before
    the last. Scaling by a power of two rounds nothing, so in the usual range the result is the
    same to the bit; far outside it, squared distances and inner products of x' and y' still fit
    the dtype (docs/math.md, "Numerics"). None for a kernel without such a rule.
    """
    exponent = magnitude_exponent(x, y, scale_up=kernel.scales_up)
    factor = power_of_two(-exponent, x.dtype)
    rule = kernel.for_scaled_samples(factor)
    if rule is None:
        return None
    scaled, degree = rule

    def undo(value: Array) -> Array:
        back = power_of_two(exponent, value.dtype)
        for _ in range(degree):
            value = value * back
        return value

    return x * factor, y * factor, scaled, undo


# ----------------------------------------------------------------------------------------------
# The interface


class AbstractKernel(abc.ABC):
    """A positive-definite kernel ``k(a, b)`` on vectors of R^d.

    Subclasses are frozen dataclasses whose fields are listed as pytree ``_children`` (numbers,
    traced) or ``_static`` (hashable Python values that shape the program). Every subclass is
    registered as a pytree automatically; unflattening bypasses ``__init__``, so validation runs
    when a user builds a kernel, not when JAX rebuilds one from tracers.
    """

    _children: ClassVar[tuple[str, ...]] = ()
    _static: ClassVar[tuple[str, ...]] = ()
    #: Whether ``k(a + t, b + t) == k(a, b)`` for every shift t; the pairwise MMD route then
    #: centres the samples, which makes float32 distances far more accurate.
    translation_invariant: ClassVar[bool] = False
    #: Whether samples of small numbers may be scaled up by :func:`scale_samples`: False where
    #: a parameter grows with the factor and could overflow (a polynomial's offset c).
    scales_up: ClassVar[bool] = True

    @property
    def mmd_shift_invariant(self) -> bool:
        """Whether MMD^2 is unchanged when both samples shift by the same vector.

        The pairwise MMD route then centres them. Every translation-invariant kernel qualifies;
        so do kernels that are not but whose non-invariant part cancels out of every MMD
        estimate, such as :class:`Energy` (``|a| + |b|`` cancels, ``-|a - b|`` remains).
        """
        return self.translation_invariant

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_fields(cls, cls._children, cls._static)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={_number_text(getattr(self, name))}" for name in (*self._static, *self._children)
        )
        return f"{type(self).__name__}({fields})"

    # -- the core and what follows from it ---------------------------------------------------

    @abc.abstractmethod
    def compute_elementwise(self, a: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, ""]:
        """``k(a, b)`` for two vectors: the definition every other method must agree with."""

    def __call__(self, x: Float[Array, "m d"], y: Float[Array, "n d"]) -> Float[Array, "m n"]:
        """The kernel matrix ``K[i, j] = k(x_i, y_j)``."""
        row = jax.vmap(self.compute_elementwise, in_axes=(None, 0))
        return jax.vmap(row, in_axes=(0, None))(x, y)

    def paired(self, x: Float[Array, "p d"], y: Float[Array, "p d"]) -> Float[Array, " p"]:
        """``k(x_i, y_i)`` for each row i (the diagonal of ``kernel(x, y)`` without the rest)."""
        return jax.vmap(self.compute_elementwise)(x, y)

    def inner_product_coefficients(self) -> tuple[ArrayLike, ...] | None:
        """Coefficients ``(c_0, ..., c_P)`` if ``k(a, b) = sum_p c_p (a^T b)^p``, else None.

        The length of the tuple (the degree plus one) is static; the coefficients may be traced.
        """
        return None

    def for_scaled_samples(self, factor: Float[Array, ""]) -> tuple[AbstractKernel, int] | None:
        """``(k', q)`` with ``k'(factor a, factor b) = factor^q k(a, b)`` for every a, b; or None.

        The same kernel seen on samples scaled by ``factor > 0``: a bandwidth scales with it
        (q = 0), a homogeneous kernel keeps its form (q is its degree). :func:`scale_samples`
        uses it to bring samples into the dtype's range. None (the default, and a user
        function's): no such rule is known, and the samples are used as they are.
        """
        return None

    # -- composition -------------------------------------------------------------------------

    def __add__(self, other: Any) -> AbstractKernel:
        if not isinstance(other, AbstractKernel):
            return NotImplemented
        return SumKernel(self, other)

    def __mul__(self, other: Any) -> AbstractKernel:
        if isinstance(other, AbstractKernel):
            return ProductKernel(self, other)
        if isinstance(other, (int, float)) or hasattr(other, "shape"):
            return ScaledKernel(other, self)
        return NotImplemented

    __rmul__ = __mul__

    def __pow__(self, power: Any) -> AbstractKernel:
        if isinstance(power, bool) or not isinstance(power, int) or power < 1:
            raise ValueError(f"A kernel can be raised to an integer power >= 1, got {power!r}.")
        result = self
        for _ in range(power - 1):
            result = ProductKernel(result, self)
        return result

    def __sub__(self, other: Any) -> AbstractKernel:
        raise TypeError(
            "The difference of two kernels need not be positive definite, so kernels cannot be "
            "subtracted. Use sums, products and positive scalings."
        )

    def __neg__(self) -> AbstractKernel:
        raise TypeError("A negated kernel is not positive definite; scale factors must be > 0.")


# ----------------------------------------------------------------------------------------------
# Inner-product kernels: exact feature-space forms


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Linear(AbstractKernel):
    """``k(a, b) = a^T b``. The biased MMD is ``||mean(x) - mean(y)||^2``: mean matching."""

    def compute_elementwise(self, a: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, ""]:
        """``a^T b`` by one dot product."""
        return jnp.dot(a, b, precision=HIGHEST)

    def __call__(self, x: Float[Array, "m d"], y: Float[Array, "n d"]) -> Float[Array, "m n"]:
        """The matrix ``X Y^T`` by one matmul."""
        return jnp.matmul(x, y.T, precision=HIGHEST)

    def paired(self, x: Float[Array, "p d"], y: Float[Array, "p d"]) -> Float[Array, " p"]:
        """``x_i^T y_i`` for each row i, as a row-wise sum of products."""
        return jnp.sum(x * y, axis=-1)

    def inner_product_coefficients(self) -> tuple[ArrayLike, ...]:
        """``(0, 1)``: ``k(a, b) = 0 + 1 * a^T b``."""
        return (0.0, 1.0)

    def for_scaled_samples(self, factor: Float[Array, ""]) -> tuple[AbstractKernel, int]:
        """Itself, of degree 2: ``(f a)^T (f b) = f^2 a^T b``."""
        return self, 2


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Polynomial(AbstractKernel):
    """``k(a, b) = (scale * a^T b + c)^degree``.

    scikit-learn calls ``scale`` gamma and ``c`` coef0. ``Polynomial(2)`` is the kernel of the
    Gram-matrix style loss (Li et al., 2017). With ``c > 0`` a degree-p polynomial MMD matches
    all uncentred moments up to order p; with ``c = 0`` only those of order p (``Polynomial(2)``:
    the second moments, not the means). Degrees <= 2 take the exact feature-space route in ``mmd2``.

    Args:
      degree: integer >= 1 (static: each degree compiles its own program).
      c: offset >= 0 (a negative offset can break positive definiteness).
      scale: factor > 0 on the inner product.
    """

    degree: int = 2
    c: ArrayLike = 0.0
    scale: ArrayLike = 1.0

    _children: ClassVar[tuple[str, ...]] = ("c", "scale")
    _static: ClassVar[tuple[str, ...]] = ("degree",)
    #: Scaled up by f, the offset c f^2 could overflow; small samples are left as they are.
    scales_up: ClassVar[bool] = False

    def __post_init__(self) -> None:
        degree = self.degree
        integral = isinstance(degree, int) or (isinstance(degree, float) and degree.is_integer())
        if isinstance(degree, bool) or not integral or degree < 1:
            raise ValueError(f"degree must be an integer >= 1, got {degree!r}.")
        object.__setattr__(self, "degree", int(degree))
        object.__setattr__(self, "c", check_scalar("c", self.c, positive=False))
        object.__setattr__(self, "scale", check_scalar("scale", self.scale, positive=True))

    def compute_elementwise(self, a: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, ""]:
        """``(scale * a^T b + c)^degree`` from one dot product."""
        return (self.scale * jnp.dot(a, b, precision=HIGHEST) + self.c) ** self.degree

    def __call__(self, x: Float[Array, "m d"], y: Float[Array, "n d"]) -> Float[Array, "m n"]:
        """``(scale * X Y^T + c)^degree`` entry by entry, from one matmul."""
        return (self.scale * jnp.matmul(x, y.T, precision=HIGHEST) + self.c) ** self.degree

    def paired(self, x: Float[Array, "p d"], y: Float[Array, "p d"]) -> Float[Array, " p"]:
        """``(scale * x_i^T y_i + c)^degree`` for each row i."""
        return (self.scale * jnp.sum(x * y, axis=-1) + self.c) ** self.degree

    def inner_product_coefficients(self) -> tuple[ArrayLike, ...]:
        """The binomial expansion's ``c_k = C(degree, k) scale^k c^(degree - k)``, k = 0..degree.

        Every degree has coefficients; ``mmd2`` takes the feature route only for degree <= 2
        (docs/math.md, "Feature route").
        """
        # (s t + c)^p = sum_k C(p, k) s^k c^(p-k) t^k
        p = self.degree
        return tuple(math.comb(p, k) * self.scale**k * self.c ** (p - k) for k in range(p + 1))

    def for_scaled_samples(self, factor: Float[Array, ""]) -> tuple[AbstractKernel, int]:
        """Offset ``c f^2``, degree ``2 degree``: ``(s (f a)^T (f b) + c f^2)^p = f^(2p) k(a, b)``."""
        return dataclasses.replace(self, c=_times(_times(self.c, factor), factor)), 2 * self.degree


# ----------------------------------------------------------------------------------------------
# Distance-based kernels: characteristic, their MMD unchanged when both samples shift


@functools.partial(jax.jit, static_argnames=("count", "dimension", "dtype"))
def orthogonal_normal(key: jax.Array, count: int, dimension: int, dtype: Any) -> Float[Array, "count d"]:
    """``count`` rows, each distributed as N(0, I_d), mutually orthogonal within blocks of d rows.

    Each block is a Haar-random rotation (the Q of a Gaussian matrix's QR decomposition, its
    columns' signs fixed by R's diagonal) whose rows are scaled by independent chi_d lengths (the
    norms of other Gaussian vectors): every row alone is exactly N(0, I), so estimates built on
    the rows stay unbiased, while orthogonal rows sample the directions more evenly than
    independent ones. For random Fourier features and sliced distances this cuts the variance
    several times (on VGG features with 256 directions in 64 dimensions: the standard deviation of
    the sliced energy distance from 6.2 % to 1.2 % of its value). The draws are made in float32
    and cast, so float32 and float64 samples see the same rows for the same key. Compiled whole:
    called outside jit, its draws and QR decomposition would each compile and run alone.

    References:
      Yu, Suresh, Choromanski, Holtmann-Rice, Kumar, "Orthogonal Random Features", NeurIPS 2016.
      https://arxiv.org/abs/1610.09072
      Rowland, Hron, Tang, Choromanski, Sarlós, Weller, "Orthogonal Estimation of Wasserstein
      Distances", AISTATS 2019. https://arxiv.org/abs/1903.03784
    """
    blocks = -(-count // dimension)
    rotation_key, length_key = jax.random.split(key)
    # drawn flat and reshaped (the same values): a 3-D random shape compiles several times slower
    gaussian = jax.random.normal(rotation_key, (blocks * dimension * dimension,), jnp.float32)
    gaussian = gaussian.reshape(blocks, dimension, dimension)
    if jax.default_backend() == "cpu":
        # one decomposition at a time: LAPACK's batched QR spreads a batch over the CPU's thread
        # pool and waits for it, which deadlocks when every thread of that pool runs a device of
        # a forced multi-device CPU mesh (--xla_force_host_platform_device_count), all in this
        # call. The same values; on one device 0.7 -> 1.1 ms for 512 frequencies in d = 5.
        q, r = lax.map(jnp.linalg.qr, gaussian)
    else:  # accelerators decompose a batch at once
        q, r = jnp.linalg.qr(gaussian)
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    directions = jnp.swapaxes(q, -1, -2).reshape(blocks * dimension, dimension)[:count]
    lengths = jnp.linalg.norm(jax.random.normal(length_key, (count, dimension), jnp.float32), axis=-1)
    return (directions * lengths[:, None]).astype(dtype)


class AbstractSpectralKernel(AbstractKernel):
    """A translation-invariant kernel ``k(a, b) = psi(a - b)`` that can draw from its spectral measure.

    Bochner: ``psi(v) = psi(0) E[cos(omega^T v)]`` for omega from the normalised spectral density.
    Subclasses draw frequencies and weights whose ``sum_r w_r cos(omega_r^T v)`` is an unbiased
    estimate of ``psi(v)``, which is what the random-feature route of ``mmd2`` needs.
    """

    translation_invariant: ClassVar[bool] = True
    #: Whether E|omega|^2 is finite: the random-feature estimate's gradient in the samples, a sum
    #: of ``w_r omega_r sin(omega_r^T a)`` terms, then has finite variance.
    finite_second_moment: ClassVar[bool] = True

    @property
    def min_frequencies(self) -> int:
        """The fewest frequencies for an unbiased estimate (one per component of a mixture)."""
        return 1

    @abc.abstractmethod
    def sample_frequencies(
        self, key: jax.Array, count: int, dimension: int, dtype: Any
    ) -> tuple[Float[Array, "count d"], Float[Array, " count"]]:
        """``count`` frequencies ``omega_r`` of R^dimension and weights ``w_r`` (summing to ``psi(0)``).

        ``sum_r w_r cos(omega_r^T v)`` is unbiased for ``psi(v)``; traced parameters (a bandwidth)
        enter differentiably.
        """


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Gaussian(AbstractSpectralKernel):
    """``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``: matches all moments (characteristic).

    geomloss calls ``sigma`` blur. ``sigma`` may be an array computed from data, e.g.
    ``Gaussian(median_bandwidth(x, y))``, and can be differentiated.
    """

    sigma: ArrayLike = 1.0

    _children: ClassVar[tuple[str, ...]] = ("sigma",)
    translation_invariant: ClassVar[bool] = True

    def __post_init__(self) -> None:
        hint = " A bandwidth of 0 comes from data whose samples all coincide."
        object.__setattr__(self, "sigma", check_scalar("sigma", self.sigma, positive=True, hint=hint))

    def compute_elementwise(self, a: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, ""]:
        """``exp(-||a - b||^2 / (2 sigma^2))``, the squared distance summed from ``a - b``."""
        return jnp.exp(-jnp.sum((a - b) ** 2) / (2.0 * self.sigma**2))

    def __call__(self, x: Float[Array, "m d"], y: Float[Array, "n d"]) -> Float[Array, "m n"]:
        """``exp(-D / (2 sigma^2))`` of the squared distances ``D`` from :func:`squared_distances`."""
        return jnp.exp(-squared_distances(x, y) / (2.0 * self.sigma**2))

    def sample_frequencies(
        self, key: jax.Array, count: int, dimension: int, dtype: Any
    ) -> tuple[Float[Array, "count d"], Float[Array, " count"]]:
        """``omega ~ N(0, I / sigma^2)`` (the spectral density is Gaussian too), weights ``1/count``.

        The frequencies are orthogonal within blocks of d (:func:`orthogonal_normal`).
        """
        omega = orthogonal_normal(key, count, dimension, dtype) / self.sigma
        return omega, jnp.full((count,), 1.0 / count, dtype)

    def for_scaled_samples(self, factor: Float[Array, ""]) -> tuple[AbstractKernel, int]:
        """Bandwidth ``sigma f``, degree 0: distances and bandwidth scale together."""
        return dataclasses.replace(self, sigma=_times(self.sigma, factor)), 0


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Laplacian(AbstractSpectralKernel):
    """``k(a, b) = exp(-||a - b|| / sigma)``, with gradient 0 (not NaN) where a == b."""

    sigma: ArrayLike = 1.0

    _children: ClassVar[tuple[str, ...]] = ("sigma",)
    translation_invariant: ClassVar[bool] = True
    #: Its frequencies are multivariate Cauchy: no finite mean, so random-feature gradients have
    #: infinite variance (the values are fine).
    finite_second_moment: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", check_scalar("sigma", self.sigma, positive=True))

    def compute_elementwise(self, a: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, ""]:
        """``exp(-||a - b|| / sigma)``, with gradient 0 where ``a == b``."""
        return jnp.exp(-_safe_sqrt(jnp.sum((a - b) ** 2)) / self.sigma)

    def __call__(self, x: Float[Array, "m d"], y: Float[Array, "n d"]) -> Float[Array, "m n"]:
        """``exp(-sqrt(D) / sigma)``, with squared distances ``D`` below their rounding noise set to 0."""
        return jnp.exp(-_safe_sqrt(squared_distances(x, y, zero_below_rounding=True)) / self.sigma)

    def sample_frequencies(
        self, key: jax.Array, count: int, dimension: int, dtype: Any
    ) -> tuple[Float[Array, "count d"], Float[Array, " count"]]:
        """Multivariate Cauchy frequencies ``omega = g / (sigma |s|)``, ``g ~ N(0, I)``, ``s ~ N(0, 1)``.

        Given s, ``E cos(omega^T v) = exp(-|v|^2 / (2 sigma^2 s^2))``, and the mean of that over s
        is ``exp(-|v| / sigma)``. Weights ``1/count``.
        """
        normal_key, scale_key = jax.random.split(key)
        g = orthogonal_normal(normal_key, count, dimension, dtype)
        s = jax.random.normal(scale_key, (count, 1), jnp.float32).astype(dtype)
        return g / (self.sigma * jnp.abs(s)), jnp.full((count,), 1.0 / count, dtype)

    def for_scaled_samples(self, factor: Float[Array, ""]) -> tuple[AbstractKernel, int]:
        """Bandwidth ``sigma f``, degree 0: distances and bandwidth scale together."""
        return dataclasses.replace(self, sigma=_times(self.sigma, factor)), 0


@dataclasses.dataclass(frozen=True, eq=False)
class MultiGaussian(AbstractSpectralKernel):
    """``k(a, b) = sum_i w_i exp(-||a - b||^2 / (2 sigma_i^2))``: Gaussians at several bandwidths.

    With the default weights ``1/K`` for K bandwidths, ``k(a, a) = 1``. A single Gaussian at the
    median bandwidth has almost no gradient for a feature far from every other sample; the wide
    components keep one there, the narrow ones resolve detail (generative moment matching
    networks, MMD-GANs). :meth:`around` builds the usual ``sigma x (1/4, 1/2, 1, 2, 4)``. The
    squared distances are formed once for all bandwidths.

    Args:
      sigmas: the bandwidths, a 1-D array of K > 0 values (traced, differentiable).
      weights: K weights > 0 (default ``1/K`` each).

    References:
      Li, Swersky, Zemel, "Generative Moment Matching Networks", ICML 2015.
      https://arxiv.org/abs/1502.02761
      Li, Chang, Cheng, Yang, Póczos, "MMD GAN", NeurIPS 2017. https://arxiv.org/abs/1705.08584
    """

    sigmas: ArrayLike | Sequence[float]
    weights: ArrayLike | Sequence[float] | None = None

    _children: ClassVar[tuple[str, ...]] = ("sigmas", "weights")

    def __post_init__(self) -> None:
        sigmas = _positive_vector("sigmas", self.sigmas)
        count = sigmas.shape[0]
        weights = jnp.full((count,), 1.0 / count) if self.weights is None else self.weights
        weights = _positive_vector("weights", weights)
        if weights.shape != sigmas.shape:
            raise ValueError(
                f"weights must have one entry per bandwidth: {count} sigmas, {weights.shape[0]} weights."
            )
        object.__setattr__(self, "sigmas", sigmas)
        object.__setattr__(self, "weights", weights)

    @classmethod
    def around(cls, sigma: ArrayLike, factors: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> MultiGaussian:
        """Bandwidths ``sigma * factors`` with equal weights; ``sigma`` may be traced, e.g. a median."""
        sigma = jnp.asarray(check_scalar("sigma", sigma, positive=True))
        sigma = sigma if jnp.issubdtype(sigma.dtype, jnp.floating) else sigma.astype(jnp.result_type(float))
        return cls(sigma * jnp.asarray(factors, sigma.dtype))  # in sigma's dtype (a float32 median stays so)

    @property
    def min_frequencies(self) -> int:
        """One frequency per bandwidth at least."""
        return int(jnp.shape(self.sigmas)[0])

    def _mix(self, squared: Array) -> Array:
        # in the data's dtype (the bandwidths may be wider); a Python loop over the K bandwidths:
        # one exp per entry and bandwidth, no (K, m, n) array
        sigmas, weights = jnp.asarray(self.sigmas, squared.dtype), jnp.asarray(self.weights, squared.dtype)
        return sum(
            weights[i] * jnp.exp(-squared / (2.0 * sigmas[i] ** 2)) for i in range(self.min_frequencies)
        )

    def compute_elementwise(self, a: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, ""]:
        """``sum_i w_i exp(-||a - b||^2 / (2 sigma_i^2))``."""
        return self._mix(jnp.sum((a - b) ** 2))

    def __call__(self, x: Float[Array, "m d"], y: Float[Array, "n d"]) -> Float[Array, "m n"]:
        """The weighted Gaussians of one matrix of squared distances."""
        return self._mix(squared_distances(x, y))

    def sample_frequencies(
        self, key: jax.Array, count: int, dimension: int, dtype: Any
    ) -> tuple[Float[Array, "count d"], Float[Array, " count"]]:
        """Frequency r from bandwidth ``r mod K`` (stratified), weighted ``w_i / (its count)``."""
        components = self.min_frequencies
        component = np.arange(count) % components
        per_component = np.bincount(component, minlength=components)
        sigmas = jnp.asarray(self.sigmas, dtype)[component]
        omega = orthogonal_normal(key, count, dimension, dtype) / sigmas[:, None]
        weights = jnp.asarray(self.weights, dtype)[component] / jnp.asarray(per_component[component], dtype)
        return omega, weights

    def for_scaled_samples(self, factor: Float[Array, ""]) -> tuple[AbstractKernel, int]:
        """Bandwidths ``sigma_i f``, degree 0: distances and bandwidths scale together."""
        return dataclasses.replace(self, sigmas=_times(self.sigmas, factor)), 0

    def __repr__(self) -> str:
        if is_traced(self.sigmas):
            return "MultiGaussian(<traced>)"
        sigmas = ", ".join(f"{float(s):.6g}" for s in np.asarray(self.sigmas))
        weights = np.asarray(self.weights)
        if np.allclose(weights, 1.0 / weights.shape[0]):
            return f"MultiGaussian(sigmas=({sigmas}))"
        return f"MultiGaussian(sigmas=({sigmas}), weights=({', '.join(f'{float(w):.6g}' for w in weights)}))"


def _positive_vector(name: str, value: Any) -> Any:
    """A 1-D array of finite values > 0 (traced values pass unchecked)."""
    if is_traced(value):
        return value
    array = np.asarray(value)
    if array.ndim != 1 or array.shape[0] == 0 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be a non-empty 1-D array of numbers, got {value!r}.")
    if not np.all(np.isfinite(array)) or not np.all(array > 0):
        raise ValueError(f"{name} must all be finite and > 0, got {array.tolist()}.")
    return value if isinstance(value, jax.Array) else jnp.asarray(array, jnp.result_type(float))


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Energy(AbstractKernel):
    """``k(a, b) = ||a|| + ||b|| - ||a - b||``, the distance-induced kernel: its MMD^2 is the energy distance.

    With it every MMD estimate keeps only the distance terms (``||a|| + ||b||`` cancels), and the
    biased population MMD^2 is the energy distance of Székely and Rizzo:

        MMD^2 = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||

    It is positive definite (Sejdinovic et al. 2013: twice the distance-induced kernel of the
    Euclidean norm centred at 0) and characteristic: the energy distance is 0 only for equal
    distributions with finite first moments. The kernel is not translation invariant, but its
    MMD is: both samples shifted by the same vector give the same estimates, so the pairwise route
    centres them (:attr:`mmd_shift_invariant`). It has no parameter and no bandwidth to choose;
    its values grow with the norms, and so does MMD^2 (it scales like the distances: ``t x, t y``
    give ``t`` times the value). Gradients are 0 (not NaN) where ``a == b`` and where
    ``a == 0``. geomloss's ``SamplesLoss("energy")`` is half the biased MMD^2, that of
    ``0.5 * Energy()``.

    ``mmd2(..., route="sliced")`` estimates its MMD from random 1-D projections in
    O((m + n) log(m + n)) per direction (:mod:`mmdstyle.sliced`).

    References:
      Székely, Rizzo, "Energy statistics: A class of statistics based on distances", Journal of
      Statistical Planning and Inference 143(8), 2013. https://doi.org/10.1016/j.jspi.2013.03.018
      Sejdinovic, Sriperumbudur, Gretton, Fukumizu, "Equivalence of distance-based and RKHS-based
      statistics in hypothesis testing", Annals of Statistics 41(5), 2013.
      https://arxiv.org/abs/1207.6076
    """

    @property
    def mmd_shift_invariant(self) -> bool:
        """True: shifting both samples changes only ``||a|| + ||b||``, which cancels from MMD^2."""
        return True

    def compute_elementwise(self, a: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, ""]:
        """``||a|| + ||b|| - ||a - b||``, each norm with gradient 0 where it is 0."""
        return _safe_sqrt(jnp.sum(a * a)) + _safe_sqrt(jnp.sum(b * b)) - _safe_sqrt(jnp.sum((a - b) ** 2))

    def __call__(self, x: Float[Array, "m d"], y: Float[Array, "n d"]) -> Float[Array, "m n"]:
        """Norms plus norms minus ``sqrt(D)``, squared distances ``D`` below their rounding noise set to 0."""
        x_norms = _safe_sqrt(jnp.sum(x * x, axis=-1))
        y_norms = x_norms if x is y else _safe_sqrt(jnp.sum(y * y, axis=-1))
        distances = _safe_sqrt(squared_distances(x, y, zero_below_rounding=True))
        return x_norms[:, None] + y_norms[None, :] - distances

    def paired(self, x: Float[Array, "p d"], y: Float[Array, "p d"]) -> Float[Array, " p"]:
        """``||x_i|| + ||y_i|| - ||x_i - y_i||`` for each row i (``2 ||x_i||`` where ``y_i = x_i``)."""
        return (
            _safe_sqrt(jnp.sum(x * x, axis=-1))
            + _safe_sqrt(jnp.sum(y * y, axis=-1))
            - _safe_sqrt(jnp.sum((x - y) ** 2, axis=-1))
        )

    def for_scaled_samples(self, factor: Float[Array, ""]) -> tuple[AbstractKernel, int]:
        """Itself, of degree 1: every norm scales with f."""
        return self, 1


# ----------------------------------------------------------------------------------------------
# User functions and compositions


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionKernel(AbstractKernel):
    """A kernel from a plain function ``f(a_vec, b_vec) -> scalar`` (see :func:`from_function`).

    The function is static: each distinct function object compiles its own program. mmdstyle
    cannot check that it is positive definite; an MMD with an indefinite function is not a
    distance and can be negative.
    """

    function: Callable[[Array, Array], ArrayLike]
    name: str | None = None

    _static: ClassVar[tuple[str, ...]] = ("function", "name")

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise ValueError(
                f"from_function needs a callable f(a, b) -> scalar, got {type(self.function).__name__}."
            )

    def compute_elementwise(self, a: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, ""]:
        """``f(a, b)``; a ValueError if the function does not return a scalar."""
        value = jnp.asarray(self.function(a, b))
        if value.shape != ():
            raise ValueError(
                f"The kernel function {self._label()} must return a scalar for two vectors of shape "
                f"{tuple(a.shape)}, got shape {tuple(value.shape)}. Reduce over the last axis, "
                "e.g. jnp.sum(a * b)."
            )
        return value

    def _label(self) -> str:
        return self.name or getattr(self.function, "__name__", repr(self.function))

    def __repr__(self) -> str:
        return f"FunctionKernel({self._label()})"


def from_function(function: Callable[[Array, Array], ArrayLike], name: str | None = None) -> FunctionKernel:
    """A kernel from any function of two vectors, e.g. ``from_function(lambda a, b: (a @ b + 1) ** 3)``.

    Args:
      function: ``f(a, b) -> scalar`` for ``a, b`` of shape (d,); written with ``jax.numpy`` so it
        can be traced, vectorised and differentiated.
      name: shown in reprs and reports (default: the function's ``__name__``).

    Returns:
      A :class:`FunctionKernel`; its matrices come from a double ``vmap`` of ``function``.
    """
    return FunctionKernel(function, name)


def _polynomial_sum(p: tuple[ArrayLike, ...], q: tuple[ArrayLike, ...]) -> tuple[ArrayLike, ...]:
    size = max(len(p), len(q))
    p, q = p + (0.0,) * (size - len(p)), q + (0.0,) * (size - len(q))
    return tuple(a + b for a, b in zip(p, q, strict=True))


def _polynomial_product(p: tuple[ArrayLike, ...], q: tuple[ArrayLike, ...]) -> tuple[ArrayLike, ...]:
    return tuple(
        sum(p[i] * q[k - i] for i in range(len(p)) if 0 <= k - i < len(q)) for k in range(len(p) + len(q) - 1)
    )


def check_kernel(name: str, value: Any) -> AbstractKernel:
    """``value`` is a kernel, or a ValueError that says how to make one."""
    if not isinstance(value, AbstractKernel):
        raise ValueError(
            f"{name} must be a kernel such as mmdstyle.Gaussian(1.0) or mmdstyle.Polynomial(2), got "
            f"{type(value).__name__}. Wrap a plain function f(a, b) with mmdstyle.kernels.from_function(f)."
        )
    return value


class AbstractPairKernel(AbstractKernel):
    """Two kernels combined entry by entry with ``combine``.

    Every view (scalar, matrix, paired, inner-product coefficients) combines the parts' views the
    same way.
    """

    first: AbstractKernel
    second: AbstractKernel

    _children: ClassVar[tuple[str, ...]] = ("first", "second")
    combine: ClassVar[Callable[[Any, Any], Any]]
    combine_coefficients: ClassVar[Callable[[tuple, tuple], tuple]]
    symbol: ClassVar[str]

    def __post_init__(self) -> None:
        check_kernel("first", self.first)
        check_kernel("second", self.second)

    @property
    def translation_invariant(self) -> bool:  # type: ignore[override]
        """Whether both parts are translation invariant."""
        return self.first.translation_invariant and self.second.translation_invariant

    def compute_elementwise(self, a: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, ""]:
        """The parts' ``k1(a, b)`` and ``k2(a, b)`` combined with ``combine``."""
        return self.combine(self.first.compute_elementwise(a, b), self.second.compute_elementwise(a, b))

    def __call__(self, x: Float[Array, "m d"], y: Float[Array, "n d"]) -> Float[Array, "m n"]:
        """The parts' kernel matrices combined entry by entry with ``combine``."""
        return self.combine(self.first(x, y), self.second(x, y))

    def paired(self, x: Float[Array, "p d"], y: Float[Array, "p d"]) -> Float[Array, " p"]:
        """The parts' paired values combined with ``combine``."""
        return self.combine(self.first.paired(x, y), self.second.paired(x, y))

    def inner_product_coefficients(self) -> tuple[ArrayLike, ...] | None:
        """The parts' coefficients combined as polynomials in ``a^T b``; None unless both have them."""
        p, q = self.first.inner_product_coefficients(), self.second.inner_product_coefficients()
        if p is None or q is None:
            return None
        return self.combine_coefficients(p, q)

    @property
    def scales_up(self) -> bool:  # type: ignore[override]
        """Whether both parts may be scaled up."""
        return self.first.scales_up and self.second.scales_up

    def for_scaled_samples(self, factor: Float[Array, ""]) -> tuple[AbstractKernel, int] | None:
        """The parts' rules combined (:meth:`combine_degrees`); None unless both have one."""
        first, second = self.first.for_scaled_samples(factor), self.second.for_scaled_samples(factor)
        if first is None or second is None:
            return None
        degree = self.combine_degrees(first[1], second[1])
        return None if degree is None else (type(self)(first[0], second[0]), degree)

    @staticmethod
    @abc.abstractmethod
    def combine_degrees(first: int, second: int) -> int | None:
        """The degree of the combination of kernels of these degrees; None if it has none."""

    def __repr__(self) -> str:
        return f"({self.first!r} {self.symbol} {self.second!r})"


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class SumKernel(AbstractPairKernel):
    """``k(a, b) = k1(a, b) + k2(a, b)``; build it with ``k1 + k2``."""

    first: AbstractKernel
    second: AbstractKernel

    combine = staticmethod(operator.add)
    combine_coefficients = staticmethod(_polynomial_sum)
    symbol = "+"

    @staticmethod
    def combine_degrees(first: int, second: int) -> int | None:
        """The common degree; None where they differ (``f^2 a^T b`` plus a Gaussian is no ``f^q k``)."""
        return first if first == second else None

    @property
    def mmd_shift_invariant(self) -> bool:
        """Whether both parts' MMDs are: MMD^2 is linear in the kernel, so the sum's is their sum."""
        return self.first.mmd_shift_invariant and self.second.mmd_shift_invariant


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ProductKernel(AbstractPairKernel):
    """``k(a, b) = k1(a, b) * k2(a, b)`` (Schur product theorem); build it with ``k1 * k2``."""

    first: AbstractKernel
    second: AbstractKernel

    combine = staticmethod(operator.mul)
    combine_coefficients = staticmethod(_polynomial_product)
    symbol = "*"

    @staticmethod
    def combine_degrees(first: int, second: int) -> int | None:
        """The sum of the degrees."""
        return first + second


@dataclasses.dataclass(frozen=True, eq=False)
class ScaledKernel(AbstractKernel):
    """``k(a, b) = factor * k0(a, b)`` with ``factor > 0``; build it with ``factor * k0``."""

    factor: ArrayLike
    kernel: AbstractKernel

    _children: ClassVar[tuple[str, ...]] = ("factor", "kernel")

    def __post_init__(self) -> None:
        hint = " (A kernel scaled by a factor <= 0 is not positive definite.)"
        object.__setattr__(self, "factor", check_scalar("factor", self.factor, positive=True, hint=hint))
        check_kernel("kernel", self.kernel)

    @property
    def translation_invariant(self) -> bool:  # type: ignore[override]
        """Whether the scaled kernel is translation invariant."""
        return self.kernel.translation_invariant

    @property
    def mmd_shift_invariant(self) -> bool:
        """Whether the scaled kernel's MMD is invariant under a common shift (scaling keeps it)."""
        return self.kernel.mmd_shift_invariant

    def compute_elementwise(self, a: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, ""]:
        """``factor * k0(a, b)``."""
        return self.factor * self.kernel.compute_elementwise(a, b)

    def __call__(self, x: Float[Array, "m d"], y: Float[Array, "n d"]) -> Float[Array, "m n"]:
        """``factor`` times the scaled kernel's matrix."""
        return self.factor * self.kernel(x, y)

    def paired(self, x: Float[Array, "p d"], y: Float[Array, "p d"]) -> Float[Array, " p"]:
        """``factor`` times the scaled kernel's paired values."""
        return self.factor * self.kernel.paired(x, y)

    def inner_product_coefficients(self) -> tuple[ArrayLike, ...] | None:
        """The scaled kernel's coefficients times ``factor``; None if it has none."""
        coefficients = self.kernel.inner_product_coefficients()
        if coefficients is None:
            return None
        return tuple(self.factor * c for c in coefficients)

    @property
    def scales_up(self) -> bool:  # type: ignore[override]
        """Whether the scaled kernel may be scaled up."""
        return self.kernel.scales_up

    def for_scaled_samples(self, factor: Float[Array, ""]) -> tuple[AbstractKernel, int] | None:
        """The scaled kernel's rule, times the same ``factor``; None if it has none."""
        rule = self.kernel.for_scaled_samples(factor)
        return None if rule is None else (dataclasses.replace(self, kernel=rule[0]), rule[1])

    def __repr__(self) -> str:
        return f"{_number_text(self.factor)} * {self.kernel!r}"

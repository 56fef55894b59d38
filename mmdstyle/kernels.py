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
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from mmdstyle._checks import check_scalar, is_traced

__all__ = [
    "AbstractKernel",
    "AbstractPairKernel",
    "FunctionKernel",
    "Gaussian",
    "Laplacian",
    "Linear",
    "Polynomial",
    "ProductKernel",
    "ScaledKernel",
    "SumKernel",
    "from_function",
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)

        def flatten(kernel: AbstractKernel) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
            children = tuple(getattr(kernel, name) for name in cls._children)
            static = tuple(getattr(kernel, name) for name in cls._static)
            return children, static

        def unflatten(static: tuple[Any, ...], children: Sequence[Any]) -> AbstractKernel:
            kernel = object.__new__(cls)
            for name, value in zip(cls._children, children, strict=True):
                object.__setattr__(kernel, name, value)
            for name, value in zip(cls._static, static, strict=True):
                object.__setattr__(kernel, name, value)
            return kernel

        jax.tree_util.register_pytree_node(cls, flatten, unflatten)

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


# ----------------------------------------------------------------------------------------------
# Distance-based kernels: translation invariant, characteristic


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Gaussian(AbstractKernel):
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


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Laplacian(AbstractKernel):
    """``k(a, b) = exp(-||a - b|| / sigma)``, with gradient 0 (not NaN) where a == b."""

    sigma: ArrayLike = 1.0

    _children: ClassVar[tuple[str, ...]] = ("sigma",)
    translation_invariant: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", check_scalar("sigma", self.sigma, positive=True))

    def compute_elementwise(self, a: Float[Array, " d"], b: Float[Array, " d"]) -> Float[Array, ""]:
        """``exp(-||a - b|| / sigma)``, with gradient 0 where ``a == b``."""
        return jnp.exp(-_safe_sqrt(jnp.sum((a - b) ** 2)) / self.sigma)

    def __call__(self, x: Float[Array, "m d"], y: Float[Array, "n d"]) -> Float[Array, "m n"]:
        """``exp(-sqrt(D) / sigma)``, with squared distances ``D`` below their rounding noise set to 0."""
        return jnp.exp(-_safe_sqrt(squared_distances(x, y, zero_below_rounding=True)) / self.sigma)


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


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ProductKernel(AbstractPairKernel):
    """``k(a, b) = k1(a, b) * k2(a, b)`` (Schur product theorem); build it with ``k1 * k2``."""

    first: AbstractKernel
    second: AbstractKernel

    combine = staticmethod(operator.mul)
    combine_coefficients = staticmethod(_polynomial_product)
    symbol = "*"


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

    def __repr__(self) -> str:
        return f"{_number_text(self.factor)} * {self.kernel!r}"

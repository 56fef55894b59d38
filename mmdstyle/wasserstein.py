"""Optimal-transport style losses: sliced Wasserstein and the Wasserstein-2 distance of Gaussians.

Neither is an MMD; both compare the same feature samples (m, d) and (n, d) as the MMD losses do
(docs/math.md, "Beyond MMD").

- **Sliced Wasserstein** (Heitz, Vanhoey, Chambon, Belcour, "A Sliced Wasserstein Loss for Neural
  Texture Synthesis", CVPR 2021): project both sets on L unit directions, sort each projection,
  and average the squared differences of the sorted values, i.e. of the two quantile functions:

      SW(x, y) = mean over l and i of (sort(x theta_l)_i - sort(y theta_l)_i)^2

  For m != n the larger set's sorted values are compared with the smaller set's quantile function
  at the larger set's levels (i + 1/2) / max(m, n), interpolated linearly between the smaller
  set's levels (j + 1/2) / min(m, n) and constant beyond its first and last.
- **Gaussian W2** (as in K. Crowson's style-transfer-pytorch, ``StyleLossW2``): the squared
  Wasserstein-2 distance between Gaussians with the sets' means and covariances, per channel:

      mean_c (mu_x - mu_y)_c^2 + tr(S_x + S_y - 2 (S_y^(1/2) S_x S_y^(1/2))^(1/2)) / d

  with population covariances (1/m) plus ``epsilon`` I. The square roots of symmetric positive
  matrices come from :func:`psd_sqrt`.

Each loss has a ``..._target`` form for a style that stays fixed: the style's side (sorted
projections; mean, covariance trace and square root) computed once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from mmdstyle._checks import (
    as_float_array,
    check_choice,
    check_integer,
    check_key,
    check_sample_pair,
    check_samples,
    check_scalar,
    is_traced,
)
from mmdstyle._pytrees import pytree_dataclass
from mmdstyle.kernels import HIGHEST
from mmdstyle.sliced import random_directions, sorted_projections

__all__ = [
    "DEFAULT_EPSILON",
    "NEWTON_SCHULZ_ITERATIONS",
    "SQRT_METHODS",
    "GaussianTarget",
    "SlicedWassersteinTarget",
    "gaussian_w2_loss",
    "gaussian_w2_target",
    "gaussian_w2_to_target",
    "psd_sqrt",
    "sliced_directions",
    "sliced_wasserstein_loss",
    "sliced_wasserstein_target",
    "sliced_wasserstein_to_target",
]

#: Added to both covariances of the Gaussian W2 loss (Crowson's value): it keeps the square
#: roots' gradients finite where a covariance is singular (a constant channel).
DEFAULT_EPSILON = 1e-4
#: The ways :func:`psd_sqrt` computes a square root.
SQRT_METHODS = ("auto", "eigh", "newton_schulz")
#: Newton-Schulz iterations: each multiplies the smallest normalised eigenvalue's root by about
#: 1.5 until it converges quadratically. With 20, measured on 32 x 32 matrices against SciPy's
#: sqrtm, the float32 root's largest error relative to its largest entry is 7e-7 at condition
#: number 1e2 and 8e-6 at 1e6 (float64: 3e-15 and 2e-7); at 1e8 it is 1e-4 (30 steps: 4e-5).
NEWTON_SCHULZ_ITERATIONS = 20


# ---------------------------------------------------------------------------------------------
# Sliced Wasserstein


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class SlicedWassersteinTarget:
    """The style's side of the sliced Wasserstein loss, computed once (:func:`sliced_wasserstein_target`).

    Attributes:
      directions: the L unit directions (L, d).
      centre: the style's mean (d,); both sets are projected about it (the loss does not depend
        on the centre; it keeps float32 projections small).
      sorted_projections: the style's centred projections, each row sorted (L, n).
    """

    directions: Any
    centre: Any
    sorted_projections: Any


def sliced_directions(
    dimension: int,
    dtype: Any,
    *,
    key: jax.Array | None = None,
    num_directions: int | None = None,
    directions: ArrayLike | None = None,
) -> Float[Array, "L d"]:
    """The directions a sliced Wasserstein loss projects on: ``directions`` checked, or drawn from ``key``.

    Drawn directions are uniform on the unit sphere, orthogonal within blocks of d
    (:func:`mmdstyle.sliced.random_directions`), ``num_directions`` of them (default d, as Heitz
    et al. use). Given directions must be unit vectors: they are refused, not normalised, since
    a scaled direction scales the loss (normalise them with ``directions / np.linalg.norm(
    directions, axis=1, keepdims=True)``).

    Raises:
      ValueError: both ``directions`` and ``key`` or ``num_directions``; directions of the wrong
        shape or not of unit length; a missing key; ``num_directions`` not a positive integer.
    """
    if directions is not None:
        if key is not None or num_directions is not None:
            raise ValueError(
                "give either directions (an explicit (L, d) array) or key and num_directions (to "
                "draw them), not both."
            )
        directions = as_float_array("directions", directions)
        if directions.ndim != 2 or directions.shape[1] != dimension or directions.shape[0] == 0:
            raise ValueError(
                f"directions must be an (L, d) array of unit vectors with d = {dimension} (the "
                f"samples' channels) and L >= 1, got shape {tuple(directions.shape)}."
            )
        if not is_traced(directions):
            norms = np.linalg.norm(np.asarray(directions, np.float64), axis=1)
            # float32 rounding moves a normalised vector's norm by about sqrt(d) * 6e-8 (1.4e-6
            # at d = 512); 1e-4 also admits directions normalised in float16
            tolerance = 1e-10 if directions.dtype == jnp.float64 else 1e-4
            wrong = np.flatnonzero(~(np.abs(norms - 1.0) <= tolerance))
            if wrong.size:
                raise ValueError(
                    f"directions must be unit vectors: row {wrong[0]} has norm {norms[wrong[0]]:.8g} "
                    f"({wrong.size} of {norms.size} rows are off). Normalise them: "
                    "directions / np.linalg.norm(directions, axis=1, keepdims=True)."
                )
        return directions.astype(dtype)
    count = dimension if num_directions is None else check_integer("num_directions", num_directions)
    key = check_key(key, "A sliced Wasserstein loss without explicit directions")
    return random_directions(key, count, dimension, dtype)


def sliced_wasserstein_loss(
    x: ArrayLike,
    y: ArrayLike,
    *,
    key: jax.Array | None = None,
    num_directions: int | None = None,
    directions: ArrayLike | None = None,
) -> Float[Array, ""]:
    """Heitz et al.'s sliced Wasserstein loss: mean squared difference of sorted projections.

    ``mean over directions l and positions i of (sort(x theta_l)_i - sort(y theta_l)_i)^2``; for
    m != n the smaller set's quantile function, interpolated linearly, at the larger set's levels
    (module docstring; docs/math.md, "Sliced Wasserstein"). On the CPU the sorts' orders come from
    NumPy (:func:`mmdstyle.sliced.sorted_projections`); the gradient flows through the sorted values.

    Args:
      x: generated image features, (m, d) samples or an (h, w, d) map.
      y: style image features, (n, d) or a map; n may differ from m.
      key: ``jax.random`` key the directions are drawn from (without ``directions``).
      num_directions: L, the directions drawn (default d).
      directions: explicit (L, d) unit vectors, instead of ``key``.

    Returns:
      The scalar loss.
    """
    x, y = check_sample_pair(x, y, allow_feature_map=True)
    chosen = sliced_directions(
        x.shape[1], x.dtype, key=key, num_directions=num_directions, directions=directions
    )
    return _sliced_wasserstein_loss(x, y, chosen)


def sliced_wasserstein_target(y: ArrayLike, directions: ArrayLike) -> SlicedWassersteinTarget:
    """The style's side of :func:`sliced_wasserstein_loss` for ``directions``, to compute once.

    Args:
      y: style image features, (n, d) samples or an (h, w, d) map.
      directions: (L, d) unit vectors (:func:`sliced_directions` draws or checks them).

    Returns:
      A :class:`SlicedWassersteinTarget`.
    """
    y = check_samples("y", y, allow_feature_map=True)
    return _sliced_target(y, sliced_directions(y.shape[1], y.dtype, directions=directions))


def sliced_wasserstein_to_target(x: ArrayLike, target: SlicedWassersteinTarget) -> Float[Array, ""]:
    """:func:`sliced_wasserstein_loss` of x against ``target = sliced_wasserstein_target(y, directions)``.

    Args:
      x: generated image features, (m, d) samples or an (h, w, d) map.
      target: the style's side.

    Returns:
      The scalar loss.
    """
    x = check_samples("x", x, allow_feature_map=True)
    if x.shape[1] != target.directions.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} channels, the target's directions {target.directions.shape[1]}: "
            "compare features of the layer the target was made from."
        )
    return _sliced_to_target(x.astype(target.directions.dtype), target)


@jax.jit
def _sliced_wasserstein_loss(
    x: Float[Array, "m d"], y: Float[Array, "n d"], directions: Float[Array, "L d"]
) -> Float[Array, ""]:
    return _sliced_to_target(x, _sliced_target(y, directions))


@jax.jit
def _sliced_target(y: Float[Array, "n d"], directions: Float[Array, "L d"]) -> SlicedWassersteinTarget:
    centre = jnp.mean(y, axis=0)
    return SlicedWassersteinTarget(directions, centre, sorted_projections(y - centre[None, :], directions))


@jax.jit
def _sliced_to_target(x: Float[Array, "m d"], target: SlicedWassersteinTarget) -> Float[Array, ""]:
    projected = sorted_projections(x - target.centre[None, :], target.directions)
    return _quantile_distance(projected, target.sorted_projections)


def _quantile_distance(sorted_x: Float[Array, "L m"], sorted_y: Float[Array, "L n"]) -> Float[Array, ""]:
    """Mean squared difference of two sets of sorted rows, at the larger set's levels (module docstring)."""
    if sorted_x.shape[-1] == sorted_y.shape[-1]:
        return jnp.mean((sorted_x - sorted_y) ** 2)
    larger, smaller = (
        (sorted_x, sorted_y) if sorted_x.shape[-1] > sorted_y.shape[-1] else (sorted_y, sorted_x)
    )
    count, few = larger.shape[-1], smaller.shape[-1]
    # level (i + 1/2) / count sits at position (i + 1/2) few / count - 1/2 among the smaller set's
    position = np.clip((np.arange(count) + 0.5) * few / count - 0.5, 0.0, few - 1.0)
    lower = np.floor(position).astype(np.int32)
    upper = np.minimum(lower + 1, few - 1)
    weight = jnp.asarray(position - lower, smaller.dtype)[None, :]
    quantiles = smaller[:, lower] * (1.0 - weight) + smaller[:, upper] * weight
    return jnp.mean((larger - quantiles) ** 2)


# ---------------------------------------------------------------------------------------------
# Gaussian W2


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianTarget:
    """The style's side of the Gaussian W2 loss, computed once (:func:`gaussian_w2_target`).

    Attributes:
      mean: the style's channel means (d,).
      covariance_trace: ``tr(S_y)``, S_y including ``epsilon`` I.
      root: ``S_y^(1/2)`` (d, d).
      epsilon: the epsilon S_y was made with (x's covariance gets the same).
      method: the square-root method (:func:`psd_sqrt`).
    """

    mean: Any
    covariance_trace: Any
    root: Any
    epsilon: float = dataclasses.field(metadata={"static": True})
    method: str = dataclasses.field(default="auto", metadata={"static": True})


def gaussian_w2_loss(
    x: ArrayLike, y: ArrayLike, *, epsilon: float = DEFAULT_EPSILON, method: str = "auto"
) -> Float[Array, ""]:
    """Squared W2 distance between Gaussians fitted to x and y, per channel (module docstring).

    ``mean_c (mu_x - mu_y)_c^2 + tr(S_x + S_y - 2 (S_y^(1/2) S_x S_y^(1/2))^(1/2)) / d`` with
    population covariances plus ``epsilon`` I (docs/math.md, "Gaussian W2"). Zero, to rounding,
    for a set against itself.

    Args:
      x: generated image features, (m, d) samples or an (h, w, d) map.
      y: style image features, (n, d) or a map; n may differ from m.
      epsilon: added to both covariances' diagonals, >= 0 (default 1e-4; 0 only for sets whose
        covariances are nonsingular: the gradient of a singular one's root is not finite).
      method: the square roots' method, see :func:`psd_sqrt`.

    Returns:
      The scalar loss.
    """
    x, y = check_sample_pair(x, y, allow_feature_map=True)
    epsilon = float(check_scalar("epsilon", epsilon, positive=False))
    check_choice("method", method, SQRT_METHODS)
    return _gaussian_to_target(x, _gaussian_target(y, epsilon, method))


def gaussian_w2_target(
    y: ArrayLike, *, epsilon: float = DEFAULT_EPSILON, method: str = "auto"
) -> GaussianTarget:
    """The style's side of :func:`gaussian_w2_loss`: its means, ``tr(S_y)`` and ``S_y^(1/2)``, once."""
    y = check_samples("y", y, allow_feature_map=True)
    epsilon = float(check_scalar("epsilon", epsilon, positive=False))
    return _gaussian_target(y, epsilon, check_choice("method", method, SQRT_METHODS))


def gaussian_w2_to_target(x: ArrayLike, target: GaussianTarget) -> Float[Array, ""]:
    """:func:`gaussian_w2_loss` of x against ``target = gaussian_w2_target(y, ...)``."""
    x = check_samples("x", x, allow_feature_map=True)
    if x.shape[1] != target.mean.shape[0]:
        raise ValueError(
            f"x has {x.shape[1]} channels, the target {target.mean.shape[0]}: compare features of "
            "the layer the target was made from."
        )
    return _gaussian_to_target(x.astype(target.root.dtype), target)


def _moments(samples: Float[Array, "m d"], epsilon: float) -> tuple[Array, Array]:
    mean = jnp.mean(samples, axis=0)
    centred = samples - mean[None, :]
    covariance = jnp.matmul(centred.T, centred, precision=HIGHEST) / float(samples.shape[0])
    return mean, covariance + epsilon * jnp.eye(samples.shape[1], dtype=samples.dtype)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _gaussian_target(y: Float[Array, "n d"], epsilon: float, method: str) -> GaussianTarget:
    mean, covariance = _moments(y, epsilon)
    return GaussianTarget(mean, jnp.trace(covariance), psd_sqrt(covariance, method), epsilon, method)


@jax.jit
def _gaussian_to_target(x: Float[Array, "m d"], target: GaussianTarget) -> Float[Array, ""]:
    mean, covariance = _moments(x, target.epsilon)
    inner = jnp.matmul(jnp.matmul(target.root, covariance, precision=HIGHEST), target.root, precision=HIGHEST)
    cross = jnp.trace(psd_sqrt(inner, target.method))
    spread = jnp.trace(covariance) + target.covariance_trace - 2.0 * cross
    return jnp.mean((mean - target.mean) ** 2) + spread / float(x.shape[1])


# ---------------------------------------------------------------------------------------------
# Square roots of symmetric positive semidefinite matrices


def psd_sqrt(
    matrix: ArrayLike, method: str = "auto", *, iterations: int = NEWTON_SCHULZ_ITERATIONS
) -> Float[Array, "d d"]:
    """The symmetric square root R (R R = A) of a symmetric positive semidefinite matrix A.

    A is symmetrised first, ``(A + A^T) / 2``. Methods:

    - ``"eigh"``: ``V diag(sqrt(max(w, 0))) V^T`` from A's eigendecomposition, accurate to
      rounding in float64. Its gradient is written out (a custom VJP): the derivative solves
      the Sylvester equation ``R dR + dR R = dA``, which in A's eigenbasis divides by
      ``sqrt(w_i) + sqrt(w_j)``; it stays finite for repeated eigenvalues, where
      differentiating ``eigh`` itself divides by ``w_i - w_j`` = 0.
    - ``"newton_schulz"``: the coupled Newton-Schulz iteration (Higham, "Functions of
      Matrices", 2008, chapter 6) on ``A / |A|_F``: matrix products only, fast on accelerators
      in float32; ``iterations`` steps (default 20); differentiated through the iterations. For
      a positive definite A it converges to R, and its gradient to R's.
    - ``"auto"``: ``"eigh"`` on the CPU and in float64, ``"newton_schulz"`` for float32 on
      other backends.

    Args:
      matrix: (d, d), symmetric positive semidefinite.
      method: ``"auto"``, ``"eigh"`` or ``"newton_schulz"``.
      iterations: Newton-Schulz steps, a positive integer.

    Returns:
      R, (d, d).
    """
    method = check_choice("method", method, SQRT_METHODS)
    iterations = check_integer("iterations", iterations)
    if not is_traced(matrix):
        matrix = as_float_array("matrix", matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square (d, d), got shape {tuple(matrix.shape)}.")
    symmetric = (matrix + matrix.T) / 2.0
    if method == "eigh" or (method == "auto" and symmetric.dtype == jnp.float64):
        return _eigh_sqrt(symmetric)
    if method == "newton_schulz":
        return _newton_schulz_sqrt(symmetric, iterations)
    return lax.platform_dependent(
        symmetric, cpu=_eigh_sqrt, default=functools.partial(_newton_schulz_sqrt, iterations=iterations)
    )


@jax.custom_vjp
def _eigh_sqrt(matrix: Float[Array, "d d"]) -> Float[Array, "d d"]:
    return _eigh_sqrt_forward(matrix)[0]


def _eigh_sqrt_forward(matrix: Array) -> tuple[Array, tuple[Array, Array]]:
    values, vectors = jnp.linalg.eigh(matrix)
    roots = jnp.sqrt(jnp.maximum(values, 0.0))
    return jnp.matmul(vectors * roots[None, :], vectors.T, precision=HIGHEST), (vectors, roots)


def _eigh_sqrt_backward(residuals: tuple[Array, Array], cotangent: Array) -> tuple[Array]:
    vectors, roots = residuals
    symmetric = (cotangent + cotangent.T) / 2.0
    inner = jnp.matmul(jnp.matmul(vectors.T, symmetric, precision=HIGHEST), vectors, precision=HIGHEST)
    sums = roots[:, None] + roots[None, :]
    solved = jnp.where(sums > 0, inner / jnp.where(sums > 0, sums, 1.0), 0.0)
    return (jnp.matmul(jnp.matmul(vectors, solved, precision=HIGHEST), vectors.T, precision=HIGHEST),)


_eigh_sqrt.defvjp(_eigh_sqrt_forward, _eigh_sqrt_backward)


def _newton_schulz_sqrt(matrix: Float[Array, "d d"], iterations: int) -> Float[Array, "d d"]:
    norm = jnp.sqrt(jnp.sum(matrix * matrix))
    scale = jnp.where(norm > 0, norm, 1.0)
    identity = jnp.eye(matrix.shape[0], dtype=matrix.dtype)

    def step(_: Array, pair: tuple[Array, Array]) -> tuple[Array, Array]:
        root, inverse = pair
        half = 0.5 * (3.0 * identity - jnp.matmul(inverse, root, precision=HIGHEST))
        return jnp.matmul(root, half, precision=HIGHEST), jnp.matmul(half, inverse, precision=HIGHEST)

    root, _ = lax.fori_loop(0, iterations, step, (matrix / scale, identity))
    return root * jnp.sqrt(scale)

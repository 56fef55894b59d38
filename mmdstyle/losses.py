"""Style losses on the samples of one CNN layer: Gram (Gatys), MMD (Li et al.), BN statistics.

Each loss takes the generated image's features ``x`` and the style image's features ``y`` as
samples (m, d) or as feature maps (h, w, d), checks them, and returns a scalar computed by one
compiled program. With the defaults,
``mmd_style_loss(x, y) == gram_style_loss(x, y)``: the Gram loss is the biased MMD with the kernel
``(a^T b)^2``, divided by ``4 d^2``.

References:
  Gatys, Ecker, Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
  https://openaccess.thecvf.com/content_cvpr_2016/html/Gatys_Image_Style_Transfer_CVPR_2016_paper.html
  Li, Wang, Liu, Hou, "Demystifying Neural Style Transfer", IJCAI 2017.
  https://arxiv.org/abs/1701.01036
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float

from mmdstyle._checks import check_sample_pair, check_samples, check_scalar
from mmdstyle.kernels import HIGHEST, AbstractKernel, Polynomial
from mmdstyle.mmd import DEFAULT_NUM_DIRECTIONS, DEFAULT_NUM_FEATURES, mmd2

__all__ = [
    "bn_loss_to_target",
    "bn_style_loss",
    "bn_target",
    "content_loss",
    "gram_loss_to_target",
    "gram_matrix",
    "gram_style_loss",
    "gram_target",
    "mmd2_to_style_loss",
    "mmd_style_loss",
]


def gram_matrix(x: ArrayLike) -> Float[Array, "d d"]:
    """``G = sum_k x_k x_k^T = X^T X``: channel-by-channel inner products over positions.

    Gatys et al. write ``G_ij = sum_k F_ik F_jk`` for the feature map F (d x m); mmdstyle's
    samples are its transpose, so the matrix is the same. Not normalised; matmul at HIGHEST
    precision (GPUs would otherwise use TF32).
    """
    return _gram(check_samples("x", x, allow_feature_map=True))


def gram_style_loss(
    x: ArrayLike,
    y: ArrayLike,
) -> Float[Array, ""]:
    """Gatys et al.'s layer style loss ``E = ||G_x - G_y||_F^2 / (4 d^2 m^2)``.

    Computed as ``||G_x/m - G_y/m||_F^2 / (4 d^2)`` so that no constant overflows and no large
    number is squared. Peers normalise differently: the PyTorch tutorial's loss is
    ``4 / d^2`` times this one (docs/math.md, "How peers normalise").

    Args:
      x: generated image features, (m, d) samples or an (h, w, d) map.
      y: style image features with the same m and d.

    Returns:
      The scalar loss.
    """
    x, y = check_sample_pair(x, y, allow_feature_map=True)
    m, n = x.shape[0], y.shape[0]
    if m != n:
        raise ValueError(
            f"gram_style_loss compares Gram matrices of equal sample counts (Gatys et al.), got "
            f"m={m} and n={n}. For different sizes use mmd_style_loss(x, y), which equals this "
            f"loss when m == n and otherwise compares ||G_x/m - G_y/n||^2 / (4 d^2)."
        )
    return _gram_style_loss(x, y)


@jax.jit
def _gram_style_loss(x: Float[Array, "m d"], y: Float[Array, "m d"]) -> Float[Array, ""]:
    return _gram_loss_to_target(x, _gram_target(y))


def gram_target(y: ArrayLike) -> Float[Array, "d d"]:
    """``G_y / n``: the style's side of the Gram loss, to compute once for a style that stays fixed.

    Args:
      y: style image features, (n, d) samples or an (h, w, d) map.

    Returns:
      The (d, d) matrix that :func:`gram_loss_to_target` compares against.
    """
    return _gram_target(check_samples("y", y, allow_feature_map=True))


def gram_loss_to_target(x: ArrayLike, target: ArrayLike) -> Float[Array, ""]:
    """:func:`gram_style_loss` of x against ``target = gram_target(y)``: ``||G_x/m - target||^2 / (4 d^2)``.

    The same operations as ``gram_style_loss(x, y)``, without forming the style's Gram matrix
    again (a transfer evaluates it at every step). For m != n it is the MMD form of the loss,
    :func:`mmd_style_loss` with ``Polynomial(2)``.

    Args:
      x: generated image features, (m, d) samples or an (h, w, d) map.
      target: the style's ``gram_target``, (d, d).

    Returns:
      The scalar loss.
    """
    x, target = check_sample_pair(x, target, allow_feature_map=True)
    if target.shape[0] != target.shape[1]:
        raise ValueError(
            f"target must be a (d, d) matrix from gram_target(y), got shape {tuple(target.shape)}."
        )
    return _gram_loss_to_target(x, target)


@jax.jit
def _gram_target(y: Float[Array, "n d"]) -> Float[Array, "d d"]:
    return _gram(y) / float(y.shape[0])


@jax.jit
def _gram_loss_to_target(x: Float[Array, "m d"], target: Float[Array, "d d"]) -> Float[Array, ""]:
    d = float(x.shape[1])
    return jnp.sum((_gram_target(x) - target) ** 2) / (4.0 * d**2)


def _gram(x: Float[Array, "m d"]) -> Float[Array, "d d"]:
    return jnp.matmul(x.T, x, precision=HIGHEST)


def mmd_style_loss(
    x: ArrayLike,
    y: ArrayLike,
    kernel: AbstractKernel | None = None,
    estimator: str = "biased",
    *,
    block_size: int | None = None,
    route: str = "auto",
    num_features: int = DEFAULT_NUM_FEATURES,
    num_directions: int = DEFAULT_NUM_DIRECTIONS,
    key: jax.Array | None = None,
    mesh: Mesh | None = None,
) -> Float[Array, ""]:
    """The MMD style loss ``MMD^2[x, y; k] / (4 d^2)`` (Li et al., 2017).

    The normalisation ``1 / (4 d^2)`` is the same for every kernel and estimator: it is the one
    that makes the default, ``Polynomial(2)`` with the biased estimator, equal to Gatys'
    :func:`gram_style_loss` exactly. For other kernels the scale of the loss is only a
    convention; balance layers and kernels with their weights, as Li et al. do with fixed
    factors per kernel.

    Args:
      x: generated image features, (m, d) samples or an (h, w, d) map.
      y: style image features, (n, d) or a map; n may differ from m.
      kernel: default ``Polynomial(2)``, i.e. ``k(a, b) = (a^T b)^2``.
      estimator: ``"biased"``, ``"unbiased"`` or ``"linear"`` (see :func:`mmdstyle.mmd2`).
      block_size: rows per block of the pairwise route, passed to :func:`mmdstyle.mmd2`.
      route: ``"auto"``, ``"feature"``, ``"pairwise"``, ``"rff"`` or ``"sliced"``, passed to
        :func:`mmdstyle.mmd2`.
      num_features: random Fourier features of the ``"rff"`` route (sin/cos pairs: even).
      num_directions: random directions of the ``"sliced"`` route.
      key: the ``jax.random`` key that the random routes draw from.
      mesh: a device mesh to split the samples' rows over, passed to :func:`mmdstyle.mmd2`
        (default: the mesh the samples lie on, if any).

    Returns:
      The scalar loss.
    """
    x, y = check_sample_pair(x, y, allow_feature_map=True)
    kernel = Polynomial(2) if kernel is None else kernel
    value = mmd2(
        x,
        y,
        kernel,
        estimator,
        block_size=block_size,
        route=route,
        num_features=num_features,
        num_directions=num_directions,
        key=key,
        mesh=mesh,
    )
    return mmd2_to_style_loss(value, x.shape[1])


def mmd2_to_style_loss(value: Float[Array, ""], channels: int) -> Float[Array, ""]:
    """``MMD^2 / (4 d^2)`` for d channels: the MMD style loss from an MMD^2 however it was computed.

    The one normalisation of :func:`mmd_style_loss`, for callers that form MMD^2 themselves (a
    loss term against a fixed style's precomputed side).
    """
    return value / (4.0 * float(channels) ** 2)


def bn_style_loss(
    x: ArrayLike,
    y: ArrayLike,
    epsilon: float = 1e-8,
) -> Float[Array, ""]:
    """Li et al.'s BN-statistics style loss ``1/d sum_c [(mu_x,c - mu_y,c)^2 + (sd_x,c - sd_y,c)^2]``.

    ``sd = sqrt(var + epsilon)`` with the population variance over positions. The epsilon keeps
    the gradient finite on a channel that is constant (an all-zero ReLU channel), where the
    official code returns inf/NaN; set ``epsilon=0`` for the paper's formula as written.

    Args:
      x: generated image features, (m, d) samples or an (h, w, d) map.
      y: style image features, (n, d) or a map; n may differ from m.
      epsilon: added to the variance inside the square root, >= 0.

    Returns:
      The scalar loss.
    """
    x, y = check_sample_pair(x, y, allow_feature_map=True)
    return _bn_style_loss(x, y, check_scalar("epsilon", epsilon, positive=False))


@jax.jit
def _bn_style_loss(x: Float[Array, "m d"], y: Float[Array, "n d"], epsilon: ArrayLike) -> Float[Array, ""]:
    return _bn_loss_to_target(x, _bn_target(y, epsilon), epsilon)


def bn_target(y: ArrayLike, epsilon: float = 1e-8) -> Float[Array, "2 d"]:
    """The style's side of the BN loss, to compute once: its channel means and ``sqrt(var + epsilon)``.

    Args:
      y: style image features, (n, d) samples or an (h, w, d) map.
      epsilon: as in :func:`bn_style_loss`.

    Returns:
      The means (row 0) and standard deviations (row 1), (2, d).
    """
    return _bn_target(
        check_samples("y", y, allow_feature_map=True), check_scalar("epsilon", epsilon, positive=False)
    )


def bn_loss_to_target(x: ArrayLike, target: ArrayLike, epsilon: float = 1e-8) -> Float[Array, ""]:
    """:func:`bn_style_loss` of x against ``target = bn_target(y, epsilon)``, the same operations.

    Args:
      x: generated image features, (m, d) samples or an (h, w, d) map.
      target: the style's ``bn_target``, (2, d), made with the same ``epsilon``.
      epsilon: as in :func:`bn_style_loss`.

    Returns:
      The scalar loss.
    """
    x, target = check_sample_pair(x, target, allow_feature_map=True)
    if target.shape[0] != 2:
        raise ValueError(
            f"target must be the (2, d) means and deviations from bn_target(y), got {tuple(target.shape)}."
        )
    return _bn_loss_to_target(x, target, check_scalar("epsilon", epsilon, positive=False))


@jax.jit
def _bn_target(y: Float[Array, "n d"], epsilon: ArrayLike) -> Float[Array, "2 d"]:
    mean = jnp.mean(y, axis=0)
    variance = jnp.mean((y - mean[None, :]) ** 2, axis=0)
    return jnp.stack([mean, jnp.sqrt(variance + epsilon)])


@jax.jit
def _bn_loss_to_target(
    x: Float[Array, "m d"], target: Float[Array, "2 d"], epsilon: ArrayLike
) -> Float[Array, ""]:
    (mean_x, std_x), (mean_y, std_y) = _bn_target(x, epsilon), target
    return jnp.mean((mean_x - mean_y) ** 2 + (std_x - std_y) ** 2)


def content_loss(
    x: ArrayLike,
    y: ArrayLike,
) -> Float[Array, ""]:
    """Gatys et al.'s content loss ``1/2 sum (F - P)^2`` between features of equal shape."""
    x, y = check_sample_pair(x, y, allow_feature_map=True)
    if x.shape != y.shape:
        raise ValueError(
            f"content_loss compares features position by position, so the shapes must match: "
            f"got {tuple(x.shape)} and {tuple(y.shape)}. Resize the content image to the output size."
        )
    return _content_loss(x, y)


@jax.jit
def _content_loss(x: Float[Array, "m d"], y: Float[Array, "m d"]) -> Float[Array, ""]:
    return 0.5 * jnp.sum((x - y) ** 2)

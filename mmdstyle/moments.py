"""The central moment discrepancy (CMD) style loss: channel-wise moments up to an order.

Kalischek, Wegner, Schindler, "In the light of feature distributions: moment matching for Neural
Style Transfer", CVPR 2021 (after Zellinger et al.'s CMD, ICLR 2017). Per channel, after a
sigmoid that maps the features into (0, 1), the mean and the central moments of orders 2 to K:

    c_1 = mean_i s_i,    c_k = mean_i (s_i - c_1)^k,    s = sigmoid(features)
    CMD(x, y) = sum_{k=1..K} |c_k(x) - c_k(y)|_2       (Euclidean norm over the d channels)

It matches each channel's marginal distribution (its first K moments) and nothing across
channels: unlike the Gram loss, it cannot see correlations between channels (docs/math.md,
"Central moment discrepancy").
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from mmdstyle._checks import check_choice, check_integer, check_sample_pair, check_samples

__all__ = ["DEFAULT_ORDER", "SQUASHES", "cmd_loss", "cmd_loss_to_target", "cmd_target"]

#: Kalischek et al.'s highest order.
DEFAULT_ORDER = 5
#: What the features pass through before their moments are taken.
SQUASHES = ("sigmoid", None)


def cmd_loss(
    x: ArrayLike, y: ArrayLike, *, order: int = DEFAULT_ORDER, squash: str | None = "sigmoid"
) -> Float[Array, ""]:
    """The central moment discrepancy ``sum_{k=1..order} |c_k(x) - c_k(y)|_2`` (module docstring).

    A norm has no derivative at 0: where two moment vectors agree exactly, the gradient takes
    0 for it (a subgradient), not NaN.

    Args:
      x: generated image features, (m, d) samples or an (h, w, d) map.
      y: style image features, (n, d) or a map; n may differ from m.
      order: K, the highest moment, a positive integer (default 5).
      squash: ``"sigmoid"`` (default, as Kalischek et al.) or ``None`` for the raw features.

    Returns:
      The scalar loss.
    """
    x, y = check_sample_pair(x, y, allow_feature_map=True)
    order, squash = _check(order, squash)
    return _cmd_loss_to_target(x, _moments(y, order, squash), squash)


def cmd_target(
    y: ArrayLike, *, order: int = DEFAULT_ORDER, squash: str | None = "sigmoid"
) -> Float[Array, "K d"]:
    """The style's side of :func:`cmd_loss`, computed once: row k - 1 holds the channels' moment c_k.

    The means for k = 1, the central moments above; shape (order, d).
    """
    y = check_samples("y", y, allow_feature_map=True)
    return _moments(y, *_check(order, squash))


def cmd_loss_to_target(
    x: ArrayLike, target: ArrayLike, *, squash: str | None = "sigmoid"
) -> Float[Array, ""]:
    """:func:`cmd_loss` of x against ``target = cmd_target(y, order=K, squash=squash)``, K = its rows."""
    x, target = check_sample_pair(x, target)
    check_choice("squash", squash, SQUASHES)
    return _cmd_loss_to_target(x, target, squash)


def _check(order: int, squash: str | None) -> tuple[int, str | None]:
    return check_integer("order", order), check_choice("squash", squash, SQUASHES)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _moments(samples: Float[Array, "m d"], order: int, squash: str | None) -> Float[Array, "K d"]:
    squashed = jax.nn.sigmoid(samples) if squash == "sigmoid" else samples
    mean = jnp.mean(squashed, axis=0)
    centred = squashed - mean[None, :]
    rows, power = [mean], centred
    for _ in range(2, order + 1):
        power = power * centred
        rows.append(jnp.mean(power, axis=0))
    return jnp.stack(rows)


@functools.partial(jax.jit, static_argnums=2)
def _cmd_loss_to_target(
    x: Float[Array, "m d"], target: Float[Array, "K d"], squash: str | None
) -> Float[Array, ""]:
    differences = _moments(x, target.shape[0], squash) - target
    squares = jnp.sum(differences * differences, axis=1)
    positive = squares > 0
    return jnp.sum(jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0))

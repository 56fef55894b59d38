"""3 x 3 convolutions by Winograd's minimal filtering F(2x2, 3x3), for the wide layers on the CPU.

A 3 x 3 convolution computes each 2 x 2 block of outputs from a 4 x 4 tile of inputs. Winograd's
algorithm transforms the tile (``V = B^T d B``) and the filter (``U = G g G^T``), multiplies them
element by element, summed over the input channels, and transforms back (``Y = A^T M A``):
16 products per tile and channel pair instead of 36, 2.25x fewer multiplications. The 16
element-wise products summed over channels are 16 matrix products, ``(tiles, C) x (C, O)``, one
batched product for XLA; the tile transforms are additions and subtractions.

The filters are transformed once (:func:`transformed_filters`), by
:meth:`mmdstyle.features.vgg.VGG19.for_gradients`, for the layers where it pays: computed inside
every evaluation from a kernel passed as an argument, the transform and the layouts XLA gives it
cost more than the products save. Measured on a 2-core CPU (float32, NHWC, value and input
gradient against ``lax.conv_general_dilated``): 16 x 16 and 32 x 32 maps of 512 -> 512 channels
0.64-0.71x, 64 x 64 0.84x, 8 x 8 0.96x; but 64 x 64 x 256 -> 256 1.25x and 256 x 256 x 64 -> 64
3.3x, where the transforms' memory traffic outweighs the products saved. :func:`pays` takes the
route for 512 or more input and output channels (VGG-19's conv4_2 ... conv5_4), float32, on the
CPU; other backends choose their own algorithms (cuDNN has Winograd kernels). A prepared VGG-19
also limits it to images of up to 256 x 256 pixels' area (``vgg.WINOGRAD_MAX_PIXELS``: on larger
maps it gains less and its buffers cost memory).

The transforms are exact in real arithmetic; in float32 the result differs from a direct
convolution by rounding (about 1e-6 of the largest output on VGG-sized layers).

Reference:
    A. Lavin, S. Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016,
    https://arxiv.org/abs/1509.09308 (the matrices B, G, A of F(2x2, 3x3)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["convolve", "pays", "transformed_filters"]

#: G of F(2x2, 3x3): the filter transform U = G g G^T (4 x 4 from 3 x 3)
FILTER_TRANSFORM = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

#: the fewest input and output channels for which the route pays on the CPU (module docstring)
MIN_CHANNELS = 512


def pays(kernel: Array) -> bool:
    """Whether convolving with ``kernel`` (3, 3, C, O) by :func:`convolve` is the faster way here."""
    return (
        kernel.shape[:2] == (3, 3)
        and min(kernel.shape[2], kernel.shape[3]) >= MIN_CHANNELS
        and kernel.dtype == jnp.float32
        and jax.default_backend() == "cpu"
    )


def transformed_filters(kernel: Float[Array, "3 3 c o"]) -> Float[Array, "16 c o"]:
    """``U = G g G^T`` for every channel pair, the 16 entries first."""
    g = jnp.asarray(FILTER_TRANSFORM, kernel.dtype)
    channels, outputs = kernel.shape[2:]
    return jnp.einsum("ai,ijco,bj->abco", g, kernel, g, precision="highest").reshape(16, channels, outputs)


def convolve(
    x: Float[Array, "n h w c"], filters: Float[Array, "16 c o"], precision: jax.lax.PrecisionLike = None
) -> Float[Array, "n h_out w_out o"]:
    """The "VALID" 3 x 3 convolution (cross-correlation) of NHWC ``x`` with transformed ``filters``.

    Outputs are ``(N, H - 2, W - 2, O)``; pad ``x`` by one pixel each side first for "SAME".
    """
    n, height, width, channels = x.shape
    outputs = filters.shape[-1]
    if height < 3 or width < 3:
        raise ValueError(f"a 3 x 3 convolution needs at least 3 x 3 pixels, got {height} x {width}.")
    tiles_h, tiles_w = -(-(height - 2) // 2), -(-(width - 2) // 2)
    # zeros below and right, so that the last 2 x 2 block has its whole 4 x 4 tile
    x = jnp.pad(x, ((0, 0), (0, 2 * tiles_h + 2 - height), (0, 2 * tiles_w + 2 - width), (0, 0)))
    # d[i][j]: element (i, j) of every tile, (N, tiles_h, tiles_w, C)
    d = [[x[:, i : i + 2 * tiles_h : 2, j : j + 2 * tiles_w : 2] for j in range(4)] for i in range(4)]
    columns = [_input_transform([d[i][j] for i in range(4)]) for j in range(4)]  # B^T d
    v = [_input_transform([columns[j][a] for j in range(4)]) for a in range(4)]  # (B^T d) B
    tiles = n * tiles_h * tiles_w
    transformed = jnp.stack([v[a][b] for a in range(4) for b in range(4)]).reshape(16, tiles, channels)
    products = jnp.einsum("tpc,tco->tpo", transformed, filters, precision=precision)
    m = products.reshape(4, 4, n, tiles_h, tiles_w, outputs)
    rows = _output_transform([m[a] for a in range(4)])  # A^T M
    y = [_output_transform([rows[r][b] for b in range(4)]) for r in range(2)]  # (A^T M) A
    # y[r][s]: output (r, s) of every 2 x 2 block, interleaved back into the map
    blocks = jnp.stack([jnp.stack([y[r][0], y[r][1]], axis=3) for r in range(2)], axis=2)
    return blocks.reshape(n, 2 * tiles_h, 2 * tiles_w, outputs)[:, : height - 2, : width - 2]


def _input_transform(t: list[Array]) -> list[Array]:
    """B^T t along one axis of a tile, B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]."""
    return [t[0] - t[2], t[1] + t[2], t[2] - t[1], t[1] - t[3]]


def _output_transform(t: list[Array]) -> list[Array]:
    """A^T t along one axis of a tile's products, A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]."""
    return [t[0] + t[1] + t[2], t[1] - t[2] - t[3]]

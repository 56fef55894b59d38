"""A single layer of random filters at many scales: texture features without any training.

Ustyuzhaninov et al. showed that one convolutional layer of random filters of sizes 3 to 55
(128 of each), followed by a ReLU, synthesises natural textures nearly as well as VGG-19 under
Gatys' Gram loss. The configuration follows the authors' released code
(github.com/ivust/random-texture-synthesis): filters drawn once from Glorot's uniform
distribution with zero biases, zero "same" padding, stride 1, the Caffe preprocessing (BGR,
0-255, mean pixel subtracted); the maps of all scales are concatenated.

The large filters would cost O(k^2) per pixel as direct convolutions (55 x 55 x 3 x 128 MACs
per pixel); scales from ``FFT_FROM_SIZE`` up are computed as products of Fourier transforms
instead, whose cost does not grow with k. Both give the same cross-correlation.

References:
    Ustyuzhaninov, Brendel, Gatys & Bethge, "What does it take to generate natural textures?",
    ICLR 2017, https://openreview.net/forum?id=BJhZeLsxx.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, ArrayLike, Float

from mmdstyle._checks import check_choice, check_integer
from mmdstyle.features.layers import compiled_when_eager, resolve_layers
from mmdstyle.features.preprocessing import PREPROCESSINGS, Preprocessing, preprocess
from mmdstyle.features.vgg import check_image

#: Filter sizes of the paper's multi-scale model.
USTYUZHANINOV_SIZES: tuple[int, ...] = (3, 5, 7, 11, 15, 23, 37, 55)
#: Filters from this size up are applied through the FFT.
FFT_FROM_SIZE = 11


class MultiScaleRandom(nnx.Module):
    """One layer of fixed random filters of several sizes; ``model(image, layers)`` returns its maps.

    Args:
        sizes: odd filter sizes (the paper's eight by default).
        features_per_size: filters of each size (the paper: 128, so 1024 maps in all).
        seed: the filters are a function of this seed only (NumPy's PCG64 generator).
        preprocessing: what is done to the RGB image in [0, 1] first (the authors': ``"caffe"``).
        param_dtype: dtype of the filters; the image is cast to it.

    Layers: ``"conv"`` (all maps before the ReLU) and ``"relu"``, each ``(h, w, features)`` with
    the maps of the smallest filters first; ``"relu_<size>"`` gives one scale's maps alone.
    """

    default_content_layers: tuple[str, ...] = ("relu",)
    default_style_layers: tuple[str, ...] = ("relu",)
    #: alpha for style transfer (the paper does synthesis only; beta stays Gatys' 1e3). The content
    #: term sums over all 1024 maps at full resolution, and random filters keep the photograph's
    #: detail in all of them: chosen by looking at `mmdstyle demo` (128 px, 30 L-BFGS steps), where
    #: alpha = 1e-2 left the cat as it was (the style term fell by 73 %, the image barely changed)
    #: and 1e-4 turns it to the Deep Field's darkness and colours, the cat still plain to see.
    default_weights: dict[str, float] = {"content_weight": 1e-4}  # noqa: RUF012

    def __init__(
        self,
        *,
        sizes: Sequence[int] = USTYUZHANINOV_SIZES,
        features_per_size: int = 128,
        seed: int = 0,
        preprocessing: Preprocessing = "caffe",
        param_dtype: DTypeLike = jnp.float32,
    ) -> None:
        sizes = tuple(int(size) for size in sizes)
        if not sizes or any(size < 1 or size % 2 == 0 for size in sizes) or len(set(sizes)) != len(sizes):
            raise ValueError(
                f"sizes must be distinct odd positive filter sizes, e.g. (3, 5, 7), got {sizes}."
            )
        check_integer("features_per_size", features_per_size)
        self.sizes = tuple(sorted(sizes))
        self.features_per_size = features_per_size
        self.preprocessing = check_choice("preprocessing", preprocessing, PREPROCESSINGS)
        self.layer_names = ("conv", "relu", *(f"relu_{size}" for size in self.sizes))
        generator = np.random.default_rng(seed)
        self.filters = nnx.List(
            [
                nnx.Variable(jnp.asarray(_glorot_uniform(generator, size, features_per_size), param_dtype))
                for size in self.sizes
            ]
        )

    def __call__(
        self, image: ArrayLike, layers: str | Sequence[str] = ("relu",)
    ) -> dict[str, Float[Array, ...]]:
        """The maps of ``layers`` (default ``"relu"``) for an RGB image (H, W, 3) or a batch (N, H, W, 3)."""
        names = resolve_layers(self, layers)
        image = check_image(image)
        if (compiled := compiled_when_eager(self, image, names)) is not None:
            return compiled
        single = image.ndim == 3
        x = image[None] if single else image
        x = preprocess(x.astype(self.filters[0].dtype), self.preprocessing)
        responses = [
            (_fft_correlate if size >= FFT_FROM_SIZE else _direct_correlate)(x, kernel[...])
            for size, kernel in zip(self.sizes, self.filters, strict=True)
        ]
        outputs = {}
        for name in names:
            if name == "conv":
                value = jnp.concatenate(responses, axis=-1)
            elif name == "relu":
                value = jax.nn.relu(jnp.concatenate(responses, axis=-1))
            else:
                value = jax.nn.relu(responses[self.sizes.index(int(name.removeprefix("relu_")))])
            outputs[name] = value[0] if single else value
        return outputs


def _glorot_uniform(generator: np.random.Generator, size: int, features: int) -> np.ndarray:
    """Lasagne's GlorotUniform: U(-a, a), a = sqrt(6 / ((3 + features) size^2)); layout HWIO."""
    limit = np.sqrt(6.0 / ((3 + features) * size * size))
    return generator.uniform(-limit, limit, (size, size, 3, features)).astype(np.float32)


def _direct_correlate(x: Float[Array, "n h w 3"], kernel: Float[Array, "k k 3 f"]) -> Float[Array, "n h w f"]:
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest"
    )


def _fft_correlate(x: Float[Array, "n h w 3"], kernel: Float[Array, "k k 3 f"]) -> Float[Array, "n h w f"]:
    """The zero-padded "same" cross-correlation, through real FFTs of the padded image.

    With the image padded by p = k // 2 on each side to L = h + 2p rows, the circular
    correlation at rows 0..h-1 never wraps around (h - 1 + k - 1 < L), so it equals the linear one.
    """
    size = kernel.shape[0]
    pad = size // 2
    height, width = x.shape[1:3]
    shape = (height + 2 * pad, width + 2 * pad)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    image_spectrum = jnp.fft.rfft2(padded, s=shape, axes=(1, 2))  # (n, L, L/2+1, 3)
    kernel_spectrum = jnp.fft.rfft2(kernel, s=shape, axes=(0, 1))  # (L, L/2+1, 3, f)
    # correlation = convolution with the flipped filter: multiply by the conjugate spectrum, and
    # sum over the colour channels: a broadcast product and a sum, not a contraction (einsum),
    # which XLA compiles slowly for an inner dimension of 3 and runs no faster (measured, one
    # core: value and image gradient of notebook 03's network at 64 px, compile 2.0-2.4 s ->
    # 1.2-1.3 s; the paper's 1024 maps at 256 px: run 3.7-4.2 s -> 3.4 s).
    product = jnp.sum(image_spectrum[..., :, None] * jnp.conj(kernel_spectrum)[None], axis=-2)
    response = jnp.fft.irfft2(product, s=shape, axes=(1, 2))
    return response[:, :height, :width, :].astype(x.dtype)

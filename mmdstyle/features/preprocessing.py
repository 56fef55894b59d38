"""What a network's weights expect of its input, from an RGB image with values in [0, 1].

- ``"torchvision"``: RGB, ``(x - mean) / std`` with ImageNet's per-channel statistics, as every
  torchvision and timm classifier was trained.
- ``"caffe"``: the original VGG release (Caffe), used by Gatys et al.: BGR channel order, values
  in 0-255, the ImageNet mean pixel subtracted, no division.
- ``"none"``: the image as it is.
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
from jaxtyping import Array, Float

Preprocessing = Literal["torchvision", "caffe", "none"]
PREPROCESSINGS = ("torchvision", "caffe", "none")

#: torchvision's ImageNet statistics (RGB, for values in [0, 1]).
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
#: The Caffe VGG mean pixel in BGR order, for values in 0-255 (Simonyan & Zisserman's release).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def preprocess(image: Float[Array, "*batch 3"], preprocessing: Preprocessing) -> Float[Array, "*batch 3"]:
    """Map an RGB image in [0, 1] to the input the weights were trained on."""
    shape = (1,) * (image.ndim - 1) + (3,)  # explicit: the tests forbid implicit rank promotion

    def channels(values: tuple[float, float, float]) -> Array:
        return jnp.asarray(values, image.dtype).reshape(shape)

    if preprocessing == "torchvision":
        return (image - channels(TORCHVISION_MEAN)) / channels(TORCHVISION_STD)
    if preprocessing == "caffe":
        return image[..., ::-1] * jnp.asarray(255.0, image.dtype) - channels(CAFFE_MEAN_BGR)
    return image

"""The rules every caller of an extractor shares: which layers, feature maps as samples, jit arguments.

- :func:`resolve_layers`: the layers a caller asked for, or the extractor's defaults, each a
  known layer, each once.
- :func:`as_samples`: a feature map ``(h, w, c)`` as ``h * w`` samples of ``c`` channels.
- :func:`extract_samples`: an image's samples at several layers, as NumPy arrays.
- :class:`ExtractorArgument`: an extractor as an argument of a jit-compiled function, and
  :func:`jitted_extractor`, the extractor compiled.
- :func:`cast_extractor`: a copy of a Flax extractor in another floating dtype (float64 proofs).
- :func:`subsample`: a seeded random subset of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, ArrayLike

from mmdstyle._checks import as_samples, is_traced
from mmdstyle._rows import pad_rows

__all__ = [
    "ExtractorArgument",
    "as_samples",
    "cast_extractor",
    "compiled_when_eager",
    "extract_batch_samples",
    "extract_samples",
    "jitted_extractor",
    "resolve_layers",
    "subsample",
]

Role = Literal["style", "content"]


def resolve_layers(
    extractor: Any, layers: str | Sequence[str] | None = None, *, role: Role = "style"
) -> tuple[str, ...]:
    """The layers to read: ``layers``, or the extractor's default layers for ``role``.

    Args:
        extractor: any feature extractor; its ``layer_names`` (if it has them) are the known
            layers, its ``default_style_layers`` / ``default_content_layers`` the defaults.
        layers: a layer name, several, or ``None`` for the extractor's defaults.
        role: ``"style"`` or ``"content"``: which defaults.

    Returns:
        The layer names as a tuple, each known to the extractor and named once.

    Raises:
        ValueError: no layers, a layer named twice, an unknown layer, or no defaults to fall
            back on; the message lists the extractor's layers.
    """
    if layers is None:
        attribute = f"default_{role}_layers"
        layers = getattr(extractor, attribute, None)
        if layers is None:
            raise ValueError(
                f"the extractor has no {attribute}: name the {role} layers explicitly "
                f"({role}_layers=... in Python, --{role}-layers on the command line)."
            )
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    if not names:
        raise ValueError(f"the {role} layers are empty: name at least one layer, e.g. ('relu1_1',).")
    if len(set(names)) != len(names):
        raise ValueError(f"the {role} layers must name each layer once, got {list(names)}.")
    known = getattr(extractor, "layer_names", None)
    unknown = [name for name in names if known is not None and name not in known]
    if unknown:
        raise ValueError(f"unknown layer name(s) {unknown}. This extractor's layers are: {', '.join(known)}.")
    return names


def extract_samples(extractor: Any, image: ArrayLike, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """Each layer's feature map of ``image`` (H, W, 3) as samples (h * w, d), NumPy arrays.

    The extractor runs compiled (:func:`jitted_extractor`), once for all the layers.
    """
    maps = jitted_extractor(ExtractorArgument(extractor), jnp.asarray(image), tuple(layers))
    return {layer: as_samples(np.asarray(maps[layer])) for layer in layers}


def extract_batch_samples(
    extractor: Any, images: ArrayLike, layers: Sequence[str], devices: Sequence[jax.Device] | None = None
) -> dict[str, np.ndarray]:
    """Each layer's feature maps of a batch of images (B, H, W, 3) as samples (B, h * w, d), NumPy arrays.

    One compiled program per batch shape runs the extractor on every image (``jax.vmap``). With
    several ``devices`` the batch is split over them, padded with copies of its last image to a
    multiple of their number (the copies' maps are dropped).
    """
    images = jnp.asarray(images)
    count = images.shape[0]
    if devices is not None and len(devices) > 1:
        images, _ = pad_rows(images, -(-count // len(devices)) * len(devices))
        mesh = jax.sharding.Mesh(list(devices), ("images",))
        images = jax.device_put(
            images, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("images"))
        )
    maps = _batch_extractor(ExtractorArgument(extractor), images, tuple(layers))
    return {
        layer: np.asarray(maps[layer][:count]).reshape(count, -1, maps[layer].shape[-1]) for layer in layers
    }


@jax.jit(static_argnames="layers")
def _batch_extractor(extractor: ExtractorArgument, images: Array, layers: tuple[str, ...]) -> dict[str, Any]:
    return jax.vmap(lambda image: dict(extractor(image, layers)))(images)


@jax.tree_util.register_pytree_node_class
class ExtractorArgument:
    """An extractor as an argument of a jit-compiled function.

    A Flax NNX module is a pytree: its weights travel as traced arguments, so one compiled
    program serves every network of the same shapes and nothing is baked in as a constant. Any
    other callable is static (part of the program, compiled once per callable).
    """

    def __init__(self, extractor: Any) -> None:
        self.extractor = extractor

    def __call__(self, image: ArrayLike, layers: Sequence[str]) -> Any:
        """The wrapped extractor's maps, ``extractor(image, layers)``."""
        return self.extractor(image, layers)

    def tree_flatten(self) -> tuple[tuple[Any, ...], Any]:
        """A Flax NNX module as the one child; any other extractor as static auxiliary data."""
        if isinstance(self.extractor, nnx.Module):
            return (self.extractor,), None
        return (), self.extractor

    @classmethod
    def tree_unflatten(cls, static: Any, children: Sequence[Any]) -> ExtractorArgument:
        """The wrapper around the child module if there is one, else around the static extractor."""
        return cls(children[0] if children else static)


def for_gradients(
    extractor: Any, layers: Sequence[str] | None = None, size: tuple[int, int] | None = None
) -> Any:
    """The extractor prepared for many gradients at ``layers`` of images of ``size``, where it can be.

    An extractor with a ``for_gradients(layers, size)`` method
    (:meth:`mmdstyle.features.vgg.VGG19.for_gradients`) returns a copy that computes the same
    values and gradients faster when differentiated again and again (the style transfer engine's
    steps); it is made once per run. Any other extractor is returned as it is.
    """
    prepare = getattr(extractor, "for_gradients", None)
    return prepare(layers, size) if callable(prepare) else extractor


@jax.jit(static_argnames="layers")
def jitted_extractor(
    extractor: ExtractorArgument, image: ArrayLike, layers: tuple[str, ...]
) -> dict[str, Any]:
    """``extractor(image, layers)``, compiled once per extractor shape, image shape and layers."""
    return dict(extractor(image, layers))


def compiled_when_eager(module: nnx.Module, image: Array, layers: tuple[str, ...]) -> dict[str, Any] | None:
    """``module(image, layers)`` as one compiled program when called outside any trace, else None.

    Called eagerly, a network would run, and compile, operation by operation (every convolution
    its own program); the built-in extractors call this first, so that an interactive call costs
    one compilation per image shape and layers, as inside a user's own ``jax.jit``.
    """
    if is_traced(image) or any(is_traced(leaf) for leaf in jax.tree.leaves(nnx.state(module))):
        return None
    maps = jitted_extractor(ExtractorArgument(module), image, layers)
    return {layer: maps[layer] for layer in layers}  # a pytree's dict comes back sorted by key


def cast_extractor(extractor: Any, dtype: Any) -> Any:
    """A copy of a Flax NNX extractor whose floating-point weights have ``dtype``.

    Other extractors (plain functions) are returned as they are: they compute in whatever dtype
    they were written for.
    """
    if not isinstance(extractor, nnx.Module):
        return extractor
    graph, state = nnx.split(extractor)
    state = jax.tree.map(
        lambda value: value.astype(dtype) if jnp.issubdtype(value.dtype, jnp.floating) else value, state
    )
    return nnx.merge(graph, state)


def subsample(samples: np.ndarray, count: int | None, rng: np.random.Generator) -> np.ndarray:
    """``count`` rows drawn without replacement (all rows, in order, if there are no more)."""
    if count is None or samples.shape[0] <= count:
        return samples
    return samples[np.sort(rng.choice(samples.shape[0], count, replace=False))]

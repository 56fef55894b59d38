"""Feature extractors by name, and the protocol a user's own extractor follows.

An extractor is any callable ``extractor(image, layers) -> {layer: map}``: ``image`` is
``(H, W, 3)`` or ``(N, H, W, 3)`` RGB in [0, 1], each map ``(h, w, channels)`` (or with the batch
axis). Optional attributes ``layer_names``, ``default_style_layers`` and
``default_content_layers`` let tools list and choose layers. The built-ins are Flax NNX modules,
which are pytrees, so they can be passed into ``jax.jit``-compiled functions as arguments.

Names are for the command line and configuration files; code can pass extractor objects directly.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from jaxtyping import Array, ArrayLike

from mmdstyle.features.multiscale import MultiScaleRandom
from mmdstyle.features.pretrained import cached_weights_available, load_vgg19, pretrained_vgg19
from mmdstyle.features.vgg import Padding, Pooling, random_vgg19

#: ``multiscale-random-small``: the filter sizes and filters per size of notebook 03's network
SMALL_SIZES: tuple[int, ...] = (3, 5, 7, 11, 15, 23)
SMALL_FEATURES_PER_SIZE = 16


@runtime_checkable
class FeatureExtractor(Protocol):
    """Anything that maps an image to named feature maps."""

    def __call__(self, image: ArrayLike, layers: Sequence[str]) -> Mapping[str, Array]:
        """``{layer: map}`` for each of ``layers``, for an RGB image in [0, 1] (see the module docstring)."""
        ...


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., FeatureExtractor]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_extractor(
    name: str, factory: Callable[..., FeatureExtractor], *, description: str = "", overwrite: bool = False
) -> None:
    """Make ``get_extractor(name, **options)`` return ``factory(**options)``.

    Args:
        name: the name used on the command line (``--extractor NAME``).
        factory: builds the extractor; keyword options are passed through.
        description: one line for ``mmdstyle extractors``.
        overwrite: replace an existing entry of that name instead of raising.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"an extractor name must be a non-empty string, got {name!r}.")
    if not callable(factory):
        raise ValueError(f"factory for {name!r} must be callable, got {type(factory).__name__}.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"an extractor named {name!r} is already registered; pass overwrite=True to replace it."
        )
    _REGISTRY[name] = _Entry(factory, description)


@contextlib.contextmanager
def registry_scope() -> Iterator[None]:
    """Undo, when the block ends, every registration made inside it.

    For tests and notebooks that register an extractor for a while::

        with registry_scope():
            register_extractor("tiny", make_tiny)
            ...  # "tiny" is known here
        # and forgotten here; the names registered before the block are back as they were
    """
    saved = dict(_REGISTRY)
    try:
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)


def available_extractors() -> dict[str, str]:
    """Registered names and their descriptions."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


def get_extractor(name: str = "default", **options: Any) -> FeatureExtractor:
    """Build the extractor registered as ``name``.

    ``"default"`` is the pretrained VGG-19 if its weights are in the cache, and otherwise the
    weight-free multi-scale random network, announced on stderr so nobody mistakes it for the
    real thing. Asking for ``"vgg19"`` by name downloads the weights on first use and raises
    if that fails: an explicit request never falls back.
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown extractor {name!r}. Registered: {', '.join(_REGISTRY)}. "
            "Register your own with mmdstyle.features.register_extractor(name, factory)."
        )
    return _REGISTRY[name].factory(**options)


def default_extractor(
    *, pooling: Pooling = "max", padding: Padding = "zero", announce: bool = True
) -> FeatureExtractor:
    """The pretrained VGG-19 when cached, else the multi-scale random network (announced).

    ``pooling`` and ``padding`` apply to VGG-19; the random network has neither pooling nor a
    choice of padding, and ignores them. ``announce=False`` (the command line's ``--quiet``)
    takes the random network without a word.
    """
    if cached_weights_available():
        return pretrained_vgg19(pooling=pooling, padding=padding, download_if_missing=False)
    if announce:
        print(
            "mmdstyle: no pretrained VGG-19 in the cache, using the weight-free multi-scale random-filter "
            "network (Ustyuzhaninov et al. 2017); run `mmdstyle weights download` for the real VGG-19.",
            file=sys.stderr,
        )
    return MultiScaleRandom()


def extractor_or_default(extractor: FeatureExtractor | None) -> FeatureExtractor:
    """``extractor``, or :func:`default_extractor` when it is ``None``: every ``extractor=`` option's rule."""
    return default_extractor() if extractor is None else extractor


def resolve_extractor(
    name: str | None = None,
    *,
    weights: str | os.PathLike | None = None,
    pooling: Pooling | None = None,
    padding: Padding | None = None,
    quiet: bool = False,
) -> FeatureExtractor:
    """The extractor a command line asks for with ``--extractor NAME`` and ``--weights FILE``.

    ``weights`` (a VGG-19 file in any supported format) implies VGG-19, so ``name`` must then be
    ``None`` or ``"vgg19"``. Without either, this is :func:`default_extractor` (``quiet``: its
    fallback is not announced). ``pooling`` and ``padding`` go to the VGG-19 variants that take
    them; ``None`` keeps each one's own default.
    """
    options = {key: value for key, value in (("pooling", pooling), ("padding", padding)) if value is not None}
    if weights is not None:
        if name not in (None, "vgg19"):
            raise ValueError(f"--weights loads a VGG-19, but the extractor {name!r} was asked for.")
        return load_vgg19(weights, **options)
    name = name or "default"
    if name == "default" and _REGISTRY[name].factory is default_extractor:
        return default_extractor(**options, announce=not quiet)
    return (
        get_extractor(name, **options)
        if name in ("default", "vgg19", "random-vgg19")
        else get_extractor(name)
    )


register_extractor(
    "default", default_extractor, description="vgg19 if its weights are cached, else multiscale-random"
)
register_extractor(
    "vgg19", pretrained_vgg19, description="ImageNet VGG-19 (torchvision weights; downloaded on first use)"
)
register_extractor(
    "random-vgg19", random_vgg19, description="VGG-19 with fixed-seed He-initialised weights (no download)"
)
register_extractor(
    "multiscale-random",
    MultiScaleRandom,
    description="one layer of random filters of sizes 3-55 (Ustyuzhaninov et al. 2017; no download)",
)
register_extractor(
    "multiscale-random-small",
    functools.partial(MultiScaleRandom, sizes=SMALL_SIZES, features_per_size=SMALL_FEATURES_PER_SIZE),
    description="the same with 16 filters of each size 3-23: 96 maps (notebook 03's; no download)",
)

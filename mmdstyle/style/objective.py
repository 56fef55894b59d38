"""The objective of style transfer and texture synthesis, and the settings that define a run.

    L(x) = alpha * sum_{l in content} L_content^l  +  beta * sum_{l in style} w_l * sum_s b_s L_style^l(x, s)
           + tv_weight * TV(x)

over the pixels of the image x (H, W, 3), values in [0, 1]. L_content is Gatys' 1/2 sum (F - P)^2;
each style layer's term comes from a spec (``gram``, ``mmd:gaussian(sigma=median)``,
``0.5*mmd:linear + 0.5*bn``, ...; see :mod:`mmdstyle.style.specs`), w_l are the layer weights (equal,
summing to 1, by default: Gatys' w_l = 1/5), b_s the blend weights of several style images
(normalised to sum to 1; each style image is its own target, so a blend of styles is a weighted
sum of losses). Texture synthesis is the same without a content term.

References:
    Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
    Li, Wang, Liu & Hou, "Demystifying Neural Style Transfer", IJCAI 2017.
    Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting Them", CVPR 2015 (TV).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from mmdstyle._checks import check_choice, check_integer, check_scalar, is_traced
from mmdstyle.features.layers import ExtractorArgument, as_samples, jitted_extractor, resolve_layers
from mmdstyle.losses import content_loss
from mmdstyle.style.specs import StyleSpec, parse_style_spec, reads_samples

OPTIMIZERS = ("lbfgs", "adam")


@dataclass(frozen=True)
class TransferConfig:
    """Everything that defines a run; defaults follow Gatys et al. 2016.

    Attributes:
        size: the output's longer side in pixels (the content's aspect ratio is kept; texture
            synthesis makes a square). The last stage of ``scales`` when that is given.
        scales: a pyramid of sizes, e.g. ``(128, 256)``: each stage starts from the previous
            result, upsampled. ``None``: one stage at ``size``.
        steps: optimiser steps per stage.
        min_progress: a stage ends early once its loss falls by less than this fraction of its
            value over :data:`~mmdstyle.style.engine.PROGRESS_WINDOW` steps (checked after every
            chunk of steps): the steps left would change little. 0: every step runs.
        loss: the style loss spec for every style layer (see :mod:`mmdstyle.style.specs`).
        layer_losses: per-layer overrides, e.g. ``{"relu1_1": "bn"}``.
        estimator: MMD estimator for every ``mmd`` term: biased, unbiased or linear.
        style_layers, content_layers: layer names; ``None``: the extractor's defaults (for VGG-19
            Gatys' relu1_1 ... relu5_1 and relu4_2).
        style_layer_weights: w_l, one per style layer; ``None``: equal weights summing to 1.
        content_weight, style_weight: alpha and beta. ``None``: the extractor's
            ``default_weights`` if it has them, else Gatys' alpha = 1, beta = 1e3 (alpha / beta =
            1e-3 with his normalisations, which mmdstyle's losses follow). Those betas are for the
            Gram loss; for any other loss an unset beta is balanced against it, so that the style
            term starts where the Gram loss's would (:func:`mmdstyle.style.engine.balanced_style_weight`).
        tv_weight: weight of the total variation sum of squared neighbour differences.
        style_scale: style images are resized to ``style_scale`` times the stage's size.
        style_blend_weights: b_s, one per style image; ``None``: equal. Normalised to sum to 1.
        optimizer: ``"lbfgs"`` (strong-Wolfe line search from the host, :mod:`mmdstyle.style.lbfgs`) or
            ``"adam"``.
        learning_rate: Adam's step size in pixel units (L-BFGS needs none).
        init: ``"content"``, ``"noise"`` (uniform in [0, 1], seeded) or an image array.
        seed: seeds the noise initialisation and the draws of random routes and of ``sw``'s
            directions (fixed per stage); runs with the same seed are identical.
        redraw_every: for losses on a random route (``@rff``, ``@sliced``) or ``sw``: new
            frequencies or directions every this many steps (0: one draw per stage). Each draw is a new
            objective, so the optimiser starts afresh (L-BFGS's memory, Adam's moments).
        original_colors: keep the content's colours, transfer luminance only.
        chunk: steps between progress updates, history read-backs and ``on_chunk`` calls.
        dtype: of the image being optimised (``"float64"`` needs ``jax_enable_x64`` and an
            extractor of that dtype; the tests use it to compare runs exactly).
    """

    size: int = 256
    scales: tuple[int, ...] | None = None
    steps: int = 300
    min_progress: float = 0.0
    loss: str = "gram"
    layer_losses: Mapping[str, str] = field(default_factory=dict)
    estimator: str = "biased"
    style_layers: tuple[str, ...] | None = None
    content_layers: tuple[str, ...] | None = None
    style_layer_weights: tuple[float, ...] | None = None
    content_weight: float | None = None
    style_weight: float | None = None
    tv_weight: float = 0.0
    style_scale: float = 1.0
    style_blend_weights: tuple[float, ...] | None = None
    optimizer: str = "lbfgs"
    learning_rate: float = 0.02
    init: str | np.ndarray = "content"
    seed: int = 0
    redraw_every: int = 0
    original_colors: bool = False
    chunk: int = 10
    dtype: str = "float32"

    def stages(self) -> tuple[int, ...]:
        """The image size of each stage: ``scales`` if given, else ``(size,)``."""
        return tuple(self.scales) if self.scales else (self.size,)

    def style_spec(self, layer: str) -> StyleSpec:
        """The style loss of ``layer``: its override in ``layer_losses``, else ``loss``."""
        return parse_style_spec(self.layer_losses.get(layer, self.loss))


def total_variation(image: Float[Array, "h w 3"]) -> Float[Array, ""]:
    """Sum of squared differences between neighbouring pixels (Mahendran & Vedaldi's TV, beta = 2)."""
    down = image[1:, :, :] - image[:-1, :, :]
    right = image[:, 1:, :] - image[:, :-1, :]
    return jnp.sum(down**2) + jnp.sum(right**2)


def check_config(config: TransferConfig, extractor: Any, styles: int, *, synthesis: bool = False) -> None:
    """Raise a ValueError naming the first setting that cannot work, before anything is computed."""

    def finite(value: Any) -> bool:
        return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0

    check_choice("optimizer", config.optimizer, OPTIMIZERS)
    check_choice("dtype", config.dtype, ("float32", "float64"))
    if any(not (isinstance(s, int) and s >= 16) for s in config.stages()):
        raise ValueError(f"sizes must be whole numbers of pixels >= 16, got {config.stages()}.")
    for name in ("steps", "chunk"):
        check_integer(name, getattr(config, name))
    check_integer("seed", config.seed, minimum=0)
    check_integer("redraw_every", config.redraw_every, minimum=0)
    for name in ("content_weight", "style_weight", "tv_weight"):
        if getattr(config, name) is not None:
            check_scalar(name, getattr(config, name), positive=False)
    check_scalar("min_progress", config.min_progress, positive=False)
    if not config.min_progress < 1:
        raise ValueError(
            f"min_progress must be below 1 (a fraction of the loss), got {config.min_progress}; "
            "0 runs every step."
        )
    for name in ("style_scale", "learning_rate"):
        check_scalar(name, getattr(config, name), positive=True)
    if config.original_colors and synthesis:
        raise ValueError("original_colors keeps the content's colours: it needs a content image.")
    blend = config.style_blend_weights
    if blend is not None and (
        len(blend) != styles or not all(finite(w) for w in blend) or not sum(blend) > 0
    ):
        raise ValueError(
            f"style_blend_weights must give one weight >= 0 per style image ({styles}), not all zero; "
            f"got {blend}."
        )
    style_layers = resolve_layers(extractor, config.style_layers, role="style")
    weights = config.style_layer_weights
    if weights is not None and (
        len(weights) != len(style_layers) or not all(finite(w) for w in weights) or not sum(weights) > 0
    ):
        raise ValueError(
            f"style_layer_weights must give one weight >= 0 per style layer {style_layers}, not all zero; "
            f"got {weights}."
        )
    unknown = sorted(set(config.layer_losses) - set(style_layers))
    if unknown:
        raise ValueError(
            f"layer_losses names layers that are not style layers: {unknown}; style layers: {style_layers}."
        )
    random_routes = False
    for spec in {config.loss, *config.layer_losses.values()}:
        parsed = parse_style_spec(spec)  # a SpecError (a ValueError) points at the problem
        random_routes = random_routes or parsed.random
        parsed.check_estimator(config.estimator)
    if config.redraw_every and not random_routes:
        raise ValueError(
            f"redraw_every={config.redraw_every} redraws the frequencies or directions of random routes "
            f"and of sw, and the loss {config.loss!r} draws none: add '@rff(1024)' or '@sliced(256)' to "
            "an mmd term, use sw, or use 0."
        )
    if not synthesis:
        resolve_layers(extractor, config.content_layers, role="content")


#: alpha and beta of Gatys et al. (alpha / beta = 1e-3), for extractors that advertise none
GATYS_WEIGHTS = {"content_weight": 1.0, "style_weight": 1e3}


def with_default_weights(config: TransferConfig, extractor: Any) -> TransferConfig:
    """``config`` with alpha and beta filled in from the extractor's ``default_weights`` (or Gatys')."""
    defaults = {**GATYS_WEIGHTS, **getattr(extractor, "default_weights", {})}
    return dataclasses.replace(
        config,
        content_weight=defaults["content_weight"] if config.content_weight is None else config.content_weight,
        style_weight=defaults["style_weight"] if config.style_weight is None else config.style_weight,
    )


def _weights(config: TransferConfig) -> tuple[float | None, float | None, float]:
    """(beta, alpha, TV weight) as floats, whatever the user wrote: an int would be another program's."""
    return tuple(
        None if weight is None else float(weight)
        for weight in (config.style_weight, config.content_weight, config.tv_weight)
    )


@jax.tree_util.register_pytree_node_class
class Objective:
    """The objective of one stage: ``objective.total(objective.terms_of(image, extractor))``.

    Built from the settings, the extractor and the stage's images: the style and content
    targets (features of the style and content images) and each layer's style term are computed
    once, here. The objective is a pytree whose leaves are the targets, the terms' numbers (a
    data-driven bandwidth, say) and the weights, and whose structure holds the layers and the
    kinds of terms: passed to a jit-compiled function, one program serves every stage and every
    run of the same losses, layers and shapes, whatever the images and weights. ``stage`` and
    ``draw`` (the count of redraws, see ``redraw_every``) select the random routes' draws.
    :meth:`terms_of` evaluates every term at an image (:meth:`terms_at`, given its feature maps).

    Attributes:
        style_layers, content_layers: the layers read (no content layers for a synthesis).
        layer_weights: w_l, one per style layer.
        blend: b_s, one per style image, summing to 1.
        weights: beta, alpha and the TV weight; ``has_tv``: whether the TV term is there at all.
        targets: ``{"style": {layer: [samples of each style image]}, "content": {layer: map}}``.
        terms: ``{layer: [style term against each style image]}``.
        config: the settings it was built from (not carried through jit).
    """

    def __init__(
        self,
        config: TransferConfig,
        extractor: Any,
        content: np.ndarray | None,
        styles: list[np.ndarray],
        *,
        stage: int = 0,
        draw: int = 0,
    ) -> None:
        self.config = config
        self.style_layers = resolve_layers(extractor, config.style_layers, role="style")
        self.content_layers = (
            resolve_layers(extractor, config.content_layers, role="content") if content is not None else ()
        )
        # floats, whatever the user wrote: an int would be another program's argument type
        layer_weights = config.style_layer_weights or (1.0 / len(self.style_layers),) * len(self.style_layers)
        self.layer_weights = tuple(float(weight) for weight in layer_weights)
        blend = np.asarray(config.style_blend_weights or (1.0,) * len(styles), np.float64)
        self.blend = tuple(float(b) for b in blend / blend.sum())
        self.weights = _weights(config)
        self.has_tv = bool(config.tv_weight)
        specs = {layer: config.style_spec(layer) for layer in self.style_layers}
        style_maps = [self.features(extractor, jnp.asarray(style)) for style in styles]
        content_maps = self.features(extractor, jnp.asarray(content)) if content is not None else {}
        self.targets = {
            "style": {layer: [as_samples(maps[layer]) for maps in style_maps] for layer in self.style_layers},
            "content": {layer: content_maps[layer] for layer in self.content_layers},
        }
        # each (layer, style) term is built once from its target: data-driven bandwidths are fixed
        # here, and so are the draws of random routes, from the seed, the stage, the draw (see
        # redraw_every), the layer and the style image: the objective is a deterministic function
        # of the image
        stage_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), stage), draw)
        self.terms = {
            layer: [
                specs[layer].build(
                    target, config.estimator, jax.random.fold_in(jax.random.fold_in(stage_key, index), style)
                )
                for style, target in enumerate(self.targets["style"][layer])
            ]
            for index, layer in enumerate(self.style_layers)
        }
        # a term whose target holds all it needs (a Gram term its G_y/n) gets no samples: they are
        # not kept (at 512 px, VGG-19's five style layers of one style image are 127 MB)
        self.targets["style"] = {
            layer: [
                samples if reads_samples(term) else jnp.zeros((0, samples.shape[1]), samples.dtype)
                for term, samples in zip(self.terms[layer], self.targets["style"][layer], strict=True)
            ]
            for layer in self.style_layers
        }

    def with_config(self, config: TransferConfig) -> Objective:
        """This objective with the weights of ``config`` (beta, alpha, the TV weight), not rebuilt.

        Only the weights may differ: the targets and terms are this objective's.
        """
        objective = copy.copy(self)
        objective.config = config
        objective.weights = _weights(config)
        return objective

    @property
    def layers(self) -> tuple[str, ...]:
        """Every layer the objective reads, each once: the style layers, then the content layers."""
        return tuple(dict.fromkeys(self.style_layers + self.content_layers))

    def tree_flatten(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """Targets, terms and weights as children (traced); the layers as static data.

        The weights are numbers of the program, not part of it: runs that differ only in alpha,
        beta, the TV weight or the layer and blend weights share one compiled step. Whether
        there is a TV term at all is static. ``config`` is not carried.
        """
        children = (self.targets, self.terms, self.layer_weights, self.blend, self.weights)
        return children, (self.style_layers, self.content_layers, self.has_tv)

    @classmethod
    def tree_unflatten(cls, static: tuple[Any, ...], children: tuple[Any, ...]) -> Objective:
        """An objective rebuilt from its parts without ``__init__``; its ``config`` is None."""
        objective = object.__new__(cls)
        objective.style_layers, objective.content_layers, objective.has_tv = static
        objective.targets, objective.terms, objective.layer_weights, objective.blend, objective.weights = (
            children
        )
        objective.config = None
        return objective

    def features(self, extractor: Any, image: Array) -> dict[str, Array]:
        """The maps of every layer the objective reads (compiled when called outside jit)."""
        if is_traced(image):
            return dict(extractor(image, self.layers))
        return jitted_extractor(ExtractorArgument(extractor), image, self.layers)

    def terms_of(self, image: Array, extractor: Any) -> dict[str, Any]:
        """Every term at ``image``: ``{"style": {layer: sum_s b_s L}, "content": {layer: L}, "tv": TV}``.

        Called outside jit (to measure or balance), the terms run as one compiled program per
        structure, not operation by operation.
        """
        maps = self.features(extractor, image)
        if is_traced(image):
            return self.terms_at(maps, image)
        return _jitted_terms_at(self, maps, image)

    def terms_at(self, maps: dict[str, Array], image: Array) -> dict[str, Any]:
        """:meth:`terms_of` given the maps of ``image`` at every layer the objective reads."""
        style = {
            layer: sum(
                blend * term(as_samples(maps[layer]), target)
                for blend, term, target in zip(
                    self.blend, self.terms[layer], self.targets["style"][layer], strict=True
                )
            )
            for layer in self.style_layers
        }
        content = {
            layer: content_loss(maps[layer], self.targets["content"][layer]) for layer in self.content_layers
        }
        return {"style": style, "content": content, "tv": total_variation(image)}

    def weighted_style(self, terms: dict[str, Any]) -> Array:
        """``sum_l w_l L_style^l``: the style part of the objective before beta."""
        return sum(
            weight * terms["style"][layer]
            for layer, weight in zip(self.style_layers, self.layer_weights, strict=True)
        )

    def total(self, terms: dict[str, Any]) -> Array:
        """``beta * sum_l w_l L_style^l + alpha * sum L_content + tv_weight * TV``."""
        style_weight, content_weight, tv_weight = self.weights
        total = style_weight * self.weighted_style(terms)
        if terms["content"]:
            total = total + content_weight * sum(terms["content"].values())
        if self.has_tv:
            total = total + tv_weight * terms["tv"]
        return total


#: :meth:`Objective.terms_at` compiled: one program per objective structure and shapes.
_jitted_terms_at = jax.jit(Objective.terms_at)

"""Layer-by-layer numerical proof that the Gram loss is biased poly2 MMD / (4 d^2).

For each layer's samples ``x`` (generated image) and ``s`` (style image) the report holds:

- the Gram loss ``||G_x - G_s||^2 / (4 d^2 m^2)`` and ``MMD_b^2[x, s; (a^T b)^2] / (4 d^2)``
  computed by its definition, as sums of kernel values over all pairs (the pairwise route: no
  Gram matrix), and their relative difference in float64 (the proof) and float32 (beside it);
- the same for their gradients with respect to x, or, for real images
  (:func:`verify_images`), with respect to the image's pixels through the feature extractor;
- the route ``mmd2`` takes by default for this kernel (the feature route, from Gram matrices),
  against the pairwise computation;
- the unbiased estimate, its gap to the biased one, and that gap against its closed form

      MMD_u^2 - MMD_b^2 = (m ||G_x/m||_F^2 - sum_i ||x_i||^4) / (m (m - 1)) + (same for s)

  (docs/math.md: ``sum_{i != j} k = sum_ij k - sum_i k(x_i, x_i)`` with ``k = (a^T b)^2``).

The features may come from any extractor; :func:`synthetic_vgg_layers` makes ReLU-like ones with
VGG-19's layer shapes, so the check runs with no network and no weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from mmdstyle._checks import ALL_PAIRS_ESTIMATORS, check_choice, check_integer, check_scalar
from mmdstyle.features.layers import (
    ExtractorArgument,
    as_samples,
    cast_extractor,
    extract_samples,
    resolve_layers,
)
from mmdstyle.features.registry import extractor_or_default
from mmdstyle.kernels import HIGHEST, Polynomial
from mmdstyle.losses import gram_style_loss, mmd_style_loss
from mmdstyle.mmd import ONE_TILE_PAIRS, mmd2, select_route
from mmdstyle.style.images import resize_cover

__all__ = [
    "IdentityReport",
    "LayerIdentity",
    "synthetic_vgg_layers",
    "verify_gram_mmd_identity",
    "verify_images",
]

#: float64 tolerance on every relative error that the proof rests on.
TOLERANCE = 1e-10

#: VGG-19 style layers (Gatys et al.): name, channels, downsampling factor of the input size.
VGG19_STYLE_LAYERS = (
    ("relu1_1", 64, 1),
    ("relu2_1", 128, 2),
    ("relu3_1", 256, 4),
    ("relu4_1", 512, 8),
    ("relu5_1", 512, 16),
)


@dataclasses.dataclass(frozen=True)
class LayerIdentity:
    """The identity checked on one layer; every ``*_error`` is a relative error."""

    layer: str
    samples: int
    channels: int
    route: str
    gram_loss: float
    mmd_loss: float
    value_error: float
    gradient_error: float
    value_error_float32: float
    gradient_error_float32: float
    route_error: float
    unbiased_mmd_loss: float | None  # None on a layer with a single sample (m = 1)
    unbiased_gap: float | None
    unbiased_gap_error: float | None
    tolerance: float

    @property
    def passed(self) -> bool:
        """Whether every float64 identity holds to ``tolerance``."""
        errors = (self.value_error, self.gradient_error, self.route_error, self.unbiased_gap_error)
        return all(error <= self.tolerance for error in errors if error is not None)


@dataclasses.dataclass(frozen=True)
class IdentityReport:
    """All layers' checks; ``passed`` when every layer's float64 identities hold.

    ``estimator`` is the MMD estimator compared with the Gram loss (``"biased"``: the identity),
    ``gradient_with_respect_to`` says whether gradients were taken with respect to the generated
    features or, through the extractor, to the image.
    """

    layers: tuple[LayerIdentity, ...]
    source: str
    estimator: str = "biased"
    gradient_with_respect_to: str = "features"

    @property
    def passed(self) -> bool:
        """Whether every layer's float64 identities hold to its tolerance."""
        return all(layer.passed for layer in self.layers)

    def to_dict(self) -> dict:
        """A JSON-ready dictionary: the report's fields, ``passed``, and ``layers``, one dict each."""
        layers = [dataclasses.asdict(layer) | {"passed": layer.passed} for layer in self.layers]
        return {
            "source": self.source,
            "estimator": self.estimator,
            "gradient_with_respect_to": self.gradient_with_respect_to,
            "passed": self.passed,
            "layers": layers,
        }

    def format_table(self) -> str:
        """A table for the terminal, one row per layer."""
        mmd = "MMD_b^2/(4d^2)" if self.estimator == "biased" else "MMD_u^2/(4d^2)"
        header = (
            f"{'layer':<9}{'m':>7}{'d':>6}  {'Gram loss':>11}  {mmd:>14}  "
            f"{'value f64':>9}  {'grad f64':>9}  {'value f32':>9}  {'grad f32':>9}  "
            f"{'route':<8}{'vs pairwise':>11}  {'MMD_u^2-MMD_b^2':>15}  {'vs closed form':>14}  ok"
        )
        rows = [
            f"{r.layer:<9}{r.samples:>7}{r.channels:>6}  {r.gram_loss:>11.4e}  {r.mmd_loss:>14.4e}  "
            f"{r.value_error:>9.1e}  {r.gradient_error:>9.1e}  {r.value_error_float32:>9.1e}  "
            f"{r.gradient_error_float32:>9.1e}  {r.route:<8}{r.route_error:>11.1e}  "
            f"{_optional(r.unbiased_gap, 15, 4)}  {_optional(r.unbiased_gap_error, 14, 1)}  "
            f"{'yes' if r.passed else 'NO'}"
            for r in self.layers
        ]
        tolerance = self.layers[0].tolerance if self.layers else TOLERANCE
        if self.passed:
            verdict = f"All float64 identities hold to a relative error of {tolerance:g}."
        else:
            verdict = f"FAILED: some float64 identity is off by more than {tolerance:g} (rows marked NO)."
            if self.estimator != "biased":
                verdict += (
                    " As it should: the Gram loss is the BIASED estimator's MMD, not the unbiased one's."
                )
        title = f"Gram loss == {mmd} with k(a, b) = (a^T b)^2, layer by layer ({self.source})"
        variable = "image (through the extractor)" if self.gradient_with_respect_to == "image" else "features"
        notes = [
            "Columns: relative errors of the MMD side against the Gram side, for values and for gradients "
            f"with respect to the {variable};",
            "float64 is the proof, float32 is shown beside it. The MMD side sums k over all pairs (pairwise "
            "route); 'route' is the one mmd2 takes by default,",
            "checked against the pairwise sums. MMD_u^2 - MMD_b^2 (divided by 4d^2) is checked against its "
            "closed form from Gram matrices and squared norms.",
        ]
        return "\n".join([title, "", header, *rows, "", verdict, *notes])


def _optional(value: float | None, width: int, precision: int) -> str:
    return f"{value:>{width}.{precision}e}" if value is not None else f"{'n/a (m=1)':>{width}}"


def _relative_error(actual: ArrayLike, expected: ArrayLike) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    deviation = float(np.max(np.abs(actual - expected)))
    scale = float(np.max(np.abs(expected)))
    return deviation / scale if scale > 0 else deviation


def _closed_form_gap(x: Float[Array, "m d"], s: Float[Array, "n d"]) -> Float[Array, ""]:
    # Written out here, apart from mmd.feature_mmd2 (which uses the same algebra), so that the
    # report states the formula it checks the pairwise route's tile sums against.
    def one_side(samples: Array) -> Array:
        size = float(samples.shape[0])
        gram = jnp.matmul(samples.T, samples, precision=HIGHEST) / size
        fourth_powers = jnp.sum(jnp.sum(samples * samples, axis=-1) ** 2)
        return (size * jnp.sum(gram**2) - fourth_powers) / (size * (size - 1.0))

    return one_side(x) + one_side(s)


def _sides(x: Float[Array, "m d"], s: Float[Array, "m d"], estimator: str) -> dict[str, Array]:
    """Both sides of the identity and their gradients with respect to x, in the dtype of x.

    The MMD side is computed by its definition, as sums of kernel values k(x_i, x_j) =
    (x_i^T x_j)^2 over pairs (the pairwise route): no Gram matrix anywhere, so agreement with the
    Gram loss is a proof, not a tautology.
    """

    def mmd_side(x: Array) -> Array:
        return mmd_style_loss(x, s, Polynomial(2), estimator, route="pairwise", block_size=_block_size(x, s))

    gram, gram_gradient = jax.value_and_grad(gram_style_loss)(x, s)
    mmd, mmd_gradient = jax.value_and_grad(mmd_side)(x)
    return {"gram": gram, "gram_gradient": gram_gradient, "mmd": mmd, "mmd_gradient": mmd_gradient, "x": x}


_feature_sides = jax.jit(_sides, static_argnames="estimator")


def _block_size(x: Array, s: Array) -> int | None:
    """One tile (whole kernel matrices) for layers of up to 1024 positions, else the default.

    Each program here runs once, so compiling is most of its cost, and one tile compiles about
    4x faster than the blocked scans (:data:`mmdstyle.mmd.ONE_TILE_PAIRS`).
    """
    largest = max(x.shape[0], s.shape[0])
    return largest if largest**2 <= ONE_TILE_PAIRS else None


def _image_sides(
    image: Float[Array, "h w 3"],
    targets: dict[str, Array],
    extractor: Any,
    layers: tuple[str, ...],
    estimator: str,
) -> dict[str, dict[str, Array]]:
    """:func:`_sides` for each layer's features of ``image``, the gradients pulled back to the image.

    One forward pass serves every layer; the 2 x layers pullbacks (each side's gradient at each
    layer, zero at the others) run as one batched backward pass, so the program compiles once.
    """

    def features(image: Array) -> dict[str, Array]:
        maps = extractor(image, layers)
        return {layer: as_samples(maps[layer]) for layer in layers}

    xs, pullback = jax.vjp(features, image)
    sides = {layer: _sides(xs[layer], targets[layer], estimator) for layer in layers}
    cotangents = {
        layer: jnp.stack(
            [
                sides[other][side] if other == layer else jnp.zeros_like(xs[layer])
                for other in layers
                for side in ("gram_gradient", "mmd_gradient")
            ]
        )
        for layer in layers
    }
    (gradients,) = jax.vmap(pullback)(cotangents)  # row 2i: gram at layers[i], row 2i + 1: mmd
    return {
        layer: sides[layer] | {"gram_gradient": gradients[2 * i], "mmd_gradient": gradients[2 * i + 1]}
        for i, layer in enumerate(layers)
    }


_jitted_image_sides = jax.jit(_image_sides, static_argnames=("layers", "estimator"))


@jax.jit
def _routes_and_estimators(x: Float[Array, "m d"], s: Float[Array, "m d"]) -> dict[str, Array]:
    """The biased MMD's default (feature) route, and the unbiased estimator's gap (needs m >= 2)."""
    kernel = Polynomial(2)
    block_size = _block_size(x, s)
    biased = mmd2(x, s, kernel, "biased", route="pairwise", block_size=block_size)
    quantities = {"pairwise": biased, "feature": mmd2(x, s, kernel, "biased", route="feature")}
    if x.shape[0] >= 2:
        # The gap from the pairwise route's tile sums, against the closed form from Gram matrices.
        quantities["unbiased"] = mmd2(x, s, kernel, "unbiased")
        quantities["gap"] = mmd2(x, s, kernel, "unbiased", route="pairwise", block_size=block_size) - biased
        quantities["closed_form_gap"] = _closed_form_gap(x, s)
    return quantities


def _layer_identity(
    name: str, exact: dict[str, Array], single: dict[str, Array], s: Array, tolerance: float
) -> LayerIdentity:
    """The report of one layer from both sides in float64 (``exact``) and float32 (``single``)."""
    x = exact["x"]
    normalisation = 4.0 * float(x.shape[1]) ** 2
    other = _routes_and_estimators(x, s)
    has_pairs = "gap" in other
    return LayerIdentity(
        layer=name,
        samples=int(x.shape[0]),
        channels=int(x.shape[1]),
        route=select_route(Polynomial(2), "biased"),
        gram_loss=float(exact["gram"]),
        mmd_loss=float(exact["mmd"]),
        value_error=_relative_error(exact["mmd"], exact["gram"]),
        gradient_error=_relative_error(exact["mmd_gradient"], exact["gram_gradient"]),
        value_error_float32=_relative_error(single["mmd"], single["gram"]),
        gradient_error_float32=_relative_error(single["mmd_gradient"], single["gram_gradient"]),
        route_error=_relative_error(other["feature"], other["pairwise"]),
        unbiased_mmd_loss=float(other["unbiased"]) / normalisation if has_pairs else None,
        unbiased_gap=float(other["gap"]) / normalisation if has_pairs else None,
        unbiased_gap_error=_relative_error(other["gap"], other["closed_form_gap"]) if has_pairs else None,
        tolerance=tolerance,
    )


def verify_gram_mmd_identity(
    layers: Mapping[str, tuple[ArrayLike, ArrayLike]],
    *,
    tolerance: float = TOLERANCE,
    source: str = "user features",
    estimator: str = "biased",
) -> IdentityReport:
    """Check the Gram == MMD identity on each layer's features, in float64 and float32.

    Args:
      layers: layer name -> (generated samples (m, d), style samples (m, d)); feature maps
        (h, w, d) are reshaped.
      tolerance: float64 bound on every relative error of the proof (default 1e-10).
      source: where the features came from, shown in the report.
      estimator: the MMD estimator compared with the Gram loss. ``"biased"`` is the identity;
        ``"unbiased"`` shows that it is the biased estimator's alone (the report then fails).

    Returns:
      An :class:`IdentityReport`, gradients with respect to the generated features;
      ``report.passed`` is False if any float64 identity fails.
    """
    if not layers:
        raise ValueError("layers is empty: pass at least one layer name -> (x, s) pair.")
    check_choice("estimator", estimator, ALL_PAIRS_ESTIMATORS)
    check_scalar("tolerance", tolerance, positive=True)
    pairs = {}
    for name, (x, s) in layers.items():  # every layer is checked before any is computed
        x, s = np.asarray(x, np.float64), np.asarray(s, np.float64)
        x = as_samples(x) if x.ndim == 3 else x
        s = as_samples(s) if s.ndim == 3 else s
        if x.ndim != 2 or x.shape != s.shape:
            raise ValueError(
                f"Layer {name!r}: x and s must be samples (m, d) of the same shape for the Gram "
                f"loss, got {x.shape} and {s.shape}."
            )
        pairs[name] = (x, s)
    with jax.enable_x64(True):
        checks = []
        for name, (x, s) in pairs.items():
            x64, s64 = jnp.asarray(x), jnp.asarray(s)
            exact = _feature_sides(x64, s64, estimator)
            single = _feature_sides(x64.astype(jnp.float32), s64.astype(jnp.float32), estimator)
            checks.append(_layer_identity(name, exact, single, s64, float(tolerance)))
    return IdentityReport(tuple(checks), source, estimator, "features")


def verify_images(
    image: ArrayLike,
    style: ArrayLike,
    *,
    extractor: Any = None,
    size: int = 64,
    layers: Sequence[str] | None = None,
    tolerance: float = TOLERANCE,
    estimator: str = "biased",
    source: str | None = None,
) -> IdentityReport:
    """Check the Gram == MMD identity on real images' features, gradients with respect to the image.

    ``image`` plays the image being optimised, ``style`` the style image. Both are cropped to a
    square and resized to ``size`` x ``size``, so every layer has as many positions in both (the
    Gram loss needs equal counts). The extractor runs twice: with its weights cast to float64
    for the proof, and as it is (float32) for the columns beside it. A Flax NNX extractor is cast
    automatically; any other must compute in the dtype of its input.

    Args:
      image: the image being optimised, RGB (H, W, 3) in [0, 1].
      style: the style image, RGB (H, W, 3) in [0, 1].
      extractor: any feature extractor; ``None``: the default one.
      size: side of the square images, in pixels.
      layers: default: the extractor's style layers.
      tolerance: float64 bound on every relative error of the proof (default 1e-10).
      estimator: the MMD estimator compared with the Gram loss, as in :func:`verify_gram_mmd_identity`.
      source: shown in the report (default: the extractor's class and the size).
    """
    check_choice("estimator", estimator, ALL_PAIRS_ESTIMATORS)
    check_scalar("tolerance", tolerance, positive=True)
    check_integer("size", size, minimum=2, hint=" (pixels)")
    extractor = extractor_or_default(extractor)
    layers = resolve_layers(extractor, layers)
    pair = [resize_cover(np.asarray(picture, np.float32), (size, size)) for picture in (image, style)]
    source = source or f"{type(extractor).__name__} features of {size} x {size} images"
    sides: dict[str, dict[str, dict[str, Array]]] = {}
    with jax.enable_x64(True):
        for dtype in ("float64", "float32"):
            network = cast_extractor(extractor, dtype)
            image_array, style_array = (jnp.asarray(picture, dtype) for picture in pair)
            targets = {
                layer: jnp.asarray(s) for layer, s in extract_samples(network, style_array, layers).items()
            }
            produced = {str(target.dtype) for target in targets.values()}
            if dtype == "float64" and produced != {"float64"}:
                raise ValueError(
                    f"the extractor computes in {', '.join(sorted(produced))} for a float64 image: the proof "
                    "needs float64 features. Pass a Flax NNX module (cast automatically) or a function that "
                    "keeps its input's dtype."
                )
            sides[dtype] = _jitted_image_sides(
                image_array, targets, ExtractorArgument(network), layers, estimator
            )
            if dtype == "float64":
                exact_targets = targets
        checks = tuple(
            _layer_identity(
                layer, sides["float64"][layer], sides["float32"][layer], exact_targets[layer], tolerance
            )
            for layer in layers
        )
    return IdentityReport(checks, source, estimator, "image")


def synthetic_vgg_layers(image_size: int = 64, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ReLU-like features with the shapes of VGG-19's style layers for an image of this size.

    Each layer's channels are ``relu(g W + b)`` for Gaussian g of a lower rank, so channels are
    correlated, non-negative and sparse as real ReLU features are; the "style" features use
    another W and b than the "generated" ones. No network, no weights: a stand-in that exercises
    the identity at realistic sizes.

    Args:
      image_size: side of the square input image, a multiple of 16 (>= 16).
      seed: NumPy seed.

    Returns:
      layer name -> (generated samples, style samples), float64 arrays (h*w, channels).
    """
    if image_size < 16 or image_size % 16:
        raise ValueError(f"image_size must be a multiple of 16 (VGG-19 pools 4 times), got {image_size}.")
    rng = np.random.default_rng(seed)
    layers = {}
    for name, channels, factor in VGG19_STYLE_LAYERS:
        positions = (image_size // factor) ** 2
        layers[name] = (_relu_features(rng, positions, channels), _relu_features(rng, positions, channels))
    return layers


def _relu_features(rng: np.random.Generator, positions: int, channels: int) -> np.ndarray:
    rank = max(4, channels // 4)
    mixing = rng.normal(size=(rank, channels)) / np.sqrt(rank)
    bias = rng.normal(size=channels) - 0.5
    return np.maximum(rng.normal(size=(positions, rank)) @ mixing + bias, 0.0)

"""Layer-by-layer numerical proof that the Gram loss is biased poly2 MMD / (4 d^2).

For each layer's samples ``x`` (generated image) and ``s`` (style image) the report holds:

- the Gram loss ``||G_x - G_s||^2 / (4 d^2 m^2)`` and ``MMD_b^2[x, s; (a^T b)^2] / (4 d^2)``
  computed by its definition, as sums of kernel values over all pairs (the pairwise route: no
  Gram matrix), and their relative difference in float64 (the proof) and float32 (beside it);
- the same for their gradients with respect to x;
- the route ``mmd2`` takes by default for this kernel (the feature route, from Gram matrices),
  against the pairwise computation;
- the unbiased estimate, its gap to the biased one, and that gap against its closed form

      MMD_u^2 - MMD_b^2 = (m ||G_x/m||_F^2 - sum_i ||x_i||^4) / (m (m - 1)) + (same for s)

  (MATH.md: ``sum_{i != j} k = sum_ij k - sum_i k(x_i, x_i)`` with ``k = (a^T b)^2``).

The features may come from any extractor; :func:`synthetic_vgg_layers` makes ReLU-like ones with
VGG-19's layer shapes, so the check runs with no network and no weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from mmdstyle.kernels import HIGHEST, Polynomial
from mmdstyle.losses import gram_style_loss, mmd_style_loss
from mmdstyle.mmd import mmd2, select_route

__all__ = ["IdentityReport", "LayerIdentity", "synthetic_vgg_layers", "verify_gram_mmd_identity"]

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
    """All layers' checks; ``passed`` when every layer's float64 identities hold."""

    layers: tuple[LayerIdentity, ...]
    source: str

    @property
    def passed(self) -> bool:
        return all(layer.passed for layer in self.layers)

    def to_dict(self) -> dict:
        """A JSON-ready dictionary (schema: ``source``, ``passed``, ``layers``: list of fields)."""
        layers = [dataclasses.asdict(layer) | {"passed": layer.passed} for layer in self.layers]
        return {"source": self.source, "passed": self.passed, "layers": layers}

    def format_table(self) -> str:
        """A table for the terminal, one row per layer."""
        header = (
            f"{'layer':<9}{'m':>7}{'d':>5}  {'Gram loss':>11}  {'MMD/(4d^2)':>11}  "
            f"{'value f64':>9}  {'grad f64':>9}  {'value f32':>9}  {'grad f32':>9}  "
            f"{'route':<8}{'vs pairwise':>11}  {'unbiased gap':>12}  {'vs closed form':>14}  ok"
        )
        rows = [
            f"{r.layer:<9}{r.samples:>7}{r.channels:>5}  {r.gram_loss:>11.4e}  {r.mmd_loss:>11.4e}  "
            f"{r.value_error:>9.1e}  {r.gradient_error:>9.1e}  {r.value_error_float32:>9.1e}  "
            f"{r.gradient_error_float32:>9.1e}  {r.route:<8}{r.route_error:>11.1e}  "
            f"{_optional(r.unbiased_gap, 12, 4)}  {_optional(r.unbiased_gap_error, 14, 1)}  "
            f"{'yes' if r.passed else 'NO'}"
            for r in self.layers
        ]
        tolerance = self.layers[0].tolerance if self.layers else TOLERANCE
        verdict = (
            f"All float64 identities hold to a relative error of {tolerance:g}."
            if self.passed
            else f"FAILED: some float64 identity is off by more than {tolerance:g} (rows marked NO)."
        )
        title = f"Gram loss == biased MMD^2 with k(a, b) = (a^T b)^2, divided by 4 d^2 ({self.source})"
        note = "Errors are relative; float32 columns are reported, not used as the proof."
        return "\n".join([title, "", header, *rows, "", verdict, note])


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


def _pairwise_mmd_style_loss(x: Float[Array, "m d"], s: Float[Array, "n d"]) -> Float[Array, ""]:
    # The MMD by its definition, sums of kernel values k(x_i, x_j) = (x_i^T x_j)^2 over pairs:
    # no Gram matrix anywhere, so agreement with the Gram loss is a proof, not a tautology.
    return mmd_style_loss(x, s, Polynomial(2), "biased", route="pairwise")


@jax.jit
def _both_sides(x: Float[Array, "m d"], s: Float[Array, "m d"]) -> dict[str, Array]:
    """Both sides of the identity and their gradients, in the dtype of x (one compiled program)."""
    gram, gram_gradient = jax.value_and_grad(gram_style_loss)(x, s)
    mmd, mmd_gradient = jax.value_and_grad(_pairwise_mmd_style_loss)(x, s)
    return {"gram": gram, "gram_gradient": gram_gradient, "mmd": mmd, "mmd_gradient": mmd_gradient}


@jax.jit
def _routes_and_estimators(x: Float[Array, "m d"], s: Float[Array, "m d"]) -> dict[str, Array]:
    """The default (feature) route, and the unbiased estimator's gap (needs m >= 2)."""
    kernel = Polynomial(2)
    quantities = {"feature": mmd_style_loss(x, s, kernel, "biased", route="feature")}
    if x.shape[0] >= 2:
        quantities["unbiased"] = mmd_style_loss(x, s, kernel, "unbiased")
        # The gap from the pairwise route's tile sums, against the closed form from Gram matrices.
        biased = mmd2(x, s, kernel, "biased", route="pairwise")
        quantities["gap"] = mmd2(x, s, kernel, "unbiased", route="pairwise") - biased
        quantities["closed_form_gap"] = _closed_form_gap(x, s)
    return quantities


def _check_layer(name: str, x: np.ndarray, s: np.ndarray, tolerance: float) -> LayerIdentity:
    normalisation = 4.0 * float(x.shape[1]) ** 2
    x64, s64 = jnp.asarray(x, jnp.float64), jnp.asarray(s, jnp.float64)
    exact = _both_sides(x64, s64)
    single = _both_sides(x64.astype(jnp.float32), s64.astype(jnp.float32))
    other = _routes_and_estimators(x64, s64)
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
        route_error=_relative_error(other["feature"], exact["mmd"]),
        unbiased_mmd_loss=float(other["unbiased"]) if has_pairs else None,
        unbiased_gap=float(other["gap"]) / normalisation if has_pairs else None,
        unbiased_gap_error=_relative_error(other["gap"], other["closed_form_gap"]) if has_pairs else None,
        tolerance=tolerance,
    )


def verify_gram_mmd_identity(
    layers: Mapping[str, tuple[ArrayLike, ArrayLike]],
    *,
    tolerance: float = TOLERANCE,
    source: str = "user features",
) -> IdentityReport:
    """Check the Gram == MMD identity on each layer, in float64 and float32.

    Args:
      layers: layer name -> (generated samples (m, d), style samples (m, d)); feature maps
        (h, w, d) are reshaped.
      tolerance: float64 bound on every relative error of the proof (default 1e-10).
      source: where the features came from, shown in the report.

    Returns:
      An :class:`IdentityReport`; ``report.passed`` is False if any float64 identity fails.
    """
    if not layers:
        raise ValueError("layers is empty: pass at least one layer name -> (x, s) pair.")
    with jax.enable_x64(True):
        checks = []
        for name, (x, s) in layers.items():
            x, s = np.asarray(x, np.float64), np.asarray(s, np.float64)
            x = x.reshape(-1, x.shape[-1]) if x.ndim == 3 else x
            s = s.reshape(-1, s.shape[-1]) if s.ndim == 3 else s
            if x.ndim != 2 or x.shape != s.shape:
                raise ValueError(
                    f"Layer {name!r}: x and s must be samples (m, d) of the same shape for the Gram "
                    f"loss, got {x.shape} and {s.shape}."
                )
            checks.append(_check_layer(name, x, s, tolerance))
    return IdentityReport(tuple(checks), source)


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

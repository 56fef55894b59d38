"""Images seen through a feature extractor, layer by layer: samples, and two-sample tests.

A layer's feature map (h, w, d) is read as h * w samples in R^d (docs/math.md). Asking whether two
images have the same style is then asking whether two samples come from one distribution,
which is what the kernel two-sample test answers (Gretton et al. 2012): one permutation test
per layer, with Holm's correction because several layers are tested at once.

Positions of one feature map are not independent draws: neighbouring positions see overlapping
parts of the image. The tests therefore use random subsets of positions, and their p-values
measure how distinguishable two images' features are rather than exact error rates.

References:
    Gretton, Borgwardt, Rasch, Schölkopf & Smola, "A Kernel Two-Sample Test", JMLR 13, 2012.
    Holm, "A Simple Sequentially Rejective Multiple Test Procedure", Scand. J. Statistics 6, 1979.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from mmdstyle._checks import ESTIMATORS, check_choice, check_estimator, check_max_samples
from mmdstyle.features.layers import as_samples, extract_samples, resolve_layers, subsample
from mmdstyle.features.registry import extractor_or_default
from mmdstyle.kernels import AbstractKernel, check_kernel
from mmdstyle.mmd import select_route
from mmdstyle.style.images import fit_within, resize
from mmdstyle.style.specs import KernelExpression, RoutedKernel, mmd2_options, parse_kernel_spec
from mmdstyle.two_sample import mmd2_test

__all__ = [
    "LayerTest",
    "LayerTestReport",
    "holm_adjust",
    "image_two_sample_tests",
    "layer_two_sample_tests",
    "permutation_test_options",
]

#: Default positions per image and layer in a test: the pooled 2 x 1024 samples stay under
#: ``mmdstyle.two_sample.MATRIX_SAMPLES``, where ``method="auto"`` evaluates every permutation
#: from one pooled kernel matrix.
TEST_SAMPLES = 1024

MULTIPLE_TESTING_NOTE = (
    "Holm's correction over the {count} layer(s) keeps the chance of any false 'different' at or below "
    "{alpha:g} (family-wise). Positions of one image are correlated (overlapping receptive fields), while "
    "the permutation test treats the sampled positions as independent draws: read small p-values as "
    "'clearly distinguishable', not as exact error rates."
)


# ---------------------------------------------------------------- two-sample tests per layer


def holm_adjust(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: reject hypothesis i at level alpha iff adjusted_i <= alpha.

    With the p-values sorted, p_(1) <= ... <= p_(L), the adjusted p_(i) is
    max_{j <= i} min(1, (L - j + 1) p_(j)), returned in the original order.
    """
    p = np.asarray(p_values, np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must be a 1-D list of numbers in [0, 1], got {p_values!r}.")
    order = np.argsort(p, kind="stable")
    factors = len(p) - np.arange(len(p))
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(factors * p[order]))
    adjusted = np.empty_like(p)
    adjusted[order] = adjusted_sorted
    return adjusted


@dataclasses.dataclass(frozen=True)
class LayerTest:
    """One layer's permutation test; ``null_statistics`` are the permuted MMD^2 values."""

    layer: str
    channels: int
    positions: tuple[int, int]  # positions of each image's feature map
    samples: tuple[int, int]  # positions used (random subsets when there are more)
    kernel: str
    statistic: float
    p_value: float
    adjusted_p_value: float
    different: bool  # adjusted_p_value <= alpha
    null_statistics: np.ndarray = dataclasses.field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field but ``null_statistics``, and their 0.5, 0.95 and 0.99 quantiles."""
        fields = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "null_statistics"
        }
        quantiles = np.quantile(self.null_statistics, (0.5, 0.95, 0.99))
        return fields | {
            "null_quantiles": dict(zip(("0.5", "0.95", "0.99"), map(float, quantiles), strict=True))
        }


@dataclasses.dataclass(frozen=True)
class LayerTestReport:
    """All layers' tests between two images (or any two sets of per-layer samples)."""

    tests: tuple[LayerTest, ...]
    kernel: str
    estimator: str
    num_permutations: int
    alpha: float
    source: str

    @property
    def note(self) -> str:
        """What Holm's correction controls, and why small p-values mean distinguishable, not error rates."""
        return MULTIPLE_TESTING_NOTE.format(count=len(self.tests), alpha=self.alpha)

    @property
    def different_layers(self) -> tuple[str, ...]:
        """The layers whose Holm-adjusted p-value is at most ``alpha``, in test order."""
        return tuple(test.layer for test in self.tests if test.different)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the settings, ``different_layers``, ``note``, and ``layers``: one dict per layer."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "tests"}
        return settings | {
            "different_layers": list(self.different_layers),
            "note": self.note,
            "layers": [test.to_dict() for test in self.tests],
        }

    def format_table(self) -> str:
        """A text report: a row per layer (statistic, p-value, Holm p, verdict), the verdict and the note."""
        header = (
            f"{'layer':<10}{'d':>6}{'samples':>14}  {'MMD^2':>11}  {'p-value':>8}  {'Holm p':>8}  "
            f"different at {self.alpha:g}   kernel"
        )
        rows = [
            f"{t.layer:<10}{t.channels:>6}{f'{t.samples[0]}, {t.samples[1]}':>14}  {t.statistic:>11.4e}  "
            f"{t.p_value:>8.4f}  {t.adjusted_p_value:>8.4f}  {'yes' if t.different else 'no':<17}   "
            f"{t.kernel}"
            for t in self.tests
        ]
        title = (
            f"MMD two-sample tests per layer: {self.source} ({self.estimator} MMD^2, "
            f"{self.num_permutations} permutations; smallest possible p = "
            f"{1 / (self.num_permutations + 1):.2g})"
        )
        verdict = (
            f"Distinguishable at {', '.join(self.different_layers)}."
            if self.different_layers
            else "No layer tells the two apart."
        )
        return "\n".join([title, "", header, *rows, "", verdict, self.note])


def permutation_test_options(
    kernel: KernelExpression | RoutedKernel | AbstractKernel, estimator: str = "unbiased"
) -> dict[str, Any]:
    """The route keyword arguments of :func:`mmdstyle.mmd2_test` that a parsed kernel spec asks for.

    ``{}`` for a kernel or a spec without ``@``; ``route`` (and ``num_features`` for ``@rff(D)``)
    otherwise. The test draws the frequencies from its own key (:func:`mmdstyle.mmd2_test`).
    Checked before any data is read.

    Raises:
      ValueError: ``@sliced`` (the permutation test takes route='rff' or an exact route), or
        ``@rff`` with the linear-time estimator.
    """
    if not isinstance(kernel, RoutedKernel):
        return {}
    options = mmd2_options(kernel)
    if options["route"] == "sliced":
        raise ValueError(
            f"kernel {kernel}: the permutation test takes route='rff' or an exact route ('@pairwise', "
            f"'@feature'), not '@sliced'; drop the route to test {kernel.kernel} exactly."
        )
    select_route(kernel.build(None), estimator, kernel.route)  # the route and the estimator agree
    options.pop("key", None)
    return options


def _kernel_builder(
    kernel: str | KernelExpression | RoutedKernel | AbstractKernel, estimator: str
) -> tuple[str, Callable[[Array], AbstractKernel], dict[str, Any]]:
    """The kernel's label, how to build it from a layer's pooled samples, and the test's route options."""
    if isinstance(kernel, AbstractKernel):
        return str(kernel), lambda pooled: kernel, {}
    expression = parse_kernel_spec(kernel) if isinstance(kernel, str) else kernel
    if not hasattr(expression, "build"):
        check_kernel("kernel", expression)  # raises, naming what was passed
    return str(expression), expression.build, permutation_test_options(expression, estimator)


def layer_two_sample_tests(
    layers: Mapping[str, tuple[ArrayLike, ArrayLike]],
    kernel: str | KernelExpression | RoutedKernel | AbstractKernel = "gaussian(sigma=median)",
    *,
    num_permutations: int = 999,
    estimator: str = "unbiased",
    max_samples: int | None = TEST_SAMPLES,
    alpha: float = 0.05,
    seed: int = 0,
    source: str = "A vs B",
    mesh: jax.sharding.Mesh | None = None,
) -> LayerTestReport:
    """A permutation MMD test on each layer's two samples, with Holm-adjusted p-values.

    Args:
        layers: layer -> (samples of A (m, d), samples of B (n, d)); feature maps are reshaped.
        kernel: a kernel, or a kernel spec (``gaussian(sigma=median)``: the bandwidth is the median
            heuristic over each layer's pooled samples, which leaves the test exact). A spec may
            name a route: ``gaussian(sigma=median)@rff(1024)`` tests the random-feature MMD^2 of
            1024 features, drawn once per layer, in O(N R) per relabelling rather than O(N^2 d)
            (for many positions, ``max_samples=None``); ``@pairwise`` or ``@feature``: exact.
        num_permutations: random relabellings per layer (the smallest p-value is 1 / (B + 1)).
        estimator: the MMD^2 statistic, ``"unbiased"`` (default), ``"biased"`` or ``"linear"``.
        max_samples: at most this many random rows of each side per layer (``None``: all).
        alpha: family-wise level for the ``different`` verdicts.
        seed: seeds the subsets and the permutations.
        source: what is compared, for the report.
        mesh: devices to split each layer's samples over (:func:`mmdstyle.mmd2_test`'s ``mesh``).
    """
    if not layers:
        raise ValueError("layers is empty: pass at least one layer name -> (a, b) pair.")
    check_choice("estimator", estimator, ESTIMATORS)
    if not (isinstance(alpha, float | int) and 0 < alpha < 1):
        raise ValueError(f"alpha must be a level between 0 and 1, e.g. 0.05; got {alpha!r}.")
    check_max_samples(max_samples)
    label, build, route_options = _kernel_builder(kernel, estimator)
    # the route's name on each layer's kernel, e.g. "Gaussian(sigma=3.1)@rff(1024)"
    route_label = "@" + label.rpartition("@")[2] if route_options else ""
    rng = np.random.default_rng(seed)
    prepared = []  # every layer is checked before the first test runs
    for layer, (a, b) in layers.items():
        a, b = (as_samples(np.asarray(side)) for side in (a, b))
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"layer {layer!r}: the two sides have {a.shape[1]} and {b.shape[1]} channels.")
        used_a, used_b = subsample(a, max_samples, rng), subsample(b, max_samples, rng)
        check_estimator(estimator, used_a.shape[0], used_b.shape[0])
        prepared.append((layer, a, b, used_a, used_b))
    keys = jax.random.split(jax.random.key(seed), len(layers))
    results = []
    for key, (layer, a, b, used_a, used_b) in zip(keys, prepared, strict=True):
        built = build(jnp.concatenate([jnp.asarray(used_a), jnp.asarray(used_b)]))
        result = mmd2_test(
            used_a,
            used_b,
            built,
            num_permutations=num_permutations,
            key=key,
            estimator=estimator,
            mesh=mesh,
            **route_options,
        )
        results.append((layer, a, b, used_a, used_b, built, result))
    # p = (1 + count) / (B + 1), computed in the samples' dtype: recover the exact fraction
    p_values = [
        round(float(result.p_value) * (num_permutations + 1)) / (num_permutations + 1)
        for *_, result in results
    ]
    adjusted = holm_adjust(p_values)
    tests = tuple(
        LayerTest(
            layer=layer,
            channels=int(a.shape[1]),
            positions=(int(a.shape[0]), int(b.shape[0])),
            samples=(int(used_a.shape[0]), int(used_b.shape[0])),
            kernel=repr(built) + route_label,
            statistic=float(result.statistic),
            p_value=p,
            adjusted_p_value=float(adjusted_p),
            different=bool(adjusted_p <= alpha),
            null_statistics=np.asarray(result.permuted_statistics),
        )
        for (layer, a, b, used_a, used_b, built, result), p, adjusted_p in zip(
            results, p_values, adjusted, strict=True
        )
    )
    return LayerTestReport(tests, label, estimator, num_permutations, float(alpha), source)


def image_two_sample_tests(
    image_a: ArrayLike,
    image_b: ArrayLike,
    *,
    extractor: Any = None,
    size: int | None = 128,
    layers: Sequence[str] | None = None,
    source: str = "image A vs image B",
    **options: Any,
) -> LayerTestReport:
    """:func:`layer_two_sample_tests` on two images' features at each layer.

    Args:
        image_a: an RGB image (H, W, 3) in [0, 1], of any size.
        image_b: the image compared with it, likewise; its size may differ.
        extractor: any feature extractor; ``None``: the default one.
        size: each image is resized so that its longer side has ``size`` pixels (``None``: as is).
        layers: default: the extractor's style layers.
        source: what is compared, for the report.
        options: passed on (kernel, num_permutations, estimator, max_samples, alpha, seed).
    """
    extractor = extractor_or_default(extractor)
    layers = resolve_layers(extractor, layers)
    images = [np.asarray(image, np.float32) for image in (image_a, image_b)]
    if size is not None:
        images = [resize(image, fit_within(image.shape[:2], size)) for image in images]
    a, b = (extract_samples(extractor, image, layers) for image in images)
    return layer_two_sample_tests({layer: (a[layer], b[layer]) for layer in layers}, source=source, **options)

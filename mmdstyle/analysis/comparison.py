"""What does each style loss match? Run them side by side and measure every result under every kernel.

:func:`compare_losses` runs style transfer (or texture synthesis) once per loss spec with the same
settings, seed and steps, then measures each result's discrepancy from the style image at each
layer under several kernels: MMD^2 with a linear kernel compares channel means, with (a^T b)^2 the
Gram matrices (uncentred second moments), with a Gaussian every moment. A loss that lowers one
kernel's discrepancy and not another's shows what it matches and what it leaves alone.

Each kernel's data-driven bandwidth is fixed per layer from the style image's features, so all
results are measured with the same kernel. The starting image (the content, or the noise of a
synthesis) is measured too; the relative discrepancy ``MMD^2(result) / MMD^2(start)`` reads as the
fraction of the distance to the style that the result still has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmdstyle._checks import ESTIMATORS, check_choice, check_estimator, check_max_samples
from mmdstyle.features.layers import extract_samples, resolve_layers, subsample
from mmdstyle.features.registry import extractor_or_default
from mmdstyle.mmd import mmd2, pairwise_mmd2_to_target, pairwise_target, select_route
from mmdstyle.style.engine import (
    check_run_memory,
    initial_image,
    stage_images,
    style_strength,
    transfer,
    with_default_init,
)
from mmdstyle.style.objective import TransferConfig, check_config, with_default_weights
from mmdstyle.style.specs import (
    LOSS_PARAMETERS,
    StyleSpec,
    mmd2_options,
    parse_measure_spec,
    parse_style_spec,
)

__all__ = [
    "DEFAULT_KERNELS",
    "Comparison",
    "LossRun",
    "compare_losses",
    "default_measures",
    "discrepancy_measure",
    "style_discrepancies",
]

#: Kernels the results are measured with: means, Gram matrices (second moments), all moments.
DEFAULT_KERNELS = ("linear", "poly2", "gaussian(sigma=median)")

#: Samples per image and layer in a measurement: the pairwise (Gaussian, ...) kernels cost O(samples^2).
DISCREPANCY_SAMPLES = 4096


@dataclasses.dataclass(frozen=True)
class LossRun:
    """One loss's run: the result image, its history, and how long it took."""

    loss: str
    image: np.ndarray = dataclasses.field(repr=False)
    history: list[dict[str, Any]] = dataclasses.field(repr=False)
    seconds: float  # optimisation, compilation excluded
    compile_seconds: float
    stopped_early: str | None
    style_weight: float | None = None  # beta of this run (balanced: see compare_losses)

    @property
    def final_loss(self) -> float:
        """The loss at the last recorded step; NaN if the history is empty."""
        return float(self.history[-1]["loss"]) if self.history else float("nan")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The runs and the discrepancy matrix ``discrepancies[row, kernel, layer]``.

    Row 0 is the starting image, row ``i + 1`` the result of ``runs[i]``; each entry is MMD^2 of
    that image's features against the style image's at that layer under that kernel.
    """

    runs: tuple[LossRun, ...]
    kernels: tuple[str, ...]
    layers: tuple[str, ...]
    discrepancies: np.ndarray
    estimator: str
    start: np.ndarray = dataclasses.field(repr=False)
    style: np.ndarray = dataclasses.field(repr=False)
    content: np.ndarray | None = dataclasses.field(repr=False)
    config: TransferConfig | None = None

    @property
    def rows(self) -> tuple[str, ...]:
        """Row labels: ``start (<init>)`` for the starting image, then each run's loss spec."""
        init = self.config.init if self.config is not None else "content"
        return (f"start ({init if isinstance(init, str) else 'image'})", *(run.loss for run in self.runs))

    @property
    def relative(self) -> np.ndarray:
        """``discrepancies`` divided by the starting image's: 1 is no closer to the style, 0 matched."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.discrepancies / self.discrepancies[:1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: runs (loss, seconds, final loss, ...), kernels, layers, rows and both matrices."""
        runs = [
            {
                "loss": run.loss,
                "seconds": run.seconds,
                "compile_seconds": run.compile_seconds,
                "steps": len(run.history),
                "final_loss": run.final_loss,
                "style_weight": run.style_weight,
                "stopped_early": run.stopped_early,
            }
            for run in self.runs
        ]
        config = None
        if self.config is not None:
            config = {key: value for key, value in vars(self.config).items() if key not in ("init", "loss")}
            config["layer_losses"] = dict(self.config.layer_losses)
        return {
            "runs": runs,
            "kernels": list(self.kernels),
            "layers": list(self.layers),
            "rows": list(self.rows),
            "estimator": self.estimator,
            "discrepancies": self.discrepancies.tolist(),
            "relative": self.relative.tolist(),
            "config": config,
        }

    def format_table(self) -> str:
        """A text report: a line per run, then each kernel's :attr:`relative` values by row and layer."""
        width = max(len(row) for row in self.rows) + 2
        lines = [f"{'loss':<{width}}{'beta':>10}{'seconds':>9}{'compile':>9}{'final loss':>12}{'steps':>7}"]
        for run in self.runs:
            beta = f"{run.style_weight:>10.3g}" if run.style_weight is not None else f"{'':>10}"
            lines.append(
                f"{run.loss:<{width}}{beta}{run.seconds:>9.1f}{run.compile_seconds:>9.1f}"
                f"{run.final_loss:>12.4g}{len(run.history):>7}"
                + (f"  stopped: {run.stopped_early}" if run.stopped_early else "")
            )
        lines += [
            "",
            f"{self.estimator} MMD^2 of each image against the style (or the loss named), relative to the "
            "starting image's (1: no closer, 0: matched):",
        ]
        relative = self.relative
        for k, kernel in enumerate(self.kernels):
            header = [measure_title(kernel), " " * width + "".join(f"{layer:>10}" for layer in self.layers)]
            lines += ["", *header]
            for r, row in enumerate(self.rows):
                lines.append(f"{row:<{width}}" + "".join(f"{value:>10.3g}" for value in relative[r, k]))
        return "\n".join(lines)


def default_measures(losses: Sequence[str]) -> tuple[str, ...]:
    """``DEFAULT_KERNELS``, then each loss beyond MMD (``sw``, ``w2``, ``cmd``) that a loss spec uses.

    A comparison of ``gram`` and ``0.5*bn + 0.5*sw(directions=64)`` is measured under the three
    kernels and under ``sw(directions=64)`` itself.
    """
    atoms = [atom for loss in losses for _, atom in parse_style_spec(loss).terms]
    beyond = [str(atom) for atom in atoms if atom.kind in LOSS_PARAMETERS]
    return DEFAULT_KERNELS + tuple(dict.fromkeys(beyond))


def measure_title(name: str) -> str:
    """``kernel <spec>`` for a kernel's MMD^2, ``loss <spec>`` for a loss beyond MMD measured as itself."""
    return f"loss {name}" if isinstance(parse_measure_spec(name), StyleSpec) else f"kernel {name}"


def discrepancy_measure(
    style: np.ndarray,
    *,
    extractor: Any,
    kernels: Sequence[str] = DEFAULT_KERNELS,
    layers: Sequence[str] | None = None,
    estimator: str = "biased",
    max_samples: int | None = DISCREPANCY_SAMPLES,
    seed: int = 0,
) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``image -> (kernels, layers)`` array: MMD^2 of the image's features against ``style``'s.

    Each kernel spec is built here, once per layer, from the style's features (``sigma=median`` is
    the median heuristic over them), so every image is measured with the same kernel. A spec may
    instead name a loss beyond MMD, ``sw``, ``w2`` or ``cmd`` (with parameters,
    :func:`~mmdstyle.style.specs.parse_measure_spec`): that loss itself is the measure, built
    against the style once (``sw``'s directions drawn once from ``seed``). Images and
    style are used at the sizes given; beyond ``max_samples`` rows, a layer's samples are a random
    subset (seeded; the feature-route kernels, linear and poly2, would not need it). A kernel spec
    may name its route, ``gaussian(sigma=median)@rff(1024)``: a random route draws once per kernel
    from ``seed``, so every image is measured with the same frequencies or directions.
    """
    expressions = [parse_measure_spec(kernel) for kernel in kernels]
    layers = resolve_layers(extractor, layers)
    check_choice("estimator", estimator, ESTIMATORS)
    check_max_samples(max_samples)
    rng = np.random.default_rng(seed)
    style_samples = {
        layer: jnp.asarray(subsample(samples, max_samples, rng))
        for layer, samples in extract_samples(extractor, style, layers).items()
    }
    draws = jax.random.key(seed)
    keys = [jax.random.fold_in(draws, k) for k in range(len(expressions))]
    losses = {k for k, e in enumerate(expressions) if isinstance(e, StyleSpec)}  # measured as themselves
    built = {
        layer: [
            e.build(style_samples[layer], key=keys[k]) if k in losses else e.build(style_samples[layer])
            for k, e in enumerate(expressions)
        ]
        for layer in layers
    }
    routes = [{} if k in losses else mmd2_options(e, keys[k]) for k, e in enumerate(expressions)]
    # the style's own kernel sums of the pairwise route, a constant of every measurement: once
    targets = {
        (layer, k): pairwise_target(style_samples[layer], kernel, estimator)
        for layer in layers
        for k, kernel in enumerate(built[layer])
        if k not in losses and select_route(kernel, estimator, routes[k].get("route", "auto")) == "pairwise"
    }

    def measure(image: np.ndarray) -> np.ndarray:
        samples = extract_samples(extractor, image, layers)
        values = np.empty((len(expressions), len(layers)))
        for j, layer in enumerate(layers):
            x = jnp.asarray(subsample(samples[layer], max_samples, rng))
            check_estimator(estimator, x.shape[0], style_samples[layer].shape[0])
            for k, kernel in enumerate(built[layer]):
                if k in losses:  # the built term: the loss against the style, its side computed once
                    value = kernel(x, style_samples[layer])
                elif (layer, k) in targets:
                    value = pairwise_mmd2_to_target(x, targets[layer, k])
                else:
                    value = mmd2(x, style_samples[layer], kernel, estimator, **routes[k])
                values[k, j] = float(value)
        return values

    return measure


def style_discrepancies(images: Sequence[np.ndarray], style: np.ndarray, **options: Any) -> np.ndarray:
    """MMD^2 of each image's features against ``style``'s, per kernel and layer: (images, kernels, layers).

    ``options`` are those of :func:`discrepancy_measure` (``extractor`` is required).
    """
    measure = discrepancy_measure(style, **options)
    return np.stack([measure(image) for image in images])


def check_specs(losses: Sequence[str], kernels: Sequence[str]) -> None:
    """The loss specs (at least one, each once) and the kernel specs read, without a network."""
    if not losses or len(set(losses)) != len(losses):
        raise ValueError(f"losses must name at least one loss spec, each once; got {list(losses)}.")
    if not kernels:
        raise ValueError("kernels is empty: give at least one kernel spec to measure the results with.")
    for loss in losses:
        parse_style_spec(loss)
    for kernel in kernels:
        parse_measure_spec(kernel)


def check_comparison(
    content: np.ndarray | None,
    style: np.ndarray,
    losses: Sequence[str],
    config: TransferConfig,
    *,
    extractor: Any,
    kernels: Sequence[str],
    layers: Sequence[str] | None,
) -> tuple[str, ...]:
    """Every check :func:`compare_losses` makes before its first run; returns the measured layers.

    The specs (:func:`check_specs`), every run's settings, the memory the runs need (from the
    shapes alone) and the layers. Raises the ValueError (or MemoryError) of the first that fails.
    """
    check_specs(losses, kernels)
    for loss in losses:
        check_config(dataclasses.replace(config, loss=loss), extractor, 1, synthesis=content is None)
    check_run_memory(config, extractor, content, [style])
    return resolve_layers(extractor, layers if layers is not None else config.style_layers)


def compare_losses(
    content: np.ndarray | None,
    style: np.ndarray,
    losses: Sequence[str],
    config: TransferConfig | None = None,
    *,
    extractor: Any = None,
    kernels: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    estimator: str = "biased",
    max_samples: int | None = DISCREPANCY_SAMPLES,
    balance: bool = True,
    progress: bool = False,
    on_run: Callable[[int, LossRun], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Comparison:
    """Style transfer with each loss, then every result's discrepancy from the style under every kernel.

    Args:
        content: the content image (H, W, 3) in [0, 1]; ``None`` compares texture syntheses.
        style: the style image.
        losses: loss specs (``gram``, ``mmd:linear``, ``bn``, ...), each run with ``config`` otherwise
            unchanged: same seed, steps, weights and sizes.
        config: the shared settings (default :class:`TransferConfig`); its ``loss`` is ignored.
        extractor: default: the default extractor.
        kernels: kernel specs the results are measured with (MMD^2 under each), or ``sw``, ``w2``,
            ``cmd``: those losses themselves (see :func:`discrepancy_measure`). Default:
            :func:`default_measures` of ``losses``.
        layers: layers measured (default: the run's style layers).
        estimator: of the measuring MMD^2 (default biased, >= 0).
        max_samples: rows per image and layer in the measurement (``None``: all).
        balance: scale each loss's beta so that its style term at the starting image equals the
            first loss's (beta itself for the first): every loss starts with the same pull towards
            the style. Kernels' MMDs differ by orders of magnitude (a Gaussian MMD^2 is at most 2,
            a Gram loss grows with the features' fourth power), so unbalanced, one beta cannot
            serve them all. ``False``: every run uses ``config.style_weight``.
        progress: progress bars of the runs.
        on_run: called as ``on_run(index, run)`` after each run.
        stop: asked after every step (:func:`mmdstyle.style.transfer`'s ``stop``); once it says
            True, the current run stops there, no further loss runs, and the comparison holds the
            runs so far (the last one stopped early), measured as usual.

    Returns:
        A :class:`Comparison`. Every spec is checked before the first run starts.
    """
    config = with_default_init(TransferConfig() if config is None else config, content)
    losses = tuple(losses)
    kernels = default_measures(losses) if kernels is None else kernels
    extractor = extractor_or_default(extractor)
    checked = {"extractor": extractor, "kernels": kernels, "layers": layers}
    layers = check_comparison(content, style, losses, config, **checked)
    # the starting image and the style at the results' size, measured like the results; measuring
    # the start first checks the kernels, layers and estimator before any run
    stage_content, (measured_style,), start = _stage_start(config, content, style, config.stages()[-1])
    measure = discrepancy_measure(
        measured_style,
        extractor=extractor,
        kernels=kernels,
        layers=layers,
        estimator=estimator,
        max_samples=max_samples,
        seed=config.seed,
    )
    start_discrepancy = measure(start)
    beta = with_default_weights(config, extractor).style_weight
    weights = dict.fromkeys(losses, beta)
    if balance:
        try:
            strengths = {
                loss: style_strength(
                    dataclasses.replace(config, loss=loss), extractor, content, [style], as_the_run=True
                )
                for loss in losses
            }
        except ValueError as error:
            raise ValueError(f"{error} Or compare without balancing (balance=False, --no-balance).") from None
        weights = {
            loss: beta * strengths[losses[0]].value / strength.value for loss, strength in strengths.items()
        }
    runs = []
    for index, loss in enumerate(losses):
        run_config = dataclasses.replace(config, loss=loss, style_weight=weights[loss])
        result = transfer(content, [style], run_config, extractor=extractor, progress=progress, stop=stop)
        history = result.history
        run = LossRun(
            loss=loss,
            image=result.image,
            history=history,
            seconds=history[-1]["seconds"] if history else 0.0,
            # the balance compiled the run's program, if it ran
            compile_seconds=sum(record.get("compile_seconds", 0.0) for record in history)
            + (strengths[loss].compile_seconds if balance else 0.0),
            stopped_early=result.stopped_early,
            style_weight=weights[loss],
        )
        runs.append(run)
        if on_run is not None:
            on_run(index, run)
        if stop is not None and stop():
            break
    discrepancies = np.stack([start_discrepancy, *(measure(run.image) for run in runs)])
    return Comparison(
        runs=tuple(runs),
        kernels=tuple(str(parse_measure_spec(kernel)) for kernel in kernels),
        layers=layers,
        discrepancies=discrepancies,
        estimator=estimator,
        start=start,
        style=measured_style,
        content=stage_content,
        config=config,
    )


def _stage_start(
    config: TransferConfig, content: np.ndarray | None, style: np.ndarray, size: int
) -> tuple[np.ndarray | None, list[np.ndarray], np.ndarray]:
    """A stage's content and style images at ``size``, and the image a run would start it from.

    ``config`` has been through :func:`mmdstyle.style.engine.with_default_init`.
    """
    stage_content, styles, shape = stage_images(config, content, [style], size)
    return stage_content, styles, np.asarray(initial_image(config, stage_content, shape), np.float32)

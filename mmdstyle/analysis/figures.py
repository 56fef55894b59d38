"""Figures for runs and analyses, in one house style; the command line and the notebooks use them.

Every function returns a :class:`matplotlib.figure.Figure` and, given ``path``, also saves it
there atomically, in the format of the file's extension. Figures are built without pyplot, so
nothing accumulates in a global registry and no display is needed; in a notebook, a figure that
is the last value of a cell is shown inline once matplotlib's inline backend is on
(``%matplotlib inline`` in the first cell, as the project's notebooks do).

    plot_history(history)              loss curves of a transfer run
    plot_identity(report)              Gram loss against MMD per layer, and the relative errors
    plot_kernel_matrix(x, y, kernel)   the pooled kernel matrix whose block means make MMD^2
    plot_layer_bars(values)            any per-layer quantities, grouped bars
    plot_image_grid(images, titles)    images side by side
    plot_comparison(comparison)        the images of a loss comparison and its discrepancy matrix
    plot_layer_tests(report)           each layer's permutation null distribution and statistic
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmdstyle.features.files import atomic_path, check_output_folder
from mmdstyle.features.layers import as_samples, subsample
from mmdstyle.mmd import mmd2

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mmdstyle.analysis.comparison import Comparison
    from mmdstyle.analysis.layer_tests import LayerTestReport
    from mmdstyle.analysis.verification import IdentityReport
    from mmdstyle.kernels import AbstractKernel

__all__ = [
    "FIGURE_FORMATS",
    "plot_comparison",
    "plot_history",
    "plot_identity",
    "plot_image_grid",
    "plot_kernel_matrix",
    "plot_layer_bars",
    "plot_layer_tests",
    "save_figure",
]

#: File extensions figures can be saved as.
FIGURE_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg")

#: The house style: light grids, no top or right spines, one palette.
STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 120,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "image.cmap": "viridis",
    "axes.prop_cycle": "cycler(color=['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', "
    "'#17becf', '#7f7f7f'])",
}

#: Relative errors of exactly 0 are drawn at this height on log axes.
ZERO_FLOOR = 1e-18


def _styled(function: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure in the house style and save it when the call has a ``path``."""

    @functools.wraps(function)
    def wrapper(*args: Any, path: str | os.PathLike | None = None, **kwargs: Any) -> Figure:
        import matplotlib

        if path is not None:
            check_figure_path(path)
        with matplotlib.rc_context(STYLE):
            figure = function(*args, **kwargs)
            if path is not None:
                save_figure(figure, path)
        return figure

    return wrapper


def check_figure_path(path: str | os.PathLike, name: str = "figure") -> Path:
    """:func:`check_figure_format`, then the folder's checks.

    The folder's are :func:`~mmdstyle.features.files.check_output_folder`'s (missing, not
    writable, the path a folder). ``name`` says what the path is for in the messages (e.g.
    ``"--plot"``).
    """
    return check_output_folder(check_figure_format(path, name), name)


def check_figure_format(path: str | os.PathLike, name: str = "figure") -> Path:
    """``path`` as a Path; a ValueError for an extension figures cannot be saved as."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise ValueError(
            f"{name} {str(path)!r}: a figure cannot be saved in that format; use one of the extensions "
            f"{', '.join(FIGURE_FORMATS)}."
        )
    return path


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Save ``figure`` to ``path`` atomically (a temporary file, then a rename)."""
    path = check_figure_path(path)
    extension = path.suffix.lower().lstrip(".")
    with atomic_path(path, suffix=path.suffix) as temporary:
        figure.savefig(temporary, format="jpeg" if extension == "jpg" else extension)
    return path


def _new_figure(**options: Any) -> Figure:
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **options)


# ---------------------------------------------------------------- runs


@_styled
def plot_history(history: Sequence[Mapping[str, Any]], *, title: str = "", show_tv: bool = False) -> Figure:
    """The total loss and each unweighted term per step (log scale).

    Left: the total objective. Right: each style layer's term and each content layer's term as
    the engine recorded them (before the layer and alpha/beta weights), so the layers' progress
    can be compared; the TV sum too with ``show_tv`` (when it is part of the objective). Grey
    lines mark the start of each stage of a pyramid.
    """
    if not history:
        raise ValueError("the history is empty: there is nothing to plot.")
    steps = [record["step"] for record in history]
    figure = _new_figure(figsize=(11, 4))
    total_axis, terms_axis = figure.subplots(1, 2)
    losses = [record["loss"] for record in history]
    total_axis.plot(steps, losses, color="black")
    total_axis.set(title="objective", xlabel="step")
    _set_scale(total_axis, losses)
    curves = []
    for kind, line in (("style", "-"), ("content", "--")):
        for layer in history[0][kind]:
            curves.append([record[kind][layer] for record in history])
            terms_axis.plot(steps, curves[-1], line, label=f"{kind} {layer}")
    if show_tv:
        curves.append([record["tv"] for record in history])
        terms_axis.plot(steps, curves[-1], ":", label="TV")
    terms_axis.set(title="terms (unweighted)", xlabel="step")
    _set_scale(terms_axis, np.concatenate(curves))
    terms_axis.legend(ncols=2)
    stages = sorted({record.get("stage", 0) for record in history})
    for stage in stages[1:]:
        first = next(record["step"] for record in history if record.get("stage", 0) == stage)
        for axis in (total_axis, terms_axis):
            axis.axvline(first, color="grey", linewidth=0.5)
    if title:
        figure.suptitle(title)
    return figure


def _scale_for(values: Any) -> str:
    """``"log"`` for values >= 0 whose positive ones span a factor of 2 or more, else ``"linear"``.

    On a log axis a nearly flat curve gets tick labels that all read the same (2.02031e-1 five
    times); a linear axis labels its ticks with an offset, each one distinct. Zeros (a content
    term at the content image it starts from) do not make the axis linear, which would flatten
    every curve orders of magnitude below the largest into its floor: they are left out.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    positive = values[values > 0]
    if positive.size == 0 or np.any(values < 0):
        return "linear"
    return "log" if positive.max() >= 2 * positive.min() else "linear"


def _set_scale(axis: Any, values: Any) -> None:
    """The y scale :func:`_scale_for` chooses; on a log axis zeros are left out (masked), not clipped."""
    scale = _scale_for(values)
    if scale == "log":
        axis.set_yscale("log", nonpositive="mask")
    else:
        axis.set_yscale("linear")


# ---------------------------------------------------------------- the identity


@_styled
def plot_identity(report: IdentityReport) -> Figure:
    """The identity check as a figure: both sides per layer, and every error against the tolerance.

    Left: Gram loss against MMD / (4 d^2), one point per layer, on the diagonal when they agree.
    Right: every relative error of the report per layer, against the tolerance.
    """
    from matplotlib.ticker import NullFormatter

    figure = _new_figure(figsize=(12, 4.2))
    scatter_axis, errors_axis = figure.subplots(1, 2, width_ratios=(1, 2))
    gram = np.array([layer.gram_loss for layer in report.layers])
    mmd = np.array([layer.mmd_loss for layer in report.layers])
    positive = np.concatenate([gram, mmd])
    positive = positive[positive > 0]
    # whole decades: labelled major ticks, where a narrower range labelled crowded minor ones
    low, high = (
        (10.0 ** np.floor(np.log10(positive.min() / 2)), 10.0 ** np.ceil(np.log10(positive.max() * 2)))
        if positive.size
        else (1e-3, 1.0)
    )
    scatter_axis.plot([low, high], [low, high], color="grey", linewidth=0.8, label="y = x")
    for layer, x, y in zip(report.layers, gram, mmd, strict=True):
        color = "#2ca02c" if layer.passed else "#d62728"
        scatter_axis.scatter([x], [y], color=color, zorder=3)
    estimator = "MMD_b" if report.estimator == "biased" else "MMD_u"
    scatter_axis.set(
        xscale="log",
        yscale="log",
        xlim=(low, high),
        ylim=(low, high),
        xlabel="Gram loss  ||G_x - G_s||^2 / (4 d^2 m^2)",
        ylabel=f"{estimator}^2 / (4 d^2), k(a, b) = (a^T b)^2",
        title="the two sides, per layer",
    )
    scatter_axis.set_aspect("equal")
    for ticks in (scatter_axis.xaxis, scatter_axis.yaxis):
        ticks.set_minor_formatter(NullFormatter())  # the decades only: 2, 3, 4 x 10^k collided
    scatter_axis.legend(loc="lower right")
    _label_points(scatter_axis, [layer.layer for layer in report.layers], gram, mmd)
    series = {
        "value f64": [layer.value_error for layer in report.layers],
        "gradient f64": [layer.gradient_error for layer in report.layers],
        "value f32": [layer.value_error_float32 for layer in report.layers],
        "gradient f32": [layer.gradient_error_float32 for layer in report.layers],
        "feature vs pairwise route": [layer.route_error for layer in report.layers],
        "unbiased gap vs closed form": [layer.unbiased_gap_error for layer in report.layers],
    }
    names = [layer.layer for layer in report.layers]
    tolerance = report.layers[0].tolerance if report.layers else None
    _grouped_bars(
        errors_axis,
        {label: dict(zip(names, values, strict=True)) for label, values in series.items()},
        log=True,
        reference=(tolerance, "tolerance (float64)") if tolerance else None,
    )
    errors_axis.set(
        ylabel="relative error",
        title=f"relative errors (gradients with respect to the {report.gradient_with_respect_to}; "
        f"0 drawn at {ZERO_FLOOR:g})",
    )
    verdict = (
        "every float64 identity holds" if report.passed else "FAILED: some float64 identity does not hold"
    )
    figure.suptitle(f"Gram loss = {estimator}^2 / (4 d^2): {verdict}\n{report.source}", fontsize=10)
    return figure


#: Least vertical distance between two point labels, in axes fractions (a line of small text).
LABEL_GAP = 0.05
#: Labels at this height (axes fraction) and above go left of the diagonal, where a layer's name
#: (about a quarter of the axes' width) has room; below it, right of the diagonal.
LEFT_FROM = 0.37


def _label_points(axis: Any, names: Sequence[str], xs: Any, ys: Any) -> None:
    """Name each point of a diagonal scatter, in the empty upper-left half, labels never overlapping.

    Each label sits at its point's height where it can, moved up or down just enough to keep
    ``LABEL_GAP`` from the next (the sweep keeps them inside the axes), beside the diagonal at
    that height (left of it from ``LEFT_FROM`` up, right of it below), with a thin line to its
    point: close points (equal losses at two layers) get labels apart instead of one over the
    other. The axes' limits must be set.
    """
    to_axes = axis.transAxes.inverted()
    points = [to_axes.transform(axis.transData.transform((x, y))) for x, y in zip(xs, ys, strict=True)]
    order = sorted(range(len(points)), key=lambda index: points[index][1])
    heights = [float(np.clip(points[index][1], 0.03, 0.97)) for index in order]
    for i in range(1, len(heights)):  # upwards: at least a gap above the one below
        heights[i] = max(heights[i], heights[i - 1] + LABEL_GAP)
    heights[-1:] = [min(heights[-1], 0.97)] if heights else []
    for i in range(len(heights) - 2, -1, -1):  # downwards: back inside the top
        heights[i] = min(heights[i], heights[i + 1] - LABEL_GAP)
    for index, height in zip(order, heights, strict=True):
        axis.annotate(
            names[index],
            xy=points[index],
            xycoords="axes fraction",
            # left of the diagonal; lower down, where a name has no room there, right of it
            xytext=(height - 0.12, height) if height > LEFT_FROM else (height + 0.12, height),
            textcoords="axes fraction",
            ha="right" if height > LEFT_FROM else "left",
            va="center",
            fontsize="small",
            arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.5, "shrinkA": 2, "shrinkB": 4},
        )


def _grouped_bars(
    axis: Any,
    values: Mapping[str, Mapping[str, float | None]],
    *,
    log: bool = False,
    reference: tuple[float, str] | None = None,
) -> None:
    """Bars grouped by layer (x), one colour per series; missing values (None) leave a gap."""
    layers = list(dict.fromkeys(layer for series in values.values() for layer in series))
    count = max(1, len(values))
    width = 0.8 / count
    positions = np.arange(len(layers))
    for index, (label, series) in enumerate(values.items()):
        heights = np.array(
            [np.nan if series.get(layer) is None else series[layer] for layer in layers], float
        )
        if log:
            heights = np.where(heights == 0, ZERO_FLOOR, heights)
        axis.bar(positions + (index - (count - 1) / 2) * width, heights, width, label=label)
    if reference is not None:
        axis.axhline(reference[0], color="black", linestyle="--", linewidth=0.8, label=reference[1])
    axis.set_xticks(positions, layers, rotation=90 if len(layers) > 8 else 0)  # many: upright, apart
    if log:
        axis.set_yscale("log")
    # beside the axes, not over the bars
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axis.grid(axis="x", visible=False)


@_styled
def plot_layer_bars(
    values: Mapping[str, Mapping[str, float | None]],
    *,
    ylabel: str = "",
    title: str = "",
    log: bool = False,
    reference: tuple[float, str] | None = None,
) -> Figure:
    """Per-layer quantities as grouped bars: ``values[series][layer]``.

    ``reference`` = (height, label) draws a dashed horizontal line, e.g. a tolerance or a level.
    """
    if not values or not any(values.values()):
        raise ValueError("values is empty: give {series: {layer: value}}.")
    figure = _new_figure(figsize=(max(5.0, 1.2 * max(len(series) for series in values.values()) + 2), 3.6))
    axis = figure.subplots()
    _grouped_bars(axis, values, log=log, reference=reference)
    axis.set(ylabel=ylabel, title=title)
    return figure


# ---------------------------------------------------------------- kernels


@_styled
def plot_kernel_matrix(
    x: Any,
    y: Any,
    kernel: AbstractKernel,
    *,
    max_samples: int = 200,
    labels: tuple[str, str] = ("x", "y"),
    title: str | None = None,
    seed: int = 0,
) -> Figure:
    """The kernel matrix of the pooled samples [x; y], split into its blocks K_xx, K_xy, K_yy.

    The biased MMD^2 is mean(K_xx) + mean(K_yy) - 2 mean(K_xy): when x and y come from one
    distribution the four blocks look alike. At most ``max_samples`` random rows of each side are
    drawn (seeded).
    """
    rng = np.random.default_rng(seed)
    x, y = (subsample(as_samples(np.asarray(side)), max_samples, rng) for side in (x, y))
    import jax.numpy as jnp

    pooled = jnp.asarray(np.concatenate([x, y]))
    matrix = np.asarray(kernel(pooled, pooled))
    value = float(mmd2(x, y, kernel, "biased"))
    figure = _new_figure(figsize=(5.2, 4.4))
    axis = figure.subplots()
    image = axis.imshow(matrix, interpolation="nearest")
    for boundary in (len(x) - 0.5,):
        axis.axhline(boundary, color="white", linewidth=1.2)
        axis.axvline(boundary, color="white", linewidth=1.2)
    centres = (len(x) / 2, len(x) + len(y) / 2)
    axis.set_xticks(centres, labels)
    axis.set_yticks(centres, labels)
    axis.grid(False)
    figure.colorbar(image, ax=axis, shrink=0.85, label="k(a, b)")
    axis.set_title(title or f"{kernel!r}\nbiased MMD^2 = {value:.4g}")
    return figure


# ---------------------------------------------------------------- images and comparisons


def wrap_spec(text: str, width: int) -> str:
    """``text`` (a loss or kernel spec) in lines of at most ``width`` characters where it can be.

    Lines break before ``@`` and ``+`` and after ``,`` and ``*``, never inside a name or number; a
    part longer than ``width`` stays whole.
    """
    parts = re.findall(r"[^,*@+]+(?:[,*]|(?=[@+])|$)|[@+][^,*@+]*[,*]?", text)
    lines = [""]
    for part in parts:
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append(part.lstrip())
        else:
            lines[-1] += part
    return "\n".join(line.rstrip() for line in lines)


def _show_images(axes: Iterable[Any], images: Sequence[np.ndarray], titles: Sequence[str]) -> None:
    for axis, image, title in zip(axes, images, titles, strict=True):
        axis.imshow(np.clip(np.asarray(image, np.float32), 0.0, 1.0), interpolation="lanczos")
        axis.set_title(title, fontsize=8, fontweight="normal")
        axis.axis("off")


@_styled
def plot_image_grid(
    images: Sequence[np.ndarray], titles: Sequence[str] | None = None, *, columns: int | None = None
) -> Figure:
    """Images (H, W, 3) in [0, 1] side by side, ``columns`` per row (default: all in one row)."""
    if not len(images):
        raise ValueError("images is empty: there is nothing to show.")
    titles = list(titles) if titles is not None else [""] * len(images)
    if len(titles) != len(images):
        raise ValueError(f"give one title per image: {len(images)} images, {len(titles)} titles.")
    columns = columns or len(images)
    rows = math.ceil(len(images) / columns)
    figure = _new_figure(figsize=(2.4 * columns, 2.5 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    _show_images(axes[: len(images)], images, titles)
    for axis in axes[len(images) :]:
        axis.axis("off")
    return figure


@_styled
def plot_comparison(comparison: Comparison) -> Figure:
    """A :class:`Comparison` as a figure: the images, and each kernel's relative discrepancies.

    Top: content, style and each loss's result with its time. Bottom: one heat map per kernel (or
    loss measured as itself) of MMD^2(image, style) / MMD^2(start, style) per row and layer (log
    colours: dark is matched; grey: a ratio <= 0, which an unbiased or linear-time measurement can
    give).
    """
    import matplotlib
    from matplotlib.colors import LogNorm

    # here, as Comparison above is imported for type checking only: other figures load no engine
    from mmdstyle.analysis.comparison import measure_title

    runs = comparison.runs
    pictures = ([comparison.content] if comparison.content is not None else []) + [comparison.style]
    titles = (["content"] if comparison.content is not None else []) + ["style"]
    pictures += [run.image for run in runs]
    kernels = len(comparison.kernels)
    width = max(2.2 * len(pictures), 4.2 * kernels)
    # a long spec breaks where it reads well, to the room of its picture (8 pt: ~14 characters an inch)
    titles += [
        wrap_spec(run.loss, int(14 * width / len(pictures)))
        + f"\n{run.seconds:.1f} s"
        + (" (stopped)" if run.stopped_early else "")
        for run in runs
    ]
    figure = _new_figure(figsize=(width, 2.6 + 0.32 * len(comparison.rows) + 1.2))
    top, bottom = figure.subfigures(2, 1, height_ratios=(2.6, 0.32 * len(comparison.rows) + 1.2))
    _show_images(np.atleast_1d(top.subplots(1, len(pictures))), pictures, titles)
    relative = comparison.relative
    finite = relative[np.isfinite(relative) & (relative > 0)]
    low = min(1e-2, float(finite.min())) if finite.size else 1e-2
    high = max(1.0, float(finite.max())) if finite.size else 1.0
    norm = LogNorm(low, high)
    colours = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    axes = np.atleast_1d(bottom.subplots(1, kernels, sharey=True))
    for k, (axis, kernel) in enumerate(zip(axes, comparison.kernels, strict=True)):
        values = relative[:, k, :]
        # an unbiased or linear-time MMD^2 can be <= 0 (no evidence of a difference): grey, not "matched"
        shown = np.ma.masked_where(~(np.isfinite(values) & (values > 0)), np.clip(values, low, high))
        image = axis.imshow(shown, norm=norm, aspect="auto", cmap=colours)
        for (r, c), value in np.ndenumerate(values):
            shade = norm(np.clip(value, low, high)) if np.isfinite(value) and value > 0 else 1.0
            axis.text(
                c,
                r,
                f"{value:.2g}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if shade < 0.6 else "black",
            )
        axis.set_xticks(range(len(comparison.layers)), comparison.layers, rotation=30)
        axis.set_yticks(range(len(comparison.rows)), comparison.rows)
        axis.grid(False)
        axis.set_title(wrap_spec(measure_title(kernel), int(11 * 0.8 * width / kernels)), fontsize=9)
    losses = any(measure_title(kernel).startswith("loss") for kernel in comparison.kernels)
    measured = f"{comparison.estimator} MMD^2" + (" (or the loss named)" if losses else "")
    bottom.colorbar(image, ax=list(axes), shrink=0.9, label="value / value at the start")
    bottom.suptitle(
        f"what each loss matches: {measured} of each result against the style, "
        "relative to the starting image's (1: no closer, 0: matched)",
        fontsize=9,
    )
    return figure


# ---------------------------------------------------------------- two-sample tests


@_styled
def plot_layer_tests(report: LayerTestReport) -> Figure:
    """One panel per layer: the permuted statistics (the null distribution) and the observed one."""
    count = len(report.tests)
    columns = min(count, 5)
    rows = math.ceil(count / columns)
    figure = _new_figure(figsize=(2.9 * columns, 2.5 * rows + 0.5))
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axis, test in zip(axes, report.tests, strict=False):
        null = np.asarray(test.null_statistics)
        axis.hist(null, bins=30, color="#7f7f7f", alpha=0.8, label="permuted")
        axis.axvline(
            test.statistic, color="#d62728" if test.different else "#1f77b4", linewidth=2, label="observed"
        )
        span = max(float(null.max()), test.statistic) - min(float(null.min()), test.statistic)
        axis.set_xlim(
            min(float(null.min()), test.statistic) - 0.05 * span,
            max(float(null.max()), test.statistic) + 0.05 * span,
        )
        verdict = "different" if test.different else "not different"
        axis.set_title(
            f"{test.layer}: p = {test.p_value:.3g}\nHolm p = {test.adjusted_p_value:.3g}, {verdict}",
            fontsize=8,
        )
        axis.set_xlabel("MMD^2")
        axis.set_yticks([])
    for axis in axes[count:]:
        axis.axis("off")
    axes[0].legend(loc="upper right")
    figure.suptitle(
        f"{report.source}: permutation tests, {report.estimator} MMD^2, kernel {report.kernel}, "
        f"{report.num_permutations} permutations, family-wise level {report.alpha:g}",
        fontsize=9,
    )
    return figure

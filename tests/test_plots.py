"""Every figure of ``mmdstyle.analysis.figures``: returned as a Figure, saved atomically, refused cleanly."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from mmdstyle import Gaussian, Polynomial
from mmdstyle.analysis.comparison import Comparison, LossRun
from mmdstyle.analysis.figures import (
    plot_comparison,
    plot_history,
    plot_identity,
    plot_image_grid,
    plot_kernel_matrix,
    plot_layer_bars,
    plot_layer_tests,
    save_figure,
)
from mmdstyle.analysis.layer_tests import layer_two_sample_tests
from mmdstyle.analysis.verification import verify_gram_mmd_identity
from tests.figures import assert_nontrivial_png


def _history(steps: int = 6, stages: int = 2) -> list[dict]:
    return [
        {
            "step": step,
            "loss": 10.0 / (step + 1),
            "style": {"relu1_1": 1.0 / (step + 1), "relu2_1": 2.0 / (step + 1)},
            "content": {"relu4_2": 0.5 + step},
            "tv": 0.1,
            "stage": step * stages // steps,
        }
        for step in range(steps)
    ]


def _comparison(rng: np.random.Generator) -> Comparison:
    runs = tuple(
        LossRun(loss, rng.uniform(size=(12, 16, 3)), _history(3, 1), 1.5, 2.0, None)
        for loss in ("gram", "bn")
    )
    discrepancies = rng.uniform(0.1, 1.0, size=(3, 2, 2))
    discrepancies[0] = 1.0
    discrepancies[2, 1, 0] = -0.01  # an unbiased measurement can be negative: drawn grey
    return Comparison(
        runs=runs,
        kernels=("linear", "gaussian(sigma=median)"),
        layers=("relu1_1", "relu2_1"),
        discrepancies=discrepancies,
        estimator="biased",
        start=rng.uniform(size=(12, 16, 3)),
        style=rng.uniform(size=(16, 16, 3)),
        content=rng.uniform(size=(12, 16, 3)),
    )


def _identity():
    rng = np.random.default_rng(0)
    layers = {f"relu{i}_1": (rng.uniform(size=(9, 4)) ** i, rng.uniform(size=(9, 4))) for i in (1, 2)}
    return verify_gram_mmd_identity(layers)


FIGURES = {
    "history": lambda rng: plot_history(_history(), title="run", show_tv=True),
    "identity": lambda rng: plot_identity(_identity()),
    "kernel_matrix": lambda rng: plot_kernel_matrix(
        rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 1, Gaussian(1.0), labels=("a", "b")
    ),
    "layer_bars": lambda rng: plot_layer_bars(
        {"f64": {"relu1_1": 1e-16, "relu2_1": 0.0}, "f32": {"relu1_1": 1e-7, "relu2_1": None}},
        log=True,
        reference=(1e-10, "tolerance"),
        ylabel="relative error",
    ),
    "image_grid": lambda rng: plot_image_grid(
        [rng.uniform(size=(8, 8, 3)) for _ in range(5)], list("abcde"), columns=3
    ),
    "comparison": lambda rng: plot_comparison(_comparison(rng)),
    "layer_tests": lambda rng: plot_layer_tests(
        layer_two_sample_tests(
            {
                "l1": (rng.normal(size=(20, 2)), rng.normal(size=(20, 2)) + 2),
                "l2": (rng.normal(size=(20, 2)),) * 2,
            },
            num_permutations=49,
        )
    ),
}


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_is_returned_and_saved_as_a_real_picture(name, rng, tmp_path):
    figure = FIGURES[name](rng)
    assert isinstance(figure, Figure)
    path = save_figure(figure, tmp_path / f"{name}.png")
    assert_nontrivial_png(path)
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.png"]  # no temporary file left


def test_path_saves_in_the_format_of_the_extension(tmp_path):
    plot_history(_history(), path=tmp_path / "h.svg")
    plot_history(_history(), path=tmp_path / "h.pdf")
    plot_history(_history(), path=tmp_path / "h.jpg")
    assert (tmp_path / "h.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "h.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / "h.jpg").read_bytes().startswith(b"\xff\xd8")


def test_bad_paths_and_inputs_are_refused_before_drawing(tmp_path, rng):
    with pytest.raises(ValueError, match="cannot be saved in that format"):
        plot_history(_history(), path=tmp_path / "h.gif")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_history(_history(), path=tmp_path / "missing" / "h.png")
    with pytest.raises(ValueError, match="history is empty"):
        plot_history([])
    with pytest.raises(ValueError, match="one title per image"):
        plot_image_grid([rng.uniform(size=(4, 4, 3))], ["a", "b"])
    with pytest.raises(ValueError, match="values is empty"):
        plot_layer_bars({})
    assert list(tmp_path.iterdir()) == []


def test_the_kernel_matrix_shows_the_subsampled_blocks(rng):
    figure = plot_kernel_matrix(
        rng.normal(size=(500, 2)), rng.normal(size=(20, 2)), Polynomial(2), max_samples=50
    )
    (axis, _colorbar) = figure.axes
    assert axis.images[0].get_array().shape == (70, 70)
    assert "MMD^2" in axis.get_title()


def _drawn(figure):
    """The renderer of ``figure`` drawn as saving it draws it (Agg): texts placed, ticks labelled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def _text_boxes_overlap(renderer, texts) -> bool:
    from matplotlib.text import Text

    # the words alone: an annotation's own extent includes its line to the point
    boxes = [Text.get_window_extent(text, renderer) for text in texts if text.get_text()]
    return any(a.overlaps(b) for index, a in enumerate(boxes) for b in boxes[index + 1 :])


@pytest.mark.parametrize("count", [5, 16])
def test_the_identity_figure_labels_never_overlap(count):
    # the verify figure of VGG-19's 5 style layers and of all 16 ReLU layers, losses crowded
    # together and two layers with equal losses (their labels once sat one over the other)
    from mmdstyle.analysis.verification import IdentityReport, LayerIdentity

    losses = np.concatenate([[0.045, 0.045], np.geomspace(0.8, 1e-5, count - 2)])
    layers = tuple(
        LayerIdentity(
            f"relu{index // 4 + 1}_{index % 4 + 1}",
            64,
            8,
            "feature",
            loss,
            loss,
            *[1e-15] * 6,
            0.0,
            1e-15,
            1e-10,
        )
        for index, loss in enumerate(losses)
    )
    figure = plot_identity(IdentityReport(layers, "synthetic"))
    scatter, bars = figure.axes[:2]
    renderer = _drawn(figure)
    assert not _text_boxes_overlap(renderer, scatter.texts)  # the layers' names
    assert not _text_boxes_overlap(renderer, scatter.get_xticklabels() + scatter.get_yticklabels())
    assert not _text_boxes_overlap(renderer, bars.get_xticklabels())
    legend = bars.get_legend().get_window_extent(renderer)
    assert not any(legend.overlaps(patch.get_window_extent(renderer)) for patch in bars.patches)  # beside
    from matplotlib.text import Text

    frame = scatter.get_window_extent(renderer)
    for text in scatter.texts:  # inside the axes: clear of the tick labels
        box = Text.get_window_extent(text, renderer)
        assert frame.contains(box.x0, box.y0), text.get_text()
        assert frame.contains(box.x1, box.y1), text.get_text()


def test_a_flat_loss_curve_gets_ticks_that_differ():
    flat = [
        {"step": i, "loss": 0.202031 + 1e-7 * i, "style": {"relu": 0.2}, "content": {}, "tv": 0.0}
        for i in range(20)
    ]
    figure = plot_history(flat)
    _drawn(figure)
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels() if label.get_text()]
    assert len(labels) >= 3
    assert len(set(labels)) == len(labels), labels
    assert figure.axes[0].get_yscale() == "linear"
    assert plot_history(_history()).axes[0].get_yscale() == "log"  # a loss that falls: log scale


def test_terms_orders_of_magnitude_apart_share_a_log_axis_even_with_a_zero():
    # a transfer from the content image: the content term starts at 0 and rises to 1e9 while
    # the style term falls from 1e4 to 50; on a linear axis the style term was a flat line at 0
    history = [
        {
            "step": i,
            "loss": 1e7 / (i + 1),
            "style": {"relu": 1e4 / (i + 1) ** 2},
            "content": {"relu": 0.0 if i == 0 else 9e8},
            "tv": 0.0,
        }
        for i in range(15)
    ]
    terms = plot_history(history).axes[1]
    assert terms.get_yscale() == "log"
    low, high = terms.get_ylim()
    assert low < 1e4 / 15**2  # both curves inside, the zero left out
    assert high > 9e8


def test_long_specs_in_a_comparison_break_into_lines_that_never_overlap(rng):
    # compare --synthesize with notebook 03's characteristic losses and kernels: their specs,
    # one line each, ran into each other's titles
    mixture = "gaussian(sigma=median*(0.25,0.5,1,2,4))"
    losses = (
        "gram",
        "mmd:gaussian(sigma=median)@rff(1024)",
        f"mmd:{mixture}@rff(1024)",
        "mmd:energy@sliced(64)",
    )
    kernels = ("gaussian(sigma=median)", mixture, "energy")
    image = rng.uniform(size=(16, 16, 3))
    runs = tuple(LossRun(loss, image, _history(3, 1), 1.5, 2.0, None) for loss in losses)
    figure = plot_comparison(
        Comparison(
            runs=runs,
            kernels=kernels,
            layers=("relu", "relu_3"),
            discrepancies=rng.uniform(0.1, 1.0, size=(len(losses) + 1, len(kernels), 2)),
            estimator="biased",
            start=image,
            style=image,
            content=None,
        )
    )
    renderer = _drawn(figure)
    titles = [axis.title for axis in figure.axes if axis.title.get_text()]
    assert len(titles) == 1 + len(losses) + len(kernels)
    assert not _text_boxes_overlap(renderer, titles)
    assert any("\n" in title.get_text() for title in titles)  # the long ones were broken


def test_a_spec_breaks_only_between_its_parts():
    from mmdstyle.analysis.figures import wrap_spec

    spec = "mmd:gaussian(sigma=median*(0.25,0.5,1,2,4))@rff(1024)"
    assert wrap_spec(spec, 80) == spec
    assert wrap_spec(spec, 30) == "mmd:gaussian(sigma=median*\n(0.25,0.5,1,2,4))@rff(1024)"
    assert wrap_spec(spec, 12).replace("\n", "") == spec  # nothing lost, whatever the width
    assert wrap_spec("gram", 2) == "gram"  # a part longer than the width stays whole
    assert wrap_spec("0.5*gram + 9.19*bn", 10) == "0.5*gram\n+ 9.19*bn"

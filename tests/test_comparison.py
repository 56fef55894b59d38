"""``compare_losses`` / ``mmdstyle compare``: the runs, the discrepancy matrix, the figure."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmdstyle as ms
from mmdstyle import cli
from mmdstyle.analysis.comparison import (
    DEFAULT_KERNELS,
    Comparison,
    compare_losses,
    default_measures,
    measure_title,
    style_discrepancies,
)
from mmdstyle.features import cast_extractor, random_vgg19
from mmdstyle.style.objective import Objective, TransferConfig
from mmdstyle.style.samples import load_sample
from mmdstyle.style.specs import SpecError
from mmdstyle.wasserstein import sliced_directions
from tests.figures import assert_nontrivial_png
from tests.helpers import TINY_VGG_WIDTHS

pytestmark = pytest.mark.usefixtures("standard_dtype_promotion")  # optax on float32 images, see conftest
LAYERS = ("relu1_1", "relu2_1")


@pytest.fixture(scope="module")
def network():
    return random_vgg19(0, widths=TINY_VGG_WIDTHS)


@pytest.fixture(scope="module")
def images():
    return load_sample("chelsea"), load_sample("hubble")


def test_the_matrix_is_what_each_kernel_measures(network, rng):
    # linear: squared distance of the means; poly2: ||G_x/m - G_s/n||^2 (docs/math.md), in float64
    wide = cast_extractor(network, jnp.float64)
    image, style = rng.uniform(size=(16, 24, 3)), rng.uniform(size=(32, 32, 3))
    values = style_discrepancies(
        [image, style], style, extractor=wide, kernels=("linear", "poly2"), layers=LAYERS, max_samples=None
    )
    assert values.shape == (2, 2, 2)
    for j, layer in enumerate(LAYERS):
        x, s = (np.asarray(wide(jnp.asarray(picture), (layer,))[layer]) for picture in (image, style))
        x, s = x.reshape(-1, x.shape[-1]), s.reshape(-1, s.shape[-1])
        np.testing.assert_allclose(values[0, 0, j], np.sum((x.mean(0) - s.mean(0)) ** 2), rtol=1e-10)
        gram_gap = x.T @ x / len(x) - s.T @ s / len(s)
        np.testing.assert_allclose(values[0, 1, j], np.sum(gram_gap**2), rtol=1e-10)
    np.testing.assert_allclose(values[1], 0.0, atol=1e-12)  # the style against itself


def test_the_losses_beyond_mmd_measure_as_themselves(network, rng):
    # sw, w2, cmd as measures: the loss of each image's features against the style's, in float64;
    # sw's directions drawn once from fold_in(key(seed), index of the measure) as a random route's,
    # folded once more with the term's index (0) as a spec's build does
    wide = cast_extractor(network, jnp.float64)
    image, style = rng.uniform(size=(16, 24, 3)), rng.uniform(size=(32, 32, 3))
    measures = ("linear", "sw", "w2(epsilon=0.01)", "cmd(order=3)")
    values = style_discrepancies(
        [image, style], style, extractor=wide, kernels=measures, layers=LAYERS, seed=4
    )
    for j, layer in enumerate(LAYERS):
        x, s = (np.asarray(wide(jnp.asarray(picture), (layer,))[layer]) for picture in (image, style))
        x, s = x.reshape(-1, x.shape[-1]), s.reshape(-1, s.shape[-1])
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(4), 1), 0)
        directions = sliced_directions(x.shape[1], jnp.float64, key=key)
        expected = [
            ms.sliced_wasserstein_loss(x, s, directions=directions),
            ms.gaussian_w2_loss(x, s, epsilon=0.01),
            ms.cmd_loss(x, s, order=3),
        ]
        np.testing.assert_allclose(values[0, 1:, j], expected, rtol=1e-10)
    np.testing.assert_allclose(values[1], 0.0, atol=1e-9)  # the style against itself (w2: rounding)
    assert measure_title("sw") == "loss sw"
    assert measure_title("gaussian(sigma=median)") == "kernel gaussian(sigma=median)"


def test_the_losses_beyond_mmd_that_are_compared_are_measured_by_default(network, images):
    assert default_measures(["gram", "bn"]) == DEFAULT_KERNELS
    losses = ["gram", "0.5*bn + 0.5*sw(directions=4)", "w2", "cmd(order=3) + sw(directions=4)"]
    assert default_measures(losses) == (*DEFAULT_KERNELS, "sw(directions=4)", "w2", "cmd(order=3)")
    config = TransferConfig(size=16, steps=1, optimizer="adam", style_layers=("relu1_1",))
    comparison = compare_losses(None, images[1], losses[:2], config, extractor=network)
    assert comparison.kernels == (*DEFAULT_KERNELS, "sw(directions=4)")
    assert "loss sw(directions=4)" in comparison.format_table()


def test_a_data_driven_bandwidth_is_fixed_by_the_style(network, rng):
    style = rng.uniform(size=(24, 24, 3))
    values = style_discrepancies(
        [style, style[::-1]], style, extractor=network, kernels=("gaussian(sigma=median)",), layers=LAYERS
    )
    np.testing.assert_allclose(values[0], 0.0, atol=1e-6)  # float32 features
    assert np.all(values[1] > 1e-4)


def test_compare_runs_every_loss_and_measures_every_result(network, images):
    config = TransferConfig(size=32, steps=4, optimizer="adam", learning_rate=0.05, style_layers=LAYERS)
    seen = []
    comparison = compare_losses(
        images[0],
        images[1],
        ["mmd:linear", "gram"],
        config,
        extractor=network,
        on_run=lambda index, run: seen.append((index, run.loss)),
    )
    assert seen == [(0, "mmd:linear"), (1, "gram")]
    assert isinstance(comparison, Comparison)
    assert comparison.rows == ("start (content)", "mmd:linear", "gram")
    assert comparison.kernels == ("linear", "poly2", "gaussian(sigma=median)")
    assert comparison.discrepancies.shape == (3, 3, 2)
    np.testing.assert_array_equal(comparison.relative[0], 1.0)
    # each loss brings the result closer to the style under the kernel it is made of
    assert np.all(comparison.relative[1, 0] < 1.0)  # mmd:linear, linear kernel
    assert np.all(comparison.relative[2, 1] < 1.0)  # gram, poly2 kernel
    for run in comparison.runs:
        assert run.image.shape == (21, 32, 3)
        assert len(run.history) == 4
        assert run.stopped_early is None
        assert run.compile_seconds > 0
        assert np.isfinite(run.final_loss)
    data = json.loads(json.dumps(comparison.to_dict()))
    assert data["rows"] == list(comparison.rows)
    assert len(data["runs"]) == 2
    assert data["config"]["steps"] == 4
    assert "loss" not in data["config"]
    table = comparison.format_table()
    assert "kernel gaussian(sigma=median)" in table
    assert "start (content)" in table


def test_balancing_gives_every_loss_the_same_pull_at_the_start(network, images):
    config = TransferConfig(size=32, steps=1, optimizer="adam", style_layers=LAYERS, style_weight=10.0)
    losses = ["gram", "mmd:gaussian(sigma=median)", "bn"]
    balanced = compare_losses(*images, losses, config, extractor=network, kernels=("linear",))

    def pull(run):  # beta * sum_l w_l L_style^l at the starting image (step 0), w_l = 1/2
        return run.style_weight * sum(run.history[0]["style"].values()) / 2

    assert balanced.runs[0].style_weight == 10.0
    np.testing.assert_allclose([pull(run) for run in balanced.runs], pull(balanced.runs[0]), rtol=1e-5)
    assert balanced.runs[1].style_weight > 10 * balanced.runs[0].style_weight  # a Gaussian MMD is small
    plain = compare_losses(*images, losses[:2], config, extractor=network, kernels=("linear",), balance=False)
    assert [run.style_weight for run in plain.runs] == [10.0, 10.0]


def test_the_start_row_is_the_image_the_runs_started_from(network, images):
    # A synthesis starts from seeded noise; the run's first record holds its terms at that image.
    config = TransferConfig(size=16, steps=2, optimizer="adam", style_layers=("relu1_1",), seed=3)
    comparison = compare_losses(None, images[1], ["bn"], config, extractor=network, kernels=("linear",))
    assert comparison.rows == ("start (noise)", "bn")
    expected = np.random.default_rng(3).uniform(0.0, 1.0, (16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(comparison.start, expected)
    objective = Objective(dataclasses.replace(config, loss="bn"), network, None, [comparison.style])
    terms = objective.terms_of(jnp.asarray(comparison.start), network)
    np.testing.assert_allclose(
        comparison.runs[0].history[0]["style"]["relu1_1"], terms["style"]["relu1_1"], rtol=1e-6
    )


def test_every_spec_is_checked_before_the_first_run(network, images, monkeypatch, as_a_user):
    import mmdstyle.style.engine

    monkeypatch.setattr(mmdstyle.style.engine, "transfer", lambda *a, **k: pytest.fail("a run started"))
    config = TransferConfig(size=16, steps=1, style_layers=LAYERS)
    with pytest.raises(SpecError, match="unknown loss"):
        compare_losses(*images, ["gram", "mmd:linear", "gramm"], config, extractor=network)
    with pytest.raises(SpecError, match="kernel spec"):
        compare_losses(*images, ["gram"], config, extractor=network, kernels=("linear", "gauss"))
    with pytest.raises(ValueError, match="each once"):
        compare_losses(*images, ["gram", "gram"], config, extractor=network)
    with pytest.raises(ValueError, match="kernels is empty"):
        compare_losses(*images, ["gram"], config, extractor=network, kernels=())
    with pytest.raises(ValueError, match="estimator"):
        compare_losses(*images, ["gram"], config, extractor=network, estimator="exact")
    with pytest.raises(ValueError, match="relu9_9"):
        compare_losses(*images, ["gram"], config, extractor=network, layers=("relu9_9",))
    with pytest.raises(ValueError, match="at least 2 samples"):  # relu5_1 of a 16-pixel image: 1 position
        compare_losses(
            None, images[1], ["gram"], config, extractor=network, layers=("relu5_1",), estimator="unbiased"
        )


def test_cli_compare_writes_figure_json_and_images(tiny_vgg, tmp_path, capsys):
    output = tmp_path / "compare.png"
    arguments = ["--extractor", tiny_vgg, "--size", "32", "--steps", "3", "--optimizer", "adam", "--quiet"]
    arguments += ["--style-layers", ",".join(LAYERS), "--losses", "gram,mmd:poly(degree=3, c=1)"]
    arguments += ["-o", str(output), "--save-images", "--json", str(tmp_path / "runs.json")]
    assert cli.main(["compare", *arguments]) == 0
    assert "mmd:poly(degree=3, c=1)" in capsys.readouterr().out
    assert_nontrivial_png(output)
    data = json.loads((tmp_path / "runs.json").read_text())
    assert [run["loss"] for run in data["runs"]] == ["gram", "mmd:poly(degree=3, c=1)"]
    assert data["images"] == ["sample:chelsea", "sample:hubble"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "compare-1.png",
        "compare-2.png",
        "compare.png",
        "runs.json",
    ]


def test_cli_compare_interrupted_keeps_the_runs_so_far(tiny_vgg, tmp_path, monkeypatch, capsys):
    # Ctrl-C during the first of two runs: it stops after its step, the second never starts, and
    # the comparison of the run so far is measured and written; exit status 130, no traceback
    from mmdstyle.analysis import comparison

    run = comparison.transfer

    def interrupted(*arguments, **options):
        def first_chunk(step, image, records):
            os.kill(os.getpid(), signal.SIGINT)

        return run(*arguments, on_chunk=first_chunk, **options)

    monkeypatch.setattr(comparison, "transfer", interrupted)
    output = tmp_path / "compare.png"
    arguments = ["--extractor", tiny_vgg, "--size", "16", "--steps", "30", "--optimizer", "adam"]
    arguments += ["--style-layers", LAYERS[0], "--losses", "gram,bn", "-o", str(output), "--json"]
    assert cli.main(["compare", *arguments, str(tmp_path / "runs.json")]) == 130
    error = capsys.readouterr().err
    assert "interrupted in the run of gram (1 of 2)" in error
    assert "Traceback" not in error
    data = json.loads((tmp_path / "runs.json").read_text())
    assert [run["loss"] for run in data["runs"]] == ["gram"]
    assert data["runs"][0]["steps"] < 30
    assert data["runs"][0]["stopped_early"] == f"stopped on request after step {data['runs'][0]['steps'] - 1}"
    assert_nontrivial_png(output)


def test_cli_compare_writes_json_only_when_asked_and_says_what_it_wrote(tiny_vgg, tmp_path, capsys):
    output = tmp_path / "compare.png"
    arguments = ["--extractor", tiny_vgg, "--size", "16", "--steps", "1", "--optimizer", "adam"]
    assert (
        cli.main(["compare", *arguments, "--style-layers", LAYERS[0], "--losses", "gram", "-o", str(output)])
        == 0
    )
    assert [p.name for p in tmp_path.iterdir()] == ["compare.png"]
    assert f"wrote {output}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--losses", "gram,mmd:gauss"], "unknown kernel"),
        (["--kernels", "linear,poly(degree=0.5)"], "whole number"),
        (["--synthesize", "sample:gravel", "sample:brick"], "one STYLE"),
        (["--style-layers", "relu9_9"], "relu9_9"),
        (["-o", "compare.gif"], "-o"),
        (["-o", "missing/compare.png"], "does not exist"),
        (["-o", "same.png", "--json", "same.png"], "both name"),
        (["-o", "."], "is a folder"),
        (
            ["--losses", "gram,bn", "--save-images", "--json", "compare-1.png"],
            "--json and --save-images (compare-1.png) both name 'compare-1.png'",
        ),
    ],
)
def test_cli_compare_bad_input_exits_2_and_writes_nothing(
    tiny_vgg, tmp_path, monkeypatch, capsys, arguments, message
):
    monkeypatch.chdir(tmp_path)
    output = [] if "-o" in arguments else ["-o", "compare.png"]
    assert (
        cli.main(["compare", "--extractor", tiny_vgg, "--size", "16", "--steps", "1", *output, *arguments])
        == 2
    )
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

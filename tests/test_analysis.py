"""Per-layer two-sample tests and Holm's correction (mmdstyle/analysis/layer_tests.py)."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdstyle import Gaussian, cli
from mmdstyle.analysis.layer_tests import (
    LayerTestReport,
    holm_adjust,
    image_two_sample_tests,
    layer_two_sample_tests,
)
from mmdstyle.features import random_vgg19
from mmdstyle.style.samples import load_sample
from mmdstyle.style.specs import SpecError
from tests.figures import assert_nontrivial_png
from tests.helpers import TINY_VGG_WIDTHS

# ---------------------------------------------------------------- Holm


def test_holm_matches_a_worked_example():
    # p sorted: 0.01, 0.02, 0.03, 0.5 with L = 4: 0.04, max(0.04, 0.06), max(0.06, 0.06), max(.., 0.5)
    adjusted = holm_adjust([0.5, 0.01, 0.03, 0.02])
    np.testing.assert_allclose(adjusted, [0.5, 0.04, 0.06, 0.06], rtol=1e-15)
    np.testing.assert_allclose(holm_adjust([0.3, 0.6]), [0.6, 0.6])
    # step-down, not Hochberg's step-up (which would give 0.03, 0.045, 0.045 here)
    np.testing.assert_allclose(holm_adjust([0.01, 0.04, 0.045]), [0.03, 0.08, 0.08], rtol=1e-15)
    assert holm_adjust([0.9, 0.8]).max() <= 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_holm_is_between_the_raw_p_and_bonferroni_and_keeps_the_order(p):
    p = np.asarray(p)
    adjusted = holm_adjust(p)
    assert np.all(adjusted >= p - 1e-15)
    assert np.all(adjusted <= np.minimum(1.0, len(p) * p) + 1e-15)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adjusted[order]) >= 0)


def test_holm_refuses_what_is_not_a_p_value(as_a_user):
    for bad in ([1.5], [-0.1], [[0.1]], [np.nan]):
        with pytest.raises(ValueError, match="p-values"):
            holm_adjust(bad)


# ---------------------------------------------------------------- the tests' behaviour


def _null_p_values(repetitions: int, rng: np.random.Generator) -> np.ndarray:
    p = []
    for repetition in range(repetitions):
        a, b = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
        report = layer_two_sample_tests({"layer": (a, b)}, num_permutations=99, seed=repetition)
        p.append(report.tests[0].p_value)
    return np.asarray(p)


def test_p_values_are_uniform_under_the_null(rng):
    # 200 tests of two samples from one Gaussian: the p-values (multiples of 1/100) should be
    # uniform on (0, 1]. Kolmogorov-Smirnov distance against the uniform CDF; the 0.1% critical
    # value for n = 200 is 1.95 / sqrt(200) = 0.138 (loose, and the seed is fixed).
    p = np.sort(_null_p_values(200, rng))
    empirical = np.arange(1, len(p) + 1) / len(p)
    distance = max(np.max(np.abs(empirical - p)), np.max(np.abs(empirical - 1 / len(p) - p)))
    assert distance < 0.138
    assert np.mean(p <= 0.05) < 0.1  # the level holds, roughly


def test_p_values_are_small_under_a_clear_alternative(rng):
    a, b = rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + np.array([1.0, 0.0, 0.0])
    scaled = rng.normal(size=(60, 3)) * 2.0  # same mean, other spread: only a characteristic kernel sees it
    report = layer_two_sample_tests({"shift": (a, b), "spread": (a, scaled)}, num_permutations=199)
    assert [t.p_value for t in report.tests] == [1 / 200, 1 / 200]
    assert report.different_layers == ("shift", "spread")
    linear = layer_two_sample_tests({"spread": (a, scaled)}, "linear", num_permutations=199)
    assert linear.tests[0].p_value > 0.05  # means alone cannot tell a change of spread


def test_the_median_bandwidth_comes_from_the_pooled_samples(rng):
    from mmdstyle.bandwidth import median_bandwidth

    a, b = rng.normal(size=(40, 2)), rng.normal(size=(50, 2)) * 3
    report = layer_two_sample_tests({"l": (a, b)}, num_permutations=9)
    sigma = float(median_bandwidth(jnp.concatenate([jnp.asarray(a), jnp.asarray(b)])))
    assert report.tests[0].kernel == repr(Gaussian(sigma))
    fixed = layer_two_sample_tests({"l": (a, b)}, Gaussian(2.0), num_permutations=9)
    assert fixed.tests[0].kernel == "Gaussian(sigma=2)"


def test_subsets_are_drawn_per_layer_and_reported(rng):
    a, b = rng.normal(size=(500, 4)), rng.normal(size=(80, 4))
    test = layer_two_sample_tests({"l": (a, b)}, max_samples=100, num_permutations=9).tests[0]
    assert test.positions == (500, 80)
    assert test.samples == (100, 80)
    assert test.channels == 4
    assert test.null_statistics.shape == (9,)


def test_the_report_serialises_and_reads(rng):
    layers = {f"l{i}": (rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 2 * i) for i in range(3)}
    report = layer_two_sample_tests(layers, num_permutations=199, alpha=0.05, source="here")
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) == {
        "kernel",
        "estimator",
        "num_permutations",
        "alpha",
        "source",
        "different_layers",
        "note",
        "layers",
    }
    assert set(data["layers"][0]) == {
        "layer",
        "channels",
        "positions",
        "samples",
        "kernel",
        "statistic",
        "p_value",
        "adjusted_p_value",
        "different",
        "null_quantiles",
    }
    assert {"l1", "l2"} <= set(data["different_layers"])  # l0, one distribution, at chance
    assert "Holm" in data["note"]
    assert "correlated" in data["note"]
    table = report.format_table()
    assert "l2" in table
    assert "Distinguishable at " in table
    assert "smallest possible p = 0.005" in table
    assert isinstance(report, LayerTestReport)


def test_layer_tests_refuse_bad_settings(rng, as_a_user):
    pair = {"l": (rng.normal(size=(10, 2)), rng.normal(size=(10, 2)))}
    with pytest.raises(ValueError, match="layers is empty"):
        layer_two_sample_tests({})
    with pytest.raises(ValueError, match="alpha"):
        layer_two_sample_tests(pair, alpha=1.5)
    with pytest.raises(ValueError, match="max_samples"):
        layer_two_sample_tests(pair, max_samples=1)
    with pytest.raises(ValueError, match="estimator"):
        layer_two_sample_tests(pair, estimator="exact")
    with pytest.raises(SpecError, match="kernel spec"):
        layer_two_sample_tests(pair, "gauss(sigma=1)")
    with pytest.raises(ValueError, match="kernel"):
        layer_two_sample_tests(pair, 3.0)
    with pytest.raises(ValueError, match="num_permutations"):
        layer_two_sample_tests(pair, num_permutations=0)
    with pytest.raises(ValueError, match="channels"):
        layer_two_sample_tests({"l": (rng.normal(size=(10, 2)), rng.normal(size=(10, 3)))})
    with pytest.raises(ValueError, match="at least 2 samples"):  # checked before the first layer's test
        layer_two_sample_tests({**pair, "one": (np.ones((1, 2)), np.ones((5, 2)))})


# ---------------------------------------------------------------- images


@pytest.fixture(scope="module")
def network():
    return random_vgg19(0, widths=TINY_VGG_WIDTHS)


def test_two_textures_are_told_apart_and_two_halves_of_one_are_far_closer(network):
    gravel, brick = load_sample("gravel"), load_sample("brick")
    layers = ("relu1_1", "relu2_1")
    different = image_two_sample_tests(
        gravel, brick, extractor=network, size=48, layers=layers, num_permutations=99
    )
    assert different.different_layers == layers
    assert all(t.p_value == 0.01 for t in different.tests)
    # the left and right halves of one texture, mirrored so that neither is a copy of the other
    half = gravel.shape[1] // 2
    same = image_two_sample_tests(
        gravel[:, :half],
        gravel[:, half:][:, ::-1],
        extractor=network,
        size=48,
        layers=layers,
        num_permutations=99,
    )
    assert same.tests[0].statistic < different.tests[0].statistic / 5


def test_cli_test_writes_table_json_and_figure(tiny_vgg, tmp_path, capsys):
    report, figure = tmp_path / "t.json", tmp_path / "t.png"
    arguments = [
        "--extractor",
        tiny_vgg,
        "--size",
        "48",
        "--layers",
        "relu1_1,relu2_1",
        "--permutations",
        "99",
    ]
    assert cli.main(["test", *arguments, "--json", str(report), "--plot", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "sample:gravel vs sample:brick" in out
    assert "Holm" in out
    data = json.loads(report.read_text())
    assert data["images"] == ["sample:gravel", "sample:brick"]
    assert [layer["layer"] for layer in data["layers"]] == ["relu1_1", "relu2_1"]
    assert_nontrivial_png(figure)


def test_cli_test_with_the_random_feature_route(tiny_vgg, tmp_path, capsys):
    # '@rff(256)': each layer's test is mmd2_test's rff route, 256 features drawn once per layer;
    # gravel and brick differ at relu1_1 as clearly as with the exact kernel (p = 1 / (B + 1)).
    report = tmp_path / "t.json"
    arguments = ["--extractor", tiny_vgg, "--size", "48", "--layers", "relu1_1", "--permutations", "99"]
    kernel = ["--kernel", "gaussian(sigma=median)@rff(256)"]
    assert cli.main(["test", *arguments, *kernel, "--json", str(report)]) == 0
    assert "@rff(256)" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["kernel"] == "gaussian(sigma=median)@rff(256)"
    (layer,) = data["layers"]
    assert layer["kernel"].startswith("Gaussian(sigma=")
    assert layer["kernel"].endswith("@rff(256)")
    assert layer["p_value"] == 0.01


def test_layer_tests_refuse_the_sliced_route(rng, as_a_user):
    pair = {"l": (rng.normal(size=(10, 2)), rng.normal(size=(10, 2)))}
    with pytest.raises(ValueError, match="the permutation test takes route='rff' or an exact route"):
        layer_two_sample_tests(pair, "energy@sliced(64)")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--kernel", "gaussian(sigma=)"], "kernel spec"),
        (["sample:gravel"], "two images"),
        (["--layers", "relu9_9"], "relu9_9"),
        (["--plot", "out.gif"], "--plot"),
        (["--kernel", "gaussian(sigma=median)@fast"], "unknown route 'fast'"),
        (["--kernel", "(" * 500 + "linear" + ")" * 500], "nested more than 64 deep"),
        (["--kernel", "gaussian(sigma=median)@rff(7)"], "num_features must be even"),
        (["--kernel", "energy@sliced(64)"], "the permutation test takes route='rff'"),
        (["--kernel", "gaussian(sigma=median)@rff", "--estimator", "linear"], "no random route"),
    ],
)
def test_cli_test_bad_input_exits_2(tiny_vgg, tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["test", "--extractor", tiny_vgg, *arguments]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

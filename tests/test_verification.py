"""The identity report and the `mmdstyle verify` command."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmdstyle import cli, gram_style_loss
from mmdstyle.analysis.verification import (
    LayerIdentity,
    _image_sides,
    synthetic_vgg_layers,
    verify_gram_mmd_identity,
    verify_images,
)
from mmdstyle.features import MultiScaleRandom, cast_extractor, random_vgg19
from mmdstyle.style.images import resize_cover
from mmdstyle.style.samples import load_sample
from tests.figures import assert_nontrivial_png
from tests.helpers import TINY_VGG_WIDTHS


@pytest.fixture(scope="module")
def layers():
    # The shapes `mmdstyle verify --size 16` uses below, so compiled programs are shared.
    return synthetic_vgg_layers(image_size=16, seed=3)


def test_synthetic_layers_have_vgg_shapes_and_relu_statistics(layers):
    assert list(layers) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert layers["relu1_1"][0].shape == (16 * 16, 64)
    assert layers["relu5_1"][1].shape == (1, 512)
    x = layers["relu2_1"][0]
    assert x.min() == 0.0
    assert 0.2 < np.mean(x == 0.0) < 0.9


def test_report_passes_and_serialises(layers):
    report = verify_gram_mmd_identity(layers, source="test")
    assert report.passed
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is True
    assert data["source"] == "test"
    assert [row["layer"] for row in data["layers"]] == list(layers)
    expected_fields = {field.name for field in LayerIdentity.__dataclass_fields__.values()} | {"passed"}
    assert set(data["layers"][0]) == expected_fields
    for row in data["layers"]:
        assert row["route"] == "feature"
        assert max(row["value_error"], row["gradient_error"], row["route_error"]) <= 1e-10
        assert (
            row["unbiased_gap"] is None or row["unbiased_gap"] < 0
        )  # the unbiased estimate drops the positive self-pairs
    assert "relu3_1" in report.format_table()
    assert "All float64 identities hold" in report.format_table()


def test_a_failing_identity_is_reported(layers):
    # A tolerance no float64 computation can meet: the check must say so, not pass silently.
    report = verify_gram_mmd_identity({"relu1_1": layers["relu1_1"]}, tolerance=1e-30)
    assert not report.passed
    assert "FAILED" in report.format_table()


def test_bad_layers_are_refused():
    with pytest.raises(ValueError, match="layers is empty"):
        verify_gram_mmd_identity({})
    with pytest.raises(ValueError, match="same shape"):
        verify_gram_mmd_identity({"a": (np.ones((4, 3)), np.ones((5, 3)))})
    with pytest.raises(ValueError, match="multiple of 16"):
        synthetic_vgg_layers(image_size=40)


def test_cli_verify_synthetic_writes_json_and_exits_0(tmp_path, capsys):
    path = tmp_path / "report.json"
    assert cli.main(["verify", "--synthetic", "--size", "16", "--json", str(path)]) == 0
    assert "relu1_1" in capsys.readouterr().out
    assert json.loads(path.read_text())["passed"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left behind


def test_cli_verify_exits_1_when_an_identity_fails(capsys):
    assert cli.main(["verify", "--synthetic", "--size", "16", "--tolerance", "1e-300"]) == 1
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--synthetic", "--size", "20"], "multiple of 16"),
        (["--synthetic", "sample:gravel", "sample:brick"], "takes no images"),
        (["sample:gravel"], "two images"),
        (["missing.png", "sample:brick"], "no image file"),
        (["--extractor", "tiny-vgg", "--layers", "relu9_9"], "relu9_9"),
        (["--extractor", "nonexistent"], "unknown extractor"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(tiny_vgg, capsys, arguments, message):
    assert cli.main(["verify", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_a_bad_plot_name_before_computing(tmp_path, capsys):
    assert cli.main(["verify", "--synthetic", "--size", "16", "--plot", str(tmp_path / "r.xyz")]) == 2
    assert "--plot" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_console_entry_point_runs_in_a_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "mmdstyle", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0
    assert "verify" in result.stdout


# ---------------------------------------------------------------- real images, through a network


@pytest.fixture(scope="module")
def pair():
    return load_sample("chelsea"), load_sample("hubble")


def test_images_through_a_tiny_vgg_pass_with_image_gradients(pair):
    network = random_vgg19(0, widths=TINY_VGG_WIDTHS)
    report = verify_images(*pair, extractor=network, size=32, source="tiny")
    assert report.passed
    assert report.gradient_with_respect_to == "image"
    assert [layer.layer for layer in report.layers] == list(network.default_style_layers)
    assert [layer.samples for layer in report.layers] == [32 * 32, 16 * 16, 8 * 8, 4 * 4, 2 * 2]
    for layer in report.layers:
        assert layer.value_error <= 1e-12
        assert layer.gradient_error <= 1e-12
        # float32 agrees to float32 accuracy, not to float64's: reported, never the proof
        assert 0 <= layer.value_error_float32 < 1e-4
        assert layer.gradient_error_float32 < 1e-4
        assert layer.gram_loss > 0
    assert "with respect to the image" in report.format_table()


def test_the_image_gradient_is_the_gradient_of_the_gram_loss_through_the_network(pair):
    # Independent of the report's code path: jax.grad of the composed float64 function.
    network = cast_extractor(random_vgg19(0, widths=TINY_VGG_WIDTHS), jnp.float64)
    image, style = (jnp.asarray(resize_cover(p, (16, 16)), jnp.float64) for p in pair)
    target = network(style, ("relu2_1",))["relu2_1"].reshape(-1, 8)

    def loss(image):
        return gram_style_loss(network(image, ("relu2_1",))["relu2_1"].reshape(-1, 8), target)

    expected = jax.grad(loss)(image)
    sides = _image_sides(image, {"relu2_1": target}, network, ("relu2_1",), "biased")["relu2_1"]
    np.testing.assert_allclose(sides["gram_gradient"], expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(
        sides["mmd_gradient"], expected, rtol=1e-10, atol=1e-14 * np.abs(expected).max()
    )


def test_the_proof_runs_in_float64_when_the_session_is_float32(pair):
    # As on the command line: x64 off outside; verify_images turns it on for its own work.
    network = random_vgg19(0, widths=TINY_VGG_WIDTHS)
    with jax.enable_x64(False):
        report = verify_images(*pair, extractor=network, size=16, layers=("relu1_1",))
    assert report.passed
    assert report.layers[0].value_error < 1e-13
    assert report.layers[0].value_error_float32 > 1e-12  # the float32 column really is float32


def test_images_through_the_multiscale_network_pass(pair):
    network = MultiScaleRandom(sizes=(3, 11), features_per_size=4)  # 11: the FFT path
    report = verify_images(*pair, extractor=network, size=24, layers=("relu",))
    assert report.passed
    assert report.layers[0].channels == 8


def test_the_unbiased_estimator_is_reported_as_a_failure(pair):
    # The identity is the biased estimator's: comparing the Gram loss with the unbiased MMD must fail.
    network = random_vgg19(0, widths=TINY_VGG_WIDTHS)
    report = verify_images(*pair, extractor=network, size=16, layers=("relu1_1",), estimator="unbiased")
    assert not report.passed
    layer = report.layers[0]
    assert layer.value_error > 1e-6
    assert layer.route_error <= 1e-12
    assert layer.unbiased_gap_error <= 1e-10
    assert "BIASED" in report.format_table()
    assert report.to_dict()["estimator"] == "unbiased"


def test_a_plain_function_extractor_is_verified_when_it_keeps_float64(pair):
    def channels(image, layers):
        return {"rgb": jnp.concatenate([image, image**2], axis=-1)}

    report = verify_images(*pair, extractor=channels, size=8, layers=("rgb",))
    assert report.passed
    assert report.layers[0].channels == 6

    def float32_only(image, layers):
        return {"rgb": image.astype(jnp.float32)}

    with pytest.raises(ValueError, match="float64 features"):
        verify_images(*pair, extractor=float32_only, size=8, layers=("rgb",))


def test_verify_images_refuses_bad_settings(pair, as_a_user):
    network = random_vgg19(0, widths=TINY_VGG_WIDTHS)
    with pytest.raises(ValueError, match="estimator"):
        verify_images(*pair, extractor=network, estimator="linear")
    with pytest.raises(ValueError, match="size"):
        verify_images(*pair, extractor=network, size=0)
    with pytest.raises(ValueError, match="relu9_9"):
        verify_images(*pair, extractor=network, layers=("relu9_9",))
    with pytest.raises(ValueError, match="name the style layers"):
        verify_images(*pair, extractor=lambda image, layers: {}, size=8)


def test_cli_verify_on_images_writes_json_and_figure(tiny_vgg, tmp_path, capsys):
    report, figure = tmp_path / "report.json", tmp_path / "report.png"
    # the settings of the tests above, whose compiled programs this one reuses
    arguments = ["--extractor", tiny_vgg, "--size", "32", "--json", str(report), "--plot", str(figure)]
    assert cli.main(["verify", *arguments]) == 0
    out = capsys.readouterr().out
    assert "sample:chelsea against sample:hubble" in out
    data = json.loads(report.read_text())
    assert set(data) == {"source", "estimator", "gradient_with_respect_to", "passed", "layers"}
    assert data["gradient_with_respect_to"] == "image"
    assert data["passed"] is True
    assert len(data["layers"]) == 5
    assert_nontrivial_png(figure)
    unbiased = ["--size", "16", "--layers", "relu1_1", "--estimator", "unbiased"]
    assert cli.main(["verify", "--extractor", tiny_vgg, *unbiased]) == 1

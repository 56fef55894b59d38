"""The extractor registry: built-ins by name, a user's own extractor, clear errors."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from mmdstyle import cli
from mmdstyle.features import (
    VGG19,
    VGG19_CONVOLUTIONS,
    FeatureExtractor,
    MultiScaleRandom,
    available_extractors,
    get_extractor,
    register_extractor,
    registry_scope,
    resolve_extractor,
)

BUILTINS = ("default", "vgg19", "random-vgg19", "multiscale-random", "multiscale-random-small")


@pytest.fixture
def clean_registry():
    """Whatever the test registers is forgotten when it ends."""
    with registry_scope():
        yield


def test_builtins_are_listed_with_descriptions():
    names = available_extractors()
    assert set(BUILTINS) <= set(names)
    assert all(names[name] for name in BUILTINS)


def test_builtins_are_built_with_their_options():
    model = get_extractor("random-vgg19", seed=2, widths=((2, 2), (2, 2), (2,) * 4, (2,) * 4, (2,) * 4))
    assert isinstance(model, VGG19)
    assert isinstance(get_extractor("multiscale-random", sizes=(3,), features_per_size=2), MultiScaleRandom)
    small = get_extractor("multiscale-random-small")
    assert {f"relu_{size}" for size in (3, 5, 7, 11, 15, 23)} < set(small.layer_names)
    assert "relu_37" not in small.layer_names
    assert small(np.zeros((8, 8, 3)), ["relu"])["relu"].shape == (8, 8, 96)


@pytest.mark.usefixtures("clean_registry")
def test_a_users_extractor_is_registered_and_used():
    def mean_colour(image, layers=("mean",)):
        return {"mean": jnp.mean(jnp.asarray(image), axis=(0, 1), keepdims=True)}

    register_extractor("mean-colour", lambda: mean_colour, description="the image's mean colour")
    extractor = get_extractor("mean-colour")
    assert isinstance(extractor, FeatureExtractor)
    assert available_extractors()["mean-colour"] == "the image's mean colour"
    np.testing.assert_allclose(extractor(np.ones((4, 4, 3)) * 0.5, ("mean",))["mean"], 0.5)
    with pytest.raises(ValueError, match="already registered"):
        register_extractor("mean-colour", lambda: mean_colour)
    register_extractor("mean-colour", lambda: mean_colour, overwrite=True)


@pytest.mark.usefixtures("clean_registry", "as_a_user")
def test_bad_names_and_factories_are_explained():
    with pytest.raises(ValueError, match=r"unknown extractor 'vgg16'.*register_extractor"):
        get_extractor("vgg16")
    with pytest.raises(ValueError, match="must be callable"):
        register_extractor("broken", 42)
    with pytest.raises(ValueError, match="non-empty string"):
        register_extractor("", lambda: None)


def test_command_line_specs_resolve_to_extractors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMDSTYLE_HOME", str(tmp_path / "empty-cache"))
    assert isinstance(resolve_extractor(), MultiScaleRandom)
    assert "weight-free" in capsys.readouterr().err
    model = resolve_extractor("random-vgg19", pooling="max", padding="reflect")
    assert (model.pooling, model.padding) == ("max", "reflect")
    state = {}
    for name, convolution in zip(VGG19_CONVOLUTIONS, model.convolutions, strict=True):
        state[f"{name}.weight"] = np.asarray(convolution.kernel[...]).transpose(3, 2, 0, 1)
        state[f"{name}.bias"] = np.asarray(convolution.bias[...])
    np.savez(tmp_path / "weights.npz", **state)
    loaded = resolve_extractor(weights=tmp_path / "weights.npz", pooling="average")
    assert loaded.pooling == "average"
    np.testing.assert_array_equal(loaded.convolutions[5].kernel[...], model.convolutions[5].kernel[...])


@pytest.mark.usefixtures("as_a_user")
def test_weights_with_another_extractor_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--weights loads a VGG-19"):
        resolve_extractor("multiscale-random", weights=tmp_path / "w.npz")


def test_the_extractors_command_lists_them(capsys):
    assert cli.main(["extractors"]) == 0
    assert "multiscale-random" in capsys.readouterr().out

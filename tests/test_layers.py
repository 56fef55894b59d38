"""The rules every extractor caller shares (mmdstyle/features/layers.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmdstyle as ms
from mmdstyle.features import (
    ExtractorArgument,
    as_samples,
    cast_extractor,
    extract_samples,
    jitted_extractor,
    random_vgg19,
    resolve_layers,
    subsample,
)
from tests.helpers import TINY_VGG_WIDTHS, count_compilations


@pytest.fixture(scope="module")
def network():
    return random_vgg19(0, widths=TINY_VGG_WIDTHS)


def test_cast_extractor_changes_the_weights_dtype_only(network):
    wide = cast_extractor(network, jnp.float64)
    image = np.random.default_rng(0).uniform(size=(16, 16, 3))
    features = wide(jnp.asarray(image), ("relu2_1",))["relu2_1"]
    assert features.dtype == jnp.float64
    reference = network(jnp.asarray(image, jnp.float32), ("relu2_1",))["relu2_1"]
    # float32 against float64 through two convolutions of He-scaled weights: a few float32 ulps
    np.testing.assert_allclose(features, reference, rtol=1e-5, atol=1e-6)
    assert network.convolutions[0].kernel.dtype == jnp.float32  # the original is untouched
    function = lambda image, layers: {}  # noqa: E731
    assert cast_extractor(function, jnp.float64) is function


def test_layers_are_resolved_from_the_request_or_the_defaults(network):
    assert resolve_layers(network) == network.default_style_layers
    assert resolve_layers(network, role="content") == network.default_content_layers
    assert resolve_layers(network, ["relu1_2"]) == ("relu1_2",)
    assert resolve_layers(network, "relu1_2") == ("relu1_2",)
    with pytest.raises(ValueError, match=r"unknown layer name\(s\) \['relu0'\]"):
        resolve_layers(network, ["relu0"])
    with pytest.raises(ValueError, match="each layer once"):
        resolve_layers(network, ["relu1_1", "relu1_1"])
    with pytest.raises(ValueError, match="empty"):
        resolve_layers(network, [])
    plain = lambda image, layers: {}  # noqa: E731
    with pytest.raises(ValueError, match="has no default_content_layers"):
        resolve_layers(plain, role="content")
    assert resolve_layers(plain, ["anything"]) == ("anything",)  # no layer_names: nothing to check against


def test_samples_are_positions_by_channels(network):
    feature_map = np.arange(24.0).reshape(2, 3, 4)
    samples = as_samples(feature_map)
    assert samples.shape == (6, 4)
    np.testing.assert_array_equal(samples[4], feature_map[1, 1])  # row-major positions
    assert isinstance(as_samples(jnp.asarray(feature_map)), jax.Array)
    assert ms.as_samples is as_samples
    extracted = extract_samples(network, np.zeros((16, 8, 3), np.float32), ("relu1_1", "relu2_1"))
    assert extracted["relu1_1"].shape == (128, 4)
    assert extracted["relu2_1"].shape == (32, 8)


def test_an_extractor_argument_compiles_once_per_architecture():
    image = jnp.zeros((16, 16, 3), jnp.float32)
    first, second = random_vgg19(1, widths=TINY_VGG_WIDTHS), random_vgg19(2, widths=TINY_VGG_WIDTHS)
    jitted_extractor(ExtractorArgument(first), image, ("relu1_1",))
    compiled_before = jitted_extractor._cache_size()
    maps = jitted_extractor(ExtractorArgument(second), image, ("relu1_1",))
    # another network of the same shapes: its weights are arguments, the program is reused
    assert jitted_extractor._cache_size() == compiled_before
    np.testing.assert_allclose(maps["relu1_1"], second(image, ("relu1_1",))["relu1_1"], rtol=1e-6, atol=1e-6)
    plain = lambda image, layers: {"mean": jnp.mean(image, axis=(0, 1))}  # noqa: E731
    np.testing.assert_allclose(jitted_extractor(ExtractorArgument(plain), image, ("mean",))["mean"], 0.0)


def test_subsample_draws_distinct_rows_in_order(rng):
    samples = np.arange(100.0)[:, None]
    drawn = subsample(samples, 10, np.random.default_rng(1))
    assert drawn.shape == (10, 1)
    assert np.all(np.diff(drawn[:, 0]) > 0)
    assert subsample(samples, 100, rng) is samples
    assert subsample(samples, None, rng) is samples


def test_an_eager_call_of_a_built_in_network_runs_as_one_compiled_program(network):
    image = jnp.asarray(np.random.default_rng(0).uniform(size=(20, 24, 3)), jnp.float32)
    layers = ("relu3_1", "relu1_1")  # not in network order: the answer keeps the order asked for
    with count_compilations() as compiled:
        eager = network(image, layers)
    assert 0 < compiled[0] <= 3  # op by op, this network compiled over 20 programs
    assert list(eager) == list(layers)
    with count_compilations() as compiled:
        again = network(image, layers)
    assert compiled[0] == 0
    traced = jax.jit(lambda image, network: network(image, layers))(image, network)
    for layer in layers:
        np.testing.assert_array_equal(again[layer], eager[layer])
        np.testing.assert_allclose(eager[layer], traced[layer], rtol=1e-6, atol=1e-6)

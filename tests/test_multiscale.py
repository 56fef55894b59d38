"""The multi-scale random-filter network: FFT and direct correlation agree, the paper's set-up."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmdstyle.features import USTYUZHANINOV_SIZES, MultiScaleRandom, preprocess
from mmdstyle.features.multiscale import _direct_correlate, _fft_correlate


@functools.partial(jax.jit, static_argnames="layers")
def features(model, image, layers):
    return model(image, layers)


def reference_correlation(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Zero-padded "same" cross-correlation, as Lasagne computes with flip_filters=False."""
    size = kernel.shape[0]
    pad = size // 2
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    height, width = x.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(0, 1))
    return np.einsum("hwcij,ijcf->hwf", windows[:height, :width], kernel)


@pytest.mark.parametrize(("size", "image_size"), [(11, (16, 13)), (23, (9, 12)), (3, (6, 5))])
def test_fft_and_direct_correlation_equal_the_reference(rng, size, image_size):
    # float64: the FFT route's rounding is ~1e-16 relative per term, summed over ~size^2 terms
    x = rng.normal(size=(*image_size, 3))
    kernel = rng.normal(size=(size, size, 3, 4))
    expected = reference_correlation(x, kernel)
    for correlate in (_fft_correlate, _direct_correlate):
        actual = np.asarray(correlate(jnp.asarray(x)[None], jnp.asarray(kernel))[0])
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


def test_the_paper_configuration_is_the_default():
    model = MultiScaleRandom()
    assert model.sizes == USTYUZHANINOV_SIZES == (3, 5, 7, 11, 15, 23, 37, 55)
    assert [kernel.shape for kernel in model.filters] == [(k, k, 3, 128) for k in USTYUZHANINOV_SIZES]
    assert model.preprocessing == "caffe"
    for size, kernel in zip(model.sizes, model.filters, strict=True):
        limit = np.sqrt(6.0 / ((3 + 128) * size * size))  # Glorot uniform bound
        values = np.asarray(kernel[...])
        assert np.abs(values).max() <= limit
        assert np.abs(values).max() > 0.99 * limit


def test_maps_are_the_relu_of_all_scales_in_order(rng):
    model = MultiScaleRandom(sizes=(3, 13), features_per_size=5, seed=3, param_dtype=jnp.float64)
    image = rng.uniform(size=(20, 18, 3))
    outputs = features(model, jnp.asarray(image), ("conv", "relu", "relu_3", "relu_13"))
    assert outputs["relu"].shape == (20, 18, 10)
    np.testing.assert_array_equal(outputs["relu"], np.maximum(outputs["conv"], 0))
    np.testing.assert_array_equal(outputs["relu"][..., :5], outputs["relu_3"])
    x = np.asarray(preprocess(jnp.asarray(image)[None], "caffe")[0])
    expected = np.maximum(reference_correlation(x, np.asarray(model.filters[1][...])), 0)
    np.testing.assert_allclose(outputs["relu_13"], expected, rtol=1e-10, atol=1e-10 * expected.max())


def test_filters_depend_on_the_seed_only():
    same = [MultiScaleRandom(sizes=(3, 5), features_per_size=4, seed=s).filters[1][...] for s in (0, 0, 1)]
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.allclose(same[0], same[2])


def test_gradient_with_respect_to_the_image_is_finite_and_jitted(rng):
    model = MultiScaleRandom(sizes=(3, 11), features_per_size=4)
    image = jnp.asarray(rng.uniform(size=(2, 16, 16, 3)), jnp.float32)

    @jax.jit
    def loss(image, model):
        (maps,) = model(image, ("relu",)).values()
        return jnp.mean(maps**2)

    gradient = jax.grad(loss)(image, model)
    assert gradient.shape == image.shape
    assert bool(jnp.all(jnp.isfinite(gradient)))
    assert float(jnp.abs(gradient).max()) > 0


@pytest.mark.usefixtures("as_a_user")
def test_bad_options_are_explained():
    with pytest.raises(ValueError, match="distinct odd positive"):
        MultiScaleRandom(sizes=(3, 4))
    with pytest.raises(ValueError, match="features_per_size must be a positive integer"):
        MultiScaleRandom(features_per_size=0)
    with pytest.raises(ValueError, match="unknown layer"):
        MultiScaleRandom(sizes=(3,), features_per_size=2)(np.zeros((8, 8, 3)), ("relu_5",))

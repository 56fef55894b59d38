"""Winograd's F(2x2, 3x3) convolution is XLA's convolution, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmdstyle.features import winograd


def direct(x, kernel):
    numbers = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=numbers, precision="highest"
    )


@pytest.mark.parametrize(("height", "width"), [(3, 3), (4, 7), (9, 6), (12, 12)])
def test_it_is_the_direct_convolution_in_float64_values_and_gradients(rng, height, width):
    # odd and even output sizes (the last tile padded), the smallest map, a batch of two
    x = jnp.asarray(rng.normal(size=(2, height, width, 5)))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 5, 4)))
    cotangent = jnp.asarray(rng.normal(size=(2, height - 2, width - 2, 4)))

    def ours(x, kernel):
        return winograd.convolve(x, winograd.transformed_filters(kernel), precision="highest")

    np.testing.assert_allclose(ours(x, kernel), direct(x, kernel), rtol=1e-12, atol=1e-12)

    def pulled(convolution):
        return jax.grad(lambda x, k: jnp.sum(convolution(x, k) * cotangent), argnums=(0, 1))(x, kernel)

    for mine, theirs in zip(pulled(ours), pulled(direct), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-12)


def test_in_float32_it_differs_by_rounding_only(rng):
    # 512 channels in and out, as in VGG-19's fourth block: sums of 9 x 512 products rounded in
    # another order (the transforms first); measured 1e-6 of the largest output
    x = jnp.asarray(rng.normal(size=(1, 10, 10, 512)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 512, 512)) / np.sqrt(9 * 512), jnp.float32)
    ours = winograd.convolve(x, winograd.transformed_filters(kernel)).astype(jnp.float64)
    reference = direct(x.astype(jnp.float64), kernel.astype(jnp.float64))
    assert float(jnp.max(jnp.abs(ours - reference)) / jnp.max(jnp.abs(reference))) < 1e-5


def test_too_small_a_map_is_refused():
    with pytest.raises(ValueError, match="at least 3 x 3 pixels"):
        winograd.convolve(jnp.zeros((1, 2, 5, 3)), jnp.zeros((16, 3, 2)))


def test_it_is_taken_for_wide_float32_layers_only():
    assert winograd.pays(jnp.zeros((3, 3, 512, 512), jnp.float32))
    assert not winograd.pays(jnp.zeros((3, 3, 256, 512), jnp.float32))  # the transforms' traffic dominates
    assert not winograd.pays(jnp.zeros((3, 3, 512, 512), jnp.float64))  # float64: as written
    assert not winograd.pays(jnp.zeros((5, 5, 512, 512), jnp.float32))

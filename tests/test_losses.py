"""Style losses: the Gram loss IS biased poly2 MMD / (4 d^2), values and gradients, in float64."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmdstyle as ms
from mmdstyle import losses
from tests import reference
from tests.helpers import max_norm_relative_error

# The identity is exact algebra; in float64 both sides agree to a few ulps of the terms.
IDENTITY_RTOL = 1e-12


def relu_like(rng, m, d, sparsity=0.6):
    """Non-negative, sparse features, as after a ReLU: many exact zeros, heavy right tail."""
    values = np.maximum(rng.standard_exponential(size=(m, d)) * rng.normal(size=(m, d)), 0.0)
    return values * (rng.random(size=(m, d)) > sparsity)


# Shapes come from small sets so compiled programs are reused across hypothesis examples
# (compilation, not arithmetic, is what costs time here); the data vary freely.
SAMPLE_COUNTS = st.sampled_from([2, 3, 17, 64])
CHANNELS = st.sampled_from([1, 5, 24])
IDENTITY_CASES = {
    "m": SAMPLE_COUNTS,
    "d": CHANNELS,
    "relu": st.booleans(),
    "route": st.sampled_from(["feature", "pairwise"]),
    "seed": st.integers(0, 2**16),
}


@given(**IDENTITY_CASES)
@settings(max_examples=30, deadline=None)
def test_gram_loss_is_biased_poly2_mmd(m, d, relu, route, seed):
    rng = np.random.default_rng(seed)
    if relu:
        x, y = relu_like(rng, m, d), relu_like(rng, m, d)
    else:
        x, y = rng.normal(size=(m, d)), rng.normal(size=(m, d)) * 1.3 + 0.2
    gram = ms.gram_style_loss(x, y)
    mmd = ms.mmd2(x, y, ms.Polynomial(2), "biased", route=route) / (4.0 * d**2)
    np.testing.assert_allclose(float(gram), reference.gram_style_loss(x, y), rtol=IDENTITY_RTOL)
    # The pairwise route sums kernel values by definition: when the two distributions nearly
    # match, the result is a small difference of large sums, and float64 rounding is relative to
    # those sums (hypothesis found d = 1 with ||G_x - G_y|| / ||G_x|| ~ 1e-9), not to the result.
    kernel_sums = sum(
        np.abs(reference.kernel_matrix(reference.polynomial(2), a, b)).mean()
        for a, b in ((x, x), (y, y), (x, y), (x, y))  # the cross term counts twice, as in MMD
    ) / (4.0 * d**2)
    absolute = IDENTITY_RTOL * kernel_sums if route == "pairwise" else 1e-300
    np.testing.assert_allclose(float(mmd), float(gram), rtol=IDENTITY_RTOL, atol=absolute)


@given(**IDENTITY_CASES)
@settings(max_examples=20, deadline=None)
def test_gram_loss_and_mmd_have_equal_gradients(m, d, relu, route, seed):
    rng = np.random.default_rng(seed)
    x = relu_like(rng, m, d) if relu else rng.normal(size=(m, d))
    y = relu_like(rng, m, d) + 0.1 if relu else rng.normal(size=(m, d)) + 0.5
    gram_gradient, mmd_gradient = both_gradients(x, y, route)
    assert max_norm_relative_error(mmd_gradient, gram_gradient) <= IDENTITY_RTOL


@functools.partial(jax.jit, static_argnames="route")
def both_gradients(x, y, route):
    """Both losses' gradients in x, compiled as one program per shape (not one per eager operation)."""
    mmd_loss = functools.partial(ms.mmd_style_loss, route=route, block_size=7)
    return jax.grad(ms.gram_style_loss)(x, y), jax.grad(mmd_loss)(x, y)


@pytest.mark.parametrize("shape", [(4096, 64), (1024, 128), (256, 256), (64, 512)])
def test_identity_on_vgg_layer_shapes(rng, shape):
    # The sizes of relu1_1 ... relu4_1 for a 64 x 64 image.
    x, y = relu_like(rng, *shape), relu_like(rng, *shape)
    gram, mmd = ms.gram_style_loss(x, y), ms.mmd_style_loss(x, y)
    np.testing.assert_allclose(float(mmd), float(gram), rtol=IDENTITY_RTOL)


def test_identity_in_float32(rng):
    # Both sides run the same float32 operations (Gram matrices at HIGHEST precision), so they
    # agree far better than float32's 6e-8 suggests; 1e-6 allows for reassociation by XLA.
    x, y = relu_like(rng, 1024, 64).astype(np.float32), relu_like(rng, 1024, 64).astype(np.float32)
    gram, mmd = ms.gram_style_loss(x, y), ms.mmd_style_loss(x, y)
    assert gram.dtype == mmd.dtype == jnp.float32
    np.testing.assert_allclose(float(mmd), float(gram), rtol=1e-6)
    expected = reference.gram_style_loss(x, y)
    # Against float64: the Gram entries are sums of 1024 products, rounding ~ sqrt(1024) * 6e-8.
    np.testing.assert_allclose(float(gram), expected, rtol=1e-4)


def test_feature_maps_and_samples_give_the_same_loss(rng):
    x, y = rng.normal(size=(8, 6, 5)), rng.normal(size=(8, 6, 5))
    flat_x, flat_y = x.reshape(-1, 5), y.reshape(-1, 5)
    for loss in (ms.gram_style_loss, ms.mmd_style_loss, ms.bn_style_loss, ms.content_loss):
        np.testing.assert_allclose(float(loss(x, y)), float(loss(flat_x, flat_y)), rtol=1e-14)
    np.testing.assert_allclose(ms.gram_matrix(x), flat_x.T @ flat_x, rtol=1e-13)


def test_unequal_sizes_gram_refuses_and_points_to_mmd(rng, as_a_user):
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    with pytest.raises(ValueError, match=r"m=30 and n=20.*mmd_style_loss"):
        ms.gram_style_loss(x, y)
    # docs/math.md: with unequal sizes the natural form is ||G_x/m - G_y/n||_F^2 (over 4 d^2 here).
    expected = np.sum((x.T @ x / 30 - y.T @ y / 20) ** 2) / (4 * 4**2)
    np.testing.assert_allclose(float(ms.mmd_style_loss(x, y)), expected, rtol=1e-12)


@pytest.mark.parametrize("c", [0.0, 0.5, 3.0])
def test_poly2_with_offset_closed_form(rng, c):
    # docs/math.md: for (a^T b + c)^2 the c^2 terms cancel and
    # MMD_b^2 = ||Gx/m - Gy/n||_F^2 + 2c ||mean(x) - mean(y)||^2.
    x, y = rng.normal(size=(25, 3)), rng.normal(size=(17, 3)) + 0.4
    expected = np.sum((x.T @ x / 25 - y.T @ y / 17) ** 2) + 2 * c * np.sum((x.mean(0) - y.mean(0)) ** 2)
    for route in ("feature", "pairwise"):
        actual = ms.mmd2(x, y, ms.Polynomial(2, c=c), route=route)
        np.testing.assert_allclose(float(actual), expected, rtol=1e-12)


def test_linear_mmd_is_mean_matching(rng):
    x, y = rng.normal(size=(25, 3)), rng.normal(size=(17, 3)) + 0.4
    expected = np.sum((x.mean(0) - y.mean(0)) ** 2)
    np.testing.assert_allclose(float(ms.mmd2(x, y, ms.Linear())), expected, rtol=1e-13)


def test_mmd_style_loss_normalisation_is_the_same_for_every_kernel(rng):
    x, y = rng.normal(size=(20, 6)), rng.normal(size=(15, 6))
    for kernel in (ms.Gaussian(2.0), ms.Linear(), ms.Polynomial(3, c=1.0)):
        for estimator in ("biased", "unbiased", "linear"):
            expected = ms.mmd2(x, y, kernel, estimator) / (4 * 6**2)
            actual = ms.mmd_style_loss(x, y, kernel, estimator)
            np.testing.assert_allclose(float(actual), float(expected), rtol=1e-14)


def test_bn_style_loss_formula(rng):
    x, y = rng.normal(size=(40, 5)) * 2 + 1, rng.normal(size=(30, 5))
    expected = np.mean((x.mean(0) - y.mean(0)) ** 2 + (x.std(0) - y.std(0)) ** 2)  # population std
    np.testing.assert_allclose(float(ms.bn_style_loss(x, y, epsilon=0.0)), expected, rtol=1e-13)
    # The default epsilon moves sd by ~epsilon / (2 sd): invisible at this scale.
    np.testing.assert_allclose(float(ms.bn_style_loss(x, y)), expected, rtol=1e-7)


@pytest.mark.parametrize("counts", [(40, 40), (40, 30)])
def test_the_style_side_computed_once_gives_the_same_losses(rng, counts):
    # What a transfer evaluates at every step: the loss against the style's side, computed once.
    x, y = relu_like(rng, counts[0], 6), relu_like(rng, counts[1], 6) + 0.2
    gram, bn = losses.gram_target(y), losses.bn_target(y)
    assert gram.shape == (6, 6)
    assert bn.shape == (2, 6)
    gram_reference = ms.gram_style_loss if counts[0] == counts[1] else ms.mmd_style_loss
    pairs = [
        (functools.partial(losses.gram_loss_to_target, target=gram), functools.partial(gram_reference, y=y)),
        (functools.partial(losses.bn_loss_to_target, target=bn), functools.partial(ms.bn_style_loss, y=y)),
    ]
    for to_target, direct in pairs:
        np.testing.assert_allclose(float(to_target(x)), float(direct(x)), rtol=1e-13)
        np.testing.assert_allclose(jax.grad(to_target)(x), jax.grad(direct)(x), rtol=1e-12, atol=1e-300)


def test_bn_style_loss_gradient_is_finite_on_a_dead_relu_channel(rng):
    x, y = relu_like(rng, 50, 4), relu_like(rng, 50, 4) + 0.1
    x[:, 2] = 0.0  # an all-zero ReLU channel: its std is 0 and d sd / d var is infinite
    assert np.all(np.isfinite(jax.grad(ms.bn_style_loss)(x, y)))
    # Without the epsilon (the paper's formula, Li et al.'s code) the gradient is NaN there.
    assert not np.all(np.isfinite(jax.grad(lambda a: ms.bn_style_loss(a, y, epsilon=0.0))(x)))


def test_content_loss(rng, as_a_user):
    x, y = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    np.testing.assert_allclose(float(ms.content_loss(x, y)), 0.5 * np.sum((x - y) ** 2), rtol=1e-14)
    with pytest.raises(ValueError, match="shapes must match"):
        ms.content_loss(x, y[:5])


def test_gram_matrix_uses_highest_precision():
    # GPUs compute float32 matmuls in TF32 unless told otherwise; the identity needs HIGHEST.
    jaxpr = str(jax.make_jaxpr(ms.gram_matrix)(jnp.ones((4, 3), jnp.float32)))
    assert "precision=(Precision.HIGHEST, Precision.HIGHEST)" in jaxpr
    jaxpr = str(
        jax.make_jaxpr(lambda a, b: ms.mmd2(a, b, ms.Polynomial(2)))(jnp.ones((4, 3)), jnp.ones((4, 3)))
    )
    assert "Precision.DEFAULT" not in jaxpr
    assert "Precision.HIGHEST" in jaxpr


def test_constants_are_floats_on_large_layers():
    # relu1_1 of a 512 x 512 image: 4 * d^2 * m^2 = 4 * 64^2 * 262144^2 ~ 1.1e15 overflows int32.
    m, d = 262144, 64
    x = jnp.full((m, d), 1e-2, jnp.float32)
    y = jnp.zeros((m, d), jnp.float32)
    # G_x / m = 1e-4 everywhere, so E = d^2 * 1e-8 / (4 d^2) = 2.5e-9. Each Gram entry is a
    # float32 sum of 2^18 equal products: rounding up to ~1e-5 relative, doubled by the square.
    np.testing.assert_allclose(float(ms.gram_style_loss(x, y)), 2.5e-9, rtol=1e-4)
    np.testing.assert_allclose(float(ms.mmd_style_loss(x, y)), 2.5e-9, rtol=1e-4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: ms.gram_style_loss(np.ones((5, 2, 2, 3)), np.ones((5, 3))),
            r"samples \(m, d\) or a feature map",
        ),
        (lambda: ms.gram_matrix(np.ones(5)), r"samples \(m, d\) or a feature map \(h, w, d\)"),
        (lambda: ms.mmd_style_loss(np.ones((5, 3)), np.ones((5, 4))), "same number of channels"),
        (lambda: ms.bn_style_loss(np.ones((5, 3)), np.ones((5, 3)), epsilon=-1.0), "epsilon must be"),
        (lambda: ms.mmd_style_loss(np.ones((5, 3)), np.ones((5, 3)), estimator="v"), "estimator must be"),
    ],
)
def test_bad_inputs(as_a_user, call, message):
    with pytest.raises(ValueError, match=message):
        call()

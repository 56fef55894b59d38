"""Sliced Wasserstein and Gaussian W2 losses, and symmetric square roots, against NumPy/SciPy (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.test_util import check_grads

import mmdstyle as ms
from mmdstyle import wasserstein
from tests import reference

RTOL = 1e-12  # float64: the same sums in another order


def unit_rows(rng, count, d):
    directions = rng.normal(size=(count, d))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Sliced Wasserstein


@pytest.mark.parametrize(("m", "n"), [(12, 12), (12, 7), (5, 16), (1, 3)], ids=lambda v: str(v))
def test_sliced_wasserstein_is_the_quantile_distance_of_the_reference(rng, m, n):
    x, y = rng.normal(size=(m, 4)), rng.normal(size=(n, 4)) * 2.0 + 0.5
    directions = unit_rows(rng, 6, 4)
    value = ms.sliced_wasserstein_loss(x, y, directions=directions)
    np.testing.assert_allclose(value, reference.sliced_wasserstein(x, y, directions), rtol=RTOL)
    # the style's side computed once gives the same value, whichever set is larger
    target = wasserstein.sliced_wasserstein_target(y, directions)
    np.testing.assert_allclose(wasserstein.sliced_wasserstein_to_target(x, target), value, rtol=RTOL)


def test_on_the_coordinate_axes_it_is_the_mean_of_the_channels_1d_w2(rng):
    x, y = rng.normal(size=(20, 5)), rng.exponential(size=(20, 5))
    per_channel = np.mean((np.sort(x, axis=0) - np.sort(y, axis=0)) ** 2, axis=0)  # 1-D W2^2 each
    value = ms.sliced_wasserstein_loss(x, y, directions=np.eye(5))
    np.testing.assert_allclose(value, per_channel.mean(), rtol=RTOL)


def test_drawn_directions_are_d_unit_vectors_the_same_for_the_same_key(rng):
    x, y = rng.normal(size=(30, 6)), rng.normal(size=(25, 6)) + 1.0
    key = jax.random.key(3)
    drawn = wasserstein.sliced_directions(6, jnp.float64, key=key)
    assert drawn.shape == (6, 6)  # as many as channels by default, as Heitz et al.
    np.testing.assert_allclose(np.linalg.norm(drawn, axis=1), 1.0, rtol=1e-14)
    value = ms.sliced_wasserstein_loss(x, y, key=key)
    np.testing.assert_allclose(value, reference.sliced_wasserstein(x, y, np.asarray(drawn)), rtol=RTOL)
    assert float(ms.sliced_wasserstein_loss(x, y, key=key)) == float(value)
    assert float(ms.sliced_wasserstein_loss(x, y, key=jax.random.key(4))) != float(value)
    many = ms.sliced_wasserstein_loss(x, y, key=key, num_directions=40)
    directions = wasserstein.sliced_directions(6, jnp.float64, key=key, num_directions=40)
    np.testing.assert_allclose(many, reference.sliced_wasserstein(x, y, np.asarray(directions)), rtol=RTOL)


def test_sliced_wasserstein_gradients_are_right_and_finite_where_samples_coincide(rng):
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(7, 3))
    directions = unit_rows(rng, 4, 3)

    def loss(x, y):
        return ms.sliced_wasserstein_loss(x, y, directions=directions)

    check_grads(loss, (x, y), order=1, modes=["rev"])  # away from ties the loss is smooth
    tied = np.concatenate([x[:4], x[:4], y[:1]])  # repeated rows, and a row of y: ties in every sort
    gradient_x, gradient_y = jax.grad(loss, argnums=(0, 1))(tied, y)
    assert np.all(np.isfinite(gradient_x))
    assert np.all(np.isfinite(gradient_y))
    assert float(loss(y, y)) == 0.0
    np.testing.assert_array_equal(jax.grad(loss)(y, y), 0.0)


def test_sliced_wasserstein_refuses_bad_directions_and_missing_keys(rng):
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match=r"directions must be an \(L, d\) array .* got shape \(2, 4\)"):
        ms.sliced_wasserstein_loss(x, y, directions=np.ones((2, 4)) / 2.0)
    with pytest.raises(ValueError, match=r"row 1 has norm 2 .* Normalise them"):
        ms.sliced_wasserstein_loss(x, y, directions=np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
    with pytest.raises(ValueError, match=r"either directions .* or key"):
        ms.sliced_wasserstein_loss(x, y, directions=np.eye(3), key=jax.random.key(0))
    with pytest.raises(ValueError, match="needs an explicit key"):
        ms.sliced_wasserstein_loss(x, y)
    with pytest.raises(ValueError, match="num_directions must be a positive integer"):
        ms.sliced_wasserstein_loss(x, y, key=jax.random.key(0), num_directions=0)


# ---------------------------------------------------------------------------------------------
# Gaussian W2 and square roots


@pytest.mark.parametrize("epsilon", [1e-4, 0.0])
def test_gaussian_w2_matches_the_sqrtm_reference(rng, epsilon):
    x = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5))
    y = rng.normal(size=(30, 5)) @ rng.normal(size=(5, 5)) + 0.3
    value = ms.gaussian_w2_loss(x, y, epsilon=epsilon)
    np.testing.assert_allclose(value, reference.gaussian_w2(x, y, epsilon), rtol=1e-8)  # the bound
    target = wasserstein.gaussian_w2_target(y, epsilon=epsilon)
    np.testing.assert_allclose(wasserstein.gaussian_w2_to_target(x, target), value, rtol=RTOL)
    # a set against itself: 0 to rounding (tr S + tr S - 2 tr S, each about 5 * 30 here)
    assert abs(float(ms.gaussian_w2_loss(x, x, epsilon=epsilon))) < 1e-12 * np.trace(np.cov(x.T))


def test_gaussian_w2_gradients_are_right_and_finite_for_constant_channels(rng):
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(10, 3)) * 1.5
    check_grads(lambda x, y: ms.gaussian_w2_loss(x, y), (x, y), order=1, modes=["rev"])
    constant = np.concatenate([x[:, :2], np.zeros((12, 1))], axis=1)  # a dead ReLU channel
    for a, b in ((constant, y), (constant, constant), (x, x)):  # singular, equal covariances
        gradients = jax.grad(lambda a, b: ms.gaussian_w2_loss(a, b), argnums=(0, 1))(a, b)
        assert all(np.all(np.isfinite(g)) for g in gradients)


@pytest.mark.parametrize("method", ["eigh", "newton_schulz", "auto"])
def test_psd_sqrt_matches_scipy_and_its_gradient_solves_the_sylvester_equation(rng, method):
    a = rng.normal(size=(6, 6))
    matrix = a @ a.T + 0.5 * np.eye(6)  # condition number ~100: Newton-Schulz converges in 20 steps
    root = ms.psd_sqrt(matrix, method)
    np.testing.assert_allclose(root, np.real(scipy.linalg.sqrtm(matrix)), rtol=1e-10, atol=1e-12)
    # d tr(W R) in direction E: R dR + dR R = E, solved by SciPy, against the custom or unrolled VJP
    weights, direction = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    direction = direction + direction.T
    derivative = scipy.linalg.solve_sylvester(np.asarray(root), np.asarray(root), direction)
    gradient = jax.grad(lambda m: jnp.sum(weights * ms.psd_sqrt(m, method)))(matrix)
    np.testing.assert_allclose(np.sum(gradient * direction), np.sum(weights * derivative), rtol=1e-9)


def test_psd_sqrt_of_repeated_and_zero_eigenvalues_has_a_finite_gradient():
    for matrix in (np.eye(4), np.diag([2.0, 2.0, 0.0, 0.0])):
        gradient = jax.grad(lambda m: jnp.trace(ms.psd_sqrt(m, "eigh")))(matrix)
        assert np.all(np.isfinite(gradient))
    # tr(A^1/2) at the identity: d/dA = A^(-1/2) / 2 = I / 2
    np.testing.assert_allclose(jax.grad(lambda m: jnp.trace(ms.psd_sqrt(m)))(np.eye(4)), np.eye(4) / 2)


def test_gaussian_w2_and_psd_sqrt_refuse_bad_arguments(rng):
    x = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match="epsilon must be a finite number >= 0"):
        ms.gaussian_w2_loss(x, x, epsilon=-1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        ms.gaussian_w2_loss(x, x, method="svd")
    with pytest.raises(ValueError, match=r"matrix must be square \(d, d\), got shape \(2, 3\)"):
        ms.psd_sqrt(np.ones((2, 3)))
    with pytest.raises(ValueError, match="iterations must be a positive integer"):
        ms.psd_sqrt(np.eye(2), "newton_schulz", iterations=0)

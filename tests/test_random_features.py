"""The random-feature route: exact on its own approximate kernel, unbiased over keys, error ~ D^(-1/2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmdstyle as ms
from mmdstyle import random_features
from tests import reference
from tests.helpers import count_compilations

KERNELS = {
    "gaussian": ms.Gaussian(1.5),
    "laplacian": ms.Laplacian(2.0),
    "multi_gaussian": ms.MultiGaussian.around(1.5),
    "weighted": ms.MultiGaussian((0.5, 3.0), weights=(0.2, 1.3)),
    # spectral terms share the frequencies; the inner-product terms are computed exactly
    "mixed_sum": 0.3 * ms.Gaussian(1.0)
    + 0.5 * ms.Linear()
    + 2.0 * ms.Laplacian(1.0)
    + ms.Polynomial(2, c=1.0),
}
M, N, D = 40, 33, 3
# independent float64 formulas for the exact values
REFERENCES = {
    "gaussian": reference.gaussian(1.5),
    "laplacian": reference.laplacian(2.0),
    "multi_gaussian": lambda a, b: sum(reference.gaussian(1.5 * f)(a, b) for f in (0.25, 0.5, 1, 2, 4)) / 5,
    # the scalings and the split of the frequencies between the spectral terms, checked against
    # the exact kernel (the approximate-kernel test builds both sides from the same draws)
    "mixed_sum": lambda a, b: (
        0.3 * reference.gaussian(1.0)(a, b)
        + 0.5 * reference.linear(a, b)
        + 2.0 * reference.laplacian(1.0)(a, b)
        + reference.polynomial(2, 1.0)(a, b)
    ),
}


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(7)
    return rng.normal(size=(M, D)), rng.normal(size=(N, D)) * 1.2 + 0.4


def approximate_mmd2(x, y, kernel, estimator, key, num_features):
    """The pairwise route on the approximate kernel z(a)^T z(b), plus the exact part by its pairwise route."""
    frequencies, weights = random_features.draw_frequencies(kernel, key, num_features, x.shape[1], x.dtype)
    zx = random_features.random_fourier_features(x, frequencies, weights)
    zy = random_features.random_fourier_features(y, frequencies, weights)
    # one tile (block_size >= m): the same sums as the blocked route, compiled faster
    value = ms.mmd2(zx, zy, ms.Linear(), estimator, route="pairwise", block_size=M)
    _, exact = random_features.split_kernel(kernel)
    return value if exact is None else value + ms.mmd2(x, y, exact, estimator, route="pairwise", block_size=M)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("name", KERNELS)
def test_equals_the_pairwise_route_on_the_approximate_kernel(pair, name, estimator):
    x, y = (jnp.asarray(a) for a in pair)
    key = jax.random.key(3)
    routed = ms.mmd2(x, y, KERNELS[name], estimator, route="rff", num_features=64, key=key)
    expected = approximate_mmd2(x, y, KERNELS[name], estimator, key, 64)
    # float64, two orders of summation: rounding only
    np.testing.assert_allclose(routed, expected, rtol=1e-10, atol=1e-14)


def test_gradient_equals_the_gradient_on_the_approximate_kernel(pair):
    x, y = (jnp.asarray(a) for a in pair)
    kernel, key = KERNELS["mixed_sum"], jax.random.key(4)
    routed = jax.grad(lambda x: ms.mmd2(x, y, kernel, "unbiased", route="rff", num_features=32, key=key))(x)
    expected = jax.grad(lambda x: approximate_mmd2(x, y, kernel, "unbiased", key, 32))(x)
    np.testing.assert_allclose(routed, expected, rtol=1e-10, atol=1e-14)


def test_the_bandwidth_is_differentiable(pair):
    x, y = (jnp.asarray(a) for a in pair)
    key = jax.random.key(5)

    def value(sigma):
        return ms.mmd2(x, y, ms.Gaussian(sigma), route="rff", num_features=32, key=key)

    # the frequencies are omega = g / sigma: a central difference checks d/dsigma through them
    step = 1e-6
    numeric = (value(1.5 + step) - value(1.5 - step)) / (2 * step)
    np.testing.assert_allclose(jax.grad(value)(1.5), numeric, rtol=1e-7)


def test_blocks_of_rows_sum_to_the_whole(rng):
    # 2048 features -> 1024 frequencies -> blocks of 1024 rows: three blocks, the last one padded
    x, y = rng.normal(size=(2500, 2)), rng.normal(size=(300, 2))
    key = jax.random.key(6)
    routed = ms.mmd2(x, y, ms.Gaussian(1.0), "unbiased", route="rff", num_features=2048, key=key)
    frequencies, weights = random_features.draw_frequencies(ms.Gaussian(1.0), key, 2048, 2, jnp.float64)
    sx = random_features.random_fourier_features(jnp.asarray(x), frequencies, weights).sum(axis=0)
    sy = random_features.random_fourier_features(jnp.asarray(y), frequencies, weights).sum(axis=0)
    m, n = len(x), len(y)
    # the unbiased formula as written in docs/math.md, with W = 1
    expected = (sx @ sx - m) / (m * (m - 1)) + (sy @ sy - n) / (n * (n - 1)) - 2 * sx @ sy / (m * n)
    np.testing.assert_allclose(routed, expected, rtol=1e-10)


@pytest.mark.parametrize("name", ["gaussian", "laplacian", "weighted"])
def test_features_estimate_the_kernel_without_bias(name):
    kernel = KERNELS[name]
    a = jnp.asarray([[0.3, -0.2, 0.5], [0.0, 0.0, 0.0]])
    b = jnp.asarray([[1.0, 0.4, -0.7], [0.0, 0.0, 0.0]])
    # 10^5 frequencies; each estimate averages cos terms bounded by 1, so the standard error is
    # at most sqrt(sum w_r^2) (0.005 here, 0.0058 for the weighted pair); 5 of those is the margin
    frequencies, weights = random_features.draw_frequencies(
        kernel, jax.random.key(8), 200_000, 3, jnp.float64
    )
    za = random_features.random_fourier_features(a, frequencies, weights)
    zb = random_features.random_fourier_features(b, frequencies, weights)
    np.testing.assert_allclose(jnp.sum(za * zb, axis=1)[0], kernel(a, b)[0, 0], atol=5 * 0.0058)
    # |z(a)|^2 = psi(0) = sum of the weights, exactly
    np.testing.assert_allclose(jnp.sum(za * za, axis=1), kernel(a, a).diagonal(), rtol=1e-12)


def estimates_over_keys(x, y, kernel, estimators, num_features, keys):
    """The route's estimates for each key (rows) and estimator (columns), in one program."""

    def estimates(key):
        return jnp.stack(
            [ms.mmd2(x, y, kernel, e, route="rff", num_features=num_features, key=key) for e in estimators]
        )

    return jax.jit(jax.vmap(estimates))(keys)


@pytest.mark.parametrize("name", ["gaussian", "laplacian", "multi_gaussian", "mixed_sum"])
def test_unbiased_over_keys(pair, name):
    x, y = (jnp.asarray(a) for a in pair)
    kernel, estimators = KERNELS[name], ("biased", "unbiased")
    estimates = estimates_over_keys(x, y, kernel, estimators, 20, jax.random.split(jax.random.key(9), 4000))
    exact = np.array([reference.mmd2(REFERENCES[name], *pair, e) for e in estimators])
    standard_error = np.std(estimates, axis=0) / np.sqrt(len(estimates))
    # the mean of 4000 independent estimates is normal to a good approximation: a bias-free route
    # misses by more than 4 standard errors with probability 6e-5; a biased one (e.g. a wrong
    # spectral scale, which moves the mean by far more than 4 SE here) fails
    np.testing.assert_array_less(np.abs(np.mean(estimates, axis=0) - exact), 4 * standard_error)


def test_spread_shrinks_like_one_over_root_d(pair):
    x, y = (jnp.asarray(a) for a in pair)
    keys = jax.random.split(jax.random.key(10), 1000)
    small = estimates_over_keys(x, y, KERNELS["gaussian"], ("biased",), 16, keys)
    large = estimates_over_keys(x, y, KERNELS["gaussian"], ("biased",), 256, keys)
    # 16x the features: the standard deviation falls 4x; the ratio of two sample deviations over
    # 1000 keys is within about 10% of the truth at 3 sigma (heavier tails than normal allowed for)
    ratio = np.std(small) / np.std(large)
    assert 3.2 < ratio < 5.0


def test_each_key_compiles_nothing_new(pair):
    x, y = (jnp.asarray(a) for a in pair)
    first = ms.mmd2(x, y, KERNELS["gaussian"], route="rff", num_features=64, key=jax.random.key(0))
    with count_compilations() as count:
        second = ms.mmd2(x, y, KERNELS["gaussian"], route="rff", num_features=64, key=jax.random.key(1))
    assert count[0] == 0
    assert first != second
    # and the same key gives the same number
    assert ms.mmd2(x, y, KERNELS["gaussian"], route="rff", num_features=64, key=jax.random.key(0)) == first


def test_float32_stays_close_to_float64(rng):
    # 2000 samples far from the origin (the route centres them, so the phases stay small); float32
    # sums of 2000 cosines carry relative errors of about 1e-6, well inside 1e-4
    x, y = rng.normal(size=(2000, 8)) + 30.0, rng.normal(size=(1500, 8)) * 1.1 + 30.0
    kernel, key = ms.Gaussian(3.0), jax.random.key(11)
    wide = ms.mmd2(x, y, kernel, "unbiased", route="rff", num_features=512, key=key)
    narrow = ms.mmd2(
        x.astype(np.float32), y.astype(np.float32), kernel, "unbiased", route="rff", num_features=512, key=key
    )
    assert narrow.dtype == jnp.float32
    np.testing.assert_allclose(narrow, wide, rtol=1e-4)


def test_multi_gaussian_is_its_weighted_gaussians(rng):
    x, y = jnp.asarray(rng.normal(size=(6, 3))), jnp.asarray(rng.normal(size=(5, 3)))
    kernel = KERNELS["weighted"]
    expected = 0.2 * reference.kernel_matrix(reference.gaussian(0.5), x, y) + 1.3 * reference.kernel_matrix(
        reference.gaussian(3.0), x, y
    )
    np.testing.assert_allclose(kernel(x, y), expected, rtol=1e-12)
    np.testing.assert_allclose(
        jax.vmap(jax.vmap(kernel.compute_elementwise, (None, 0)), (0, None))(x, y), expected
    )
    around = ms.MultiGaussian.around(2.0)
    np.testing.assert_allclose(around.sigmas, [0.5, 1.0, 2.0, 4.0, 8.0])
    np.testing.assert_allclose(around(x, x).diagonal(), 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel": ms.Polynomial(3)}, "has no spectral density"),
        ({"kernel": ms.Polynomial(2)}, "no translation-invariant term"),
        ({"kernel": ms.kernels.from_function(lambda a, b: a @ b)}, "route='pairwise'"),
        ({"kernel": ms.Gaussian(1.0) * ms.Gaussian(2.0)}, "Gaussian, Laplacian and MultiGaussian"),
        ({"key": None}, "needs an explicit key"),
        ({"key": 3}, "must be one jax.random key"),
        ({"num_features": 7}, "must be even"),
        ({"num_features": 0}, "num_features must be a positive integer"),
        ({"num_features": 2.5}, "num_features must be a positive integer"),
        ({"kernel": ms.MultiGaussian.around(1.0), "num_features": 8}, "num_features >= 10"),
        ({"estimator": "linear"}, "has no random route"),
    ],
)
def test_bad_arguments_say_what_to_use(as_a_user, kwargs, message):
    arguments = {
        "kernel": ms.Gaussian(1.0),
        "estimator": "biased",
        "key": jax.random.key(0),
        "num_features": 64,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ms.mmd2(np.zeros((4, 2)), np.ones((4, 2)), route="rff", **arguments)


@pytest.mark.parametrize(
    "bad", [{"sigmas": ()}, {"sigmas": (1.0, -1.0)}, {"sigmas": (1.0, 2.0), "weights": (1.0,)}]
)
def test_multi_gaussian_rejects_bad_bandwidths(as_a_user, bad):
    with pytest.raises(ValueError, match=r"sigmas|weights"):
        ms.MultiGaussian(**bad)


def test_float32_cosine_and_sine_are_accurate_and_differentiate_to_each_other():
    phases = jnp.linspace(-200.0, 200.0, 400_001, dtype=jnp.float32)
    cosine, sine = random_features.cos_sin(phases)
    wide = np.asarray(phases, np.float64)
    # the polynomials' truncation (1.3e-7) plus float32 rounding of the reduced phase; XLA's own
    # float32 cosine is off by about 1e-7 here
    np.testing.assert_allclose(cosine, np.cos(wide), atol=1e-6, rtol=0)
    np.testing.assert_allclose(sine, np.sin(wide), atol=1e-6, rtol=0)
    derivative = jax.vmap(jax.jacfwd(random_features.cos_sin))(phases[:5])
    # the same polynomials, compiled in another program: equal up to float32 rounding
    np.testing.assert_allclose(derivative[0], -sine[:5], rtol=1e-6)
    np.testing.assert_allclose(derivative[1], cosine[:5], rtol=1e-6)
    # beyond the polynomials' range, XLA's own cosine and sine
    far = jnp.asarray([3e5, -1e6, 12345678.0], jnp.float32)
    np.testing.assert_allclose(
        random_features.cos_sin(far)[0], np.cos(np.asarray(far, np.float64)), atol=1e-6
    )

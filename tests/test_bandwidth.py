"""Bandwidth heuristics (mmdstyle/bandwidth.py) against brute-force NumPy over all pairs i < j.

    median heuristic   sigma = sqrt(median_{i<j} ||z_i - z_j||^2 / 2)
    mean variant       sigma = sqrt(mean_{i<j} ||z_i - z_j||^2 / 2)

over the pooled samples z = (x, y) (docs/math.md, "Bandwidth heuristics").
"""

from __future__ import annotations

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import mmdstyle as ms
from mmdstyle.bandwidth import nonnegative_median
from tests.helpers import CHANNELS, OTHER_SAMPLE_COUNTS, SAMPLE_COUNTS

# Both sides compute the same squared distances up to a few ulps (the package through the
# matmul expansion after centring, NumPy by direct differences); a median or mean of O(1) values
# and a square root keep that: 1e-12 relative is ~1e4 ulps of headroom.
RTOL = 1e-12


def pair_squared_distances(z: np.ndarray) -> np.ndarray:
    """||z_i - z_j||^2 for every pair i < j, by a plain double loop."""
    values = [np.sum((z[i] - z[j]) ** 2) for i in range(len(z)) for j in range(i + 1, len(z))]
    return np.asarray(values)


def numpy_median_bandwidth(x: np.ndarray, y: np.ndarray | None = None) -> float:
    z = x if y is None else np.concatenate([x, y])
    return float(np.sqrt(np.median(pair_squared_distances(z)) / 2.0))


def numpy_mean_bandwidth(x: np.ndarray, y: np.ndarray | None = None) -> float:
    z = x if y is None else np.concatenate([x, y])
    return float(np.sqrt(np.mean(pair_squared_distances(z)) / 2.0))


# ----------------------------------------------------------------------------------------------
# Values


def test_median_bandwidth_pooled(rng):
    # m + n = 13 samples: 78 pairs, an even count, so the median averages the two middle values.
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(7, 3)) * 2.0 + 1.0
    sigma = ms.median_bandwidth(x, y)
    assert sigma.shape == ()
    np.testing.assert_allclose(sigma, numpy_median_bandwidth(x, y), rtol=RTOL)


def test_median_bandwidth_odd_number_of_pairs(rng):
    # 14 samples: 91 pairs, the median is one pair's distance.
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(8, 3))
    np.testing.assert_allclose(ms.median_bandwidth(x, y), numpy_median_bandwidth(x, y), rtol=RTOL)


def test_median_bandwidth_y_none_is_x_alone(rng):
    # Most tests here pool 13 samples of 3 channels: one compiled program serves them all.
    x = rng.normal(size=(13, 3))
    np.testing.assert_allclose(ms.median_bandwidth(x), numpy_median_bandwidth(x), rtol=RTOL)
    np.testing.assert_allclose(ms.median_bandwidth(x), ms.median_bandwidth(x[:4], x[4:]), rtol=RTOL)


def test_median_bandwidth_far_from_the_origin(rng):
    # The package centres before the matmul expansion; without it, distances of O(1) between
    # points at ~1e4 would lose ~8 digits in float64.
    x = rng.normal(size=(13, 3)) + 1e4
    np.testing.assert_allclose(ms.median_bandwidth(x), numpy_median_bandwidth(x), rtol=1e-9)


@settings(max_examples=4, deadline=None)
@given(
    # A few sizes, including the smallest pooled size 2, so compiled programs get reused.
    m=SAMPLE_COUNTS,
    n=OTHER_SAMPLE_COUNTS,
    d=CHANNELS,
    seed=st.integers(0, 2**31 - 1),
    spread=st.floats(0.1, 10.0),
)
def test_bandwidths_match_brute_force_any_shape(m, n, d, seed, spread):
    generator = np.random.default_rng(seed)
    x, y = generator.normal(size=(m, d)) * spread, generator.normal(size=(n, d)) * spread
    # Under jit (one program per shape rather than one per operation); the other tests here
    # call the heuristics eagerly.
    median, mean = jax.jit(lambda a, b: (ms.median_bandwidth(a, b), ms.mean_bandwidth(a, b)))(x, y)
    np.testing.assert_allclose(median, numpy_median_bandwidth(x, y), rtol=RTOL)
    np.testing.assert_allclose(mean, numpy_mean_bandwidth(x, y), rtol=RTOL)


def test_mean_bandwidth_pooled_and_alone(rng):
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(7, 3)) * 2.0 + 1.0
    np.testing.assert_allclose(ms.mean_bandwidth(x, y), numpy_mean_bandwidth(x, y), rtol=RTOL)
    np.testing.assert_allclose(ms.mean_bandwidth(x), numpy_mean_bandwidth(x), rtol=RTOL)


def test_two_samples_is_enough(rng):
    x, y = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
    expected = float(np.sqrt(np.sum((x - y) ** 2) / 2.0))
    np.testing.assert_allclose(ms.median_bandwidth(x, y), expected, rtol=RTOL)
    np.testing.assert_allclose(ms.mean_bandwidth(x, y), expected, rtol=RTOL)


def test_float32_in_float32_out(rng):
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.normal(size=(7, 3)).astype(np.float32)
    sigma = ms.median_bandwidth(x, y)
    assert sigma.dtype == jnp.float32
    # float32 distances of O(1): a few float32 ulps.
    np.testing.assert_allclose(
        sigma, numpy_median_bandwidth(x.astype(np.float64), y.astype(np.float64)), rtol=1e-5
    )
    # Dtypes are decided while tracing: eval_shape sees them without compiling. The bandwidth
    # keeps float32 data float32 inside the kernel (strict promotion would raise on a mix).
    assert jax.eval_shape(ms.mean_bandwidth, x, y).dtype == jnp.float32
    matrix = jax.eval_shape(ms.Gaussian(sigma), jnp.asarray(x), jnp.asarray(y))
    assert matrix.dtype == jnp.float32


@pytest.mark.parametrize("bandwidth", [ms.median_bandwidth, ms.mean_bandwidth])
def test_samples_of_any_magnitude_scale_the_bandwidth_exactly(rng, bandwidth):
    # Near 1e-20 and 1e20 the float32 squared distances underflow or overflow; the heuristics
    # compute at the scale 2^-e where they cannot, and a power of two 2^k rounds nothing: sigma of
    # 2^k x is 2^k sigma of x to the bit.
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.normal(size=(7, 3)).astype(np.float32)
    sigma = np.float32(bandwidth(x, y))
    for k in (-83, -66, 66, 67, 83):
        factor = np.float32(2.0**k)
        assert np.float32(bandwidth(x * factor, y * factor)) == np.ldexp(sigma, k), k


# ----------------------------------------------------------------------------------------------
# Subsampling above max_samples


def test_max_samples_equal_to_sample_size_is_exact(rng):
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(7, 3))
    np.testing.assert_allclose(
        ms.median_bandwidth(x, y, max_samples=13), numpy_median_bandwidth(x, y), rtol=RTOL
    )


def test_subsampling_is_deterministic_and_close_to_the_full_median(rng):
    x = rng.normal(size=(1200, 2))
    y = rng.normal(size=(800, 2))
    # The full median by brute force over all 2000 * 1999 / 2 pairs (vectorised).
    z = np.concatenate([x, y])
    rows, columns = np.triu_indices(len(z), k=1)
    full = float(np.sqrt(np.median(np.sum((z[rows] - z[columns]) ** 2, axis=1)) / 2.0))
    # Population value for N(0, I_2): ||z_i - z_j||^2 ~ 2 chi^2_2, median 4 ln 2: sigma = 1.177.
    np.testing.assert_allclose(full, np.sqrt(2.0 * np.log(2.0)), rtol=0.05)

    default = [float(ms.median_bandwidth(x, y, max_samples=400)) for _ in range(2)]
    assert default[0] == default[1]
    # The documented default key is jax.random.key(0).
    assert float(ms.median_bandwidth(x, y, max_samples=400, key=jax.random.key(0))) == default[0]
    keyed = [float(ms.median_bandwidth(x, y, max_samples=400, key=jax.random.key(7))) for _ in range(2)]
    assert keyed[0] == keyed[1]
    # Another key draws another subset of 400 of the 2000 samples and, for continuous data,
    # another median; neither is the full-sample value (that would mean no subsampling).
    assert keyed[0] != default[0]
    assert full not in (default[0], keyed[0])
    # A median over the 79800 pairs of 400 samples: its relative standard deviation on sigma is
    # ~2% (measured over 40 keys on this data: 2.3%; ~1/sqrt(400) on the squared distance,
    # halved by the square root). 8% is ~3.5 standard deviations; the seeds are fixed, so the
    # check is deterministic.
    np.testing.assert_allclose([default[0], keyed[0]], [full, full], rtol=0.08)


# ----------------------------------------------------------------------------------------------
# Use with kernels and gradients


def test_gaussian_from_median_bandwidth(rng):
    # 14 samples: 91 pairs, an odd count, so the median is one pair's value.
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(8, 3)) + 0.5
    sigma = ms.median_bandwidth(x, y)
    kernel = ms.Gaussian(sigma)
    z = np.concatenate([x, y])
    # By construction exp(-d^2 / (2 sigma^2)) = exp(-d^2 / median d^2): a kernel value of
    # exp(-1) at the median pair distance, so the median of the pairwise kernel values is 1/e.
    matrix = np.asarray(jax.jit(lambda k, samples: k(samples, samples))(kernel, jnp.asarray(z)))
    rows, columns = np.triu_indices(len(z), k=1)
    np.testing.assert_allclose(np.median(matrix[rows, columns]), np.exp(-1.0), rtol=1e-12)


def test_mmd_with_data_driven_bandwidth_is_differentiable(rng):
    x, y = jnp.asarray(rng.normal(size=(8, 2))), jnp.asarray(rng.normal(size=(9, 2)) + 1.0)
    direction = jnp.asarray(rng.normal(size=(8, 2)))
    step = 1e-6

    def median_loss(samples):
        return ms.mmd2(samples, y, ms.Gaussian(ms.median_bandwidth(samples, y)))

    @jax.jit  # one compilation for everything below
    def evaluate(samples):
        finite_difference = (
            median_loss(samples + step * direction) - median_loss(samples - step * direction)
        ) / (2.0 * step)
        return jax.grad(median_loss)(samples), finite_difference

    median_gradient, finite_difference = evaluate(x)
    assert np.all(np.isfinite(np.asarray(median_gradient)))
    # The gradient flows through sigma too: a directional derivative against a central difference
    # (float64; a step of 1e-6 keeps the median on the same pair for generic data, and truncation
    # ~1e-12 and rounding ~1e-10 are far below the 1e-6 relative tolerance).
    directional = float(np.sum(np.asarray(median_gradient) * np.asarray(direction)))
    np.testing.assert_allclose(directional, finite_difference, rtol=1e-6)


def test_mean_bandwidth_gradient(rng):
    # sigma^2 = sum_i ||z_i - mean(z)||^2 / (N - 1), so d sigma / d z_i = (z_i - mean(z)) / ((N - 1) sigma).
    z = rng.normal(size=(13, 3))
    gradient = jax.jit(jax.grad(lambda samples: ms.mean_bandwidth(samples)))(jnp.asarray(z))
    sigma = numpy_mean_bandwidth(z)
    expected = (z - z.mean(axis=0, keepdims=True)) / ((len(z) - 1) * sigma)
    # A handful of float64 operations on O(1) values.
    np.testing.assert_allclose(gradient, expected, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("bandwidth", [ms.median_bandwidth, ms.mean_bandwidth])
def test_fewer_than_two_samples(bandwidth):
    with pytest.raises(ValueError, match="at least 2 samples"):
        bandwidth(np.ones((1, 3)))


@pytest.mark.parametrize("bandwidth", [ms.median_bandwidth, ms.mean_bandwidth])
def test_mismatched_channels(bandwidth, rng):
    with pytest.raises(ValueError, match="same number of channels"):
        bandwidth(rng.normal(size=(5, 3)), rng.normal(size=(5, 2)))


@pytest.mark.parametrize("bandwidth", [ms.median_bandwidth, ms.mean_bandwidth])
def test_not_samples(bandwidth, rng):
    with pytest.raises(ValueError, match=r"samples \(m, d\)"):
        bandwidth(rng.normal(size=10))


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize("max_samples", [1, 0, -3, 2.5, True, None], ids=repr)
def test_bad_max_samples(max_samples, rng):
    with pytest.raises(ValueError, match="max_samples"):
        ms.median_bandwidth(rng.normal(size=(5, 2)), max_samples=max_samples)


@pytest.mark.parametrize(
    "samples",
    [
        np.ones((5, 3)),
        # 4 identical samples and one other: 6 of the 10 pairs coincide, so the median is 0.
        np.concatenate([np.zeros((4, 3)), np.ones((1, 3))]),
    ],
    ids=["all_equal", "majority_equal"],
)
def test_coinciding_samples_give_zero_which_gaussian_rejects(samples):
    sigma = ms.median_bandwidth(samples)
    assert float(sigma) == 0.0
    with pytest.raises(ValueError, match="sigma"):
        ms.Gaussian(sigma)


def test_all_equal_samples_mean_bandwidth_zero():
    sigma = ms.mean_bandwidth(np.full((4, 2), 3.0))
    assert float(sigma) == 0.0
    with pytest.raises(ValueError, match="sigma"):
        ms.Gaussian(sigma)


# ----------------------------------------------------------------------------------------------
# The sort-free median under median_bandwidth: the same value as a sort's, bit for bit


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 8, 100, 101])
def test_nonnegative_median_equals_numpy_exactly(rng, dtype, count):
    # exponential values (spread over many binades) and heavy ties (few distinct values, zeros)
    spread = rng.exponential(size=count) * rng.choice([1e-8, 1.0, 1e8], size=count)
    tied = rng.choice([0.0, 0.5, 2.0, 3.0], size=count)
    for values in (spread.astype(dtype), tied.astype(dtype)):
        median = jax.jit(nonnegative_median)(jnp.asarray(values))
        assert median.dtype == values.dtype
        assert float(median) == float(np.median(values)), values


def test_nonnegative_median_orders_negative_zero_as_zero():
    # -0.0 (a clamped cancellation can give it) has the sign bit set: as an integer it would sort last
    values = jnp.asarray([-0.0, 1.0, 2.0, -0.0, 3.0])
    assert float(nonnegative_median(values)) == 1.0


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.one_of(st.just(0.0), st.floats(min_value=1e-300, max_value=1e300)), min_size=1, max_size=40)
)
def test_nonnegative_median_property(values):
    # Normal floats (and zeros), whose averages stay normal: XLA on the CPU flushes subnormal
    # arithmetic to zero (jnp.median([5e-324]) is 0.0), NumPy does not, so there the two disagree.
    values = np.asarray(values, np.float64)
    assert float(nonnegative_median(jnp.asarray(values))) == float(np.median(values))


@pytest.mark.parametrize("count", [9, 10])
def test_nonnegative_median_gradient_is_the_sorts(rng, count):
    # d median / d values: 1 at the middle value (odd count), 1/2 at each middle value (even count)
    values = jnp.asarray(rng.exponential(size=count))
    np.testing.assert_array_equal(jax.grad(nonnegative_median)(values), jax.grad(jnp.median)(values))

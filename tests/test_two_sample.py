"""The permutation two-sample test (mmdstyle/two_sample.py).

p = (1 + #{b : MMD^2_b >= MMD^2_observed}) / (1 + B)    (Phipson & Smyth, 2010)
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmdstyle as ms
from mmdstyle import two_sample
from mmdstyle.two_sample import MATRIX_SAMPLES, _smallest_keys, random_labels, select_method
from tests import reference

# The observed statistic and the permuted ones come from the pooled kernel matrix (or a
# per-permutation mmd2) while the reference mmd2 sums the same kernel values in another order:
# they agree to a few ulps of the O(1) sums, so 1e-10 relative leaves ~1e6 ulps. The absolute
# floor is for permuted statistics, which are ~0 under relabelling (sums of O(1) terms that
# cancel): 1e-12 is ~1e4 ulps of the terms.
RTOL = 1e-10
ATOL = 1e-12
# Enough frequencies for a test's statistic on the random-feature route, few enough that each
# program compiles and runs fast.
RFF_FEATURES = 64


@pytest.fixture
def shifted(rng) -> tuple[np.ndarray, np.ndarray]:
    """x (20, 2) and y (24, 2) with y's mean shifted by 0.7: a clearly non-zero statistic."""
    return rng.normal(size=(20, 2)), rng.normal(size=(24, 2)) + np.asarray([[0.7, 0.0]])


# Every test on `shifted` uses B = 20 so that they share compiled programs (each new
# combination of shapes, kernel structure, B and estimator compiles _mmd2_test anew, ~1 s).
B = 20


# ----------------------------------------------------------------------------------------------
# The statistic and the p-value


@pytest.mark.parametrize(
    ("kernel", "degree", "k"),
    [(ms.Gaussian, 0, 66), (lambda t: ms.Linear(), 2, 60)],
    ids=["gaussian", "linear"],
)
def test_samples_of_any_magnitude_give_the_same_test(shifted, kernel, degree, k):
    # float32 samples times 2^k with a bandwidth scaled alike. At 2^66 (7e19) the squared
    # distances would overflow; at 2^60 the sums of 44^2 inner products would. The test runs on
    # the same bits as at scale 1 (mmdstyle.mmd2's scaling into (-1, 1)), so the p-value is the
    # same and the statistics are 2^(k q) times those at scale 1, exactly.
    x, y = (a.astype(np.float32) for a in shifted)
    at_one = ms.mmd2_test(x, y, kernel(1.0), num_permutations=B)
    t = np.float32(2.0**k)
    at_t = ms.mmd2_test(x * t, y * t, kernel(float(t)), num_permutations=B)
    assert float(at_t.p_value) == float(at_one.p_value)
    np.testing.assert_array_equal(at_t.statistic, np.ldexp(np.float32(at_one.statistic), k * degree))
    np.testing.assert_array_equal(
        at_t.permuted_statistics, np.ldexp(np.asarray(at_one.permuted_statistics), k * degree)
    )


@pytest.mark.parametrize(
    ("kernel", "estimator"),
    [
        (ms.Gaussian(1.0), "unbiased"),
        (ms.Gaussian(1.0), "linear"),
        # mmd2 takes the exact feature route here, the test the pooled kernel matrix: two
        # independent computations of the same number.
        (ms.Polynomial(2, c=1.0), "biased"),
    ],
    ids=repr,
)
def test_statistic_is_mmd2(kernel, estimator, shifted):
    # m = 20 != n = 24 throughout: unequal sizes are the normal case.
    x, y = shifted
    result = ms.mmd2_test(x, y, kernel, num_permutations=B, estimator=estimator)
    assert result.estimator == estimator
    np.testing.assert_allclose(result.statistic, ms.mmd2(x, y, kernel, estimator), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("kernel", "estimator"),
    [(ms.Gaussian(1.0), "unbiased"), (ms.Gaussian(1.0), "linear"), (ms.Polynomial(2, c=1.0), "biased")],
    ids=repr,
)
def test_p_value_formula(kernel, estimator, shifted):
    x, y = shifted
    result = ms.mmd2_test(x, y, kernel, B, estimator=estimator)
    permuted = np.asarray(result.permuted_statistics)
    assert permuted.shape == (B,)
    assert np.all(np.isfinite(permuted))
    # (1 + count) / (1 + B) is a ratio of small integers, correctly rounded on both sides: exact.
    expected = (1.0 + np.sum(permuted >= float(result.statistic))) / (1.0 + B)
    assert float(result.p_value) == expected
    assert 1.0 / (B + 1) <= float(result.p_value) <= 1.0


def test_permuted_statistics_are_statistics_of_relabellings():
    # With m + n = 5 samples there are only C(5, 2) = 10 labellings: each permuted statistic
    # must be the MMD^2 of one of them, and with B = 300 uniform relabellings every labelling
    # appears (the chance that one of 10 is missed is 10 * 0.9^300 ~ 2e-13).
    generator = np.random.default_rng(5)
    x, y = generator.normal(size=(2, 2)), generator.normal(size=(3, 2))
    pooled = np.concatenate([x, y])
    # The unbiased MMD^2 of each labelling with Gaussian(1.0), by the NumPy reference.
    labellings = {}
    for chosen in itertools.combinations(range(5), 2):
        a, b = list(chosen), [i for i in range(5) if i not in chosen]
        labellings[chosen] = reference.mmd2(reference.gaussian(1.0), pooled[a], pooled[b], "unbiased")
    values = np.asarray(list(labellings.values()))
    result = ms.mmd2_test(
        x, y, ms.Gaussian(1.0), num_permutations=300, estimator="unbiased", key=jax.random.key(1)
    )
    np.testing.assert_allclose(result.statistic, labellings[(0, 1)], rtol=RTOL, atol=ATOL)
    permuted = np.asarray(result.permuted_statistics)
    distance_to_nearest = np.min(np.abs(permuted[:, None] - values[None, :]), axis=1)
    assert np.all(distance_to_nearest <= ATOL + RTOL * np.max(np.abs(values)))
    hit = {int(np.argmin(np.abs(values - value))) for value in permuted}
    assert hit == set(range(len(values)))


# ----------------------------------------------------------------------------------------------
# Matrix path and per-permutation path


@pytest.mark.parametrize(
    ("kernel", "estimator"),
    # The pooled-matrix programs are shared with the tests above; the per-permutation path
    # takes mmd2's pairwise route for the Gaussian and its feature route for Polynomial(2).
    [(ms.Gaussian(1.0), "unbiased"), (ms.Polynomial(2, c=1.0), "biased")],
    ids=repr,
)
@pytest.mark.parametrize("swapped", [False, True], ids=["m<n", "m>n"])  # each multiplies the smaller side
def test_matrix_method_matches_permutation_method(kernel, estimator, shifted, swapped):
    x, y = shifted[::-1] if swapped else shifted
    key = jax.random.key(11)
    by_matrix = ms.mmd2_test(x, y, kernel, B, key=key, estimator=estimator, method="matrix")
    # Blocks of 7 rows also exercise the blocked sums of mmd2.
    by_permutation = ms.mmd2_test(
        x, y, kernel, B, key=key, estimator=estimator, block_size=7, method="permutation"
    )
    np.testing.assert_allclose(by_matrix.statistic, by_permutation.statistic, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        by_matrix.permuted_statistics, by_permutation.permuted_statistics, rtol=RTOL, atol=ATOL
    )
    assert float(by_matrix.p_value) == float(by_permutation.p_value)


@pytest.mark.parametrize(
    ("kernel", "estimator", "pooled", "channels", "method", "chosen"),
    [
        (ms.Gaussian(1.0), "unbiased", MATRIX_SAMPLES, 2, "auto", "matrix"),  # pairwise: the matrix fits
        (ms.Gaussian(1.0), "unbiased", MATRIX_SAMPLES + 1, 2, "auto", "permutation"),  # it does not
        (ms.Polynomial(2), "biased", 200, 14, "auto", "permutation"),  # feature route: 14^2 < 200
        (ms.Polynomial(2), "biased", 200, 15, "auto", "matrix"),  # 15^2 >= 200
        (ms.Polynomial(3), "biased", 200, 2, "auto", "matrix"),  # degree 3: no feature route
        (ms.Gaussian(1.0), "linear", 10, 2, "auto", "permutation"),  # no pairs to tabulate
        (ms.Gaussian(1.0), "biased", 10**6, 2, "matrix", "matrix"),  # asked for: taken
        (ms.Linear(), "biased", 10, 64, "permutation", "permutation"),
    ],
)
def test_auto_method_takes_the_cheaper_one(kernel, estimator, pooled, channels, method, chosen):
    assert select_method(method, kernel, estimator, pooled, channels) == chosen


@pytest.mark.parametrize("kernel", [ms.Linear(), ms.Polynomial(2, c=1.0)], ids=repr)
def test_feature_kernels_give_the_same_test_either_way(kernel, shifted):
    # Low dimension: "auto" recomputes through the feature route; the matrix must agree with it.
    x, y = shifted
    key = jax.random.key(3)
    assert select_method("auto", kernel, "unbiased", x.shape[0] + y.shape[0], x.shape[1]) == "permutation"
    by_auto = ms.mmd2_test(x, y, kernel, B, key=key)
    by_matrix = ms.mmd2_test(x, y, kernel, B, key=key, method="matrix")
    np.testing.assert_allclose(
        by_auto.permuted_statistics, by_matrix.permuted_statistics, rtol=RTOL, atol=ATOL
    )
    assert float(by_auto.p_value) == float(by_matrix.p_value)


@pytest.mark.usefixtures("as_a_user")
def test_unknown_or_impossible_methods_are_refused(shifted):
    x, y = shifted
    with pytest.raises(ValueError, match="method must be one of"):
        ms.mmd2_test(x, y, ms.Gaussian(1.0), B, method="exact")
    with pytest.raises(ValueError, match="linear-time estimator never forms"):
        ms.mmd2_test(x, y, ms.Gaussian(1.0), B, estimator="linear", method="matrix")


# ----------------------------------------------------------------------------------------------
# Calibration and power


@pytest.mark.parametrize("route", [{}, {"route": "rff", "num_features": RFF_FEATURES}], ids=["exact", "rff"])
def test_null_p_values_are_roughly_uniform(route):
    # Under the null the permutation p-value is uniform on {1/100, ..., 100/100} (B = 99, exact
    # at every sample size); on the rff route too, whatever the number of features, since the
    # frequencies are drawn once per test (not from the labels), so the relabelled statistics
    # stay exchangeable. Over 40 independent repetitions:
    # - #{p <= 0.05} ~ Binomial(40, 0.05), mean 2; P(> 8 of 40) ~ 1e-4, so the bound 0.2 holds
    #   unless the test is anti-conservative;
    # - the mean p has standard deviation sqrt(1/12 / 40) ~ 0.046 around 0.5; 0.3..0.7 is
    #   +-4.4 standard deviations.
    # The seeds are fixed, so the check is deterministic; the bounds say why it should pass.
    # m = n = 50 and B = 99 as in the power test below, so both share one compiled program.
    p_values = []
    for repetition in range(40):
        generator = np.random.default_rng(1000 + repetition)
        x, y = generator.normal(size=(50, 2)), generator.normal(size=(50, 2))
        kernel = ms.Gaussian(ms.median_bandwidth(x, y))
        result = ms.mmd2_test(x, y, kernel, num_permutations=99, key=jax.random.key(repetition), **route)
        p_values.append(float(result.p_value))
    p_values = np.asarray(p_values)
    assert np.mean(p_values <= 0.05) <= 0.2
    assert 0.3 <= np.mean(p_values) <= 0.7


def test_power_against_a_mean_shift():
    # A shift of one standard deviation with m = n = 50: the MMD^2 is many null standard
    # deviations out, so every relabelling falls below it and p is the smallest possible,
    # 1 / (B + 1) = 0.01, under 0.02.
    generator = np.random.default_rng(2024)
    x = generator.normal(size=(50, 2))
    y = generator.normal(size=(50, 2)) + np.asarray([[1.0, 0.0]])
    kernel = ms.Gaussian(ms.median_bandwidth(x, y))
    result = ms.mmd2_test(x, y, kernel, num_permutations=99)
    assert float(result.p_value) <= 0.02
    assert float(result.statistic) > float(np.max(result.permuted_statistics))


# ----------------------------------------------------------------------------------------------
# Keys, shapes, pytree


def test_same_key_same_result_different_key_different_permutations(shifted):
    x, y = shifted
    kernel = ms.Gaussian(1.0)
    first = ms.mmd2_test(x, y, kernel, B, key=jax.random.key(3))
    second = ms.mmd2_test(x, y, kernel, B, key=jax.random.key(3))
    np.testing.assert_array_equal(first.permuted_statistics, second.permuted_statistics)
    assert float(first.p_value) == float(second.p_value)
    other = ms.mmd2_test(x, y, kernel, B, key=jax.random.key(4))
    assert float(other.statistic) == float(first.statistic)
    assert np.any(np.asarray(other.permuted_statistics) != np.asarray(first.permuted_statistics))
    # The default key is fixed: reproducible without passing one.
    default = [ms.mmd2_test(x, y, kernel, B).permuted_statistics for _ in range(2)]
    np.testing.assert_array_equal(default[0], default[1])


def test_result_is_a_pytree(shifted):
    x, y = shifted
    result = ms.mmd2_test(x, y, ms.Gaussian(1.0), B)
    assert isinstance(result, ms.TwoSampleTestResult)
    assert result.num_permutations == B
    leaves = jax.tree_util.tree_leaves(result)
    # statistic, p-value and permuted statistics; the estimator name is static metadata.
    assert len(leaves) == 3
    assert sorted(leaf.shape for leaf in leaves) == [(), (), (B,)]
    doubled = jax.tree_util.tree_map(lambda leaf: 2.0 * leaf, result)
    assert isinstance(doubled, ms.TwoSampleTestResult)
    assert doubled.estimator == result.estimator
    np.testing.assert_allclose(doubled.statistic, 2.0 * result.statistic, rtol=1e-15)


@pytest.mark.usefixtures("as_a_user")
def test_num_permutations_of_a_batched_result(shifted):
    # The result is a pytree so that mmd2_test can run under jax.vmap (e.g. over keys or data
    # sets); a batched result has permuted_statistics of shape (batch, B), and num_permutations
    # must still be B. No vmap is needed to build one: stack the leaves. (as_a_user: the field
    # annotations describe one unbatched result, which the runtime checks enforce when JAX
    # rebuilds the dataclass.)
    # FAILS as of this writing: num_permutations reads shape[0], the batch size (a package bug,
    # reported; shape[-1] would be B).
    x, y = shifted
    result = ms.mmd2_test(x, y, ms.Gaussian(1.0), B)
    batched = jax.tree_util.tree_map(lambda leaf: jnp.stack([leaf, leaf, leaf]), result)
    assert batched.permuted_statistics.shape == (3, B)
    assert batched.num_permutations == B


def test_float32_inputs(shifted):
    x, y = (a.astype(np.float32) for a in shifted)
    result = ms.mmd2_test(x, y, ms.Gaussian(1.0), B)
    assert result.statistic.dtype == jnp.float32
    assert result.permuted_statistics.dtype == jnp.float32
    # float32 sums of O(1) kernel values over ~500 terms: ~1e-6 relative on an O(0.1) statistic.
    reference = ms.mmd2(*(a.astype(np.float64) for a in shifted), ms.Gaussian(1.0), "unbiased")
    np.testing.assert_allclose(np.float64(result.statistic), reference, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize("num_permutations", [0, -5, 10.0, 2.5, True, None], ids=repr)
def test_bad_num_permutations(num_permutations, shifted):
    x, y = shifted
    with pytest.raises(ValueError, match="num_permutations"):
        ms.mmd2_test(x, y, ms.Gaussian(1.0), num_permutations)


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize(
    "kernel",
    [lambda a, b: jnp.dot(a, b), "gaussian", None, 1.0],
    ids=["function", "string", "none", "number"],
)
def test_not_a_kernel(kernel, shifted):
    x, y = shifted
    with pytest.raises(ValueError, match="from_function"):
        ms.mmd2_test(x, y, kernel, 10)


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize("estimator", ["quadratic", "Unbiased", "", None])
def test_unknown_estimator(estimator, shifted):
    x, y = shifted
    with pytest.raises(ValueError, match="estimator"):
        ms.mmd2_test(x, y, ms.Gaussian(1.0), 10, estimator=estimator)


def test_bad_samples(rng):
    with pytest.raises(ValueError, match="same number of channels"):
        ms.mmd2_test(rng.normal(size=(5, 3)), rng.normal(size=(5, 2)), ms.Gaussian(1.0), 10)
    with pytest.raises(ValueError, match="at least 2 samples"):
        ms.mmd2_test(rng.normal(size=(1, 3)), rng.normal(size=(5, 3)), ms.Gaussian(1.0), 10)


# ----------------------------------------------------------------------------------------------
# The random-feature route: statistics from the pooled features, formed once


def _rff_mmd2(x, y, kernel, estimator, frequency_key):
    return ms.mmd2(x, y, kernel, estimator, route="rff", num_features=RFF_FEATURES, key=frequency_key)


def _shift_of_one_standard_deviation() -> tuple[np.ndarray, np.ndarray]:
    """The power test's samples: m = n = 50 in 2-D, y's mean shifted by 1."""
    generator = np.random.default_rng(2024)
    x = generator.normal(size=(50, 2))
    return x, generator.normal(size=(50, 2)) + np.asarray([[1.0, 0.0]])


@pytest.mark.parametrize(
    ("kernel", "estimator"),
    [
        # a bandwidth array, as median_bandwidth gives: the program of the calibration and power
        # tests below (m = n = 50, B = 99)
        (ms.Gaussian(jnp.array(1.0, dtype=jnp.float64)), "unbiased"),
        # the Polynomial term is exact, added per relabelling by the feature route
        (0.5 * ms.Laplacian(1.0) + ms.Polynomial(2, c=1.0), "biased"),
    ],
    ids=repr,
)
def test_rff_statistics_are_mmd2_rff_of_each_labelling(kernel, estimator):
    # The observed statistic is mmd2's rff route with the frequencies of split(key)[0]; the
    # b-th permuted one, that route on the labelling random_labels(split(split(key)[1], B)[b]).
    # Both sides sum the same features in another order (and around another centre): a few
    # ulps of O(1) means, so RTOL and ATOL as above.
    # (Unequal sizes: the next test.)
    x, y = _shift_of_one_standard_deviation()
    num_permutations = 99
    key = jax.random.key(7)
    result = ms.mmd2_test(
        x, y, kernel, num_permutations, key=key, estimator=estimator, route="rff", num_features=RFF_FEATURES
    )
    frequency_key, permutation_key = jax.random.split(key)
    np.testing.assert_allclose(
        result.statistic, _rff_mmd2(x, y, kernel, estimator, frequency_key), rtol=RTOL, atol=ATOL
    )
    pooled = np.concatenate([x, y])
    keys = jax.random.split(permutation_key, num_permutations)
    for b in (0, 7, num_permutations - 1):
        labels = np.asarray(random_labels(keys[b], x.shape[0], pooled.shape[0]))
        assert labels.sum() == x.shape[0]
        expected = _rff_mmd2(pooled[labels], pooled[~labels], kernel, estimator, frequency_key)
        np.testing.assert_allclose(result.permuted_statistics[b], expected, rtol=RTOL, atol=ATOL)
    permuted = np.asarray(result.permuted_statistics)
    expected_p = (1.0 + np.sum(permuted >= float(result.statistic))) / (1.0 + num_permutations)
    assert float(result.p_value) == expected_p


def test_rff_permuted_statistics_cover_every_labelling_uniformly():
    # As for the exact routes: with m + n = 5 there are C(5, 2) = 10 labellings, each permuted
    # statistic is the rff MMD^2 (same frequencies) of one of them, and B = 300 uniform
    # relabellings meet every one. Each count is Binomial(300, 0.1): mean 30, standard
    # deviation 5.2; 10..50 is +-3.8 standard deviations (the seeds are fixed).
    generator = np.random.default_rng(5)
    x, y = generator.normal(size=(2, 2)), generator.normal(size=(3, 2))
    pooled = np.concatenate([x, y])
    key = jax.random.key(1)
    frequency_key = jax.random.split(key)[0]
    kernel = ms.Gaussian(1.0)
    values = []
    for chosen in itertools.combinations(range(5), 2):
        others = [i for i in range(5) if i not in chosen]
        values.append(_rff_mmd2(pooled[list(chosen)], pooled[others], kernel, "unbiased", frequency_key))
    values = np.asarray(values)
    result = ms.mmd2_test(x, y, kernel, 300, key=key, route="rff", num_features=RFF_FEATURES)
    np.testing.assert_allclose(result.statistic, values[0], rtol=RTOL, atol=ATOL)
    permuted = np.asarray(result.permuted_statistics)
    distance_to_nearest = np.min(np.abs(permuted[:, None] - values[None, :]), axis=1)
    assert np.all(distance_to_nearest <= ATOL + RTOL * np.max(np.abs(values)))
    counts = np.bincount([int(np.argmin(np.abs(values - value))) for value in permuted], minlength=10)
    assert np.all((counts >= 10) & (counts <= 50)), counts


def test_random_labels_break_ties_at_the_threshold_at_random(rng):
    # First keys 1 < 3 = 3 = 3 = 3 < 5 < 9 with m = 3: key 1 is in, and 2 of the 4 samples tied
    # at 3, those with the smaller second keys. Over 400 random second keys each tied sample is
    # chosen Binomial(400, 1/2) times: 200 +- 10 (one standard deviation); 150..250 is +-5.
    smallest = jax.jit(jax.vmap(lambda first, second: _smallest_keys(first, second, 3), in_axes=(None, 0)))
    second = jnp.asarray(rng.integers(0, 2**32, size=(400, 7)), jnp.uint32)
    labels = np.asarray(smallest(jnp.asarray([5, 3, 3, 3, 9, 1, 3], jnp.uint32), second))
    assert np.all(labels.sum(axis=1) == 3)
    assert np.all(labels[:, 5])
    assert not np.any(labels[:, [0, 4]])
    counts = labels[:, [1, 2, 3, 6]].sum(axis=0)
    assert np.all((counts >= 150) & (counts <= 250)), counts
    # Tied in both keys: the index decides, and still exactly m are chosen.
    same = smallest(jnp.asarray([5, 3, 3, 3, 9, 1, 3], jnp.uint32), jnp.zeros((1, 7), jnp.uint32))
    np.testing.assert_array_equal(same, [[False, True, True, False, False, True, False]])
    # Without ties at the threshold: the m smallest, whatever the second keys.
    distinct = smallest(jnp.asarray([50, 10, 30, 20, 70, 60, 40], jnp.uint32), second[:2])
    np.testing.assert_array_equal(distinct, [[False, True, True, True, False, False, False]] * 2)


def test_the_smallest_keys_are_the_same_on_host_and_device(rng):
    # The host selects by NumPy's partition of 64-bit keys, the device by a sort of three keys:
    # the same m samples, with ties in the first key (values 0..3 of 12), in both keys (second
    # 0..1) and none; batched as vmap batches them (either operand), and for every m.
    first = jnp.asarray(rng.integers(0, 4, size=(50, 12)), jnp.uint32)
    second = jnp.asarray(rng.integers(0, 2, size=(50, 12)), jnp.uint32)
    wide = jnp.asarray(rng.integers(0, 2**32, size=(50, 12), dtype=np.uint64), jnp.uint32)
    for m in (1, 5, 12):
        for a, b in ((first, second), (first, wide), (wide, second)):
            host = jax.jit(jax.vmap(lambda f, s, m=m: _smallest_keys(f, s, m)))(a, b)
            device = jax.vmap(lambda f, s, m=m: two_sample._device_smallest_keys(f, s, m))(a, b)
            np.testing.assert_array_equal(host, device)
            assert np.all(np.sum(host, axis=1) == m)
            # the m smallest (first, second, index) triples, by NumPy's lexicographic sort
            order = np.lexsort((np.arange(12)[None, :].repeat(50, 0), np.asarray(b), np.asarray(a)), axis=-1)
            expected = np.zeros((50, 12), bool)
            np.put_along_axis(expected, order[:, :m], True, axis=-1)
            np.testing.assert_array_equal(host, expected)
    shared = jax.jit(jax.vmap(lambda s: _smallest_keys(first[0], s, 5)))(second)  # one batched operand
    np.testing.assert_array_equal(
        shared, jax.vmap(lambda s: two_sample._device_smallest_keys(first[0], s, 5))(second)
    )


@pytest.mark.parametrize(
    ("kernel", "route", "method", "chosen"),
    [
        (ms.Gaussian(1.0), "rff", "auto", "permutation"),
        (ms.Gaussian(1.0), "rff", "permutation", "permutation"),
        (ms.Polynomial(2), "pairwise", "auto", "matrix"),  # the matrix gives the same values, faster
        (ms.Polynomial(2), "feature", "auto", "permutation"),  # 2^2 < 200
    ],
)
def test_auto_method_with_a_route(kernel, route, method, chosen):
    assert select_method(method, kernel, "unbiased", 200, 2, route) == chosen


@pytest.mark.usefixtures("as_a_user")
def test_rff_test_refuses_what_mmd2_refuses(shifted):
    x, y = shifted
    gaussian = ms.Gaussian(1.0)
    with pytest.raises(ValueError, match="method='matrix' tabulates the exact kernel"):
        ms.mmd2_test(x, y, gaussian, B, route="rff", method="matrix")
    with pytest.raises(ValueError, match="the permutation test takes route='rff' or an exact route"):
        ms.mmd2_test(x, y, ms.Energy(), B, route="sliced")
    with pytest.raises(ValueError, match="route must be one of"):
        ms.mmd2_test(x, y, gaussian, B, route="fast")
    with pytest.raises(ValueError, match="num_features must be even"):
        ms.mmd2_test(x, y, gaussian, B, route="rff", num_features=63)
    for bad in (0, 2.5, None):
        with pytest.raises(ValueError, match="num_features"):
            ms.mmd2_test(x, y, gaussian, B, route="rff", num_features=bad)
    with pytest.raises(ValueError, match="route='rff' cannot take"):
        ms.mmd2_test(x, y, ms.Polynomial(3), B, route="rff")
    with pytest.raises(ValueError, match="no random route"):
        ms.mmd2_test(x, y, gaussian, B, estimator="linear", route="rff")
    with pytest.raises(ValueError, match="route='feature' needs"):
        ms.mmd2_test(x, y, gaussian, B, route="feature")


def test_rff_power_against_a_mean_shift():
    # The power test's shift of one standard deviation, m = n = 50 (the program above): 32
    # frequencies see it as clearly as the exact kernel does, p = 1 / (B + 1) = 0.01.
    x, y = _shift_of_one_standard_deviation()
    kernel = ms.Gaussian(ms.median_bandwidth(x, y))
    result = ms.mmd2_test(x, y, kernel, 99, route="rff", num_features=RFF_FEATURES)
    assert float(result.p_value) <= 0.02
    assert float(result.statistic) > float(np.max(result.permuted_statistics))


def test_the_matrix_method_centres_the_energy_kernels_samples():
    # float32 samples far from the origin: without centring, |a| + |b| - |a - b| loses the
    # differences to rounding; the MMD is unchanged by a common shift, so centring is exact
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(60, 4)), rng.normal(size=(60, 4)) + 0.5
    far = [np.asarray(a + 1e3, np.float32) for a in (x, y)]
    near = ms.mmd2_test(x, y, ms.Energy(), num_permutations=9, method="matrix").statistic
    shifted = ms.mmd2_test(*far, ms.Energy(), num_permutations=9, method="matrix").statistic
    # float32 at offset 1e3 after centring: relative error about 1e-5 of the distances
    np.testing.assert_allclose(shifted, near, rtol=1e-3)

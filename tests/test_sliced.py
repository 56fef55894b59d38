"""The energy kernel and the sliced route: against brute-force energy distances, over keys, errors, jit."""

import functools
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmdstyle as ms
from mmdstyle import sliced
from tests import REPOSITORY, reference
from tests.helpers import count_compilations

# Small sizes shared by the tests below, so that they reuse compiled programs; m != n throughout.
# The exact values sum whole kernel matrices (one tile: the fastest program to compile; the
# blocked scans are tests/test_mmd.py's), and the sliced route draws L directions.
M, N, D = 17, 12, 4
ONE_TILE = 64
L = 8


def samples(rng, m=M, n=N, d=D, shift=0.4):
    return jnp.asarray(rng.normal(size=(m, d))), jnp.asarray(rng.normal(size=(n, d)) + shift)


def brute_force_energy_distance(x, y, unbiased):
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| by all pairwise distances (Székely & Rizzo), in NumPy.

    The unbiased form averages the within-sample distances over the pairs i != j.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    m, n = len(x), len(y)

    def distances(a, b):
        return np.sqrt(np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1))

    within_x, within_y = distances(x, x).sum(), distances(y, y).sum()
    if unbiased:
        within_x, within_y = within_x / (m * (m - 1)), within_y / (n * (n - 1))
    else:
        within_x, within_y = within_x / m**2, within_y / n**2
    return float(2 * distances(x, y).mean() - within_x - within_y)


def energy_distance_1d_quadratic(x, y, unbiased):
    """The 1-D energy distance by all pairs, in jax.numpy, to differentiate."""
    m, n = x.shape[0], y.shape[0]
    within_x = jnp.sum(jnp.abs(x[:, None] - x[None, :]))
    within_y = jnp.sum(jnp.abs(y[:, None] - y[None, :]))
    cross = jnp.mean(jnp.abs(x[:, None] - y[None, :]))
    if unbiased:
        return 2 * cross - within_x / (m * (m - 1)) - within_y / (n * (n - 1))
    return 2 * cross - within_x / m**2 - within_y / n**2


# ----------------------------------------------------------------------------------------------
# The constant c_d and the directions


@pytest.mark.parametrize(("dimension", "expected"), [(1, 1.0), (2, math.pi / 2), (3, 2.0)])
def test_energy_constant_closed_forms(dimension, expected):
    assert sliced.energy_constant(dimension) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("dimension", [500, 4096, 10**6])
def test_energy_constant_for_large_dimensions(dimension):
    # Gamma((d+1)/2) / Gamma(d/2) = sqrt(d/2) (1 - 1/(4d) + O(d^-2)): from d = 343 on Gamma itself
    # overflows, so this also checks the log-gamma form. The O(d^-2) term is below 1e-6 here.
    asymptotic = math.sqrt(math.pi * dimension / 2) * (1 - 1 / (4 * dimension))
    assert sliced.energy_constant(dimension) == pytest.approx(asymptotic, rel=1e-6)


def test_random_directions_are_unit_vectors_uniform_on_the_sphere():
    # E_theta |theta^T v| = |v| / c_d for theta uniform on S^(d-1), and E theta theta^T = I / d.
    dimension, count = 5, 50_000
    directions = np.asarray(sliced.random_directions(jax.random.key(3), count, dimension, jnp.float64))
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, rtol=1e-14)
    v = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
    projections = np.abs(directions @ v)
    standard_error = projections.std() / math.sqrt(count)
    # 4 standard errors: a correct sampler fails this about once in 16 000 seeds.
    expected = np.linalg.norm(v) / sliced.energy_constant(dimension)
    assert abs(projections.mean() - expected) < 4 * standard_error
    second_moments = directions.T @ directions / count
    # Each entry of theta theta^T is bounded by 1, so its mean has a standard error below count^-1/2.
    np.testing.assert_allclose(second_moments, np.eye(dimension) / dimension, atol=4 / math.sqrt(count))


# ----------------------------------------------------------------------------------------------
# The energy kernel on the pairwise route


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_energy_kernel_mmd_is_the_energy_distance(rng, estimator):
    # The kernel's |a| + |b| terms cancel: MMD^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|.
    x, y = samples(rng)
    expected = brute_force_energy_distance(x, y, estimator == "unbiased")
    actual = ms.mmd2(x, y, ms.Energy(), estimator, block_size=ONE_TILE)
    np.testing.assert_allclose(float(actual), expected, rtol=1e-12)


def test_energy_kernel_flags():
    assert ms.Energy().translation_invariant is False
    assert ms.Energy().mmd_shift_invariant is True
    assert (2.0 * ms.Energy()).mmd_shift_invariant is True
    assert (ms.Energy() + ms.Gaussian(1.0)).mmd_shift_invariant is True  # MMD^2 is linear in k
    assert (ms.Energy() + ms.Polynomial(2)).mmd_shift_invariant is False
    assert (ms.Energy() * ms.Gaussian(1.0)).mmd_shift_invariant is False  # products are not
    assert ms.Gaussian(1.0).mmd_shift_invariant is True
    assert ms.Polynomial(2).mmd_shift_invariant is False
    assert repr(ms.Energy()) == "Energy()"


@pytest.mark.parametrize("route", ["pairwise", "sliced"])
def test_float32_energy_far_from_the_origin(rng, route):
    # Both routes centre the samples (the MMD is unchanged by a common shift), so an offset of
    # 1e3 costs only its own float32 rounding, ~1e3 * 6e-8 per coordinate, against values ~0.5;
    # without centring, the pairwise route's squared distances would carry errors ~1e6 * 6e-8.
    # (Both in float32: the same key draws other directions in float64.)
    x, y = (a.astype(jnp.float32) for a in samples(rng))
    options = {"route": route, "key": jax.random.key(0), "num_directions": 16} if route == "sliced" else {}
    shifted = ms.mmd2(x + 1e3, y + 1e3, ms.Energy(), **options)
    assert shifted.dtype == jnp.float32
    np.testing.assert_allclose(float(shifted), float(ms.mmd2(x, y, ms.Energy(), **options)), rtol=1e-3)


def test_energy_gradients_finite_where_samples_coincide_or_sit_at_zero(rng):
    # Small integers: every distance between coinciding samples is exactly 0, also through the
    # matmul expansion. Rows and their negatives: the pooled mean is exactly 0, so the row at 0
    # stays at 0 after the pairwise route centres the samples.
    half = rng.integers(-2, 3, size=(3, 3)).astype(np.float64)
    x = jnp.asarray(np.concatenate([half, -half, np.zeros((1, 3))]))  # one row at 0
    y = jnp.asarray(np.concatenate([half[:2], -half[:2], half[:1]]))  # rows equal to x's rows
    kernel = ms.Energy()

    @jax.jit
    def gradients(a, b):
        def loss(route, estimator, u, v):
            options = {"key": jax.random.key(0), "num_directions": L} if route == "sliced" else {}
            return ms.mmd2(u, v, kernel, estimator, route=route, block_size=ONE_TILE, **options)

        # The sliced estimators differ only in constant weights per gap: one of them will do.
        pairs = [
            jax.grad(functools.partial(loss, route, estimator), argnums=(0, 1))(a, b)
            for route, estimator in [("pairwise", "biased"), ("pairwise", "unbiased"), ("sliced", "biased")]
        ]
        return (
            *pairs,
            jax.grad(lambda v: jnp.sum(kernel(v, v)))(a),
            jax.grad(lambda v: jnp.sum(kernel(v, v + 0.0)))(a),
            jax.grad(lambda v: kernel.compute_elementwise(v, v))(a[-1]),
            jax.grad(kernel.compute_elementwise, argnums=(0, 1))(a[0], a[0]),
            jax.grad(lambda v: jnp.sum(kernel.paired(v, v)))(a),
        )

    for gradient in jax.tree_util.tree_leaves(gradients(x, y)):
        assert np.all(np.isfinite(np.asarray(gradient)))
    # The cone |a - b| has gradient 0 at its tip, as |a| has at 0: k(a, a) = 2|a| at a = 0.
    np.testing.assert_array_equal(jax.grad(kernel.compute_elementwise)(x[-1], x[-1]), np.zeros(3))


# ----------------------------------------------------------------------------------------------
# The 1-D energy distance by sorting


@functools.partial(jax.jit, static_argnames="unbiased")
def energy_1d(x, y, *, unbiased):
    return sliced.energy_distance_1d(x, y, unbiased=unbiased)


@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
@pytest.mark.parametrize("data", ["continuous", "ties"])
def test_energy_distance_1d_equals_brute_force(rng, unbiased, data):
    if data == "ties":  # ties within x, within y and between them
        x, y = rng.integers(-3, 4, size=M).astype(np.float64), rng.integers(-2, 5, size=N).astype(np.float64)
    else:
        x, y = rng.normal(size=M), rng.normal(size=N) + 0.3
    expected = brute_force_energy_distance(x, y, unbiased)
    actual = energy_1d(jnp.asarray(x), jnp.asarray(y), unbiased=unbiased)
    np.testing.assert_allclose(float(actual), expected, rtol=1e-12)


@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
def test_energy_distance_1d_gradient_equals_the_quadratic_formulas(rng, unbiased):
    # Away from ties both are smooth: the sort must send every gradient back to its own sample.
    x, y = jnp.asarray(rng.normal(size=M)), jnp.asarray(rng.normal(size=N) + 0.3)
    by_sorting = jax.jit(jax.grad(functools.partial(energy_1d, unbiased=unbiased), argnums=(0, 1)))(x, y)
    quadratic = jax.grad(functools.partial(energy_distance_1d_quadratic, unbiased=unbiased), argnums=(0, 1))
    for got, want in zip(by_sorting, jax.jit(quadratic)(x, y), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# The sliced route


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_sliced_route_is_c_d_times_the_mean_over_its_directions(rng, estimator):
    # For the directions random_directions draws from the key, brute force per direction.
    x, y = samples(rng)
    key = jax.random.key(7)
    directions = np.asarray(sliced.random_directions(key, L, D, jnp.float64))
    per_direction = [
        brute_force_energy_distance(np.asarray(x) @ theta, np.asarray(y) @ theta, estimator == "unbiased")
        for theta in directions
    ]
    expected = sliced.energy_constant(D) * np.mean(per_direction)
    # Positive scalings, nested too, scale the estimate (each kernel structure compiles its own
    # program, so the biased case takes the nested scaling alone).
    factor, kernel = (6.0, 2.0 * (3.0 * ms.Energy())) if estimator == "biased" else (1.0, ms.Energy())
    actual = ms.mmd2(x, y, kernel, estimator, route="sliced", key=key, num_directions=L)
    np.testing.assert_allclose(float(actual), factor * expected, rtol=1e-12)


@functools.partial(jax.jit, static_argnames="num_directions")
def keyed_estimates(x, y, keys, num_directions):
    """The biased and unbiased sliced estimates (K, 2) for each of K keys: one program for all keys."""

    def both(key):
        return jnp.stack(
            [
                sliced.sliced_mmd2(x, y, ms.Energy(), key, num_directions=num_directions, unbiased=unbiased)
                for unbiased in (False, True)
            ]
        )

    return jax.vmap(both)(keys)


KEYS = 4000


def test_sliced_route_is_unbiased_over_keys(rng):
    # For fixed samples, E_theta of the sliced estimate is the exact (pairwise) value of the same
    # estimator; the mean over 4000 keys must lie within 4 of its own standard errors of it (a
    # correct estimator fails this for about one in 16 000 choices of keys).
    x, y = samples(rng)
    estimates = np.asarray(keyed_estimates(x, y, jax.random.split(jax.random.key(11), KEYS), L))
    for column, estimator in enumerate(["biased", "unbiased"]):
        exact = float(ms.mmd2(x, y, ms.Energy(), estimator, block_size=ONE_TILE))
        standard_error = estimates[:, column].std(ddof=1) / math.sqrt(KEYS)
        assert abs(estimates[:, column].mean() - exact) < 4 * standard_error, estimator
        # Sharp enough to tell c_d from the constants a slip would give: 4 standard errors are
        # under 8 %, c_(d+-1) / c_d is 13 % or more away from 1 (and 1 or sqrt(d) further still).
        assert standard_error < 0.02 * exact


def test_sliced_spread_shrinks_like_one_over_root_directions(rng):
    # L directions: the estimate is a mean of L i.i.d. terms, so its standard deviation over keys
    # halves when L quadruples. The relative standard error of a sample standard deviation from K
    # draws is about sqrt((kurtosis - 1) / (4K)); the ratio of two independent ones adds both
    # variances. The margin is 4 of those standard errors, from the kurtosis the draws show.
    x, y = samples(rng)
    few = np.asarray(keyed_estimates(x, y, jax.random.split(jax.random.key(1), KEYS), L))[:, 0]
    many = np.asarray(keyed_estimates(x, y, jax.random.split(jax.random.key(2), KEYS), 4 * L))[:, 0]

    def kurtosis(values):
        centred = values - values.mean()
        return np.mean(centred**4) / np.mean(centred**2) ** 2

    relative_error = math.sqrt((kurtosis(few) - 1 + kurtosis(many) - 1) / (4 * KEYS))
    assert relative_error < 0.05  # a margin under 20 %: it tells L^-1/2 (2) from L^-1 (4) or L^0 (1)
    ratio = few.std() / many.std()
    assert abs(ratio / 2 - 1) < 4 * relative_error, (ratio, relative_error)


def test_sliced_route_compiles_once_for_every_key_and_factor(rng):
    # The kernel of the biased case above: its program may already be compiled.
    x, y = samples(rng)
    first = ms.mmd2(x, y, 2.0 * (3.0 * ms.Energy()), route="sliced", key=jax.random.key(0), num_directions=L)
    with count_compilations() as count:
        second = ms.mmd2(
            x, y, 1.5 * (4.0 * ms.Energy()), route="sliced", key=jax.random.key(1), num_directions=L
        )
    assert count[0] == 0
    assert float(first) != float(second)  # the key does select other directions


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("kernel", "kwargs", "message"),
    [
        (ms.Gaussian(1.0), {"key": jax.random.key(0)}, r"route='sliced' cannot take Gaussian.*Energy\(\)"),
        (ms.Energy() + ms.Energy(), {"key": jax.random.key(0)}, r"cannot take .*route='pairwise'"),
        (ms.Energy(), {}, r"route='sliced' draws random numbers, so it needs an explicit key"),
        (ms.Energy(), {"key": 0}, "must be one jax.random key"),
        (ms.Energy(), {"key": jax.random.key(0), "num_directions": 0}, "num_directions must be a positive"),
        (
            ms.Energy(),
            {"key": jax.random.key(0), "estimator": "linear"},
            "linear-time estimator evaluates the kernel on m/2 pairs",
        ),
    ],
)
def test_sliced_route_errors(as_a_user, kernel, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ms.mmd2(np.ones((6, 2)), np.zeros((5, 2)), kernel, route="sliced", **kwargs)


def test_energy_kernel_views_match_the_reference(rng):
    # The matrix, the scalar core and the paired rows agree with the NumPy formula that
    # tests/test_mmd.py checks the pairwise route against; one program for all three views.
    x, y = samples(rng, 5, 5)
    kernel = ms.Energy()

    @jax.jit
    def views(a, b):
        elementwise = jax.vmap(jax.vmap(kernel.compute_elementwise, in_axes=(None, 0)), in_axes=(0, None))
        return kernel(a, b), elementwise(a, b), kernel.paired(a, b), kernel.paired(a, a)

    matrix, elementwise, paired, diagonal = views(x, y)
    expected = reference.kernel_matrix(reference.energy, np.asarray(x), np.asarray(y))
    np.testing.assert_allclose(matrix, expected, rtol=1e-13)
    np.testing.assert_allclose(elementwise, expected, rtol=1e-13)
    np.testing.assert_allclose(paired, np.diag(expected), rtol=1e-13)
    # k(a, a) = 2|a|
    np.testing.assert_allclose(diagonal, 2 * np.linalg.norm(np.asarray(x), axis=1), rtol=1e-14)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_a_fixed_target_gives_the_routes_value_and_gradient(estimator):
    rng = np.random.default_rng(3)
    x, y = jnp.asarray(rng.normal(size=(60, 4))), jnp.asarray(rng.normal(size=(45, 4)) + 0.3)
    y = y.at[:10].set(x[:10])  # ties between the samples
    kernel, key = 2.0 * ms.Energy(), jax.random.key(1)
    target = sliced.direction_target(y, kernel, key, 16)

    def routed(x):
        return ms.mmd2(x, y, kernel, estimator, route="sliced", num_directions=16, key=key)

    def fixed(x):
        return sliced.sliced_mmd2_to_target(x, target, unbiased=estimator == "unbiased")

    # float64; centred on the target's mean instead of the pooled one: rounding only
    np.testing.assert_allclose(fixed(x), routed(x), rtol=1e-12)
    np.testing.assert_allclose(jax.grad(fixed)(x), jax.grad(routed)(x), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_merge_order_sorts_both_samples_on_host_and_device(rng, dtype):
    x = rng.normal(size=(3, 7)).astype(dtype)
    y = np.sort(rng.normal(size=(3, 5)), axis=-1).astype(dtype)
    y[0, 2] = x[0, 1]  # a tie across the samples
    y[1, 3] = y[1, 4]  # and within y
    x[2, 5] = x[2, 0]  # and within x
    y = np.sort(y, axis=-1)
    values = np.concatenate([x, y], axis=-1)
    expected = np.sort(values, axis=-1)
    host = np.asarray(sliced.merge_order(jnp.asarray(x), jnp.asarray(y)))
    device = np.asarray(sliced._device_merge_order(jnp.asarray(x), jnp.asarray(y)))
    for order in (host, device):
        assert sorted(order[0].tolist()) == list(range(12))  # a permutation
        np.testing.assert_array_equal(np.take_along_axis(values, order, axis=-1), expected)
    # ties: x before y, each sample in index order; so both orders are one
    np.testing.assert_array_equal(host, device)
    (tied_y,) = np.flatnonzero(y[0] == x[0, 1])
    assert list(host[0]).index(1) + 1 == list(host[0]).index(7 + tied_y)


def test_the_float32_host_order_is_a_stable_argsort():
    # negatives, signed zeros, infinities, subnormals and ties: the packed integer keys order them
    # as the floats are ordered, ties by index
    values = np.array(
        [[0.5, 0.0, -0.0, -1.5, np.inf, -np.inf, 1e-42, -1e-42, 0.5, -1.5, 3.0, -0.0]], np.float32
    )
    order = np.asarray(sliced.argsort(jnp.asarray(values)))
    np.testing.assert_array_equal(np.take_along_axis(values, order, -1), np.sort(values, -1))
    # equal values keep their order, the two zeros included (0.0 at 1 before -0.0 at 2 and 11)
    np.testing.assert_array_equal(order, np.argsort(values, axis=-1, kind="stable"))
    assert order[0][np.isin(order[0], [1, 2, 11])].tolist() == [1, 2, 11]


def test_the_merge_order_of_signed_zeros_and_of_batched_targets():
    # -0.0 == 0.0: x before y, as on the device; y batched (vmap over targets) and x not
    x, y = jnp.asarray([0.0, 1.0], jnp.float32), jnp.asarray([-0.0, 2.0], jnp.float32)
    np.testing.assert_array_equal(sliced.merge_order(x, y), [0, 2, 1, 3])
    np.testing.assert_array_equal(sliced._device_merge_order(x, y), [0, 2, 1, 3])
    targets = jnp.sort(jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)), jnp.float32), axis=-1)
    batched = jax.vmap(lambda target: sliced.merge_order(x, target))(targets)
    for row, target in enumerate(targets):
        np.testing.assert_array_equal(batched[row], sliced._device_merge_order(x, target))


def test_on_accelerators_the_order_comes_from_a_sort_not_the_host():
    # lowered for a GPU, where no GPU is needed: the NumPy callback is the CPU's branch only
    from jax import export

    samples = jax.ShapeDtypeStruct((30, 4), jnp.float32)
    route = jax.jit(
        lambda x, y: ms.mmd2(x, y, ms.Energy(), route="sliced", num_directions=8, key=jax.random.key(0))
    )
    merge = jax.jit(sliced.merge_order)
    for function, shapes in (
        (route, (samples, samples)),
        (merge, (samples, jax.ShapeDtypeStruct((30, 6), jnp.float32))),
    ):
        module = export.export(function, platforms=["cuda"])(*shapes).mlir_module()
        assert "callback" not in module
        assert "callback" in function.lower(*shapes).as_text()  # here, on the CPU, the callback


#: A sliced MMD^2 whose projections are large enough for XLA to split across its CPU thread pool:
#: with jax.pure_callback on the host sort, this process waited forever when it could use one core.
ONE_CORE_SCRIPT = """
import os
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import jax, numpy as np
import mmdstyle as ms
x, y = np.random.default_rng(0).normal(size=(2, 1000, 64)).astype(np.float32)
route = jax.jit(lambda x, y, key: ms.mmd2(x, y, ms.Energy(), route="sliced", num_directions=16, key=key))
print(float(route(x, y, jax.random.key(0))))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux's CPU affinity")
def test_the_host_sort_returns_in_a_process_restricted_to_one_core():
    result = subprocess.run(
        [sys.executable, "-c", ONE_CORE_SCRIPT],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) > 0.0


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_rows_sorted_on_threads_are_sorted_in_place(rng, workers):
    # the sliced route's host sort: rows split over threads, each sorted in place
    from mmdstyle._host import sort_rows

    keys = rng.integers(-(2**62), 2**62, size=(2, 5, 101))
    expected = np.sort(keys, axis=-1)
    sort_rows(keys, workers=workers)
    np.testing.assert_array_equal(keys, expected)


def test_the_host_merge_order_of_many_rows_with_ties_is_the_devices():
    # rows enough for the sort's threads; values on a coarse grid, so that ties are common within
    # and across the samples; each row's place among the flattened rows is found correctly
    rng = np.random.default_rng(2)
    x = np.round(rng.normal(size=(9, 50)) * 4).astype(np.float32) / 4
    y = np.sort(np.round(rng.normal(size=(9, 40)) * 4).astype(np.float32) / 4, axis=-1)
    x[4] *= -1e30  # rows far apart in value
    host = sliced._host_merge_order(x, y)
    np.testing.assert_array_equal(host, sliced._device_merge_order(jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_array_equal(host, np.argsort(np.concatenate([x, y], -1), axis=-1, kind="stable"))

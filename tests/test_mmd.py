"""mmd2: every estimator x kernel x route against brute force, route agreement, properties, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmdstyle as ms
from mmdstyle.mmd import default_block_size, pairwise_mmd2_to_target, pairwise_target
from tests import reference
from tests.helpers import max_norm_relative_error

ESTIMATORS = ["biased", "unbiased", "linear"]

# (package kernel, independent NumPy formula)
KERNELS = {
    "linear": (ms.Linear(), reference.linear),
    "poly1": (ms.Polynomial(1, c=0.5, scale=2.0), reference.polynomial(1, 0.5, 2.0)),
    "poly2": (ms.Polynomial(2), reference.polynomial(2)),
    "poly2_c": (ms.Polynomial(2, c=1.5, scale=0.3), reference.polynomial(2, 1.5, 0.3)),
    "poly3": (ms.Polynomial(3, c=1.0, scale=0.5), reference.polynomial(3, 1.0, 0.5)),
    "gaussian": (ms.Gaussian(1.7), reference.gaussian(1.7)),
    "laplacian": (ms.Laplacian(2.5), reference.laplacian(2.5)),
    "energy": (ms.Energy(), reference.energy),
    "sum": (
        ms.Gaussian(1.0) + 0.5 * ms.Linear(),
        lambda a, b: reference.gaussian(1.0)(a, b) + 0.5 * reference.linear(a, b),
    ),
    "product_of_linears": (ms.Linear() * ms.Linear(), lambda a, b: reference.linear(a, b) ** 2),
    "function": (
        ms.kernels.from_function(lambda a, b: jnp.exp(-jnp.sum(jnp.abs(a - b)))),
        reference.l1_exponential,
    ),
}
FEATURE_KERNELS = ["linear", "poly1", "poly2", "poly2_c", "product_of_linears"]


def samples(rng, m, n, d, shift=0.3):
    return rng.normal(size=(m, d)), rng.normal(size=(n, d)) + shift


# Sizes and block size shared by the brute-force grid and the property tests below, so that they
# run the programs the grid compiled (compilation, not arithmetic, is what a test here costs).
# Neither size is a multiple of the block: padded last blocks and wrapping windows everywhere.
M, N, D, BLOCK = 23, 14, 4, 5


def distinct_routes():
    """(kernel, estimator, route) for every route a kernel can take, each once: "auto" is the
    feature route where the kernel has one and the pairwise route otherwise; the linear-time
    estimator has a single route."""
    for name, (kernel, _) in KERNELS.items():
        for estimator in ESTIMATORS:
            routes = ["auto", "pairwise"] if ms.select_route(kernel, estimator) == "feature" else ["auto"]
            for route in routes:
                yield pytest.param(name, estimator, route, id=f"{name}-{estimator}-{route}")


# A representative of each kind: feature-route, distance-based, user function, composite.
PROPERTY_KERNELS = ["poly2", "poly3", "gaussian", "laplacian", "sum", "function"]


# Every distinct route once, at unequal sizes (m != n is the general case: equal sizes only drop
# a factor); equal sizes once per estimator, on one feature-route and one pairwise kernel. Each
# case compiles its own program, so the grid is what it needs to be, no larger.
BRUTE_FORCE_CASES = [
    *(pytest.param(*case.values, M, N, id=f"{case.id}-{M}x{N}") for case in distinct_routes()),
    *(
        pytest.param(name, estimator, "auto", 19, 19, id=f"{name}-{estimator}-auto-19x19")
        for name in ("poly2", "gaussian")
        for estimator in ESTIMATORS
    ),
]


@pytest.mark.parametrize(("name", "estimator", "route", "m", "n"), BRUTE_FORCE_CASES)
def test_matches_brute_force(rng, name, estimator, route, m, n):
    kernel, function = KERNELS[name]
    x, y = samples(rng, m, n, D)
    expected = reference.mmd2(function, x, y, estimator)
    actual = ms.mmd2(x, y, kernel, estimator, block_size=BLOCK, route=route)
    # float64 sums of a few hundred terms of size O(1): 1e-10 leaves room for rounding only.
    np.testing.assert_allclose(float(actual), expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("block_size", [1, 2, 3, 4, 7, 8, 16, 100, None])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_pairwise_blocks_cover_every_pair_once(rng, block_size, estimator):
    # Blocks counts odd and even, windows that wrap, a single block: the symmetric sum must weigh
    # each unordered pair exactly twice and each sample with itself once.
    x, y = samples(rng, 16, 11, 3)
    kernel, function = KERNELS["gaussian"]
    expected = reference.mmd2(function, x, y, estimator)
    actual = ms.mmd2(x, y, kernel, estimator, block_size=block_size, route="pairwise")
    np.testing.assert_allclose(float(actual), expected, rtol=1e-10)


@pytest.mark.parametrize("name", FEATURE_KERNELS)
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_feature_route_equals_pairwise_route(rng, name, estimator):
    kernel, _ = KERNELS[name]
    assert ms.select_route(kernel, estimator) == "feature"
    x, y = samples(rng, 40, 29, 6)
    feature = ms.mmd2(x, y, kernel, estimator, route="feature")
    pairwise = ms.mmd2(x, y, kernel, estimator, route="pairwise", block_size=8)
    np.testing.assert_allclose(float(feature), float(pairwise), rtol=1e-10)


@given(
    m=st.sampled_from([2, 3, M]),
    n=st.sampled_from([2, N]),
    d=st.sampled_from([1, D]),
    c=st.floats(0.0, 2.0),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_unbiased_poly2_feature_route_is_the_u_statistic(m, n, d, c, seed):
    # O((m + n) d^2) from Gram matrices and fourth powers == the O(m^2 d) U-statistic.
    rng = np.random.default_rng(seed)
    x, y = samples(rng, m, n, d)
    expected = reference.mmd2(reference.polynomial(2, c), x, y, "unbiased")
    actual = ms.mmd2(x, y, ms.Polynomial(2, c=c), "unbiased")
    scale = reference.mmd2(reference.polynomial(2, c), x, 2 * y, "biased")  # magnitude of the terms
    # U-statistics can be ~0 by cancellation, so the tolerance is relative to the terms' size.
    assert abs(float(actual) - expected) <= 1e-11 * max(abs(expected), scale)


@pytest.mark.parametrize("name", ["poly2", "gaussian", "laplacian", "function"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_jit_and_no_jit_agree(rng, name, estimator):
    kernel, _ = KERNELS[name]
    x, y = samples(rng, M, N, D)
    eager = ms.mmd2(x, y, kernel, estimator, block_size=BLOCK)
    jitted = jax.jit(lambda a, b, k: ms.mmd2(a, b, k, estimator, block_size=BLOCK))(x, y, kernel)
    np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-13)


@pytest.mark.parametrize("name", PROPERTY_KERNELS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_symmetric_in_x_and_y(rng, name, estimator):
    kernel, _ = KERNELS[name]
    x, y = samples(rng, 14, 14, 3)
    np.testing.assert_allclose(
        float(ms.mmd2(x, y, kernel, estimator)), float(ms.mmd2(y, x, kernel, estimator)), rtol=1e-11
    )


@pytest.mark.parametrize("name", PROPERTY_KERNELS)
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_invariant_to_permuting_samples(rng, name, estimator):
    kernel, _ = KERNELS[name]
    x, y = samples(rng, M, N, D)
    shuffled = ms.mmd2(rng.permutation(x), rng.permutation(y), kernel, estimator, block_size=BLOCK)
    original = ms.mmd2(x, y, kernel, estimator, block_size=BLOCK)
    np.testing.assert_allclose(float(shuffled), float(original), rtol=1e-11)


def test_linear_time_estimator_pairs_samples_in_the_given_order(rng):
    # docs/math.md: z = (x, y) "taken in the given order"; a shuffle is the caller's choice.
    x, y = samples(rng, 10, 10, 2)
    kernel, function = KERNELS["gaussian"]
    reordered = x[::-1]
    np.testing.assert_allclose(
        float(ms.mmd2(reordered, y, kernel, "linear")),
        reference.mmd2(function, reordered, y, "linear"),
        rtol=1e-12,
    )
    assert float(ms.mmd2(reordered, y, kernel, "linear")) != pytest.approx(
        float(ms.mmd2(x, y, kernel, "linear")), rel=1e-6
    )


@pytest.mark.parametrize("name", [*PROPERTY_KERNELS, "linear"])
@pytest.mark.parametrize("route", ["auto", "pairwise"])
def test_biased_mmd_of_a_sample_with_itself_is_zero(rng, name, route):
    kernel, _ = KERNELS[name]
    x = rng.normal(size=(21, 4))
    value = float(ms.mmd2(x, x, kernel, "biased", route=route, block_size=6))
    scale = abs(float(jnp.mean(kernel(jnp.asarray(x), jnp.asarray(x))))) + 1.0
    assert abs(value) <= 1e-13 * scale


@pytest.mark.parametrize("name", ["gaussian", "laplacian", "poly3", "function", "sum"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_pairwise_gradient_equals_dense_gradient(rng, name, estimator):
    # The checkpointed scan must differentiate to the same numbers as the dense formula.
    kernel, _ = KERNELS[name]
    x, y = samples(rng, 13, 9, 3)

    def dense(a, b):
        m, n = a.shape[0], b.shape[0]
        kxx, kyy, kxy = kernel(a, a), kernel(b, b), kernel(a, b)
        if estimator == "biased":
            return jnp.sum(kxx) / m**2 + jnp.sum(kyy) / n**2 - 2 * jnp.sum(kxy) / (m * n)
        within_x = (jnp.sum(kxx) - jnp.trace(kxx)) / (m * (m - 1))
        within_y = (jnp.sum(kyy) - jnp.trace(kyy)) / (n * (n - 1))
        return within_x + within_y - 2 * jnp.sum(kxy) / (m * n)

    # Both compiled whole: one program each instead of one per operation of an eager gradient.
    blocked = jax.jit(jax.grad(lambda a, b: ms.mmd2(a, b, kernel, estimator, block_size=4), argnums=(0, 1)))(
        x, y
    )
    expected = jax.jit(jax.grad(dense, argnums=(0, 1)))(jnp.asarray(x), jnp.asarray(y))
    for got, want in zip(blocked, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_gradient_with_respect_to_the_bandwidth(rng):
    x, y = samples(rng, 10, 12, 3)

    def loss(sigma):
        return ms.mmd2(x, y, ms.Gaussian(sigma), block_size=3)

    step = 1e-5
    finite_difference = (loss(1.2 + step) - loss(1.2 - step)) / (2 * step)
    # Central differences in float64: truncation O(step^2) ~ 1e-10, rounding ~ 1e-16 / step.
    np.testing.assert_allclose(float(jax.grad(loss)(1.2)), float(finite_difference), rtol=1e-7)


@pytest.mark.parametrize("name", ["poly2", "gaussian", "laplacian"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_float32_in_float32_out(rng, name, estimator):
    kernel, function = KERNELS[name]
    x, y = samples(rng, 64, 48, 8)
    value = ms.mmd2(x.astype(np.float32), y.astype(np.float32), kernel, estimator)
    assert value.dtype == jnp.float32
    expected = reference.mmd2(function, x, y, estimator)
    scale = reference.mmd2(function, x, x[::-1], "biased") + abs(reference.mmd2(function, x, 3 * y, "biased"))
    # float32 epsilon is 6e-8; sums over a few thousand kernel values lose at most ~1e-5 of the
    # terms' magnitude, which is what the scale measures.
    assert abs(float(value) - expected) <= 1e-5 * scale


def test_centring_keeps_float32_gaussian_accurate_far_from_the_origin(rng):
    # ||a||^2 + ||b||^2 - 2 a^T b cancels for points near each other but far from the origin;
    # the pairwise route centres translation-invariant kernels, so the shift must not matter.
    x, y = samples(rng, 50, 50, 4)
    offset = 1e3
    shifted = ms.mmd2((x + offset).astype(np.float32), (y + offset).astype(np.float32), ms.Gaussian(1.0))
    expected = reference.mmd2(reference.gaussian(1.0), x, y, "biased")
    # Without centring the distances would carry errors of order 1e6 * 6e-8 = 0.06 (so would MMD);
    # centring leaves the float32 rounding of the offset itself, ~1e3 * 6e-8 per coordinate.
    np.testing.assert_allclose(float(shifted), expected, rtol=1e-3)


# ----------------------------------------------------------------------------------------------
# Range: samples far from 1 in magnitude

#: Each kernel as a function of the samples' scale t, with the degree q of its MMD^2 in t
#: (bandwidths and offsets scale with the samples, so that MMD^2(t x, t y; k_t) = t^q MMD^2(x, y;
#: k_1)), and routes it takes: every kernel and every route at least once ("linear-time" is the
#: linear-time estimator's own route). The scaling comes before the route, which sees only the
#: scaled kernel's parameters: the random routes draw from them.
SCALED_KERNELS = {
    "linear": (lambda t: ms.Linear(), 2, ("feature",)),
    "poly2_c": (lambda t: ms.Polynomial(2, c=0.5 * t * t), 4, ("feature",)),
    "poly3": (lambda t: ms.Polynomial(3, scale=0.5), 6, ("pairwise",)),
    "gaussian": (lambda t: ms.Gaussian(1.5 * t), 0, ("pairwise", "rff")),
    "laplacian": (lambda t: ms.Laplacian(1.5 * t), 0, ("pairwise",)),
    "multi_gaussian": (lambda t: ms.MultiGaussian.around(1.5 * t), 0, ("pairwise", "rff")),
    "energy": (lambda t: ms.Energy(), 1, ("pairwise", "sliced", "linear-time")),
    "composite": (
        lambda t: 2.0 * ms.Gaussian(t) * ms.Laplacian(3.0 * t) + ms.Gaussian(2.0 * t),
        0,
        ("pairwise",),
    ),
}
#: Powers of two 2^k near 1e-25, 1e-20, 1e18, 1e19, 1e20 (the float32 squares overflow from
#: about 1.8e19) and 1e25: multiplying by them rounds nothing.
SCALE_EXPONENTS = (-83, -66, 60, 63, 66, 67, 83)
LARGEST, SMALLEST = float(np.finfo(np.float32).max), float(np.finfo(np.float32).smallest_normal)


@pytest.mark.parametrize(
    ("name", "route"), [(name, route) for name, (_, _, routes) in SCALED_KERNELS.items() for route in routes]
)
def test_samples_of_any_magnitude_give_the_exact_value_or_a_clear_refusal(rng, name, route):
    # Samples t x, t y with t = 2^k against x, y at t = 1, in float32: mmd2 scales samples by a
    # power of two into (-1, 1) (docs/math.md, "Numerics"), so both compute on the same bits and
    # the value at t must be 2^(k q) times the value at 1 exactly, wherever that is a normal
    # float32; beyond the largest float32 mmd2 must refuse, and below the smallest give ~0.
    build, degree, _ = SCALED_KERNELS[name]
    x, y = (a.astype(np.float32) for a in samples(rng, 12, 10, 3, shift=0.5))
    # the unbiased estimator where a route has its own algebra for it
    estimators = {
        "linear-time": ("linear",),
        "feature": ("biased", "unbiased"),
        "rff": ("biased", "unbiased"),
    }
    estimators = estimators.get(route, ("biased",))
    options = {"route": "auto" if route == "linear-time" else route, "key": jax.random.key(3)}
    for estimator in estimators:
        reference_value = np.float32(ms.mmd2(x, y, build(1.0), estimator, **options))
        assert reference_value != 0.0
        for k in SCALE_EXPONENTS:
            t = 2.0**k
            expected = float(reference_value) * 2.0 ** (k * degree)  # a Python float: no overflow
            if abs(expected) > LARGEST:
                with pytest.raises(ValueError, match="overflows float32"):
                    ms.mmd2(x * np.float32(t), y * np.float32(t), build(t), estimator, **options)
                continue
            value = float(ms.mmd2(x * np.float32(t), y * np.float32(t), build(t), estimator, **options))
            if abs(expected) < SMALLEST:
                assert abs(value) <= SMALLEST, (estimator, k)
            else:
                assert value == expected, (estimator, k)


def test_the_issue_case_laplacian_at_1e20_against_brute_force(rng):
    # Before the rescaling, float32 gave -9.5e-08 here (the squared distances overflowed).
    x, y = samples(rng, 20, 16, 4)
    value = ms.mmd2((x * 1e20).astype(np.float32), (y * 1e20).astype(np.float32), ms.Laplacian(2e20))
    expected = reference.mmd2(reference.laplacian(2.0), x, y, "biased")
    # float32 rounding of the samples (6e-8 relative) and of the sums over 36^2 kernel values
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


@pytest.mark.parametrize("k", [-66, 66])
def test_gradients_far_from_one_scale_with_the_samples(rng, k):
    # d/d(t x) of MMD^2(t x, t y; k_t) = t^(q - 1) d/dx of MMD^2(x, y; k_1), exactly for t = 2^k.
    x, y = (a.astype(np.float32) for a in samples(rng, 12, 10, 3, shift=0.5))
    t = np.float32(2.0**k)
    for name in ("gaussian", "energy"):
        build, degree, _ = SCALED_KERNELS[name]
        at_one = jax.grad(ms.mmd2)(x, y, build(1.0))
        at_t = jax.grad(ms.mmd2)(x * t, y * t, build(float(t)))
        np.testing.assert_array_equal(
            np.asarray(at_t), np.asarray(at_one) * np.float32(2.0 ** (k * (degree - 1)))
        )


def test_non_finite_samples_are_named(as_a_user):
    x = np.ones((4, 2), np.float32)
    x[1, 0] = np.nan
    with pytest.raises(ValueError, match="x holds 1 NaN or infinite value"):
        ms.mmd2(x, np.zeros((3, 2), np.float32), ms.Gaussian(1.0))


def test_routes_are_selected_from_the_kernel():
    assert ms.select_route(ms.Polynomial(2)) == "feature"
    assert ms.select_route(ms.Polynomial(2) + ms.Linear()) == "feature"
    assert ms.select_route(ms.Linear() * ms.Linear()) == "feature"
    assert ms.select_route(ms.Polynomial(2) * ms.Linear()) == "pairwise"  # degree 3
    assert ms.select_route(ms.Polynomial(3)) == "pairwise"
    assert ms.select_route(ms.Gaussian(1.0) + ms.Linear()) == "pairwise"
    assert ms.select_route(ms.Polynomial(2), "linear") == "paired"
    assert ms.select_route(ms.Polynomial(2), route="pairwise") == "pairwise"


def test_default_block_size_bounds_the_block():
    assert default_block_size(65536, 65536) == 128
    assert default_block_size(1024, 10) == 64  # at least 16 blocks where possible
    assert default_block_size(129, 129) == 9
    assert default_block_size(128, 3) == 128  # up to 128 samples: one tile
    assert default_block_size(10, 7) == 10
    assert default_block_size(1, 1) == 1
    # split over devices, each device's share of the rows is what its blocks divide
    assert default_block_size(203, 150, 8) == 26
    assert default_block_size(65536, 65536, 8) == default_block_size(8192, 8192) == 128
    assert default_block_size(4096, 100, 2) == 128


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "kwargs", "message"),
    [
        ((10,), (10, 3), {}, r"x must be samples \(m, d\).*got shape \(10,\).*reshape"),
        ((2, 5, 3), (10, 3), {}, r"x must be samples \(m, d\).*x.reshape\(-1, d\)"),
        ((10, 3), (10, 4), {}, "same number of channels d"),
        ((0, 3), (10, 3), {}, "at least one sample"),
        ((1, 3), (10, 3), {"estimator": "unbiased"}, "unbiased estimator needs at least 2 samples"),
        ((10, 3), (1, 3), {"estimator": "linear"}, "linear-time estimator needs at least 2"),
        ((10, 3), (10, 3), {"estimator": "quadratic"}, "estimator must be one of"),
        ((10, 3), (10, 3), {"route": "fast"}, "route must be one of"),
        ((10, 3), (10, 3), {"block_size": 0}, "block_size must be a positive integer"),
        ((10, 3), (10, 3), {"block_size": True}, "block_size must be a positive integer"),
        ((10, 3), (10, 3), {"block_size": 2.5}, "block_size must be a positive integer"),
        ((10, 3), (10, 3), {"block_size": "8"}, "block_size must be a positive integer"),
    ],
)
def test_bad_inputs_raise_clear_errors(as_a_user, x_shape, y_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ms.mmd2(np.ones(x_shape), np.ones(y_shape), ms.Gaussian(1.0), **kwargs)


def test_feature_route_requested_for_a_kernel_without_one(as_a_user):
    with pytest.raises(ValueError, match="route='feature' needs a kernel of the form"):
        ms.mmd2(np.ones((4, 2)), np.ones((4, 2)), ms.Gaussian(1.0), route="feature")


def test_a_plain_function_is_not_a_kernel(as_a_user):
    with pytest.raises(ValueError, match="from_function"):
        ms.mmd2(np.ones((4, 2)), np.ones((4, 2)), lambda a, b: a @ b)


def test_integer_inputs_are_treated_as_floats():
    x = np.arange(12).reshape(6, 2)
    value = ms.mmd2(x, x + 1, ms.Linear())
    np.testing.assert_allclose(float(value), 2.0, rtol=1e-15)  # ||mean shift||^2 = 1 + 1


def test_pairwise_gradient_memory_is_bounded_by_the_block():
    # The compiled value-and-gradient program must not hold an m x n matrix: the scan body is
    # rematerialised (jax.checkpoint), so its temporaries scale with block_size * n only.
    m = n = 2048
    block = 32
    x = jnp.zeros((m, 8), jnp.float32)
    y = jnp.zeros((n, 8), jnp.float32)

    def loss(a, b):
        return ms.mmd2(a, b, ms.Gaussian(1.0), block_size=block)

    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(x, y).compile()
    temporary = compiled.memory_analysis().temp_size_in_bytes
    full_matrix = m * n * 4
    assert temporary < full_matrix / 8, f"{temporary} bytes of temporaries for an m x n of {full_matrix}"


def test_gradient_with_respect_to_a_zero_offset(rng):
    # Terms whose coefficient is a concrete 0 are skipped; a traced 0 must still differentiate:
    # d/dc [||Gx/m - Gy/n||^2 + 2c ||mean x - mean y||^2] = 2 ||mean x - mean y||^2.
    x, y = samples(rng, 12, 9, 3)
    gradient = jax.grad(lambda c: ms.mmd2(x, y, ms.Polynomial(2, c=c)))(0.0)
    np.testing.assert_allclose(float(gradient), 2 * np.sum((x.mean(0) - y.mean(0)) ** 2), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# A fixed target's side of the pairwise route, computed once


@pytest.mark.parametrize("name", ["gaussian", "laplacian", "energy", "poly3", "sum", "function"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_a_pairwise_target_gives_the_value_of_mmd2(rng, name, estimator):
    kernel, function = KERNELS[name]
    x, y = samples(rng, M, N, D)
    target = pairwise_target(y, kernel, estimator)
    # y's own term, against its definition, about the centre the target chose (the energy
    # kernel's terms change with a shift; only their combination in MMD^2 does not)
    shifted = y if target.centre is None else y - np.asarray(target.centre)
    kyy = reference.kernel_matrix(function, shifted, shifted)
    within = (kyy.sum() - np.trace(kyy)) / (N * (N - 1)) if estimator == "unbiased" else kyy.mean()
    np.testing.assert_allclose(float(target.within), within, rtol=1e-12)
    # float64, the same sums but y's taken apart: rounding only
    expected = ms.mmd2(x, y, kernel, estimator, route="pairwise")
    np.testing.assert_allclose(float(pairwise_mmd2_to_target(x, target)), float(expected), rtol=1e-12)


# the blocked scans (sets of 23 and 14 in blocks of 5) and the gradient: one shift-invariant
# kernel and the energy kernel, whose terms are shifted about one centre, one estimator each
@pytest.mark.parametrize(("name", "estimator"), [("gaussian", "biased"), ("energy", "unbiased")])
def test_a_pairwise_target_gives_the_gradient_of_mmd2_in_blocks(rng, name, estimator):
    kernel, _ = KERNELS[name]
    x, y = samples(rng, M, N, D)
    target = pairwise_target(y, kernel, estimator, block_size=BLOCK)

    def direct(a):
        return ms.mmd2(a, y, kernel, estimator, block_size=BLOCK, route="pairwise")

    def to_target(a):
        return pairwise_mmd2_to_target(a, target, BLOCK)

    np.testing.assert_allclose(float(to_target(x)), float(direct(x)), rtol=1e-12)
    # both compiled whole (an eager gradient compiles one program per operation)
    expected, actual = jax.jit(jax.grad(direct))(x), jax.jit(jax.grad(to_target))(x)
    assert max_norm_relative_error(actual, expected) <= 1e-12


def test_a_pairwise_target_keeps_samples_of_any_magnitude_exact(rng):
    # the target's sum is taken on y scaled by its own power of two, the rest on the pair's: the
    # float32 value at 2^80 is 2^80 times the value at 1 (the energy kernel's degree q = 1)
    x, y = (array.astype(np.float32) for array in samples(rng, 12, 10, 3))
    at_one = pairwise_mmd2_to_target(x, pairwise_target(y, ms.Energy()))
    far = pairwise_mmd2_to_target(x * 2.0**80, pairwise_target(y * 2.0**80, ms.Energy()))
    assert far.dtype == jnp.float32
    assert float(far) == float(at_one) * 2.0**80  # powers of two round nothing: to the bit


def test_a_pairwise_target_refuses_what_it_cannot_do(rng):
    x, y = samples(rng, 8, 6, 3)
    with pytest.raises(ValueError, match="estimator"):
        pairwise_target(y, ms.Gaussian(1.0), "linear")
    target = pairwise_target(y, ms.Gaussian(1.0))
    with pytest.raises(ValueError, match="same number of channels"):
        pairwise_mmd2_to_target(x[:, :2], target)
    with pytest.raises(ValueError, match="NaN"):
        pairwise_mmd2_to_target(np.full_like(x, np.nan), target)

"""Kernels (mmdstyle/kernels.py) against the brute-force float64 NumPy references of tests/reference.py."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import mmdstyle as ms
from mmdstyle.kernels import squared_distances
from tests import reference
from tests.helpers import CHANNELS, OTHER_SAMPLE_COUNTS, SAMPLE_COUNTS

# Agreement with a float64 double loop: the package uses one matmul and the expansion
# ||a||^2 + ||b||^2 - 2 a^T b, which differ from the loop only by a few ulps of the O(1)-O(100)
# intermediate values, so 1e-12 relative is ~1e4 ulps of headroom. The absolute floor covers
# entries of inner-product kernels that happen to be near 0 (a^T b ~ 0), where relative error of
# a difference of O(10) terms is meaningless; it is 1e-12 of the typical entry size.
RTOL = 1e-12
ATOL = 1e-12


def user_l1_exponential(a, b):
    return jnp.exp(-jnp.sum(jnp.abs(a - b)))


def user_cubic(a, b):
    return (jnp.dot(a, b) + 1.0) ** 3


def kernel_cases() -> list[tuple[str, Callable[[], ms.AbstractKernel], Callable]]:
    """(id, kernel factory, NumPy reference). Parameters are Python numbers: fine in float32 too."""
    return [
        ("linear", lambda: ms.Linear(), reference.linear),
        ("poly1", lambda: ms.Polynomial(1), reference.polynomial(1)),
        ("poly2", lambda: ms.Polynomial(2), reference.polynomial(2)),
        ("poly2_c2_s0.1", lambda: ms.Polynomial(2, c=2.0, scale=0.1), reference.polynomial(2, 2.0, 0.1)),
        ("poly3_c1_s0.5", lambda: ms.Polynomial(3, c=1.0, scale=0.5), reference.polynomial(3, 1.0, 0.5)),
        ("poly4_c0.5_s2", lambda: ms.Polynomial(4, c=0.5, scale=2.0), reference.polynomial(4, 0.5, 2.0)),
        ("gaussian1", lambda: ms.Gaussian(1.0), reference.gaussian(1.0)),
        ("gaussian0.7", lambda: ms.Gaussian(0.7), reference.gaussian(0.7)),
        ("gaussian_int_sigma", lambda: ms.Gaussian(2), reference.gaussian(2.0)),
        ("gaussian_np_sigma", lambda: ms.Gaussian(np.float64(1.5)), reference.gaussian(1.5)),
        ("laplacian1.3", lambda: ms.Laplacian(1.3), reference.laplacian(1.3)),
        ("function_l1", lambda: ms.kernels.from_function(user_l1_exponential), reference.l1_exponential),
        ("function_cubic", lambda: ms.kernels.from_function(user_cubic, name="cubic"), reference.cubic),
        (
            "sum_gaussian_linear",
            lambda: ms.Gaussian(1.0) + ms.Linear(),
            reference.sum_of(reference.gaussian(1.0), reference.linear),
        ),
        (
            "sum_poly_laplacian",
            lambda: ms.Polynomial(2) + ms.Laplacian(0.5),
            reference.sum_of(reference.polynomial(2), reference.laplacian(0.5)),
        ),
        (
            "product_gaussian_poly",
            lambda: ms.Gaussian(1.0) * ms.Polynomial(2, c=1.0),
            reference.product_of(reference.gaussian(1.0), reference.polynomial(2, 1.0)),
        ),
        (
            "product_linear_linear",
            lambda: ms.Linear() * ms.Linear(),
            reference.product_of(reference.linear, reference.linear),
        ),
        ("scaled_left", lambda: 2.5 * ms.Gaussian(0.8), reference.scaled(2.5, reference.gaussian(0.8))),
        (
            "scaled_right",
            lambda: ms.Polynomial(2, c=1.0) * 0.3,
            reference.scaled(0.3, reference.polynomial(2, 1.0)),
        ),
        ("scaled_int", lambda: 3 * ms.Laplacian(1.0), reference.scaled(3.0, reference.laplacian(1.0))),
        ("gaussian_cubed", lambda: ms.Gaussian(1.2) ** 3, lambda a, b: reference.gaussian(1.2)(a, b) ** 3),
        ("poly1_cubed", lambda: ms.Polynomial(1, c=1.0) ** 3, reference.polynomial(3, 1.0)),
        ("linear_squared", lambda: ms.Linear() ** 2, reference.polynomial(2)),
        (
            "function_power",
            lambda: ms.kernels.from_function(user_l1_exponential) ** 2,
            lambda a, b: reference.l1_exponential(a, b) ** 2,
        ),
        (
            "nested",
            lambda: 0.5 * (ms.Linear() + ms.Polynomial(2, c=1.0)) * ms.Gaussian(2.0),
            reference.product_of(
                reference.scaled(0.5, reference.sum_of(reference.linear, reference.polynomial(2, 1.0))),
                reference.gaussian(2.0),
            ),
        ),
    ]


CASES = kernel_cases()
CASE_IDS = [case[0] for case in CASES]


@pytest.fixture
def samples(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (6, 3), y (5, 3) and y_paired (6, 3), float64."""
    x = rng.normal(size=(6, 3))
    y = rng.normal(size=(5, 3)) + 0.3
    y_paired = rng.normal(size=(6, 3))
    return x, y, y_paired


# ----------------------------------------------------------------------------------------------
# Values


@jax.jit
def all_evaluations(kernel, x, y, y_paired):
    """Every way to evaluate a kernel, compiled together (one program per kernel, not one per op)."""
    # All pairs through the scalar core: a double vmap that bypasses any fast __call__ override.
    row = jax.vmap(kernel.compute_elementwise, in_axes=(None, 0))
    return {
        "matrix": kernel(x, y),
        "paired": kernel.paired(x, y_paired),
        "elementwise_all_pairs": jax.vmap(row, in_axes=(0, None))(x, y),
        "elementwise_single": kernel.compute_elementwise(x[1], y[2]),
    }


@pytest.mark.parametrize(("name", "make_kernel", "formula"), CASES, ids=CASE_IDS)
def test_kernel_values_match_double_loop(name, make_kernel, formula, samples):
    x, y, y_paired = samples
    kernel = make_kernel()
    values = all_evaluations(kernel, *(jnp.asarray(a) for a in samples))
    expected = reference.kernel_matrix(formula, x, y)
    assert values["matrix"].shape == (6, 5)
    np.testing.assert_allclose(values["matrix"], expected, rtol=RTOL, atol=ATOL)
    # paired(x, y) is the diagonal of the matrix of x against y.
    paired_expected = np.diag(reference.kernel_matrix(formula, x, y_paired))
    np.testing.assert_allclose(values["paired"], paired_expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(values["elementwise_all_pairs"], expected, rtol=RTOL, atol=ATOL)
    assert values["elementwise_single"].shape == ()
    np.testing.assert_allclose(values["elementwise_single"], expected[1, 2], rtol=RTOL, atol=ATOL)


@jax.jit
def gaussian_and_laplacian(sigma, x, y):
    # One compiled program per shape: eager dispatch would compile every primitive per shape.
    return ms.Gaussian(sigma)(x, y), ms.Laplacian(sigma)(x, y)


@settings(max_examples=5, deadline=None)
@given(
    # Edge sizes (a single sample, a single channel) and ordinary ones; few distinct shapes, so
    # compiled programs are reused across examples.
    m=SAMPLE_COUNTS,
    n=OTHER_SAMPLE_COUNTS,
    d=CHANNELS,
    seed=st.integers(0, 2**31 - 1),
    sigma=st.floats(0.3, 3.0),
)
def test_gaussian_and_laplacian_any_shape(m, n, d, seed, sigma):
    generator = np.random.default_rng(seed)
    x, y = generator.normal(size=(m, d)), generator.normal(size=(n, d))
    gaussian, laplacian = gaussian_and_laplacian(sigma, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(
        gaussian, reference.kernel_matrix(reference.gaussian(sigma), x, y), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        laplacian, reference.kernel_matrix(reference.laplacian(sigma), x, y), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize(("name", "make_kernel", "formula"), CASES, ids=CASE_IDS)
def test_float32_stays_float32(name, make_kernel, formula, samples):
    # Dtype promotion is decided while tracing, so eval_shape sees any silent float64 without
    # compiling (and strict promotion would raise on an explicit float32/float64 mix).
    x, y, y_paired = (jnp.asarray(a.astype(np.float32)) for a in samples)
    kernel = make_kernel()
    assert jax.eval_shape(kernel, x, y).dtype == jnp.float32
    assert jax.eval_shape(kernel.paired, x, y_paired).dtype == jnp.float32
    assert jax.eval_shape(kernel.compute_elementwise, x[0], y[0]).dtype == jnp.float32


def test_float32_values_are_float32_accurate(samples):
    # One concrete float32 run: the values agree with float64 to float32 precision (entries are
    # O(1), a few float32 ulps ~ 1e-6).
    x, y, _ = samples
    actual = gaussian_and_laplacian(1.3, jnp.asarray(x.astype(np.float32)), jnp.asarray(y.astype(np.float32)))
    expected = gaussian_and_laplacian(1.3, jnp.asarray(x), jnp.asarray(y))
    for matrix_32, matrix_64 in zip(actual, expected, strict=True):
        assert matrix_32.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(matrix_32, np.float64), matrix_64, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Composition algebra


COMPOSABLE = [
    ms.Linear(),
    ms.Polynomial(3, c=1.0, scale=0.5),
    ms.Gaussian(0.9),
    ms.Laplacian(1.7),
    ms.kernels.from_function(user_l1_exponential),
]


@pytest.mark.parametrize(
    ("first", "second"),
    # Unordered pairs, each kernel with itself included; the tests below cover the other order.
    list(itertools.combinations_with_replacement(COMPOSABLE, 2)),
    ids=repr,
)
def test_sum_and_product_of_matrices(first, second, samples):
    x, y, _ = (jnp.asarray(a) for a in samples)
    k1, k2 = first(x, y), second(x, y)
    # The composite evaluates the same two matrices and adds/multiplies them: a few ulps.
    np.testing.assert_allclose((first + second)(x, y), k1 + k2, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose((first * second)(x, y), k1 * k2, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose((second * first)(x, y), k1 * k2, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kernel", COMPOSABLE, ids=repr)
@pytest.mark.parametrize("factor", [0.25, 3])
def test_positive_scaling(kernel, factor, samples):
    x, y, y_paired = (jnp.asarray(a) for a in samples)
    for scaled in (factor * kernel, kernel * factor):
        np.testing.assert_allclose(scaled(x, y), factor * kernel(x, y), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(
            scaled.paired(x, y_paired), factor * kernel.paired(x, y_paired), rtol=RTOL, atol=ATOL
        )


def test_scaling_by_a_jax_scalar(samples):
    x, y, _ = (jnp.asarray(a) for a in samples)
    kernel = ms.Gaussian(1.0)
    factor = jnp.asarray(2.0)
    np.testing.assert_allclose((factor * kernel)(x, y), 2.0 * kernel(x, y), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("power", [1, 2, 3, 4])
def test_power_is_repeated_product(power, samples):
    x, y, _ = (jnp.asarray(a) for a in samples)
    kernel = ms.Polynomial(1, c=1.0, scale=0.5)
    np.testing.assert_allclose((kernel**power)(x, y), kernel(x, y) ** power, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------------------------
# Inner-product coefficients


def as_floats(coefficients) -> list[float]:
    return [float(c) for c in coefficients]


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        (ms.Linear(), [0.0, 1.0]),
        (ms.Polynomial(1), [0.0, 1.0]),
        (ms.Polynomial(1, c=2.0, scale=3.0), [2.0, 3.0]),
        (ms.Polynomial(2), [0.0, 0.0, 1.0]),
        (ms.Polynomial(2, c=1.5, scale=0.5), [1.5**2, 2 * 1.5 * 0.5, 0.5**2]),
        (ms.Polynomial(3, c=1.0, scale=2.0), [1.0, 6.0, 12.0, 8.0]),
        (ms.Linear() + ms.Polynomial(2, c=1.0, scale=2.0), [1.0, 1.0 + 4.0, 4.0]),
        (ms.Linear() * ms.Linear(), [0.0, 0.0, 1.0]),
        (ms.Linear() ** 2, [0.0, 0.0, 1.0]),
        (ms.Polynomial(1, c=1.0) ** 3, [1.0, 3.0, 3.0, 1.0]),
        (3.0 * ms.Polynomial(1, c=1.0), [3.0, 3.0]),
        (ms.Polynomial(1, c=2.0) * ms.Polynomial(1, c=3.0, scale=0.5), [6.0, 2.0 * 0.5 + 3.0, 0.5]),
        (0.5 * (ms.Linear() + ms.Polynomial(2, c=1.0)) * 2.0, [1.0, 3.0, 1.0]),
    ],
    ids=repr,
)
def test_inner_product_coefficients_values(kernel, expected):
    coefficients = kernel.inner_product_coefficients()
    assert coefficients is not None
    # Small integers and products of binary fractions: exact up to rounding of one multiply-add.
    np.testing.assert_allclose(as_floats(coefficients), expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    "kernel",
    [
        ms.Gaussian(1.0),
        ms.Laplacian(1.0),
        ms.kernels.from_function(user_cubic),
        ms.Gaussian(1.0) + ms.Linear(),
        ms.Linear() * ms.Laplacian(2.0),
        2.0 * ms.Gaussian(1.0),
        ms.Gaussian(1.0) ** 2,
    ],
    ids=repr,
)
def test_inner_product_coefficients_none(kernel):
    assert kernel.inner_product_coefficients() is None


@settings(max_examples=25, deadline=None)
@given(
    degree=st.integers(1, 4),
    c=st.floats(0.0, 3.0),
    scale=st.floats(0.05, 3.0),
    factor=st.floats(0.1, 5.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_coefficients_reproduce_the_kernel(degree, c, scale, factor, seed):
    generator = np.random.default_rng(seed)
    a, b = generator.normal(size=3), generator.normal(size=3)
    t = float(a @ b)
    kernels = [
        ms.Polynomial(degree, c=c, scale=scale),
        factor * ms.Polynomial(degree, c=c, scale=scale) + ms.Linear(),
        ms.Polynomial(degree, c=c, scale=scale) * ms.Polynomial(1, c=c, scale=scale),
    ]
    for kernel in kernels:
        coefficients = as_floats(kernel.inner_product_coefficients())
        from_coefficients = sum(coefficient * t**p for p, coefficient in enumerate(coefficients))
        value = float(kernel.compute_elementwise(jnp.asarray(a), jnp.asarray(b)))
        # Values up to ~(3 * 3 + 3)^5 ~ 2.5e5 summed from terms of either sign: the absolute floor
        # is 1e-12 of the largest possible term magnitude sum.
        magnitude = sum(abs(coefficient) * abs(t) ** p for p, coefficient in enumerate(coefficients))
        assert math.isclose(from_coefficients, value, rel_tol=1e-11, abs_tol=1e-12 * magnitude)


# ----------------------------------------------------------------------------------------------
# Translation invariance


INVARIANT = [
    ms.Gaussian(1.0),
    ms.Laplacian(0.5),
    ms.Gaussian(1.0) + ms.Laplacian(2.0),
    ms.Gaussian(1.0) * ms.Laplacian(2.0),
    2.0 * ms.Gaussian(0.3),
    ms.Laplacian(1.0) ** 2,
]
NOT_INVARIANT = [
    ms.Linear(),
    ms.Polynomial(2),
    ms.Polynomial(3, c=1.0),
    ms.Gaussian(1.0) + ms.Linear(),
    ms.Laplacian(1.0) * ms.Polynomial(2, c=1.0),
    2.0 * ms.Linear(),
    ms.Polynomial(1, c=1.0) ** 2,
]


@pytest.mark.parametrize("kernel", INVARIANT, ids=repr)
def test_translation_invariant_flag_true_and_true_in_fact(kernel, samples):
    assert kernel.translation_invariant is True
    x, y, _ = (jnp.asarray(a) for a in samples)
    shift = jnp.asarray([[3.0, -2.0, 5.0]])
    # The flag licenses centring inside mmd2: shifting both sets must not change the matrix
    # beyond the cancellation of ||a||^2 + ||b||^2 - 2 a^T b at norms ~ 40 (~1e-13 absolute).
    np.testing.assert_allclose(kernel(x + shift, y + shift), kernel(x, y), rtol=0, atol=1e-11)


@pytest.mark.parametrize("kernel", [*NOT_INVARIANT, ms.kernels.from_function(user_l1_exponential)], ids=repr)
def test_translation_invariant_flag_false(kernel):
    # A user function is opaque, so it must conservatively report False.
    assert kernel.translation_invariant is False


# ----------------------------------------------------------------------------------------------
# Pytrees: jit, vmap, grad


PYTREE_KERNELS = [
    ms.Gaussian(1.0),
    ms.Laplacian(0.7),
    ms.Polynomial(3, c=1.0, scale=0.5),
    ms.Linear(),
    ms.kernels.from_function(user_cubic),
    2.0 * (ms.Gaussian(1.0) + ms.Polynomial(2, c=1.0)) * ms.Laplacian(2.0),
]


@pytest.mark.parametrize("kernel", PYTREE_KERNELS, ids=repr)
def test_flatten_unflatten_round_trip(kernel, samples):
    x, y, _ = (jnp.asarray(a) for a in samples)
    leaves, treedef = jax.tree_util.tree_flatten(kernel)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert type(rebuilt) is type(kernel)
    assert jax.tree_util.tree_structure(rebuilt) == treedef
    np.testing.assert_array_equal(rebuilt(x, y), kernel(x, y))


def test_pytree_leaves_are_the_numeric_parameters():
    kernel = 2.0 * (ms.Gaussian(1.5) + ms.Polynomial(2, c=1.0, scale=0.5))
    assert [float(leaf) for leaf in jax.tree_util.tree_leaves(kernel)] == [2.0, 1.5, 1.0, 0.5]
    assert jax.tree_util.tree_leaves(ms.Linear()) == []
    # The degree is static: it lives in the tree structure, not among the leaves.
    assert jax.tree_util.tree_structure(ms.Polynomial(2)) != jax.tree_util.tree_structure(ms.Polynomial(3))


def test_unflatten_does_not_validate():
    # JAX rebuilds kernels from tracers, zeros (tangents) and batched arrays; validation must run
    # only when a user builds a kernel.
    negative = jax.tree_util.tree_map(lambda v: -1.0, ms.Gaussian(1.0))
    assert negative.sigma == -1.0
    batched = jax.tree_util.tree_map(lambda v: jnp.ones(4), ms.Polynomial(2, c=1.0, scale=1.0))
    assert batched.c.shape == (4,)
    composite = jax.tree_util.tree_map(lambda v: 0.0, 3.0 * ms.Laplacian(1.0))
    assert composite.factor == 0.0


@pytest.mark.parametrize("kernel", PYTREE_KERNELS, ids=repr)
def test_kernel_passes_through_jit(kernel, samples):
    x, y, _ = (jnp.asarray(a) for a in samples)
    jitted = jax.jit(lambda k, a, b: k(a, b))
    np.testing.assert_allclose(jitted(kernel, x, y), kernel(x, y), rtol=RTOL, atol=ATOL)


def test_jit_traces_once_for_new_parameters_but_again_for_new_degree(samples):
    x, y, _ = (jnp.asarray(a) for a in samples)
    traces = []

    @jax.jit
    def evaluate(kernel, a, b):
        traces.append(None)
        return kernel(a, b)

    evaluate(ms.Gaussian(1.0), x, y)
    evaluate(ms.Gaussian(2.5), x, y)
    assert len(traces) == 1, "sigma is a pytree child: a new value must not recompile"
    evaluate(ms.Polynomial(2, c=1.0), x, y)
    evaluate(ms.Polynomial(2, c=3.0, scale=0.2), x, y)
    assert len(traces) == 2
    evaluate(ms.Polynomial(3, c=1.0), x, y)
    assert len(traces) == 3, "the degree is static: a new degree must recompile"


def test_vmap_over_sigmas(samples):
    x, y, _ = (jnp.asarray(a) for a in samples)
    sigmas = [0.5, 1.0, 2.0, 4.0]
    batched = jax.jit(jax.vmap(lambda s: ms.Gaussian(s)(x, y)))(jnp.asarray(sigmas))
    assert batched.shape == (4, 6, 5)
    # Unflattening does not validate, so a kernel whose sigma is a batch of values can be built
    # with tree_map and vmapped over directly.
    batched_kernel = jax.tree_util.tree_map(lambda v: jnp.asarray(sigmas), ms.Gaussian(1.0))
    batched_too = jax.jit(jax.vmap(lambda k: k(x, y)))(batched_kernel)
    for i, sigma in enumerate(sigmas):
        expected = reference.kernel_matrix(reference.gaussian(sigma), *samples[:2])
        np.testing.assert_allclose(batched[i], expected, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(batched_too[i], expected, rtol=RTOL, atol=ATOL)


def central_difference(f: Callable[[float], float], at: float, step: float = 1e-5) -> float:
    return (f(at + step) - f(at - step)) / (2.0 * step)


@pytest.mark.parametrize(
    "make_kernel",
    [
        ms.Gaussian,
        ms.Laplacian,
        lambda s: ms.Polynomial(3, c=s, scale=0.5),
        lambda s: ms.Polynomial(2, c=1.0, scale=s),
        lambda s: s * ms.Gaussian(2.0) + ms.Linear(),
    ],
    ids=["gaussian_sigma", "laplacian_sigma", "poly_c", "poly_scale", "scale_factor"],
)
def test_grad_wrt_parameter_matches_finite_difference(make_kernel, samples):
    x, y, _ = (jnp.asarray(a) for a in samples)

    def total(parameter):
        return jnp.sum(make_kernel(parameter)(x, y))

    gradient = float(jax.grad(total)(1.3))
    # Central difference with step 1e-5 in float64: truncation ~ step^2 * f''' ~ 1e-10 and rounding
    # ~ 1e-16 * f / step ~ 1e-11, both far below the 1e-6 relative tolerance.
    expected = central_difference(lambda s: float(total(s)), 1.3)
    assert math.isclose(gradient, expected, rel_tol=1e-6)


def test_grad_wrt_the_whole_kernel_pytree(samples):
    x, y, _ = (jnp.asarray(a) for a in samples)
    kernel = 1.5 * ms.Gaussian(0.8)
    gradient = jax.grad(lambda k: jnp.sum(k(x, y)))(kernel)
    # The gradient has the kernel's structure (rebuilt without validation: entries may be <= 0).
    assert jax.tree_util.tree_structure(gradient) == jax.tree_util.tree_structure(kernel)
    expected_sigma = central_difference(lambda s: float(jnp.sum((1.5 * ms.Gaussian(s))(x, y))), 0.8)
    np.testing.assert_allclose(gradient.kernel.sigma, expected_sigma, rtol=1e-6)
    np.testing.assert_allclose(gradient.factor, jnp.sum(ms.Gaussian(0.8)(x, y)), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Finite gradients where samples coincide (STYLE.md)


@pytest.mark.parametrize("kernel", [ms.Gaussian(1.0), ms.Laplacian(1.0)], ids=repr)
def test_gradients_finite_at_coinciding_samples(kernel, rng):
    # Small integers: norms and inner products are exact, so the distance between coinciding
    # samples is exactly 0 even through the matmul expansion (the case where a plain sqrt has
    # an infinite derivative). Duplicated rows: coinciding samples off the diagonal as well.
    x = jnp.asarray(rng.integers(-3, 4, size=(4, 3)).astype(np.float64))
    x_with_duplicates = jnp.concatenate([x, x[:2]])

    @jax.jit
    def gradients(data, a):
        return (
            jax.grad(lambda v: jnp.sum(kernel(v, v)))(data),
            # Same values, different array objects: no exact-zero diagonal shortcut.
            jax.grad(lambda v: jnp.sum(kernel(v, v + 0.0)))(data),
            jax.grad(lambda v: kernel.compute_elementwise(v, v))(a),
            jax.grad(lambda v: kernel.compute_elementwise(v, a))(a),
            jax.grad(lambda v: jnp.sum(kernel.paired(v, data)))(data),
        )

    for gradient in gradients(x_with_duplicates, x[0]):
        assert np.all(np.isfinite(np.asarray(gradient)))


def test_laplacian_gradient_at_coincidence_is_zero_and_elsewhere_exact(rng):
    # k(a, b) = exp(-||a - b|| / sigma) is a cone at a == b; the package defines the gradient
    # there as 0 (STYLE.md, ott-jax's custom norm). Away from it: -k (a - b) / (sigma ||a - b||).
    kernel = ms.Laplacian(1.5)
    a, b = rng.normal(size=3), rng.normal(size=3)
    gradient_first = jax.jit(jax.grad(kernel.compute_elementwise))
    at_coincidence = gradient_first(jnp.asarray(a), jnp.asarray(a))
    np.testing.assert_array_equal(at_coincidence, np.zeros(3))
    gradient = gradient_first(jnp.asarray(a), jnp.asarray(b))
    distance = np.linalg.norm(a - b)
    expected = -np.exp(-distance / 1.5) * (a - b) / (1.5 * distance)
    np.testing.assert_allclose(gradient, expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# squared_distances


@settings(max_examples=6, deadline=None)
@given(
    m=SAMPLE_COUNTS,
    n=OTHER_SAMPLE_COUNTS,
    d=CHANNELS,
    seed=st.integers(0, 2**31 - 1),
    offset=st.floats(-10.0, 10.0),
)
def test_squared_distances_match_numpy(m, n, d, seed, offset):
    generator = np.random.default_rng(seed)
    x, y = generator.normal(size=(m, d)) + offset, generator.normal(size=(n, d)) + offset
    actual = np.asarray(jax.jit(squared_distances)(jnp.asarray(x), jnp.asarray(y)))
    expected = np.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    assert np.all(actual >= 0.0)
    # The expansion ||x||^2 + ||y||^2 - 2 x^T y loses absolute accuracy in proportion to the
    # norms (up to ~ d * (10 + 4)^2 ~ 800 here): 1e-12 of that scale is ~1e4 ulps.
    scale = float(np.max(np.sum(x**2, axis=1)) + np.max(np.sum(y**2, axis=1)))
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12 * scale)


def test_squared_distances_self_diagonal_exactly_zero_and_nonnegative(rng):
    # Far from the origin the expansion cancels badly, in float32 above all; the diagonal must
    # still be exactly 0 and no entry negative.
    for dtype in (np.float64, np.float32):
        x = jnp.asarray((rng.normal(size=(6, 3)) * 1e-3 + 1e3).astype(dtype))
        # Under jit as in the package's own callers; `v` is one tracer, so `x is y` holds.
        # The second matrix compares v with an equal but distinct array: no diagonal guarantee,
        # but still clamped at 0.
        distances, distances_copy = jax.jit(
            lambda v: (squared_distances(v, v), squared_distances(v, v + 0.0))
        )(x)
        assert distances.dtype == dtype
        np.testing.assert_array_equal(np.diag(np.asarray(distances)), np.zeros(6, dtype))
        assert np.all(np.asarray(distances) >= 0.0)
        assert np.all(np.asarray(distances_copy) >= 0.0)
    # Eagerly, with the same concrete array object twice.
    x = jnp.asarray(rng.normal(size=(6, 3)) + 1e3)
    np.testing.assert_array_equal(np.diag(np.asarray(squared_distances(x, x))), np.zeros(6))


def test_squared_distances_symmetric(samples):
    x, y, _ = (jnp.asarray(a) for a in samples)
    np.testing.assert_allclose(squared_distances(x, y), squared_distances(y, x).T, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# Validation


BAD_SIGMAS = [
    0.0,
    -1.0,
    float("nan"),
    float("inf"),
    -float("inf"),
    np.ones(2),
    jnp.ones(3),
    "1",
    True,
    None,
    1j,
]


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize("kernel_class", [ms.Gaussian, ms.Laplacian])
@pytest.mark.parametrize("sigma", BAD_SIGMAS, ids=repr)
def test_bad_sigma(kernel_class, sigma):
    with pytest.raises(ValueError, match="sigma"):
        kernel_class(sigma)


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize("degree", [0, -1, 2.5, True, "2", None])
def test_bad_degree(degree):
    with pytest.raises(ValueError, match="degree"):
        ms.Polynomial(degree)


@pytest.mark.usefixtures("as_a_user")
def test_integral_float_degree_is_accepted_as_int():
    kernel = ms.Polynomial(3.0)
    assert kernel.degree == 3
    assert isinstance(kernel.degree, int)


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize("c", [-1.0, -1e-9, float("nan"), float("inf"), np.ones(2)], ids=repr)
def test_bad_offset(c):
    with pytest.raises(ValueError, match=r"^c must"):
        ms.Polynomial(2, c=c)


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize("scale", [0.0, -2.0, float("nan"), float("inf")], ids=repr)
def test_bad_scale(scale):
    with pytest.raises(ValueError, match=r"^scale must"):
        ms.Polynomial(2, scale=scale)


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize(
    "build",
    [
        lambda k: -1.0 * k,
        lambda k: 0 * k,
        lambda k: 0.0 * k,
        lambda k: k * -2.0,
        lambda k: jnp.asarray(-1.0) * k,
        lambda k: float("nan") * k,
    ],
    ids=["minus_one_left", "int_zero", "float_zero", "minus_two_right", "jax_negative", "nan"],
)
def test_non_positive_scale_factor(build):
    with pytest.raises(ValueError, match="factor"):
        build(ms.Gaussian(1.0))


@pytest.mark.parametrize("other", [1.0, "gaussian", None, np.ones(2)], ids=repr)
def test_kernel_plus_non_kernel(other):
    with pytest.raises((TypeError, ValueError)):
        ms.Gaussian(1.0) + other


@pytest.mark.usefixtures("as_a_user")
def test_composite_constructors_check_their_parts():
    with pytest.raises(ValueError, match="from_function"):
        ms.kernels.SumKernel(ms.Gaussian(1.0), lambda a, b: a @ b)
    with pytest.raises(ValueError, match="from_function"):
        ms.kernels.ProductKernel(1.0, ms.Gaussian(1.0))


def test_kernels_cannot_be_subtracted_or_negated():
    with pytest.raises(TypeError):
        ms.Gaussian(1.0) - ms.Linear()
    with pytest.raises(TypeError):
        -ms.Gaussian(1.0)


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize("power", [0, -1, 1.5, 2.0, True, "2"], ids=repr)
def test_bad_power(power):
    with pytest.raises(ValueError, match="power"):
        ms.Gaussian(1.0) ** power


@pytest.mark.usefixtures("as_a_user")
@pytest.mark.parametrize("function", [3, "rbf", None, np.ones(3)], ids=repr)
def test_from_function_needs_a_callable(function):
    with pytest.raises(ValueError, match="callable"):
        ms.kernels.from_function(function)


def test_user_function_must_return_a_scalar(samples):
    x, y, _ = (jnp.asarray(a) for a in samples)
    kernel = ms.kernels.from_function(lambda a, b: a * b, name="elementwise_product")
    with pytest.raises(ValueError, match="scalar"):
        kernel(x, y)
    with pytest.raises(ValueError, match="scalar"):
        kernel.compute_elementwise(x[0], y[0])
    with pytest.raises(ValueError, match="elementwise_product"):
        kernel.paired(x[:2], y[:2])


def test_kernels_print_their_parameters_as_numbers():
    kernel = ms.Linear() + 0.5 * ms.Gaussian(jnp.asarray(2.5)) * ms.Polynomial(3, c=1.0)
    assert repr(kernel) == "(Linear() + (0.5 * Gaussian(sigma=2.5) * Polynomial(degree=3, c=1, scale=1)))"
    assert repr(ms.Laplacian(0.125)) == "Laplacian(sigma=0.125)"

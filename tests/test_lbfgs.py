"""L-BFGS from the host: the line search's conditions, the minimiser it finds, its edge cases."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmdstyle.style.lbfgs import (
    CURVATURE,
    SUFFICIENT_DECREASE,
    HostLBFGS,
    Trial,
    cubic_minimiser,
    strong_wolfe,
)


def one_dimensional(function):
    """``evaluate(step)`` for a scalar function of the step, its slope by autodiff (float64)."""
    value_and_slope = jax.jit(jax.value_and_grad(function))

    def evaluate(step: float) -> Trial:
        value, slope = value_and_slope(jnp.float64(step))
        return Trial(step, float(value), float(slope), None)

    return evaluate


SEARCHES = {
    # a minimum beyond the first trial: the bracketing phase must grow the step
    "far minimum": lambda t: (t - 30.0) ** 2,
    # a minimum well short of the first trial: the zoom must shrink it
    "near minimum": lambda t: (t - 1e-3) ** 2 + 0.1 * (t - 1e-3) ** 4,
    "quartic": lambda t: t**4 - 2.0 * t**2 - t,
    "exponential": lambda t: jnp.exp(-3.0 * t) + 0.5 * t,
    # undefined past t = 0.2 (as a loss that overflows): such trials count as too long
    "nan beyond": lambda t: jnp.where(t < 0.2, (t - 0.1) ** 2, jnp.nan),
}


@pytest.mark.parametrize("name", SEARCHES)
def test_the_accepted_step_satisfies_the_strong_wolfe_conditions(name):
    evaluate = one_dimensional(SEARCHES[name])
    start = evaluate(0.0)
    accepted, evaluations = strong_wolfe(evaluate, start)
    assert accepted.step > 0
    assert 1 <= evaluations <= 20
    assert accepted.value <= start.value + SUFFICIENT_DECREASE * accepted.step * start.slope
    assert abs(accepted.slope) <= CURVATURE * abs(start.slope)


def test_the_cubic_minimiser_is_exact_for_a_cubic():
    # f(t) = t^3 - 3t: minimum at t = 1; the cubic through (0, f, f') and (2, f, f') is f itself
    f = lambda t: (t**3 - 3 * t, 3 * t**2 - 3)  # noqa: E731
    a, b = (Trial(t, *f(t), None) for t in (0.0, 2.0))
    assert cubic_minimiser(a, b, 0.0, 2.0) == pytest.approx(1.0, abs=1e-15)
    assert cubic_minimiser(b, a, 0.0, 2.0) == pytest.approx(1.0, abs=1e-15)
    assert cubic_minimiser(a, b, 1.5, 2.0) == 1.5  # clipped to the bounds
    concave = Trial(0.0, 0.0, -1.0, None), Trial(1.0, -2.0, -3.0, None)  # no minimiser: bisect
    assert cubic_minimiser(*concave, 0.0, 1.0) == 0.5
    assert cubic_minimiser(Trial(0.0, 0.0, -1.0, None), Trial(1.0, math.nan, math.nan, None), 0.0, 1.0) == 0.5


def test_no_descent_no_search():
    with pytest.raises(ValueError, match="must descend"):
        strong_wolfe(lambda step: Trial(step, 0.0, 0.0, None), Trial(0.0, 0.0, 0.0, None))


def test_an_exhausted_search_returns_the_lowest_value_it_saw():
    # the slope lies (says descent, the values rise): nothing satisfies sufficient decrease
    evaluate = lambda step: Trial(step, step, -1.0, None)  # noqa: E731
    accepted, evaluations = strong_wolfe(evaluate, Trial(0.0, 0.0, -1.0, None), max_trials=6)
    assert evaluations == 6
    assert accepted.step == 0.0


def evaluation_of(function):
    """The evaluation HostLBFGS expects, compiled: (x, d, t) -> (x + t d, f, grad f, slope, terms)."""

    @jax.jit
    def evaluation(params, direction, step):
        moved = params + step * direction
        value, gradient = jax.value_and_grad(function)(moved)
        return moved, value, gradient, jnp.vdot(gradient, direction), {"value": value}

    return evaluation


def run(function, start, steps):
    lbfgs = HostLBFGS(evaluation_of(function), jnp.asarray(start, jnp.float64))
    records = [lbfgs.step() for _ in range(steps)]
    return lbfgs, records


def test_on_a_quadratic_the_iterates_are_optaxs_own():
    # Where both line searches accept the same steps, host L-BFGS and optax.lbfgs (its zoom
    # search in a while_loop) compute the same iterates: the same two-loop recursion, the same
    # first scaling, the same Wolfe constants. Float64; the programs order their sums
    # differently, so the iterates agree to rounding, amplified by the condition number (100).
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(20, 20)))[0]
    hessian = basis @ np.diag(np.geomspace(1.0, 100.0, 20)) @ basis.T
    solution = rng.normal(size=20)
    function = lambda x: 0.5 * (x - solution) @ hessian @ (x - solution)  # noqa: E731
    lbfgs = HostLBFGS(evaluation_of(function), jnp.zeros(20))
    optimizer = optax.lbfgs()

    @jax.jit
    def reference_step(params, state):
        value, gradient = optax.value_and_grad_from_state(function)(params, state=state)
        updates, state = optimizer.update(
            gradient, state, params, value=value, grad=gradient, value_fn=function
        )
        return optax.apply_updates(params, updates), state

    reference = [jnp.zeros(20)]
    state = optimizer.init(reference[0])
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 and int64 indices under x64
        for _ in range(60):
            params, state = reference_step(reference[-1], state)
            reference.append(params)
    values = []
    for params in reference[:-1]:
        start, value, terms, _ = lbfgs.step()
        np.testing.assert_allclose(start, params, rtol=0, atol=1e-10)
        assert terms["value"] == value  # the terms come from the evaluation that gave the value
        values.append(value)
    assert all(later <= earlier for earlier, later in itertools.pairwise(values))
    np.testing.assert_allclose(lbfgs.params, solution, rtol=0, atol=1e-5)


def test_rosenbrock_reaches_its_minimum():
    rosenbrock = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2  # noqa: E731
    lbfgs, records = run(rosenbrock, [-1.2, 1.0], 60)
    np.testing.assert_allclose(lbfgs.params, [1.0, 1.0], atol=1e-7)
    assert sum(evaluations for *_, evaluations in records) < 150


def test_the_first_direction_is_the_gradient_capped_to_length_one():
    function = lambda x: jnp.sum((x - 10.0) ** 2)  # noqa: E731
    lbfgs, ((_start, value, _, evaluations),) = run(function, np.zeros(3), 1)
    assert value == 300.0
    assert evaluations >= 1
    # the gradient is -20 per coordinate: the capped direction has length 1, the minimum is at
    # distance 10 sqrt(3), so the search had to grow the step
    assert lbfgs.current.step > 1.0


def test_a_minimum_is_reported_as_converged_and_stays_put():
    function = lambda x: jnp.sum(x**2)  # noqa: E731
    lbfgs, records = run(function, np.zeros(4), 2)
    assert lbfgs.converged
    assert [evaluations for *_, evaluations in records] == [1, 0]  # only the start's evaluation
    np.testing.assert_array_equal(lbfgs.params, np.zeros(4))


def test_a_non_finite_start_is_returned_as_it_is():
    _lbfgs, ((_start, value, _, evaluations),) = run(lambda x: jnp.sum(jnp.log(x)), -np.ones(2), 1)
    assert math.isnan(value)
    assert evaluations == 1  # the start's, and no search


def test_a_non_finite_gradient_stops_with_a_reason():
    # |x| written as sqrt(x^2): the value is finite at 0, its derivative 0 * inf = NaN
    lbfgs, ((_start, value, _, evaluations),) = run(lambda x: jnp.sum(jnp.sqrt(x**2)), [0.0, 1.0], 1)
    assert value == 1.0
    assert evaluations == 1
    assert "gradient is not finite" in lbfgs.failure
    assert not lbfgs.converged

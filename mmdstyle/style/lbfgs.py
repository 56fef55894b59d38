"""L-BFGS driven from the host: one compiled evaluation per line-search trial.

optax's ``lbfgs`` runs its zoom line search inside the compiled step, in a ``lax.while_loop``
whose branches each hold a copy of the objective's value and gradient. For a network that costs
twice: the step compiles three copies of the network's backward pass, and XLA's CPU backend runs
convolution gradients inside a loop body about 2x slower than the same program compiled on its
own. Here the search runs in Python instead, and the device runs two small programs:

- ``trial``: the image moved along the direction, with the objective's value, gradient, slope
  along the direction and terms there (one copy of the network's backward pass);
- ``direction``: optax's own L-BFGS two-loop recursion (:func:`optax.scale_by_lbfgs`), which
  turns the gradient and the memory of past steps into a search direction.

Each trial reads back two numbers (value and slope); the images, gradients and memory stay on
the device. The search is the strong-Wolfe bracketing and zoom of Nocedal & Wright (Algorithms
3.5 and 3.6) with safeguarded cubic interpolation, the constants of optax and PyTorch (sufficient
decrease ``c1 = 1e-4``, curvature ``c2 = 0.9``), and a first trial step of 1: the L-BFGS
direction is already scaled (optax scales the first one to length at most 1).

References:
    Nocedal & Wright, "Numerical Optimization", 2nd ed., Springer 2006: Algorithms 3.5, 3.6
    (line search), 7.4, 7.5 (L-BFGS), and equation (3.59) (cubic interpolation).
    Liu & Nocedal, "On the limited memory BFGS method for large scale optimization",
    Mathematical Programming 45, 1989.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array

Payload = TypeVar("Payload")

#: sufficient decrease (Armijo) and curvature constants of the strong Wolfe conditions
SUFFICIENT_DECREASE = 1e-4
CURVATURE = 0.9
#: objective evaluations one line search may spend (PyTorch's LBFGS allows 25, optax's 15)
MAX_TRIALS = 20


@dataclass(frozen=True)
class Trial(Generic[Payload]):
    """One point of a line search: step length, value, slope along the direction, and the payload.

    The payload is whatever the evaluation produced besides the two numbers (for the engine:
    the image, its gradient and the objective's terms there, left on the device).
    """

    step: float
    value: float
    slope: float
    payload: Payload


def cubic_minimiser(a: Trial, b: Trial, low: float, high: float) -> float:
    """The minimiser of the cubic through two trials' values and slopes, clipped to [low, high].

    Nocedal & Wright, equation (3.59). Where the cubic has no minimiser (or the numbers are not
    finite) it returns the middle of [low, high]: bisection, which always makes progress.
    """
    if a.step == b.step:
        return 0.5 * (low + high)
    d1 = a.slope + b.slope - 3.0 * (a.value - b.value) / (a.step - b.step)
    discriminant = d1 * d1 - a.slope * b.slope
    if not math.isfinite(discriminant) or discriminant < 0.0:
        return 0.5 * (low + high)
    d2 = math.copysign(math.sqrt(discriminant), b.step - a.step)
    denominator = b.slope - a.slope + 2.0 * d2
    if denominator == 0.0:
        return 0.5 * (low + high)
    minimiser = b.step - (b.step - a.step) * (b.slope + d2 - d1) / denominator
    if not math.isfinite(minimiser):
        return 0.5 * (low + high)
    return min(max(minimiser, low), high)


def strong_wolfe(
    evaluate: Callable[[float], Trial[Payload]],
    start: Trial[Payload],
    *,
    first_step: float = 1.0,
    max_trials: int = MAX_TRIALS,
    sufficient_decrease: float = SUFFICIENT_DECREASE,
    curvature: float = CURVATURE,
) -> tuple[Trial[Payload], int]:
    """A step along a descent direction that satisfies the strong Wolfe conditions.

    ``evaluate(step)`` returns the trial at that step length; ``start`` is the trial at step 0,
    whose slope must be negative. The conditions, with f the value and f' the slope:

        f(t) <= f(0) + c1 t f'(0)        (sufficient decrease)
        |f'(t)| <= c2 |f'(0)|            (curvature)

    A trial with a non-finite value counts as too long a step. Returns the accepted trial and
    the number of evaluations spent; when ``max_trials`` run out first, the trial with the lowest
    value seen (``start`` itself when none was lower: no decrease found along this direction).
    """
    if not start.slope < 0.0:
        raise ValueError(f"the direction must descend (slope {start.slope} at step 0).")

    def sufficient(trial: Trial) -> bool:
        return trial.value <= start.value + sufficient_decrease * trial.step * start.slope

    def flat_enough(trial: Trial) -> bool:
        return abs(trial.slope) <= -curvature * start.slope

    best = start
    evaluations = 0

    def spend(step: float) -> Trial:
        nonlocal best, evaluations
        trial = evaluate(step)
        evaluations += 1
        if math.isfinite(trial.value) and trial.value < best.value:
            best = trial
        return trial

    # bracketing (Algorithm 3.5): grow the step until an interval surely holds an acceptable one
    previous, trial = start, spend(first_step)
    while True:
        too_far = not math.isfinite(trial.value) or not math.isfinite(trial.slope)
        if too_far or not sufficient(trial) or (previous is not start and trial.value >= previous.value):
            low, high = previous, trial
            break
        if flat_enough(trial):
            return trial, evaluations
        if trial.slope >= 0.0:
            low, high = trial, previous
            break
        if evaluations >= max_trials:
            return best, evaluations
        longer = cubic_minimiser(previous, trial, trial.step * 1.01, trial.step * 10.0)
        previous, trial = trial, spend(longer)

    # zoom (Algorithm 3.6): shrink [low, high] around an acceptable step; low is always the
    # bracket's best point satisfying sufficient decrease
    while evaluations < max_trials:
        left, right = sorted((low.step, high.step))
        width = right - left
        if width <= 1e-12 * max(1.0, right):
            break
        if math.isfinite(high.value) and math.isfinite(high.slope):
            step = cubic_minimiser(low, high, left, right)
        else:
            step = 0.5 * (left + right)
        margin = 0.1 * width  # keep away from the ends, or the bracket may shrink very slowly
        step = min(max(step, left + margin), right - margin)
        trial = spend(step)
        if not math.isfinite(trial.value) or not sufficient(trial) or trial.value >= low.value:
            high = trial
            continue
        if flat_enough(trial):
            return trial, evaluations
        if trial.slope * (high.step - low.step) >= 0.0:
            high = low
        low = trial
    return best, evaluations


def lbfgs_memory(params: Array, memory_size: int = 10) -> optax.ScaleByLBFGSState:
    """An empty L-BFGS memory for parameters shaped like ``params``."""
    return optax.scale_by_lbfgs(memory_size).init(params)


@jax.jit
def lbfgs_direction(
    gradient: Array, memory: optax.ScaleByLBFGSState, params: Array
) -> tuple[Array, Array, optax.ScaleByLBFGSState]:
    """The L-BFGS search direction at ``params``, its slope ``gradient . direction``, the new memory.

    optax's two-loop recursion, which also records the last step in the memory. The memory size
    is the shape of ``memory``'s buffers. The first direction is the negative gradient scaled to
    length at most 1 (optax's choice).
    """
    memory_size = memory.weights_memory.shape[0]
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 and int64 indices under x64
        preconditioned, memory = optax.scale_by_lbfgs(memory_size).update(gradient, memory, params)
    direction = -preconditioned
    return direction, jnp.vdot(gradient, direction).real, memory


Evaluation = Callable[[Array, Array, Array], tuple[Array, Array, Array, Array, Any]]
"""(params, direction, step) -> (moved params, value, gradient, slope along direction, terms)."""


class HostLBFGS:
    """L-BFGS on a compiled evaluation, its line search run from Python.

    ``evaluation(params, direction, step)`` must return the parameters ``params + step *
    direction``, the objective's value and gradient there, the gradient's slope along
    ``direction``, and any terms to report (a pytree). Call :meth:`step` repeatedly; each call
    returns the parameters it started from, their value and terms, and the evaluations spent;
    :attr:`params` holds where the last step went.
    """

    def __init__(self, evaluation: Evaluation, params: Array, memory_size: int = 10) -> None:
        self.evaluation = evaluation
        self.memory_size = memory_size
        self.memory = lbfgs_memory(params, memory_size)
        started = time.perf_counter()
        self.direction = lbfgs_direction.lower(params, self.memory, params).compile()
        self.compile_seconds = time.perf_counter() - started  # the direction's program
        self.converged = False
        self.failure: str | None = None  # why the iteration cannot go on, when it cannot
        self.params = params
        self.current: Trial | None = None  # evaluated at the first step

    def _trial(self, params: Array, direction: Array, step: float) -> Trial:
        moved, value, gradient, slope, terms = self.evaluation(
            params, direction, jnp.asarray(step, params.dtype)
        )
        return Trial(step, float(value), float(slope), (moved, gradient, terms))

    def evaluate_start(self) -> Trial:
        """The trial at :attr:`params` itself (step 0): value, and the image, gradient and terms there."""
        return self._trial(self.params, jnp.zeros_like(self.params), 0.0)

    def step(self) -> tuple[Array, float, Any, int]:
        """One L-BFGS step: (params it started from, value there, terms there, evaluations spent).

        The evaluations include, in the first step, the one at the starting parameters.

        When no lower value is found along the L-BFGS direction, the memory is cleared and the
        steepest-descent direction tried; if that fails too, the parameters stay where they are
        and :attr:`converged` becomes True (a local minimum, to the precision of the arithmetic).
        A gradient that is not finite stops the iteration: :attr:`failure` says so.
        """
        spent = 0
        if self.current is None:  # the first step also evaluates where it starts
            self.current, spent = self.evaluate_start(), 1
        params, gradient, terms = self.current.payload
        value = self.current.value
        if not math.isfinite(value) or self.converged or self.failure:
            return params, value, terms, spent
        for attempt in range(2):
            direction, slope, memory = self.direction(gradient, self.memory, params)
            slope = float(slope)
            if not math.isfinite(slope):
                self.failure = "the gradient is not finite (NaN or infinite) where the loss is finite"
                return params, value, terms, spent
            if not slope < 0.0:  # not a descent direction: the memory misleads; start it afresh
                self.memory = lbfgs_memory(params, self.memory_size)
                if attempt == 0:
                    continue
                break
            start = Trial(0.0, value, slope, self.current.payload)
            accepted, evaluations = strong_wolfe(
                lambda step, direction=direction: self._trial(params, direction, step), start
            )
            spent += evaluations
            if accepted.step > 0.0:
                self.memory, self.current, self.params = memory, accepted, accepted.payload[0]
                return params, value, terms, spent
            self.memory = lbfgs_memory(params, self.memory_size)
        self.converged = True
        return params, value, terms, spent

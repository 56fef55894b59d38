"""The exact pairwise route's gradient in x, with the centring shift differentiated and without.

    python benchmarks/bench_centre_gradient.py            # m = n = 4096 and 16384 (about a minute)
    python benchmarks/bench_centre_gradient.py --quick    # m = n = 1024, to check that it runs

A style loss differentiates a Gaussian MMD^2[x, y] in the image's features x at every step. The
pairwise route shifts both samples by their pooled mean (the value does not depend on it).
Side by side in one run, float32, best of three value-and-gradient times each (compilation
excluded, reported apart):

- "differentiated centre": the shift with its gradient kept, as the route did before
  ``kernels.pooled_mean`` stopped it. The shift ties y's own kernel sum to x, so the backward
  pass differentiates that sum too (its gradient is exactly 0).
- "route": ``ms.mmd2(x, y, kernel, route="pairwise")``, whose shift is a constant to
  differentiation: the x-x and x-y sums are differentiated, y's own sum only evaluated.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import mmdstyle as ms


def best_of_three(function, x) -> tuple[float, float]:
    """(compile seconds, best of three run seconds) of ``function(x)``."""
    start = time.perf_counter()
    compiled = jax.jit(function).lower(x).compile()
    compile_seconds = time.perf_counter() - start
    jax.block_until_ready(compiled(x))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(compiled(x))
        times.append(time.perf_counter() - start)
    return compile_seconds, min(times)


def measure(x: jax.Array, y: jax.Array) -> list[tuple[float, float]]:
    """(compile, run) seconds of the value and gradient in x of each form, in the order above."""
    kernel = ms.Gaussian(ms.median_bandwidth(y))

    def differentiated_centre(x: jax.Array) -> jax.Array:
        centre = (jnp.sum(x, axis=0) + jnp.sum(y, axis=0)) / (x.shape[0] + y.shape[0])
        return ms.mmd2(x - centre, y - centre, kernel, route="pairwise")

    forms = [differentiated_centre, lambda x: ms.mmd2(x, y, kernel, route="pairwise")]
    return [best_of_three(jax.value_and_grad(form), x) for form in forms]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="m = n = 1024 only")
    sizes = (1024,) if parser.parse_args().quick else (4096, 16384)
    rng = np.random.default_rng(0)
    print(f"{'m = n':>7}{'differentiated centre (s)':>27}{'route (s)':>11}{'ratio':>8}   compile (s)")
    for size in sizes:
        x = jnp.asarray(np.maximum(rng.normal(size=(size, 64)), 0), jnp.float32)
        y = jnp.asarray(np.maximum(1.1 * rng.normal(size=(size, 64)) + 0.1, 0), jnp.float32)
        (c0, before), (c1, route) = measure(x, y)
        print(f"{size:>7}{before:>27.3f}{route:>11.3f}{route / before:>8.2f}   {c0:.2f} / {c1:.2f}")


if __name__ == "__main__":
    main()

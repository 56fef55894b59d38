"""The random routes against the exact ones, measured side by side in one run (float32).

    python benchmarks/bench_routes.py            # the sizes of the issue (about 15 minutes on 2 cores)
    python benchmarks/bench_routes.py --quick    # small sizes, to check that the script runs

The samples are real style features: relu1_1 of ``random_vgg19(0)`` (d = 64) on two bundled
textures (gravel, brick) at 256 px, m = n = 65,536 positions each. What it prints:

1. Gaussian biased MMD^2 (sigma: the median heuristic on the style's features), value and
   gradient in both samples: the random-feature route with 1024 features (512 sin/cos pairs) /
   the exact pairwise route. Goal <= 0.01. And the relative error of the random-feature value
   over 20 keys: quartiles and maximum (goal: median <= 5 %).
2. The energy distance, value and gradient: the sliced route with 256 directions / the exact
   pairwise route on ``Energy()``. Goal <= 0.01. The same error report.
3. Texture synthesis of gravel, ``random_vgg19(0)``, its five style layers, Adam, seconds per step
   (compilation excluded): ``mmd:gaussian(sigma=median)@rff(1024)`` / ``gram`` at 256 px (goal <= 2;
   the exact route was 80x), and the multi-bandwidth mixture likewise; at 512 px the peak resident
   memory of each (a child process per run).

Exact timings are single runs (each takes minutes); the random routes' are the best of three
after a warm-up. Compilation is excluded everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import mmdstyle as ms

RFF = "mmd:gaussian(sigma=median)@rff(1024)"
MULTI_RFF = "mmd:gaussian(sigma=median*(0.25,0.5,1,2,4))@rff(1024)"


def style_features(size: int) -> tuple[jax.Array, jax.Array]:
    """relu1_1 of random_vgg19(0) on gravel (x) and brick (y) at ``size`` px, as (size^2, 64) samples."""
    from mmdstyle.features import random_vgg19
    from mmdstyle.style import load_sample

    network = random_vgg19(0)
    maps = [network(jnp.asarray(load_sample(name, size=size)), ("relu1_1",)) for name in ("gravel", "brick")]
    return tuple(ms.as_samples(m["relu1_1"]).astype(jnp.float32) for m in maps)


def timed(function: Callable, *args, repeats: int) -> tuple[float, jax.Array]:
    """Best wall time of ``repeats`` runs after a warm-up run that compiles, and the last value."""
    result = jax.block_until_ready(function(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return min(times), result


def value_and_gradient(kernel: ms.AbstractKernel, route: str, **options) -> Callable:
    return jax.jit(
        jax.value_and_grad(
            lambda x, y, key: ms.mmd2(x, y, kernel, route=route, key=key, **options), argnums=(0, 1)
        )
    )


def compare_routes(x, y, kernel, route: str, keys: int, exact_repeats: int, **options) -> dict:
    key = jax.random.key(0)
    exact_s, (exact, _) = timed(value_and_gradient(kernel, "pairwise"), x, y, key, repeats=exact_repeats)
    random = value_and_gradient(kernel, route, **options)
    random_s, _ = timed(random, x, y, key, repeats=3)
    estimates = np.array([float(random(x, y, k)[0]) for k in jax.random.split(jax.random.key(1), keys)])
    errors = np.abs(estimates - float(exact)) / float(exact)
    return {
        "exact": float(exact),
        "exact_s": exact_s,
        "random_s": random_s,
        "ratio": random_s / exact_s,
        "error_quartiles": np.percentile(errors, [25, 50, 75]).tolist(),
        "error_max": float(errors.max()),
    }


def print_routes(title: str, figures: dict, goal: str) -> None:
    low, median, high = figures["error_quartiles"]
    print(title)
    print(f"   exact value {figures['exact']:.6g}")
    print(f"   exact pairwise route             {figures['exact_s']:9.2f} s")
    print(f"   random route                     {figures['random_s']:9.3f} s")
    print(f"   ratio random / exact             {figures['ratio']:9.4f}   (goal <= 0.01)")
    print(
        f"   relative error over keys: quartiles {low:.2%} {median:.2%} {high:.2%}, max "
        f"{figures['error_max']:.2%}   ({goal})"
    )


def synthesis_child(size: int, loss: str, steps: int) -> None:
    """A texture synthesis; prints seconds per step and this process's peak RSS as JSON."""
    from mmdstyle.features import random_vgg19
    from mmdstyle.style import TransferConfig, load_sample, synthesize

    style = load_sample("gravel", size=size)
    config = TransferConfig(size=size, steps=steps, chunk=steps, loss=loss, optimizer="adam")
    result = synthesize([style], config, extractor=random_vgg19(0), progress=False)
    history = result.history
    print(
        json.dumps(
            {
                "seconds_per_step": history[-1]["seconds"] / len(history),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def synthesis(size: int, loss: str, steps: int) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", str(size), loss, str(steps)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: check that the script runs")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        size, loss, steps = arguments.child
        synthesis_child(int(size), loss, int(steps))
        return

    size, large, steps = (64, 128, 3) if arguments.quick else (256, 512, 10)
    device = jax.devices()[0]
    print(
        f"mmdstyle {ms.__version__}, jax {jax.__version__}, {device.platform}, {os.cpu_count()} CPU cores, "
        "float32"
    )
    x, y = style_features(size)
    print(
        f"relu1_1 of random_vgg19(0): gravel and brick at {size} px, m = n = {x.shape[0]}, d = {x.shape[1]}"
    )
    figures: dict = {"m": x.shape[0], "d": x.shape[1]}

    sigma = ms.median_bandwidth(y)
    figures["gaussian"] = compare_routes(x, y, ms.Gaussian(sigma), "rff", 20, 1, num_features=1024)
    print_routes(
        f"\n1. Gaussian (sigma = {float(sigma):.4g}) biased MMD^2, 1024 features",
        figures["gaussian"],
        "goal: median <= 5 %",
    )
    figures["energy"] = compare_routes(x, y, ms.Energy(), "sliced", 20, 1, num_directions=256)
    print_routes("\n2. energy distance, 256 directions", figures["energy"], "goal: median <= 5 %")

    print(f"\n3. texture synthesis of gravel, random_vgg19(0), five style layers, Adam, {steps} steps")
    figures["synthesis"] = {}
    for loss in ("gram", RFF, MULTI_RFF):
        figures["synthesis"][loss] = {side: synthesis(side, loss, steps) for side in (size, large)}
    gram = figures["synthesis"]["gram"]
    print(f"   {'loss':<58} {size} px s/step   ratio   {large} px s/step   peak RSS")
    for loss, runs in figures["synthesis"].items():
        ratio = runs[size]["seconds_per_step"] / gram[size]["seconds_per_step"]
        print(
            f"   {loss:<58} {runs[size]['seconds_per_step']:9.3f}   {ratio:6.2f}   "
            f"{runs[large]['seconds_per_step']:9.3f}   {runs[large]['peak_rss_bytes'] / 2**30:6.2f} GiB"
        )
    print("   (goal: ratio <= 2.0 for the random-feature losses)")
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump(figures, file, indent=2)


if __name__ == "__main__":
    main()

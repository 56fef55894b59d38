"""The losses beyond MMD against the Gram loss, step for step, measured side by side in one run.

    python benchmarks/bench_losses.py            # 256 px, 10 steps per loss (a few minutes on 2 cores)
    python benchmarks/bench_losses.py --quick    # 64 px, 3 steps: check that the script runs

Texture synthesis of gravel, ``random_vgg19(0)``, its five style layers, Adam, float32, seconds per
step with compilation excluded, each loss in its own process (``bench_routes.synthesis``):

- ``sw`` (sliced Wasserstein, as many directions as channels) / ``gram``: goal <= 1.5;
- ``w2`` (Gaussian W2; the style's covariance root computed once, one symmetric square root of a
  d x d matrix per layer and evaluation) / ``gram``: goal <= 1.5;
- ``cmd`` (central moments 1..5 after a sigmoid) / ``gram``: goal <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
from bench_routes import synthesis

import mmdstyle as ms

GOALS = {"gram": None, "sw": 1.5, "w2": 1.5, "cmd": 1.2}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: check that the script runs")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    arguments = parser.parse_args()
    size, steps = (64, 3) if arguments.quick else (256, 10)
    device = jax.devices()[0]
    print(
        f"mmdstyle {ms.__version__}, jax {jax.__version__}, {device.platform}, {os.cpu_count()} CPU cores, "
        "float32"
    )
    print(
        f"texture synthesis of gravel at {size} px, random_vgg19(0), five style layers, Adam, {steps} steps"
    )
    runs = {loss: synthesis(size, loss, steps) for loss in GOALS}
    gram = runs["gram"]["seconds_per_step"]
    print(f"   {'loss':<6} {'s/step':>8} {'/ gram':>8}   goal")
    for loss, goal in GOALS.items():
        seconds = runs[loss]["seconds_per_step"]
        target = "" if goal is None else f"<= {goal}"
        print(f"   {loss:<6} {seconds:8.3f} {seconds / gram:8.2f}   {target}")
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump({"size": size, "steps": steps, "runs": runs}, file, indent=2)


if __name__ == "__main__":
    main()

"""mmd2 on samples split over 1, 2, 4 and 8 devices: per-device memory and time, side by side in one run.

    python benchmarks/bench_sharded.py            # forces 8 CPU devices; a few minutes on 2 cores
    python benchmarks/bench_sharded.py --quick    # small sizes: check that the script runs

On a CPU the script forces 8 devices (``--xla_force_host_platform_device_count``) out of the
machine's cores; on a machine with several accelerators it uses them as they are. For each route
(pairwise ring: Gaussian; feature: Polynomial(2); random features: Gaussian, D = 1024), float32:

- per-device bytes of the compiled value and gradient (arguments, outputs and temporaries, from
  ``compiled.memory_analysis()``) at m = n = 2^18, d = 64: compiled, never run; goal about 1/p of
  one device's;
- seconds for a value and gradient at m = n = 16384, d = 64 (compilation excluded, best of 3).

Eight forced devices share the machine's cores, so no speed-up is expected on a CPU: what the time
column shows is the ring's overhead (its extra copies and the passing of blocks), not a scaling.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

FORCED = "--xla_force_host_platform_device_count"
if "jax" not in sys.modules and FORCED not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FORCED}=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import mmdstyle as ms  # noqa: E402

ROUTES = {
    "pairwise": (ms.Gaussian(8.0), {}),
    "feature": (ms.Polynomial(2), {}),
    "rff": (ms.Gaussian(8.0), {"key": jax.random.key(0), "num_features": 1024}),
}


def _program(route: str, devices: int) -> tuple[jax.stages.Wrapped, NamedSharding]:
    """Route's jitted MMD^2 value and gradient on the first ``devices`` devices; the rows' placement."""
    kernel, extra = ROUTES[route]
    mesh = Mesh(jax.devices()[:devices], ("samples",))

    def loss(x: jax.Array, y: jax.Array) -> jax.Array:
        return ms.mmd2(x, y, kernel, route=route, mesh=mesh if devices > 1 else None, **extra)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), NamedSharding(mesh, P("samples", None))


def per_device_bytes(route: str, devices: int, m: int, d: int) -> int:
    program, rows = _program(route, devices)
    samples = jax.ShapeDtypeStruct((m, d), jnp.float32, sharding=rows)
    analysis = program.lower(samples, samples).compile().memory_analysis()
    return analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes


def seconds(route: str, devices: int, m: int, d: int, repeats: int = 3) -> float:
    program, rows = _program(route, devices)
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.normal(size=(m, d)).astype(np.float32), rows)
    y = jax.device_put((rng.normal(size=(m, d)) + 0.1).astype(np.float32), rows)
    jax.block_until_ready(program(x, y))  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(program(x, y))
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: check that the script runs")
    arguments = parser.parse_args()
    memory_size, time_size, d = (2**12, 512, 16) if arguments.quick else (2**18, 16384, 64)
    counts = [p for p in (1, 2, 4, 8) if p <= jax.device_count()]
    print(
        f"mmdstyle {ms.__version__}, jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} "
        f"devices on {os.cpu_count()} CPU cores, float32, d = {d}"
    )
    print(f"per-device memory of a value and gradient at m = n = {memory_size} (compiled, not run)")
    print(f"   {'route':<9}" + "".join(f"{f'{p} dev MiB':>12}{'ratio':>7}" for p in counts))
    for route in ROUTES:
        sizes = [per_device_bytes(route, p, memory_size, d) for p in counts]
        print(f"   {route:<9}" + "".join(f"{s / 2**20:12.1f}{s / sizes[0]:7.3f}" for s in sizes))
    print(f"seconds for a value and gradient at m = n = {time_size} (best of 3; devices share the cores)")
    print(f"   {'route':<9}" + "".join(f"{f'{p} dev s':>12}{'ratio':>7}" for p in counts))
    for route in ROUTES:
        times = [seconds(route, p, time_size, d) for p in counts]
        print(f"   {route:<9}" + "".join(f"{t:12.3f}{t / times[0]:7.2f}" for t in times))


if __name__ == "__main__":
    main()

"""One MMD computed by two JAX processes together: ``python -m tests.multiprocess PORT PROCESS_ID``.

``tests/test_sharded.py`` starts two of these on 127.0.0.1, as ``jax.distributed`` runs one
process per host: process 0 hosts the coordinator on PORT, both join it, and their CPUs form one
mesh over gloo collectives. Each process holds only its own half of the rows of x and y
(``jax.make_array_from_process_local_data``); process 0 prints the values as JSON.
"""

from __future__ import annotations

import json
import sys

#: Rows of x and y, d, and the seed: each process draws all of them and keeps its half, so the
#: test can compute the one-process value from the same numbers.
M, N, D, SEED = 96, 64, 5, 20170101
#: name: (kernel, route, estimator)
CASES = {
    "pairwise": ("gaussian", "pairwise", "unbiased"),
    "feature": ("poly2", "feature", "biased"),
    "rff": ("gaussian", "rff", "unbiased"),
}


def samples():
    """x (M, D) and y (N, D), float64."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    return rng.normal(size=(M, D)), rng.normal(size=(N, D)) + 0.5


def arguments(name: str):
    """The kernel, route, estimator and extra arguments of case ``name``."""
    import jax

    import mmdstyle as ms

    kernel_name, route, estimator = CASES[name]
    kernel = {"gaussian": ms.Gaussian(1.3), "poly2": ms.Polynomial(2)}[kernel_name]
    extra = {"key": jax.random.key(7)} if route == "rff" else {}
    return kernel, route, estimator, extra


def _gloo_on_loopback() -> None:
    """Gloo's connections bound to 127.0.0.1, whatever the machine's host name resolves to.

    JAX builds its gloo collectives with the host name's address; the tests listen on the
    loopback interface only. (A private hook of JAX 0.10: where it is gone, the host name's
    address is used, which is the loopback one on the machines this suite runs on.)
    """
    import functools

    from jax._src import xla_bridge

    build = getattr(xla_bridge._jax, "make_gloo_tcp_collectives", None)
    if build is not None:
        xla_bridge._jax.make_gloo_tcp_collectives = functools.partial(build, hostname="127.0.0.1")


def main(port: int, process_id: int) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    _gloo_on_loopback()
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=process_id,
        initialization_timeout=60,
    )
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import mmdstyle as ms

    mesh = Mesh(jax.devices(), ("hosts",))
    rows = NamedSharding(mesh, P("hosts", None))
    x, y = samples()
    half = (
        slice(process_id * M // 2, (process_id + 1) * M // 2),
        slice(process_id * N // 2, (process_id + 1) * N // 2),
    )
    x = jax.make_array_from_process_local_data(rows, x[half[0]], (M, D))
    y = jax.make_array_from_process_local_data(rows, y[half[1]], (N, D))
    values = {}
    for name in CASES:
        kernel, route, estimator, extra = arguments(name)
        values[name] = float(ms.mmd2(x, y, kernel, estimator, route=route, **extra))
    values["devices"] = jax.device_count()
    if process_id == 0:
        print(json.dumps(values))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))

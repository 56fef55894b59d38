"""Checks that need several devices: run as ``python -m tests.multidevice`` with 8 forced CPU devices.

XLA fixes the number of CPU devices when it starts (``--xla_force_host_platform_device_count``),
so the test process, which has one, starts this module in a subprocess
(``tests/test_sharded.py``). ``python -m tests.multidevice PART`` prints one JSON object:

- ``cases``: for each case of :data:`CASES`, the value and gradients (in x, y and the kernel's
  parameters) of :func:`mmdstyle.mmd2` on samples split over a mesh, and their relative
  differences from the same call on one device;
- ``tests``: :func:`mmdstyle.mmd2_test` on a mesh against one device, for :data:`TEST_CASES`;
- ``memory``: the per-device bytes of compiled programs on 1 and 8 devices
  (``compiled.memory_analysis()``), compiled only, never run;
- ``errors``: the messages of the placements mmd2 refuses.
"""

from __future__ import annotations

import json
import sys

DEVICES = 8

#: name: (kernel, route, estimator, m, n, mesh shape, dtype). m and n do not divide by the device
#: counts, except where a case says so; d = 5.
CASES: dict[str, tuple[str, str, str, int, int, tuple[int, ...], str]] = {
    "feature-poly2-biased": ("poly2", "feature", "biased", 203, 150, (8,), "float64"),
    "feature-poly2c-unbiased": ("poly2c", "feature", "unbiased", 203, 150, (8,), "float64"),
    "pairwise-gaussian-biased": ("gaussian", "pairwise", "biased", 203, 150, (8,), "float64"),
    "pairwise-gaussian-unbiased": ("gaussian", "pairwise", "unbiased", 203, 150, (8,), "float64"),
    "pairwise-energy-unbiased": ("energy", "pairwise", "unbiased", 203, 150, (8,), "float64"),
    "pairwise-laplacian-biased": ("laplacian", "pairwise", "biased", 203, 150, (8,), "float64"),
    "pairwise-gaussian-3-devices": ("gaussian", "pairwise", "unbiased", 100, 71, (3,), "float64"),
    "pairwise-gaussian-2-devices": ("gaussian", "pairwise", "biased", 64, 64, (2,), "float64"),
    "pairwise-gaussian-2x4-mesh": ("gaussian", "pairwise", "unbiased", 203, 150, (2, 4), "float64"),
    "rff-gaussian-unbiased": ("gaussian", "rff", "unbiased", 203, 150, (8,), "float64"),
    "rff-multigaussian-linear-biased": ("multigaussian+linear", "rff", "biased", 203, 150, (8,), "float64"),
    "pairwise-gaussian-float32": ("gaussian", "pairwise", "unbiased", 203, 150, (8,), "float32"),
    "feature-poly2-float32": ("poly2", "feature", "biased", 203, 150, (8,), "float32"),
}

#: Samples placed on the mesh by the caller (NamedSharding), found by mmd2 without ``mesh=``.
PLACED_CASE = "placed-samples-pairwise-gaussian"
#: x placed on the mesh, y committed to one device of it.
BESIDE_CASE = "placed-beside-one-device"
#: name: (kernel, estimator, options) of mmd2 on placed samples by routes XLA partitions itself.
UNSPLIT_CASES = {
    "placed-sliced-energy": ("energy", "unbiased", {"route": "sliced", "key": 5}),
    "placed-linear-time-gaussian": ("gaussian", "linear", {}),
}
#: ``mmd_style_loss(..., mesh=...)`` and its gradient in x.
STYLE_LOSS_CASE = "style-loss-pairwise-gaussian"


def _kernel(name: str):
    import mmdstyle as ms

    return {
        "poly2": ms.Polynomial(2),
        "poly2c": ms.Polynomial(2, c=1.0),
        "gaussian": ms.Gaussian(1.3),
        "energy": ms.Energy(),
        "laplacian": ms.Laplacian(2.0),
        "multigaussian+linear": ms.MultiGaussian.around(1.0, (0.5, 1.0, 2.0)) + ms.Linear(),
    }[name]


def _relative(first, second) -> float:
    """The largest difference of two pytrees of arrays over the largest entry of the first."""
    import jax
    import numpy as np

    worst = 0.0
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(float(np.max(np.abs(a))), np.finfo(np.float64).tiny)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


def _cases() -> dict[str, dict[str, float]]:
    import jax
    import numpy as np

    import mmdstyle as ms

    results = {}
    rng = np.random.default_rng(20170101)
    for name, (kernel_name, route, estimator, m, n, shape, dtype) in CASES.items():
        kernel = _kernel(kernel_name)
        x = rng.normal(size=(m, 5)).astype(dtype)
        y = (rng.normal(size=(n, 5)) + 0.5).astype(dtype)
        devices = np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape)
        mesh = jax.sharding.Mesh(devices, tuple(f"axis{i}" for i in range(len(shape))))
        extra = {"key": jax.random.key(7)} if route == "rff" else {}

        def loss(x, y, kernel, mesh=None):
            return ms.mmd2(x, y, kernel, estimator, route=route, mesh=mesh, **extra)  # noqa: B023

        gradient = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnames="mesh")
        one_value, one_gradient = gradient(x, y, kernel)
        split_value, split_gradient = gradient(x, y, kernel, mesh=mesh)
        results[name] = {
            "value": float(one_value),
            "value_error": _relative(one_value, split_value),
            "gradient_error": _relative(one_gradient, split_gradient),
        }

    # placed by the caller: mmd2 finds the mesh on the arrays (a mesh of Explicit axes, as
    # jax.make_mesh builds by default)
    mesh = jax.make_mesh((DEVICES,), ("samples",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("samples", None))
    x, y = rng.normal(size=(64, 5)), rng.normal(size=(128, 5)) + 0.5
    kernel = _kernel("gaussian")
    placed = ms.mmd2(jax.device_put(x, rows), jax.device_put(y, rows), kernel, "unbiased", route="pairwise")
    one = ms.mmd2(x, y, kernel, "unbiased", route="pairwise")
    results[PLACED_CASE] = {"value": float(one), "value_error": _relative(one, placed), "gradient_error": 0.0}
    # x on the mesh, y committed to one device: y is moved onto the mesh
    beside = ms.mmd2(
        jax.device_put(x, rows), jax.device_put(y, jax.devices()[3]), kernel, "unbiased", route="pairwise"
    )
    results[BESIDE_CASE] = {"value": float(one), "value_error": _relative(one, beside), "gradient_error": 0.0}
    # the routes mmd2 does not split by hand run as XLA partitions them, on placed samples too
    placed_x, placed_y = jax.device_put(x, rows), jax.device_put(y, rows)
    for name, arguments in UNSPLIT_CASES.items():
        kernel, estimator, extra = _kernel(arguments[0]), arguments[1], arguments[2]
        if "key" in extra:
            extra = {**extra, "key": jax.random.key(extra["key"])}
        one = ms.mmd2(x, y, kernel, estimator, **extra)
        placed = ms.mmd2(placed_x, placed_y, kernel, estimator, **extra)
        results[name] = {"value": float(one), "value_error": _relative(one, placed), "gradient_error": 0.0}

    # the style loss through mmd2, on a mesh given to it
    loss = jax.jit(jax.value_and_grad(ms.mmd_style_loss), static_argnames=("estimator", "route", "mesh"))
    arguments = {"kernel": kernel, "estimator": "unbiased", "route": "pairwise"}
    one_value, one_gradient = loss(x, y, **arguments)
    split_value, split_gradient = loss(x, y, **arguments, mesh=jax.sharding.Mesh(jax.devices(), ("samples",)))
    results[STYLE_LOSS_CASE] = {
        "value": float(one_value),
        "value_error": _relative(one_value, split_value),
        "gradient_error": _relative(one_gradient, split_gradient),
    }
    return results


#: name: (kernel, route, method) of the two-sample tests run on one device and on 8 (m = 203, n = 150).
TEST_CASES = {
    "rff-gaussian": ("gaussian", "rff", "auto"),
    "rff-multigaussian-linear": ("multigaussian+linear", "rff", "auto"),
    "pairwise-gaussian-permutation": ("gaussian", "pairwise", "permutation"),
}


#: :func:`mmdstyle.analysis.folders.folder_two_sample_tests` on 8 devices and on one (float32 features).
FOLDER_CASE = "folders-rff"


def _two_sample_tests() -> dict[str, dict[str, float]]:
    """mmd2_test on 8 devices and on one: the statistic, the permuted statistics, the p-value."""
    import jax
    import numpy as np

    import mmdstyle as ms

    rng = np.random.default_rng(20170101)
    x, y = rng.normal(size=(203, 5)), rng.normal(size=(150, 5)) + 0.15
    mesh = jax.sharding.Mesh(jax.devices(), ("samples",))
    results = {}
    for name, (kernel_name, route, method) in TEST_CASES.items():
        arguments = (x, y, _kernel(kernel_name), 99, jax.random.key(3))
        one = ms.mmd2_test(*arguments, route=route, method=method)
        split = ms.mmd2_test(*arguments, route=route, method=method, mesh=mesh)
        results[name] = {
            "statistic": float(one.statistic),
            "statistic_error": _relative(one.statistic, split.statistic),
            "permuted_error": _relative(one.permuted_statistics, split.permuted_statistics),
            "p_values": [float(one.p_value), float(split.p_value)],
        }
    results[FOLDER_CASE] = _folder_tests()
    return results


def _folder_tests() -> dict[str, float | list[float]]:
    """folder_two_sample_tests on every device (images and samples split) and on the first one."""
    import pathlib
    import tempfile

    import jax
    import numpy as np
    from PIL import Image

    from mmdstyle.analysis.folders import folder_two_sample_tests
    from mmdstyle.features import random_vgg19
    from tests.helpers import TINY_VGG_WIDTHS

    rng = np.random.default_rng(20170101)
    with tempfile.TemporaryDirectory() as folder:
        folders = [pathlib.Path(folder) / name for name in ("a", "b")]
        for path, shift in zip(folders, (0.0, 0.2), strict=True):
            path.mkdir()
            for index in range(11):  # not a multiple of the batch or of the devices
                pixels = np.clip(rng.random((20, 24, 3)) * 0.7 + shift, 0.0, 1.0)
                Image.fromarray((pixels * 255).astype(np.uint8)).save(path / f"{index}.png")
        options = {
            "extractor": random_vgg19(0, widths=TINY_VGG_WIDTHS),
            "size": 16,
            "layers": ("relu1_1",),
            "positions_per_image": 9,
            "batch_size": 5,
            "kernel": "gaussian(sigma=median)@rff(256)",
            "num_permutations": 99,
        }
        split = folder_two_sample_tests(*folders, **options).tests[0]
        one = folder_two_sample_tests(*folders, devices=jax.devices()[:1], **options).tests[0]
    return {
        "statistic": one.statistic,
        "statistic_error": _relative(np.asarray(one.statistic), np.asarray(split.statistic)),
        "permuted_error": _relative(one.null_statistics, split.null_statistics),
        "p_values": [one.p_value, split.p_value],
        "samples": list(split.samples),
    }


def _memory() -> dict[str, float]:
    """Per-device bytes (arguments, outputs, temporaries) of a value and gradient, on 1 and 8 devices."""
    import jax
    import jax.numpy as jnp

    import mmdstyle as ms

    sizes = {}
    m, d = 2**18, 64
    for route, kernel in (("pairwise", ms.Gaussian(8.0)), ("feature", ms.Polynomial(2))):
        for devices in (1, DEVICES):
            mesh = jax.sharding.Mesh(jax.devices()[:devices], ("samples",))
            rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("samples", None))
            samples = jax.ShapeDtypeStruct((m, d), jnp.float32, sharding=rows)
            split = mesh if devices > 1 else None

            def loss(x, y):
                return ms.mmd2(x, y, kernel, route=route, mesh=split)  # noqa: B023

            analysis = jax.jit(jax.value_and_grad(loss)).lower(samples, samples).compile().memory_analysis()
            total = (
                analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
            )
            sizes[f"{route}-{devices}"] = float(total)
    return sizes


def _errors() -> dict[str, str]:
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import mmdstyle as ms

    mesh = jax.make_mesh((DEVICES,), ("samples",))
    other = jax.make_mesh((2, 4), ("a", "b"))
    samples = np.ones((64, 8))
    attempts = {
        "channels": lambda: ms.mmd2(
            jax.device_put(samples, NamedSharding(mesh, P(None, "samples"))), samples, ms.Gaussian()
        ),
        "two meshes": lambda: ms.mmd2(
            jax.device_put(samples, NamedSharding(mesh, P("samples", None))),
            jax.device_put(samples, NamedSharding(other, P(("a", "b"), None))),
            ms.Gaussian(),
        ),
        "mesh and placement": lambda: ms.mmd2(
            jax.device_put(samples, NamedSharding(other, P(("a", "b"), None))),
            samples,
            ms.Gaussian(),
            mesh=mesh,
        ),
        "explicit inside jit": lambda: jax.jit(lambda x: ms.mmd2(x, samples, ms.Gaussian()))(
            jax.device_put(samples, NamedSharding(mesh, P("samples", None)))
        ),
    }
    messages = {}
    for name, attempt in attempts.items():
        try:
            attempt()
        except ValueError as error:
            messages[name] = str(error)
        else:
            messages[name] = ""
    return messages


#: What ``python -m tests.multidevice PART`` reports.
PARTS = {"cases": _cases, "tests": _two_sample_tests, "memory": _memory, "errors": _errors}


def main(part: str) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    if jax.device_count() < DEVICES:
        sys.exit(
            f"needs {DEVICES} devices: run with XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES}"
        )
    print(json.dumps(PARTS[part]()))


if __name__ == "__main__":
    main(sys.argv[1])

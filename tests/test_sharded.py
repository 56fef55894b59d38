"""mmd2 on samples split over a device mesh (mmdstyle.sharded): 8 CPU devices and two processes.

The multi-device checks run in a subprocess that forces 8 CPU devices (``tests/multidevice.py``);
the two-process test starts two JAX processes that meet on 127.0.0.1 (``tests/multiprocess.py``).
Both are bounded in time and cleaned up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import mmdstyle as ms
from mmdstyle.sharded import sample_placement
from tests import multidevice, multiprocess

#: float64: the same sums in another order (per device, then added across devices).
FLOAT64_TOLERANCE = 1e-12
#: float32: the kernel sums (about 1 each) cancel to MMD^2 of about 0.03; a different summation
#: order changes each sum by float32's 6e-8 over the ~15 levels of a tree of m n terms, about
#: 1e-6, which the cancellation magnifies ~30x. Measured: 2e-6.
FLOAT32_TOLERANCE = 3e-5
#: Placements mmd2 refuses (tests/multidevice.py), and what its message tells the user to do.
BAD_PLACEMENTS = {
    "channels": "PartitionSpec('samples', None)",
    "two meshes": "Place both on one mesh",
    "mesh and placement": "omit mesh=",
    "explicit inside jit": "AxisType.Auto",
}
#: Seconds the subprocesses may take: they compile about 30 programs on one core.
TIMEOUT = 300


def _environment(devices: int | None = None) -> dict[str, str]:
    environment = dict(os.environ)
    if devices is not None:
        flags = environment.get("XLA_FLAGS", "")
        environment["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return environment


def _on_eight_devices(part: str) -> dict:
    """The report of ``python -m tests.multidevice PART`` on 8 forced CPU devices."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.multidevice", part],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_environment(multidevice.DEVICES),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def test_split_samples_give_the_one_device_value_and_gradients():
    """Every route and estimator, uneven row counts, 2, 3 and 8 devices, a 2 x 4 mesh, float32;
    samples placed by the caller; one set on one device beside one on the mesh; the style loss;
    the sliced route and the linear-time estimator on placed samples (XLA's partitioning).

    One subprocess for all the cases (each would pay JAX's start); the failures are listed by name.
    """
    reports = _on_eight_devices("cases")
    assert set(reports) == {
        *multidevice.CASES,
        multidevice.PLACED_CASE,
        multidevice.BESIDE_CASE,
        multidevice.STYLE_LOSS_CASE,
        *multidevice.UNSPLIT_CASES,
    }
    failures = {}
    for case, report in reports.items():
        float32 = case in multidevice.CASES and multidevice.CASES[case][-1] == "float32"
        tolerance = FLOAT32_TOLERANCE if float32 else FLOAT64_TOLERANCE
        if report["value"] == 0.0 or max(report["value_error"], report["gradient_error"]) > tolerance:
            failures[case] = report
    assert not failures, failures


def test_permutation_tests_on_a_mesh_give_the_one_device_result():
    """The random-feature route (features formed where their rows are), the exact permutation method,
    and two folders of images (batches of images and the tests split over the devices)."""
    reports = _on_eight_devices("tests")
    assert set(reports) == {*multidevice.TEST_CASES, multidevice.FOLDER_CASE}
    for name, report in reports.items():
        # the folder test's features are the network's float32 ones
        tolerance = FLOAT32_TOLERANCE if name == multidevice.FOLDER_CASE else FLOAT64_TOLERANCE
        assert report["statistic"] != 0.0, name
        assert report["statistic_error"] <= tolerance, name
        assert report["permuted_error"] <= tolerance, name
        one, split = report["p_values"]
        assert one == split, name
    assert reports[multidevice.FOLDER_CASE]["samples"] == [11 * 9, 11 * 9]


def test_memory_per_device_falls_as_one_over_the_device_count():
    """Value and gradient at m = n = 2^18, d = 64: per-device bytes on 8 devices against 1.

    The samples and every buffer proportional to them shrink 8x; what stays is per-device
    buffers of fixed size (the pairwise route's tiles of 2^18 kernel values and their
    gradients), hence the bound 2/8 rather than 1/8. Measured: pairwise 0.15, feature 0.125.
    """
    memory = _on_eight_devices("memory")
    for route in ("pairwise", "feature"):
        assert memory[f"{route}-8"] <= 2.0 / 8.0 * memory[f"{route}-1"], route


def test_bad_placements_are_refused_with_advice():
    errors = _on_eight_devices("errors")
    for attempt, advice in BAD_PLACEMENTS.items():
        assert advice in errors[attempt], attempt


def test_a_mesh_must_be_a_mesh(as_a_user):
    with pytest.raises(ValueError, match=r"jax\.sharding\.Mesh"):
        ms.mmd2(np.ones((4, 2)), np.ones((4, 2)), ms.Gaussian(), mesh="devices")


def test_a_one_device_mesh_sums_on_that_device(rng):
    mesh = jax.sharding.Mesh(jax.devices()[:1], ("samples",))
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(7, 3))
    assert sample_placement(x, y, mesh) is None
    assert float(ms.mmd2(x, y, ms.Gaussian(), mesh=mesh)) == float(ms.mmd2(x, y, ms.Gaussian()))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_compute_one_mmd_together():
    """Two JAX processes on 127.0.0.1 (jax.distributed, gloo), each with half the rows, agree with one."""
    port = _free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.multiprocess", str(port), str(rank)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_environment(),
        )
        for rank in (0, 1)
    ]
    try:
        outputs = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_, errors) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, errors[-4000:]
    together = json.loads(outputs[0][0].strip().splitlines()[-1])  # after gloo's own lines
    assert together["devices"] == 2
    x, y = multiprocess.samples()
    for name in multiprocess.CASES:
        kernel, route, estimator, extra = multiprocess.arguments(name)
        alone = float(ms.mmd2(x, y, kernel, estimator, route=route, **extra))
        assert together[name] == pytest.approx(alone, rel=FLOAT64_TOLERANCE), name

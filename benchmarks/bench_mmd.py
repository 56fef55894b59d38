"""MMD speed and memory, measured side by side in one run (float32, CPU unless JAX finds a GPU).

    python benchmarks/bench_mmd.py            # the sizes of the issue (a few minutes on 2 cores)
    python benchmarks/bench_mmd.py --quick    # small sizes, to check that the script runs

What it prints, each a ratio of two timings taken in this run:

1. poly2 unbiased MMD by the feature route / the Gram loss, m = 65536, d = 64 (VGG relu1_1 of a
   256 x 256 image). Goal <= 1.2: the unbiased estimate costs the Gram matrices plus O(m d).
2. poly2 biased MMD by the pairwise route / the feature route, same size (~1000x: docs/math.md,
   "Feature route").
3. Gaussian biased MMD, m = n = 16384, d = 64: mmdstyle / a plain blocked-scan implementation
   written below (row blocks against all columns, no symmetry). Goal <= 0.7. Also kernel
   evaluations per second, counting the m^2 + n^2 + m n pairs the estimator is defined over.
4. Peak resident memory of Gaussian MMD value + gradient at m = n = 65536 (a child process per
   measurement; the baseline is the same child at m = n = 8). Goal < 3 GB.
5. The median heuristic on 2048 pooled samples (its default cap; 2,096,128 pair distances):
   ``median_bandwidth``, which selects the median by bisection, / the same with ``jnp.median``,
   which sorts. Both give the same sigma exactly.
6. MMD against a fixed style, Gaussian, m = n = 4096, d = 96 (the multi-scale network's layer at
   64 px): ``pairwise_mmd2_to_target`` (the style's own kernel sum computed once, by
   ``pairwise_target``) / ``mmd2``, the value (a measurement; about 3/4 expected: the style's sum
   is a quarter of the kernel values) and the value and gradient in x (a loss step; the
   gradient's sums, which never included the style's, stay).
7. The permutation test's relabellings, 999 of m = n = 1000 samples: ``random_labels`` (a random
   m-subset: the m-th smallest of N random keys, selected by NumPy on the CPU) / ``jax.random.
   permutation`` (two key-value sorts, what the test drew before), the labels alone and a whole
   ``mmd2_test`` (linear kernel, d = 8: the permutation method, whose statistics are cheap) with
   the permutations put back (``permuted_mmd2_test`` below).

Timings are the best of several runs after a warm-up (compilation excluded).
"""

from __future__ import annotations

import argparse
import functools
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
from jax import lax

import mmdstyle as ms
from mmdstyle.two_sample import random_labels


def best_time(function: Callable, *args, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` runs after one warm-up run that compiles."""
    jax.block_until_ready(function(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def plain_blocked_gaussian_mmd2(x: jax.Array, y: jax.Array, sigma: float, block: int) -> jax.Array:
    """The straightforward blocked implementation: every sum over all ordered pairs, row blocks."""

    def block_sum(a: jax.Array, b: jax.Array) -> jax.Array:
        def body(total: jax.Array, rows: jax.Array) -> tuple[jax.Array, None]:
            cross = jnp.matmul(rows, b.T, precision=lax.Precision.HIGHEST)
            squared = jnp.sum(rows**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2.0 * cross
            return total + jnp.sum(jnp.exp(-jnp.maximum(squared, 0.0) / (2.0 * sigma**2))), None

        return lax.scan(body, jnp.zeros((), a.dtype), a.reshape(-1, block, a.shape[1]))[0]

    m, n = x.shape[0], y.shape[0]
    return block_sum(x, x) / m**2 + block_sum(y, y) / n**2 - 2.0 * block_sum(x, y) / (m * n)


def samples(m: int, n: int, d: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(m, d)), 0.0)  # ReLU-like
    y = np.maximum(rng.normal(size=(n, d)) + 0.1, 0.0)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def poly2_benchmarks(m: int, d: int, pairwise: bool) -> dict:
    x, y = samples(m, m, d)
    gram = best_time(jax.jit(ms.gram_style_loss), x, y, repeats=10)
    unbiased = best_time(jax.jit(lambda a, b: ms.mmd2(a, b, ms.Polynomial(2), "unbiased")), x, y, repeats=10)
    feature = best_time(jax.jit(lambda a, b: ms.mmd2(a, b, ms.Polynomial(2))), x, y, repeats=10)
    result = {"m": m, "d": d, "gram_s": gram, "unbiased_feature_s": unbiased, "biased_feature_s": feature}
    result["unbiased_feature_over_gram"] = unbiased / gram
    if pairwise:
        slow = jax.jit(lambda a, b: ms.mmd2(a, b, ms.Polynomial(2), route="pairwise"))
        result["biased_pairwise_s"] = best_time(slow, x, y, repeats=1)
        result["pairwise_over_feature"] = result["biased_pairwise_s"] / feature
    return result


def gaussian_benchmarks(m: int, d: int, blocks: list[int]) -> dict:
    x, y = samples(m, m, d)
    sigma = float(ms.median_bandwidth(x, y))
    pairs = 3.0 * m * m  # m^2 + n^2 + m n with n = m
    ours_block = ms.mmd.default_block_size(m, m)
    ours = best_time(jax.jit(lambda a, b: ms.mmd2(a, b, ms.Gaussian(sigma))), x, y)
    plain = {
        block: best_time(
            jax.jit(functools.partial(plain_blocked_gaussian_mmd2, sigma=sigma, block=block)), x, y
        )
        for block in blocks
    }
    best_block = min(plain, key=plain.get)
    return {
        "m": m,
        "d": d,
        "block_size": ours_block,
        "mmdstyle_s": ours,
        "plain_s": {str(block): seconds for block, seconds in plain.items()},
        "mmdstyle_over_plain_same_block": ours / plain.get(ours_block, float("nan")),
        "mmdstyle_over_best_plain": ours / plain[best_block],
        "best_plain_block": best_block,
        "pair_evaluations_per_s": pairs / ours,
    }


def median_benchmarks(samples_count: int, d: int) -> dict:
    x, y = samples(samples_count // 2, samples_count - samples_count // 2, d)
    pooled = jnp.concatenate([x, y])

    @jax.jit
    def sorted_median_bandwidth(z: jax.Array) -> jax.Array:  # the same steps, jnp.median's sort
        centred = z - jnp.mean(z, axis=0, keepdims=True)
        rows, columns = np.triu_indices(z.shape[0], k=1)
        distances = ms.kernels.squared_distances(centred, centred)[rows, columns]
        return jnp.sqrt(jnp.median(distances) / 2.0)

    selected, by_sort = ms.median_bandwidth(pooled), sorted_median_bandwidth(pooled)
    if float(selected) != float(by_sort):
        raise AssertionError(f"median_bandwidth {float(selected)!r} != sorted median {float(by_sort)!r}")
    selection = best_time(ms.median_bandwidth, pooled)
    sorting = best_time(sorted_median_bandwidth, pooled)
    return {
        "samples": samples_count,
        "d": d,
        "selection_s": selection,
        "sort_s": sorting,
        "selection_over_sort": selection / sorting,
    }


def target_benchmarks(m: int, d: int) -> dict:
    x, y = samples(m, m, d)
    kernel = ms.Gaussian(float(ms.median_bandwidth(x, y)))
    target = ms.mmd.pairwise_target(y, kernel)

    def both(a: jax.Array, b: jax.Array) -> jax.Array:
        return ms.mmd2(a, b, kernel)

    def fixed(a: jax.Array, t: ms.mmd.PairwiseTarget) -> jax.Array:
        return ms.mmd.pairwise_mmd2_to_target(a, t)

    times = {
        "mmd2_value_s": best_time(jax.jit(both), x, y),
        "to_target_value_s": best_time(jax.jit(fixed), x, target),
        "mmd2_s": best_time(jax.jit(jax.value_and_grad(both)), x, y),
        "to_target_s": best_time(jax.jit(jax.value_and_grad(fixed)), x, target),
    }
    return {
        "m": m,
        "d": d,
        **times,
        "value_ratio": times["to_target_value_s"] / times["mmd2_value_s"],
        "to_target_over_mmd2": times["to_target_s"] / times["mmd2_s"],
    }


def permuted_mmd2_test(x: jax.Array, y: jax.Array, kernel: ms.AbstractKernel, key: jax.Array, count: int):
    """The permutation method's statistics with relabellings drawn by ``jax.random.permutation``."""
    m, pooled = x.shape[0], jnp.concatenate([x, y])

    def statistic(k: jax.Array) -> jax.Array:
        order = jax.random.permutation(k, pooled.shape[0])
        return ms.mmd2(pooled[order[:m]], pooled[order[m:]], kernel, "unbiased")

    return lax.map(statistic, jax.random.split(key, count))


def relabelling_benchmarks(m: int, d: int, count: int) -> dict:
    x, y = samples(m, m, d)
    keys = jax.random.split(jax.random.key(0), count)
    size = 2 * m
    kernel = ms.Linear()

    def labels(k: jax.Array) -> jax.Array:
        return lax.map(lambda one: random_labels(one, m, size), k)

    def permutations(k: jax.Array) -> jax.Array:
        return lax.map(lambda one: jax.random.permutation(one, size), k)

    def test(a: jax.Array, b: jax.Array) -> jax.Array:
        return ms.mmd2_test(a, b, kernel, count, key=keys[0], method="permutation").permuted_statistics

    times = {
        "labels_s": best_time(jax.jit(labels), keys),
        "permutations_s": best_time(jax.jit(permutations), keys),
        "test_s": best_time(test, x, y),
        "permuted_test_s": best_time(
            jax.jit(lambda a, b: permuted_mmd2_test(a, b, kernel, keys[0], count)), x, y
        ),
    }
    return {
        "m": m,
        "d": d,
        "relabellings": count,
        **times,
        "labels_over_permutations": times["labels_s"] / times["permutations_s"],
        "test_ratio": times["test_s"] / times["permuted_test_s"],
    }


def memory_child(m: int, d: int) -> None:
    """Value and gradient of a Gaussian MMD; prints this process's peak RSS in bytes."""
    x, y = samples(m, m, d)
    loss = jax.jit(jax.value_and_grad(lambda a, b: ms.mmd2(a, b, ms.Gaussian(4.0)), argnums=(0, 1)))
    value, gradients = loss(x, y)
    jax.block_until_ready(gradients)
    assert np.isfinite(float(value))
    print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def peak_memory(m: int, d: int) -> float:
    command = [sys.executable, os.path.abspath(__file__), "--memory-child", str(m), "--d", str(d)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_rss_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: check that the script runs")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--memory-child", type=int, metavar="M", help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, default=64, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.memory_child:
        memory_child(arguments.memory_child, arguments.d)
        return

    poly_m, gauss_m, memory_m = (2048, 1024, 2048) if arguments.quick else (65536, 16384, 65536)
    device = jax.devices()[0]
    print(
        f"mmdstyle {ms.__version__}, jax {jax.__version__}, {device.platform} ({device.device_kind}), "
        f"{os.cpu_count()} CPU cores, float32"
    )

    poly = poly2_benchmarks(poly_m, 64, pairwise=True)
    print(f"\n1. poly2, m = {poly_m}, d = 64")
    print(f"   Gram loss                        {poly['gram_s'] * 1e3:9.2f} ms")
    print(f"   unbiased MMD, feature route      {poly['unbiased_feature_s'] * 1e3:9.2f} ms")
    print(f"   ratio unbiased / Gram            {poly['unbiased_feature_over_gram']:9.2f}   (goal <= 1.2)")
    print(f"2. biased MMD, pairwise route       {poly['biased_pairwise_s'] * 1e3:9.0f} ms")
    print(f"   biased MMD, feature route        {poly['biased_feature_s'] * 1e3:9.2f} ms")
    print(f"   ratio pairwise / feature         {poly['pairwise_over_feature']:9.0f}")

    blocks = sorted({64, 256, 1024, ms.mmd.default_block_size(gauss_m, gauss_m)})
    gauss = gaussian_benchmarks(gauss_m, 64, blocks)
    print(f"\n3. Gaussian biased MMD, m = n = {gauss_m}, d = 64 (mmdstyle block size {gauss['block_size']})")
    print(f"   mmdstyle                         {gauss['mmdstyle_s'] * 1e3:9.1f} ms")
    for block, seconds in gauss["plain_s"].items():
        print(f"   plain blocked scan, block {block:>5}  {seconds * 1e3:9.1f} ms")
    same_block = gauss["mmdstyle_over_plain_same_block"]
    print(f"   ratio mmdstyle / plain (same block)  {same_block:6.2f}   (goal <= 0.7)")
    print(f"   ratio mmdstyle / best plain          {gauss['mmdstyle_over_best_plain']:6.2f}")
    print(f"   pair evaluations per second          {gauss['pair_evaluations_per_s']:9.3g}")

    baseline = peak_memory(8, 64)
    peak = peak_memory(memory_m, 64)
    print(f"\n4. Gaussian MMD value + gradient, m = n = {memory_m}, d = 64")
    print(f"   peak RSS {peak / 2**30:.2f} GiB   (goal < 3 GB)")
    print(f"   the same process at m = n = 8: {baseline / 2**30:.2f} GiB")
    full_matrix = memory_m * memory_m * 4 / 2**30
    print(f"   one m x n float32 kernel matrix would be {full_matrix:.0f} GiB")

    median = median_benchmarks(512 if arguments.quick else 2048, 64)
    print(f"\n5. median heuristic over {median['samples']} pooled samples, d = 64 (the same sigma both ways)")
    print(f"   median_bandwidth (selection)     {median['selection_s'] * 1e3:9.1f} ms")
    print(f"   with jnp.median (sort)           {median['sort_s'] * 1e3:9.1f} ms")
    print(f"   ratio selection / sort           {median['selection_over_sort']:9.2f}")
    fixed = target_benchmarks(1024 if arguments.quick else 4096, 96)
    print(f"\n6. Gaussian MMD against a fixed target, m = n = {fixed['m']}, d = 96")
    print(f"   value: mmd2                      {fixed['mmd2_value_s'] * 1e3:9.1f} ms")
    print(f"   value: pairwise_mmd2_to_target   {fixed['to_target_value_s'] * 1e3:9.1f} ms")
    print(f"   ratio target / mmd2              {fixed['value_ratio']:9.2f}   (about 0.75 expected)")
    print(f"   value + gradient: mmd2           {fixed['mmd2_s'] * 1e3:9.1f} ms")
    print(f"   value + gradient: to the target  {fixed['to_target_s'] * 1e3:9.1f} ms")
    print(f"   ratio target / mmd2              {fixed['to_target_over_mmd2']:9.2f}   (gradient sums stay)")
    relabel = relabelling_benchmarks(200 if arguments.quick else 1000, 8, 999)
    print(f"\n7. {relabel['relabellings']} relabellings of m = n = {relabel['m']} samples")
    print(f"   random_labels                    {relabel['labels_s'] * 1e3:9.1f} ms")
    print(f"   jax.random.permutation           {relabel['permutations_s'] * 1e3:9.1f} ms")
    print(f"   ratio labels / permutations      {relabel['labels_over_permutations']:9.2f}")
    print(f"   mmd2_test, linear, d = {relabel['d']}       {relabel['test_s'] * 1e3:9.1f} ms")
    print(f"   the same with permutations       {relabel['permuted_test_s'] * 1e3:9.1f} ms")
    print(f"   ratio                            {relabel['test_ratio']:9.2f}")
    if arguments.json:
        figures = {
            "poly2": poly,
            "gaussian": gauss,
            "memory": {"m": memory_m, "peak_rss_bytes": peak, "baseline_rss_bytes": baseline},
            "median_bandwidth": median,
            "fixed_target": fixed,
            "relabellings": relabel,
        }
        with open(arguments.json, "w") as file:
            json.dump(figures, file, indent=2)


if __name__ == "__main__":
    main()

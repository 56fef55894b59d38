"""VGG-19 value + gradient of a 3-layer Gram loss with respect to the image: JAX against PyTorch.

    python benchmarks/bench_vgg.py            # 256 x 256, every variant (a few minutes on 2 cores)
    python benchmarks/bench_vgg.py --quick    # 64 x 64, to check that the script runs

The loss is Gatys' Gram style loss at relu1_1, relu2_1 and relu3_1 (so conv1_1 ... conv3_1 run),
average pooling, float32, one image. Every variant runs in a child process of its own (XLA flags
are read once per process), with the same weights and image, and reports its best time of
several runs after a warm-up that compiles. Printed: each variant's time and its ratio to the
PyTorch float32 reference (torch's own CPU convolutions, same thread count), when torch is
importable. Goal: mmdstyle / torch <= 1.0 on CPU.

Variants:
- ``mmdstyle``: the package's Flax NNX VGG19 (NHWC), as users run it.
- ``jax-nchw``: the same network written with NCHW/OIHW convolutions (PyTorch's layout).
- ``mmdstyle + <flag>``: the package's network under one XLA CPU flag (oneDNN, XNNPACK, fast math,
  single-threaded Eigen): what each flag moves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

LAYERS = ("relu1_1", "relu2_1", "relu3_1")
SEQUENCE = (
    "conv1_1",
    "relu1_1",
    "conv1_2",
    "relu1_2",
    "pool1",
    "conv2_1",
    "relu2_1",
    "conv2_2",
    "relu2_2",
    "pool2",
    "conv3_1",
    "relu3_1",
)
XLA_VARIANTS = {
    "mmdstyle": "",
    "jax-nchw": "",
    "mmdstyle + oneDNN": "--xla_cpu_use_onednn=true",
    "mmdstyle + XNNPACK": "--xla_cpu_use_xnnpack=true",
    "mmdstyle + fast math": "--xla_cpu_enable_fast_math=true",
    "mmdstyle + single-thread Eigen": "--xla_cpu_multi_thread_eigen=false",
}


def weights_and_image(size: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """The first five convolutions of mmdstyle's random VGG-19 (HWIO), an image and a style image."""
    from mmdstyle.features import random_vgg19

    model = random_vgg19(0, pooling="average")
    weights = [(np.asarray(c.kernel[...]), np.asarray(c.bias[...])) for c in list(model.convolutions)[:5]]
    rng = np.random.default_rng(0)
    return (
        weights,
        rng.uniform(size=(size, size, 3)).astype(np.float32),
        rng.uniform(size=(size, size, 3)).astype(np.float32),
    )


def best_of(step, repeats: int) -> float:
    step()  # warm-up: compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def run_jax(variant: str, size: int, repeats: int) -> float:
    import jax
    import jax.numpy as jnp

    import mmdstyle as ms
    from mmdstyle.features import random_vgg19

    weights, image, style = weights_and_image(size)
    if variant == "jax-nchw":
        mean = jnp.asarray([0.485, 0.456, 0.406], jnp.float32).reshape(1, 3, 1, 1)
        std = jnp.asarray([0.229, 0.224, 0.225], jnp.float32).reshape(1, 3, 1, 1)
        kernels = [
            (jnp.asarray(k.transpose(3, 2, 0, 1)), jnp.asarray(b).reshape(1, -1, 1, 1)) for k, b in weights
        ]

        def features(image):
            x = (jnp.transpose(image, (2, 0, 1))[None] - mean) / std
            outputs, convolution = {}, iter(kernels)
            for name in SEQUENCE:
                if name.startswith("conv"):
                    kernel, bias = next(convolution)
                    x = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1))) + bias
                elif name.startswith("relu"):
                    x = jnp.maximum(x, 0.0)
                else:
                    x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID") * 0.25
                if name in LAYERS:
                    outputs[name] = x[0].reshape(x.shape[1], -1).T
            return outputs
    else:
        model = random_vgg19(0, pooling="average")

        def features(image):
            return {name: value.reshape(-1, value.shape[-1]) for name, value in model(image, LAYERS).items()}

    targets = features(jnp.asarray(style))
    loss = jax.jit(
        jax.value_and_grad(
            lambda image: sum(ms.gram_style_loss(x, targets[n]) for n, x in features(image).items())
        )
    )
    image = jnp.asarray(image)
    return best_of(lambda: jax.block_until_ready(loss(image)), repeats)


def run_torch(size: int, repeats: int, threads: int) -> float:
    import torch
    from torch_vgg import torch_features

    from mmdstyle.features import random_vgg19

    torch.set_num_threads(threads)
    _, image, style = weights_and_image(size)
    maps = torch_features(random_vgg19(0, pooling="average"), LAYERS)

    def features(image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: value.reshape(value.shape[0], -1).T for name, value in maps(image).items()}  # (h w, c)

    def gram_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # Gatys, as mmdstyle.gram_style_loss
        m, d = x.shape
        return ((x.T @ x - y.T @ y) ** 2).sum() / (4.0 * d**2 * m**2)

    with torch.no_grad():
        targets = features(torch.from_numpy(style.transpose(2, 0, 1)[None].copy()))
    start_image = torch.from_numpy(image.transpose(2, 0, 1)[None].copy())

    def step() -> None:
        x = start_image.clone().requires_grad_(True)
        loss = sum(gram_loss(value, targets[name]) for name, value in features(x).items())
        loss.backward()

    return best_of(step, repeats)


def child(arguments: argparse.Namespace) -> None:
    if arguments.child == "torch":
        seconds = run_torch(arguments.size, arguments.repeats, os.cpu_count() or 1)
    else:
        seconds = run_jax(arguments.child, arguments.size, arguments.repeats)
    print(json.dumps({"seconds": seconds}))


def measure(variant: str, size: int, repeats: int) -> float | None:
    environment = dict(os.environ)
    if flag := XLA_VARIANTS.get(variant, ""):
        environment["XLA_FLAGS"] = (environment.get("XLA_FLAGS", "") + " " + flag).strip()
    command = [sys.executable, __file__, "--child", variant, "--size", str(size), "--repeats", str(repeats)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if result.returncode != 0:
        print(f"  {variant}: failed ({result.stderr.strip().splitlines()[-1:] or result.returncode})")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="64 x 64 and fewer repeats: check the script runs"
    )
    parser.add_argument("--size", type=int, default=256, help="image side (default 256)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per variant (best is kept)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.size, arguments.repeats = 64, 2
    if arguments.child:
        child(arguments)
        return

    import importlib.util

    import jax

    print(
        f"VGG-19 value+grad of a Gram loss at {', '.join(LAYERS)}, {arguments.size} x {arguments.size}, "
        f"float32, {jax.default_backend()}, {os.cpu_count()} threads"
    )
    torch_seconds = None
    if importlib.util.find_spec("torch") is not None:
        torch_seconds = measure("torch", arguments.size, arguments.repeats)
        print(f"  {'torch (reference)':<32} {torch_seconds * 1e3:8.1f} ms")
    else:
        print("  torch is not installed: times only, no ratios")
    figures = {"size": arguments.size, "torch_seconds": torch_seconds, "variants": {}}
    for variant in XLA_VARIANTS:
        seconds = measure(variant, arguments.size, arguments.repeats)
        if seconds is None:
            continue
        ratio = f"   {seconds / torch_seconds:5.2f} x torch" if torch_seconds else ""
        print(f"  {variant:<32} {seconds * 1e3:8.1f} ms{ratio}")
        figures["variants"][variant] = seconds
    if arguments.json:
        from mmdstyle.features.files import write_json

        write_json(arguments.json, figures)


if __name__ == "__main__":
    main()

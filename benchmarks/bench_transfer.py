"""Style transfer step time: mmdstyle's jitted L-BFGS step against a PyTorch loop, same loss and network.

    python benchmarks/bench_transfer.py            # 256 x 256, 10 steps each (a few minutes on 2 cores)
    python benchmarks/bench_transfer.py --quick    # 64 x 64, to check that the script runs

Both sides run Gatys' objective on a random VGG-19 (mmdstyle's ``random_vgg19(0)`` weights, copied
into torch): Gram style loss at relu1_1 ... relu5_1 (w_l = 1/5, beta = 1e3), content loss at
relu4_2 (alpha = 1), average pooling, float32, from the content image. mmdstyle: ``transfer()`` as
users run it (optax L-BFGS with its zoom line search, the per-step history of every term
included), time per step after compilation, compilation reported apart. PyTorch:
``torch.optim.LBFGS(history_size=10, line_search_fn="strong_wolfe")``, one iteration per
``step()``, time per iteration after a warm-up iteration. Each side runs in its own process with
every core. Goal: mmdstyle / torch <= 1.0 on CPU.

The line searches differ (optax's zoom, torch's strong Wolfe), so a step may evaluate the network
a different number of times on each side: the evaluations per step are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT = "relu4_2"


def images(size: int) -> tuple[np.ndarray, np.ndarray]:
    from mmdstyle.style.samples import load_sample

    return load_sample("chelsea", size=size), load_sample("hubble", size=size)


def run_mmdstyle(size: int, steps: int, optimizer: str) -> dict:
    from mmdstyle.features import random_vgg19
    from mmdstyle.style.engine import transfer
    from mmdstyle.style.objective import TransferConfig

    content, style = images(size)
    network = random_vgg19(0, pooling="average")
    config = TransferConfig(
        size=size,
        steps=steps,
        chunk=steps,
        style_layers=STYLE,
        content_layers=(CONTENT,),
        optimizer=optimizer,
    )
    result = transfer(content, [style], config, extractor=network, progress=False)
    history = result.history
    return {
        "seconds_per_step": history[-1]["seconds"] / steps,
        "compile_seconds": history[0]["compile_seconds"],
        "evaluations_per_step": sum(record["evaluations"] for record in history) / steps,
        "first_loss": history[0]["loss"],
        "last_loss": history[-1]["loss"],
    }


def run_torch(size: int, steps: int, optimizer: str) -> dict:
    import torch
    from torch_vgg import torch_features

    from mmdstyle.features import random_vgg19

    torch.set_num_threads(os.cpu_count() or 1)
    content, style = images(size)
    features = torch_features(random_vgg19(0, pooling="average"), (*STYLE, CONTENT))

    def gram_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # ||G_x/m - G_s/n||^2 / (4 d^2)
        d, m = x.shape[0], x.shape[1] * x.shape[2]
        samples = x.reshape(d, m)
        return ((samples @ samples.T / m - target) ** 2).sum() / (4.0 * d**2)

    def to_torch(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))

    with torch.no_grad():
        style_maps = features(to_torch(style))
        samples = {name: style_maps[name].reshape(style_maps[name].shape[0], -1) for name in STYLE}
        grams = {name: value @ value.T / value.shape[1] for name, value in samples.items()}
        content_target = features(to_torch(content))[CONTENT]
    image = to_torch(content).clone().requires_grad_(True)
    if optimizer == "lbfgs":
        solver = torch.optim.LBFGS([image], lr=1, max_iter=1, history_size=10, line_search_fn="strong_wolfe")
    else:
        solver = torch.optim.Adam([image], lr=0.02)
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        solver.zero_grad()
        maps = features(image)
        style_loss = sum(gram_loss(maps[name], grams[name]) for name in STYLE) / len(STYLE)
        loss = 1e3 * style_loss + 0.5 * ((maps[CONTENT] - content_target) ** 2).sum()
        loss.backward()
        return loss

    first = float(solver.step(closure))  # warm-up
    evaluations = 0
    start = time.perf_counter()
    for _ in range(steps):
        last = float(solver.step(closure))
    seconds = time.perf_counter() - start
    return {
        "seconds_per_step": seconds / steps,
        "evaluations_per_step": evaluations / steps,
        "first_loss": first,
        "last_loss": last,
    }


def measure(side: str, size: int, steps: int, optimizer: str) -> dict | None:
    command = [sys.executable, __file__, "--child", side, "--size", str(size), "--steps", str(steps)]
    result = subprocess.run([*command, "--optimizer", optimizer], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"  {side}: failed: {result.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="64 x 64, 3 steps: check that the script runs")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--optimizer", choices=("lbfgs", "adam"), help="only this optimizer (default: both)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--child", choices=("mmdstyle", "torch"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.size, arguments.steps = 64, 3
    if arguments.child:
        run = run_mmdstyle if arguments.child == "mmdstyle" else run_torch
        print(json.dumps(run(arguments.size, arguments.steps, arguments.optimizer or "lbfgs")))
        return

    import importlib.util

    print(
        f"Gatys style transfer, VGG-19 (random weights), {arguments.size} px, {arguments.steps} steps, "
        f"{os.cpu_count()} threads"
    )
    figures: dict = {"size": arguments.size, "steps": arguments.steps}
    have_torch = importlib.util.find_spec("torch") is not None
    if not have_torch:
        print("  torch is not installed: no reference, no ratio")
    for optimizer in [arguments.optimizer] if arguments.optimizer else ["lbfgs", "adam"]:
        ours = measure("mmdstyle", arguments.size, arguments.steps, optimizer)
        theirs = measure("torch", arguments.size, arguments.steps, optimizer) if have_torch else None
        figures[optimizer] = {"mmdstyle": ours, "torch": theirs}
        for side, result in (("mmdstyle", ours), ("torch", theirs)):
            if result:
                compiled = (
                    f", compile {result['compile_seconds']:.1f} s" if "compile_seconds" in result else ""
                )
                print(
                    f"  {optimizer:<5} {side:<8} {result['seconds_per_step']:.3f} s/step "
                    f"({result['evaluations_per_step']:.1f} evaluations/step{compiled}), "
                    f"loss {result['first_loss']:.4g} -> {result['last_loss']:.4g}"
                )
        if ours and theirs:
            ratio = ours["seconds_per_step"] / theirs["seconds_per_step"]
            print(f"  {optimizer:<5} mmdstyle / torch per step: {ratio:.2f}")
    if arguments.json:
        from mmdstyle.features.files import write_json

        write_json(arguments.json, figures)


if __name__ == "__main__":
    main()

"""Style transfer against a PyTorch loop of the same loss and network: time to quality, time per step.

    python benchmarks/bench_transfer.py            # 256 x 256 (several minutes on 2 cores)
    python benchmarks/bench_transfer.py --quick    # 64 x 64, to check that the script runs
    python benchmarks/bench_transfer.py --platform gpu --size 512 --steps 500   # on a GPU

Both sides run Gatys' objective on a random VGG-19 (mmdstyle's ``random_vgg19(0)`` weights, copied
into torch): Gram style loss at relu1_1 ... relu5_1 (w_l = 1/5, beta = 1e3), content loss at
relu4_2 (alpha = 1), average pooling, float32, from the content image. mmdstyle: ``transfer()`` as
users run it (L-BFGS with its host-driven strong-Wolfe line search, or Adam; the per-step history
of every term included), compilation reported apart. PyTorch: ``torch.optim.LBFGS(history_size=10,
line_search_fn="strong_wolfe")`` or ``torch.optim.Adam``. Each side runs in its own process with
every core.

Two measurements:

- **Time to quality** (L-BFGS): the loss PyTorch reaches after ``--quality-steps`` (50) iterations,
  run as neural-style-pt runs them (one ``step()`` call with ``max_iter`` = all of them, each
  iteration reusing the line search's last evaluation), and the wall time mmdstyle takes to reach
  it (its steps' time, compilation apart), divided by PyTorch's time. Goal <= 1.0. A per-step
  ratio alone can hide a line search that makes no progress.
- **Time per step**, after compilation (mmdstyle) or a warm-up iteration (torch; one iteration
  per ``step()`` call, which evaluates the objective once more at the start of each call). The
  evaluations per step are printed too.
- **Peak memory** (resident set of each side's process, start-up and imports included) of an
  L-BFGS transfer at ``--memory-size`` (512) pixels, a few steps, side by side. Goal: mmdstyle's
  not above torch's. ``--memory-size 0`` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
        "seconds_per_step": history[-1]["seconds"] / len(history),
        "compile_seconds": history[0]["compile_seconds"],
        "evaluations_per_step": sum(record["evaluations"] for record in history) / len(history),
        "first_loss": history[0]["loss"],
        "last_loss": history[-1]["loss"],
        # losses[i]: the loss after i steps, reached at seconds[i] (the steps' time, compilation apart)
        "losses": [record["loss"] for record in history],
        "seconds": [0.0] + [record["seconds"] for record in history[:-1]],
    }


def run_torch(size: int, steps: int, optimizer: str, platform: str, quality: bool = False) -> dict:
    import torch
    from torch_vgg import torch_features

    from mmdstyle.features import random_vgg19

    torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if platform == "gpu" else "cpu"
    content, style = images(size)
    features = torch_features(random_vgg19(0, pooling="average"), (*STYLE, CONTENT), device)

    def gram_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # ||G_x/m - G_s/n||^2 / (4 d^2)
        d, m = x.shape[0], x.shape[1] * x.shape[2]
        samples = x.reshape(d, m)
        return ((samples @ samples.T / m - target) ** 2).sum() / (4.0 * d**2)

    def to_torch(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None])).to(device)

    with torch.no_grad():
        style_maps = features(to_torch(style))
        samples = {name: style_maps[name].reshape(style_maps[name].shape[0], -1) for name in STYLE}
        grams = {name: value @ value.T / value.shape[1] for name, value in samples.items()}
        content_target = features(to_torch(content))[CONTENT]
    image = to_torch(content).clone().requires_grad_(True)
    if optimizer == "lbfgs":
        # Time to quality: every iteration in one step() call, as neural-style-pt runs it, so that
        # each iteration reuses the line search's last evaluation. Per step: one iteration per
        # call, which evaluates once more at the start of each call.
        iterations = steps if quality else 1
        solver = torch.optim.LBFGS(
            [image],
            lr=1,
            max_iter=iterations,
            tolerance_grad=-1,
            tolerance_change=-1,
            history_size=10,
            line_search_fn="strong_wolfe",
        )
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

    if quality:
        start = time.perf_counter()
        first = float(solver.step(closure))
        seconds = time.perf_counter() - start
        return {
            "total_seconds": seconds,
            "iterations": solver.state[image]["n_iter"],
            "evaluations": evaluations,
            "first_loss": first,
            "final_loss": float(closure()),  # step() returns the loss before its iterations
        }
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


def measure(
    side: str, size: int, steps: int, optimizer: str, platform: str, quality: bool = False
) -> dict | None:
    command = [sys.executable, __file__, "--child", side, "--size", str(size), "--steps", str(steps)]
    command += ["--optimizer", optimizer, "--platform", platform] + (["--quality"] if quality else [])
    environment = {**os.environ, "JAX_PLATFORMS": "cuda" if platform == "gpu" else platform}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    if result.returncode != 0:
        print(f"  {side}: failed: {result.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_to_quality(size: int, steps: int, platform: str, figures: dict) -> None:
    """How long mmdstyle's L-BFGS takes to reach the loss torch's reaches in ``steps`` iterations."""
    theirs = measure("torch", size, steps, "lbfgs", platform, quality=True)
    if theirs is None:
        return
    target = theirs["final_loss"]
    ours = measure("mmdstyle", size, 2 * steps, "lbfgs", platform)
    if ours is None:
        return
    reached = [i for i, loss in enumerate(ours["losses"]) if loss <= target]
    figures["time_to_quality"] = {"torch": theirs, "mmdstyle": ours, "target": target}
    print(
        f"  time to quality: torch L-BFGS reaches loss {target:.5g} in {theirs['iterations']} iterations "
        f"({theirs['evaluations']} evaluations), {theirs['total_seconds']:.1f} s"
    )
    if not reached:
        print(
            f"  mmdstyle: not reached in {2 * steps} steps ({ours['seconds'][-1]:.1f} s; "
            f"loss {ours['losses'][-1]:.5g}): ratio > {ours['seconds'][-1] / theirs['total_seconds']:.2f}"
        )
        return
    step, seconds = reached[0], ours["seconds"][reached[0]]
    figures["time_to_quality"]["ratio"] = seconds / theirs["total_seconds"]
    print(
        f"  mmdstyle: {step} steps, {seconds:.1f} s (compile {ours['compile_seconds']:.1f} s apart); "
        f"mmdstyle / torch: {seconds / theirs['total_seconds']:.2f}"
    )


def peak_memory(size: int, platform: str, have_torch: bool, figures: dict, steps: int = 3) -> None:
    """Each side's peak resident memory over an L-BFGS transfer of ``steps`` steps at ``size`` px."""
    sides = ("mmdstyle", "torch") if have_torch else ("mmdstyle",)
    peaks = {side: measure(side, size, steps, "lbfgs", platform) for side in sides}
    figures["peak_memory"] = {"size": size, "steps": steps, **peaks}
    for side, result in peaks.items():
        if result:
            peak = result["peak_rss_bytes"] / 2**30
            print(f"  peak RSS, L-BFGS at {size} px, {steps} steps: {side:<8} {peak:.2f} GiB")
    if all(peaks.values()) and len(peaks) == 2:
        ratio = peaks["mmdstyle"]["peak_rss_bytes"] / peaks["torch"]["peak_rss_bytes"]
        figures["peak_memory"]["ratio"] = ratio
        print(f"  peak RSS mmdstyle / torch: {ratio:.2f}   (goal <= 1.0)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="64 x 64, 3 steps: check that the script runs")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="steps of the per-step measurement")
    parser.add_argument(
        "--quality-steps", type=int, default=50, help="torch's iterations for time to quality"
    )
    parser.add_argument("--optimizer", choices=("lbfgs", "adam"), help="only this optimizer (default: both)")
    parser.add_argument(
        "--memory-size", type=int, default=512, help="pixels of the peak-memory run (default 512; 0: skip)"
    )
    parser.add_argument("--platform", choices=("cpu", "gpu"), default="cpu", help="where both sides run")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--child", choices=("mmdstyle", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--quality", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.size, arguments.steps, arguments.quality_steps, arguments.memory_size = 64, 3, 5, 96
    if arguments.child:
        optimizer = arguments.optimizer or "lbfgs"
        if arguments.child == "mmdstyle":
            result = run_mmdstyle(arguments.size, arguments.steps, optimizer)
        else:
            result = run_torch(
                arguments.size, arguments.steps, optimizer, arguments.platform, arguments.quality
            )
        result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        print(json.dumps(result))
        return

    import importlib.util

    print(
        f"Gatys style transfer, VGG-19 (random weights), {arguments.size} px, {arguments.steps} steps, "
        f"{os.cpu_count()} threads, mmdstyle on {arguments.platform}"
    )
    figures: dict = {"size": arguments.size, "steps": arguments.steps, "platform": arguments.platform}
    have_torch = importlib.util.find_spec("torch") is not None
    if not have_torch:
        print("  torch is not installed: no reference, no ratio")
    elif arguments.optimizer in (None, "lbfgs"):
        time_to_quality(arguments.size, arguments.quality_steps, arguments.platform, figures)
    for optimizer in [arguments.optimizer] if arguments.optimizer else ["lbfgs", "adam"]:
        ours = measure("mmdstyle", arguments.size, arguments.steps, optimizer, arguments.platform)
        theirs = (
            measure("torch", arguments.size, arguments.steps, optimizer, arguments.platform)
            if have_torch
            else None
        )
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
        if ours and not theirs:
            print(
                f"  {optimizer:<5} mmdstyle: {ours['seconds_per_step'] * arguments.steps:.1f} s "
                f"for {arguments.steps} steps"
            )
    if arguments.memory_size:
        peak_memory(arguments.memory_size, arguments.platform, have_torch, figures)
    if arguments.json:
        from mmdstyle.features.files import write_json

        write_json(arguments.json, figures)


if __name__ == "__main__":
    main()

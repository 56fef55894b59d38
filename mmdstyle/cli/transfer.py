"""``mmdstyle transfer``, ``synthesize`` and ``demo``: arguments in, image, history and figure out.

Every check that can fail (files, layers, specs, sizes) runs before the optimisation, and every
output is written atomically: a failed or interrupted run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from mmdstyle.cli.command import Command, in_flags, user_errors
from mmdstyle.cli.options import (
    LOSS_HELP,
    add_check_option,
    add_loss_options,
    add_network_options,
    add_optimiser_options,
    add_size_options,
    checks_passed,
    config_from,
    extractor_from,
    load_images,
    speaker,
)
from mmdstyle.cli.outputs import Interrupts, Writer, check_outputs
from mmdstyle.features.files import write_json
from mmdstyle.style.engine import check_run_memory, transfer
from mmdstyle.style.images import luminance_transfer, resize, save_image
from mmdstyle.style.objective import TransferConfig, check_config, with_default_weights

EPILOG_TRANSFER = """examples:
  mmdstyle transfer photo.jpg painting.jpg -o out.png
  mmdstyle transfer photo.jpg painting.jpg -o out.png --loss "mmd:gaussian(sigma=median)" --style-weight 1e6
  mmdstyle transfer photo.jpg a.jpg b.jpg --style-blend-weights 0.7,0.3 --scales 128,256 -o out.png
  mmdstyle transfer -o out.png          (the bundled samples: sample:chelsea sample:hubble)"""

EPILOG_SYNTHESIZE = """examples:
  mmdstyle synthesize sample:gravel -o gravel.png --size 128
  mmdstyle synthesize texture.jpg -o out.png --loss "0.5*mmd:linear + 0.5*bn" --layer-loss relu1_1=gram \\
      --extractor random-vgg19        (relu1_1 is a VGG-19 layer)"""


def add_run_arguments(
    parser: argparse.ArgumentParser,
    *,
    synthesis: bool,
    output: str | None = None,
    size: int = 256,
    steps: int = 300,
    min_progress: float = 0.0,
) -> None:
    """The arguments of ``transfer`` (and, without the content ones, of ``synthesize``).

    ``output``, ``size``, ``steps`` and ``min_progress`` set defaults (``demo`` has a default
    output, a smaller size, fewer steps, and ends early on a flat loss).
    """
    if synthesis:
        parser.add_argument(
            "styles", nargs="*", metavar="STYLE", help="style (texture) images; default sample:gravel"
        )
    else:
        parser.add_argument(
            "images",
            nargs="*",
            metavar="IMAGE",
            help="CONTENT then STYLE [STYLE ...]; default: sample:chelsea sample:hubble",
        )
    parser.add_argument(
        "-o",
        "--output",
        required=output is None,
        default=output,
        metavar="OUT.png",
        help="the result image (.png, .jpg, ...)" + (f"; default {output}" if output else ""),
    )
    add_loss_options(parser, synthesis=synthesis)
    add_network_options(parser)
    add_size_options(parser, size=size)
    add_optimiser_options(
        parser, synthesis=synthesis, steps=steps, init=None, several_styles=True, min_progress=min_progress
    )
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument(
        "--save-every", type=int, default=0, metavar="N", help="also save the image every N steps"
    )
    outputs.add_argument("--history", metavar="FILE", help="per-step losses as JSON (default: OUT.json)")
    outputs.add_argument("--plot", metavar="FILE", help="loss curves (default: OUT-loss.png)")
    outputs.add_argument("--no-plot", action="store_true", help="no loss-curve figure")
    outputs.add_argument("--quiet", action="store_true", help="no progress bar, no messages except errors")
    add_check_option(outputs, "images, specs, layers, outputs and memory")


def run(arguments: argparse.Namespace, *, synthesis: bool) -> int:
    """Check everything, run, write the outputs.

    Exit status 0 on success; 1 on a run that stopped early, an output saved elsewhere than
    asked or snapshots not written; 2 on bad input (nothing computed); 130 or 143 after Ctrl-C
    or SIGTERM (the steps done so far written).
    """
    started = time.perf_counter() - seconds_since_the_process_started()
    content, styles, config, extractor, outputs = _prepare(arguments, synthesis=synthesis)
    output = outputs["-o"]
    say = speaker(arguments.quiet)
    if arguments.check:
        check_run_memory(config, extractor, content, styles)
        stages = ", ".join(str(size) for size in config.stages())
        ready = f"{config.steps} steps at {stages} px, loss {config.loss}"
        return checks_passed(ready, quiet=arguments.quiet)

    unwritten: list[Path] = []  # the first snapshot that could not be written, if one could not

    def on_chunk(step: int, image: np.ndarray, records: list[dict]) -> None:
        within_stage = step - records[-1]["stage"] * config.steps if "stage" in records[-1] else step
        if arguments.save_every and within_stage % arguments.save_every == 0 and not unwritten:
            if config.original_colors:
                image = luminance_transfer(np.clip(image, 0, 1), resize(content, image.shape[:2]))
            snapshot = output.with_name(f"{output.stem}-{step:05d}{output.suffix}")
            try:
                save_image(snapshot, image)
            except OSError as error:  # a disk filled up, a folder removed: the run itself goes on
                unwritten.append(snapshot)
                print(
                    f"mmdstyle: could not write the snapshot {str(snapshot)!r} ({error.strerror or error}); "
                    "the run goes on without snapshots.",
                    file=sys.stderr,
                )

    default_style_weight = with_default_weights(config, extractor).style_weight
    with Interrupts(say) as interrupts:
        result = transfer(
            content,
            styles,
            config,
            extractor=extractor,
            progress=not arguments.quiet,
            on_chunk=on_chunk,
            stop=interrupts,
        )
    write = Writer()
    write(lambda path: save_image(path, result.image), output, "-o")
    report = {"config": _describe(result.config, arguments), "stopped_early": result.stopped_early}
    history = {**report, "history": result.history}
    write(lambda path: write_json(path, history), outputs["--history"], "--history")
    if "--plot" in outputs and result.history:
        from mmdstyle.analysis.figures import plot_history

        title = f"style loss {config.loss}"
        write(
            lambda path: plot_history(result.history, path=path, title=title, show_tv=config.tv_weight > 0),
            outputs["--plot"],
            "--plot",
        )
    if interrupts():
        print(
            f"mmdstyle: interrupted after {len(result.history)} of {config.steps * len(config.stages())} "
            f"steps; wrote {write}. Continue from the image with --init {output}",
            file=sys.stderr,
        )
        return interrupts.exit_status
    if result.stopped_early:
        print(f"mmdstyle: {result.stopped_early}; wrote {write}", file=sys.stderr)
        return 1
    if arguments.style_weight is None and result.config.style_weight != default_style_weight:
        say(
            f"style weight {result.config.style_weight:.3g}: balanced so that the style term of "
            f"{config.loss!r} starts where the Gram loss's would (set --style-weight to choose it)"
        )
    if result.stalled:
        print(f"mmdstyle: {result.stalled}", file=sys.stderr)
    if result.flat:
        say(f"mmdstyle: {in_flags(result.flat)}")
    say(f"wrote {write} ({_summary(result.history, time.perf_counter() - started)})")
    if unwritten:
        print(f"mmdstyle: snapshots from {str(unwritten[0])!r} on were not written.", file=sys.stderr)
    return 1 if write.rescued or unwritten else 0


def seconds_since_the_process_started() -> float:
    """Seconds since this process started, Python's start-up and imports included.

    Read where the system tells (Linux: /proc); 0 elsewhere.
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 0.0)  # field 22: start time
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def _summary(history: list[dict], seconds: float) -> str:
    """The loss reached and where the time went: the steps, their compilation, the rest (images, setup)."""
    stepping = history[-1]["seconds"]
    compiling = sum(record.get("compile_seconds", 0.0) for record in history)
    rest = max(seconds - stepping - compiling, 0.0)
    return (
        f"loss {history[-1]['loss']:.4g} after {len(history)} steps; {seconds:.1f} s in all: "
        f"{stepping:.1f} s stepping, {compiling:.1f} s compiling, {rest:.1f} s for the rest"
    )


def _prepare(arguments: argparse.Namespace, *, synthesis: bool):
    output = Path(arguments.output)
    if arguments.save_every < 0:
        raise ValueError(f"--save-every must be >= 0, got {arguments.save_every}.")
    plot = None if arguments.no_plot else arguments.plot or output.with_name(f"{output.stem}-loss.png")
    outputs = check_outputs(
        ("-o", output, "image"),
        ("--history", arguments.history or output.with_suffix(".json"), "json"),
        ("--plot", plot, "figure"),
    )
    if arguments.save_every:
        snapshot = re.compile(rf"{re.escape(output.stem)}-\d{{5}}{re.escape(output.suffix)}")
        for option, path in outputs.items():
            if path.parent.resolve() == output.parent.resolve() and snapshot.fullmatch(path.name):
                raise ValueError(
                    f"{option} {str(path)!r} has the name of a snapshot of --save-every, which would "
                    "overwrite it; choose another name."
                )
    if synthesis:
        content_name, style_names = None, arguments.styles or ["sample:gravel"]
    else:
        names = arguments.images or ["sample:chelsea", "sample:hubble"]
        if len(names) < 2:
            raise ValueError(
                "transfer needs a CONTENT image and at least one STYLE image (or none, for the samples)."
            )
        content_name, style_names = names[0], names[1:]
    content = load_images([content_name])[0] if content_name else None
    styles = load_images(style_names)
    config = config_from(arguments, synthesis=synthesis, chunk=_chunk(arguments.save_every, arguments.steps))
    extractor = extractor_from(arguments)
    check_config(config, extractor, len(styles), synthesis=synthesis)
    return content, styles, config, extractor, outputs


def _chunk(save_every: int, steps: int) -> int:
    """Steps between read-backs: at most 10, dividing the snapshot interval and the stage length."""
    if not save_every:
        return 10
    return max(d for d in range(1, 11) if save_every % d == 0 and steps % d == 0)


def _describe(config: TransferConfig, arguments: argparse.Namespace) -> dict:
    described = {key: value for key, value in vars(config).items() if key != "init"}
    described["init"] = config.init if isinstance(config.init, str) else arguments.init  # a path, not pixels
    described["layer_losses"] = dict(config.layer_losses)
    described["extractor"] = arguments.extractor or ("vgg19" if arguments.weights else "default")
    return described


def _run_command(
    name: str, *, synthesis: bool, summary: str, description: str, examples: str, **defaults
) -> Command:
    return Command(
        name=name,
        summary=summary,
        description=description,
        add_arguments=lambda parser: add_run_arguments(parser, synthesis=synthesis, **defaults),
        run=user_errors(lambda arguments: run(arguments, synthesis=synthesis)),
        epilog="\n\n".join(filter(None, (examples, LOSS_HELP))),
    )


COMMANDS = (
    _run_command(
        "transfer",
        synthesis=False,
        summary="style transfer: CONTENT STYLE [STYLE ...] -o OUT.png with any style loss",
        description="Style transfer (Gatys et al.) with the Gram loss or any MMD, BN or mixed style loss.",
        examples=EPILOG_TRANSFER,
    ),
    _run_command(
        "synthesize",
        synthesis=True,
        summary="texture synthesis: STYLE [STYLE ...] -o OUT.png with any style loss",
        description="Texture synthesis from noise: style terms only.",
        examples=EPILOG_SYNTHESIZE,
    ),
    _run_command(
        "demo",
        synthesis=False,
        summary="style transfer of the bundled sample images, small and offline",
        description=(
            "mmdstyle transfer sample:chelsea sample:hubble, 128 pixels, 30 steps; every option of "
            "transfer applies."
        ),
        examples="",
        output="mmdstyle-demo.png",
        size=128,
        steps=30,
        min_progress=1e-3,
    ),
)

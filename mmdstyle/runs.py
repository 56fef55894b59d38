"""``mmdstyle transfer``, ``synthesize`` and ``demo``: arguments in, image, history and figure out.

Every check that can fail (files, layers, specs, sizes) runs before the optimisation, and every
output is written atomically: a failed or interrupted run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

from mmdstyle._io import write_json
from mmdstyle.features.checkpoint import CheckpointError
from mmdstyle.image import image_format, load_image, luminance_transfer, resize, save_image
from mmdstyle.objective import TransferConfig
from mmdstyle.plots import check_figure_path
from mmdstyle.samples import resolve_image
from mmdstyle.specs import SpecError

LOSS_HELP = """style loss spec (default: gram):
  gram                           Gatys' Gram loss
  mmd  or  mmd:poly2             the same as a biased MMD with k = (a^T b)^2
  mmd:linear                     means only
  mmd:poly(degree=3, c=1)        (scale a^T b + c)^degree
  mmd:gaussian(sigma=median)     sigma: a number, median or mean (from each layer's style features)
  mmd:laplacian(sigma=2)
  mmd:(linear + 0.5*gaussian(sigma=median))   kernel sums, products and scalings in parentheses
  bn                             mean and standard deviation per channel (Li et al.)
  0.5*mmd:linear + 0.5*bn        weighted sums"""


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def parse_names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas, got {text!r}"
        ) from None
    if any(size < 16 for size in sizes):
        raise argparse.ArgumentTypeError(f"every size must be at least 16 pixels, got {text!r}")
    return sizes


def _layer_loss(text: str) -> tuple[str, str]:
    layer, separator, spec = text.partition("=")
    if not separator or not layer or not spec:
        raise argparse.ArgumentTypeError(f"expected LAYER=SPEC, e.g. relu1_1=bn, got {text!r}")
    return layer.strip(), spec.strip()


def add_extractor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--extractor``, ``--weights``, ``--pooling``, ``--padding``: read by :func:`extractor_from`."""
    network = parser.add_argument_group("features")
    network.add_argument(
        "--extractor", metavar="NAME", help="default, vgg19, random-vgg19, multiscale-random, ..."
    )
    network.add_argument(
        "--weights", metavar="FILE", help="VGG-19 weights (.pth, .safetensors, .npz): implies vgg19"
    )
    network.add_argument(
        "--pooling", choices=("max", "average"), help="VGG-19 pooling (default: the extractor's)"
    )
    network.add_argument("--padding", choices=("zero", "reflect"), help="VGG-19 padding (default: zero)")


def extractor_from(arguments: argparse.Namespace):
    """The extractor the options of :func:`add_extractor_arguments` ask for."""
    from mmdstyle.features import resolve_extractor

    return resolve_extractor(
        arguments.extractor, weights=arguments.weights, pooling=arguments.pooling, padding=arguments.padding
    )


def add_arguments(
    parser: argparse.ArgumentParser,
    *,
    synthesis: bool,
    output: str | None = None,
    size: int = 256,
    steps: int = 300,
) -> None:
    """The options of ``transfer`` (and, without the content ones, of ``synthesize``).

    ``output``, ``size`` and ``steps`` set defaults (``demo`` has a default output, smaller sizes).
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
    loss = parser.add_argument_group("loss")
    loss.add_argument(
        "--loss", default="gram", metavar="SPEC", help="style loss for every style layer (see below)"
    )
    loss.add_argument(
        "--layer-loss",
        type=_layer_loss,
        action="append",
        default=[],
        metavar="LAYER=SPEC",
        help="another loss for one layer, e.g. relu1_1=bn (repeatable)",
    )
    loss.add_argument(
        "--estimator",
        choices=("biased", "unbiased", "linear"),
        default="biased",
        help="MMD estimator of every mmd term (default biased)",
    )
    loss.add_argument("--style-layers", type=parse_names, metavar="L1,L2", help="default: the extractor's")
    loss.add_argument(
        "--style-layer-weights", type=parse_floats, metavar="W1,W2", help="default: equal, summing to 1"
    )
    loss.add_argument("--style-weight", type=float, help="beta (default: the extractor's, else 1e3)")
    loss.add_argument("--tv-weight", type=float, default=0.0, help="total variation weight (default 0)")
    if not synthesis:
        loss.add_argument(
            "--content-layers", type=parse_names, metavar="L1,L2", help="default: the extractor's"
        )
        loss.add_argument(
            "--content-weight", type=float, help="alpha (default: the extractor's, else Gatys' 1)"
        )
    add_extractor_arguments(parser)
    run = parser.add_argument_group("optimisation")
    run.add_argument(
        "--size", type=int, default=size, help="longer side of the result in pixels (default %(default)s)"
    )
    run.add_argument(
        "--scales", type=parse_sizes, metavar="S1,S2", help="a pyramid, e.g. 128,256 (overrides --size)"
    )
    run.add_argument(
        "--steps", type=int, default=steps, help="optimiser steps per scale (default %(default)s)"
    )
    run.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs", help="default lbfgs")
    run.add_argument(
        "--learning-rate", type=float, default=0.02, help="Adam's step in pixel units (default 0.02)"
    )
    run.add_argument(
        "--style-scale", type=float, default=1.0, help="style image size / result size (default 1)"
    )
    run.add_argument(
        "--style-blend-weights", type=parse_floats, metavar="W1,W2", help="one per style image; default equal"
    )
    run.add_argument(
        "--init",
        default="content" if not synthesis else "noise",
        metavar="content|noise|PATH",
        help="starting image (default: %(default)s)",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    if not synthesis:
        run.add_argument(
            "--original-colors", action="store_true", help="transfer luminance only, keep the colours"
        )
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument(
        "--save-every", type=int, default=0, metavar="N", help="also save the image every N steps"
    )
    outputs.add_argument("--history", metavar="FILE", help="per-step losses as JSON (default: OUT.json)")
    outputs.add_argument("--plot", metavar="FILE", help="loss curves (default: OUT-loss.png)")
    outputs.add_argument("--no-plot", action="store_true", help="no loss-curve figure")
    outputs.add_argument("--quiet", action="store_true", help="no progress bar, no messages except errors")


def run(arguments: argparse.Namespace, *, synthesis: bool) -> int:
    """Check everything, run, write the outputs; 0 on success, 1 on a stopped run, 2 on bad input."""
    try:
        plan = _prepare(arguments, synthesis=synthesis)
    except SpecError as error:
        print(f"mmdstyle: {error}\n{LOSS_HELP}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        print(f"mmdstyle: {error}", file=sys.stderr)
        return 2
    from mmdstyle.transfer import transfer

    content, styles, config, extractor, output = plan
    say = (lambda *_: None) if arguments.quiet else (lambda text: print(text, file=sys.stderr))

    def on_chunk(step: int, image, records) -> None:
        within_stage = step - records[-1]["stage"] * config.steps if "stage" in records[-1] else step
        if arguments.save_every and within_stage % arguments.save_every == 0:
            if config.original_colors:
                image = luminance_transfer(np.clip(image, 0, 1), resize(content, image.shape[:2]))
            save_image(output.with_name(f"{output.stem}-{step:05d}{output.suffix}"), image)

    try:
        result = transfer(
            content, styles, config, extractor=extractor, progress=not arguments.quiet, on_chunk=on_chunk
        )
    except (MemoryError, ValueError) as error:  # e.g. a median bandwidth of 0 on a flat layer
        print(f"mmdstyle: {error}", file=sys.stderr)
        return 2
    save_image(output, result.image)
    history_path = Path(arguments.history) if arguments.history else output.with_suffix(".json")
    report = {"config": _describe(result.config, arguments), "stopped_early": result.stopped_early}
    write_json(history_path, {**report, "history": result.history})
    written = [str(output), str(history_path)]
    if not arguments.no_plot and result.history:
        from mmdstyle.plots import plot_history

        plot_path = Path(arguments.plot) if arguments.plot else output.with_name(f"{output.stem}-loss.png")
        plot_history(
            result.history, path=plot_path, title=f"style loss {config.loss}", show_tv=config.tv_weight > 0
        )
        written.append(str(plot_path))
    if result.stopped_early:
        print(f"mmdstyle: {result.stopped_early}", file=sys.stderr)
        return 1
    last = result.history[-1]
    say(
        f"wrote {', '.join(written)} (loss {last['loss']:.4g} after {len(result.history)} steps, "
        f"{last['seconds']:.1f} s)"
    )
    return 0


def _prepare(arguments: argparse.Namespace, *, synthesis: bool):
    output = Path(arguments.output)
    image_format(output)  # an output Pillow cannot write is refused before the run
    for path in (output, arguments.history, arguments.plot):
        if path is not None and not Path(path).parent.exists():
            raise FileNotFoundError(f"the output folder {str(Path(path).parent)!r} does not exist.")
    if arguments.plot:
        check_figure_path(arguments.plot, "--plot")
    if arguments.save_every < 0:
        raise ValueError(f"--save-every must be >= 0, got {arguments.save_every}.")
    if synthesis:
        content_path, style_paths = None, arguments.styles or ["sample:gravel"]
    else:
        images = arguments.images or ["sample:chelsea", "sample:hubble"]
        if len(images) < 2:
            raise ValueError(
                "transfer needs a CONTENT image and at least one STYLE image (or none, for the samples)."
            )
        content_path, style_paths = images[0], images[1:]
    content = load_image(resolve_image(content_path)) if content_path else None
    styles = [load_image(resolve_image(path)) for path in style_paths]
    init = arguments.init
    if init not in ("content", "noise"):
        init = load_image(resolve_image(init))
    config = config_from(arguments, synthesis=synthesis, init=init)
    extractor = extractor_from(arguments)
    from mmdstyle.objective import check_config

    check_config(config, extractor, len(styles), synthesis=synthesis)
    return content, styles, config, extractor, output


def config_from(arguments: argparse.Namespace, *, synthesis: bool, init: str | np.ndarray) -> TransferConfig:
    """The run's settings from the options; options a command does not have keep their defaults."""
    option = functools.partial(getattr, arguments)
    save_every = option("save_every", 0)
    return TransferConfig(
        size=arguments.size,
        scales=arguments.scales,
        steps=arguments.steps,
        loss=option("loss", "gram"),
        layer_losses=dict(option("layer_loss", [])),
        estimator=arguments.estimator,
        style_layers=arguments.style_layers,
        content_layers=None if synthesis else arguments.content_layers,
        style_layer_weights=arguments.style_layer_weights,
        content_weight=0.0 if synthesis else arguments.content_weight,
        style_weight=arguments.style_weight,
        tv_weight=arguments.tv_weight,
        style_scale=arguments.style_scale,
        style_blend_weights=option("style_blend_weights", None),
        optimizer=arguments.optimizer,
        learning_rate=arguments.learning_rate,
        init=init,
        seed=arguments.seed,
        original_colors=False if synthesis else option("original_colors", False),
        chunk=_chunk(save_every, arguments.steps),
    )


def _chunk(save_every: int, steps: int) -> int:
    """Steps between read-backs: at most 10, dividing the snapshot interval and the stage length."""
    if not save_every:
        return 10
    return max(d for d in range(1, 11) if save_every % d == 0 and steps % d == 0)


def _describe(config: TransferConfig, arguments: argparse.Namespace) -> dict:
    described = {key: value for key, value in vars(config).items() if key != "init"}
    described["init"] = arguments.init
    described["layer_losses"] = dict(config.layer_losses)
    described["extractor"] = arguments.extractor or ("vgg19" if arguments.weights else "default")
    return described

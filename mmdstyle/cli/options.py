"""The option groups of the ``mmdstyle`` commands, each defined once, and what they are read into.

    network        --extractor --weights --pooling --padding          (transfer, synthesize, demo,
                                                                       compare, verify, test)
    losses         --loss --layer-loss --estimator --style-layers ...  (transfer, synthesize, demo,
                                                                       compare)
    sizes          --size --scales --style-scale                       (transfer, ..., compare)
    optimiser      --steps --optimizer --learning-rate --init --seed   (transfer, ..., compare)

A command adds the groups it has; :func:`config_from` reads whatever it finds into a
:class:`~mmdstyle.style.TransferConfig`, defaults standing in for the options a command lacks.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from mmdstyle._checks import ESTIMATORS
from mmdstyle.features.registry import FeatureExtractor, resolve_extractor
from mmdstyle.style.engine import PROGRESS_WINDOW
from mmdstyle.style.images import load_image
from mmdstyle.style.objective import OPTIMIZERS, TransferConfig
from mmdstyle.style.samples import resolve_image
from mmdstyle.style.specs import KERNEL_FORMS, LOSS_FORMS, split_specs

LOSS_HELP = f"style loss spec (default: gram):\n{LOSS_FORMS}"
KERNEL_HELP = f"kernel spec:\n{KERNEL_FORMS}"

# ---------------------------------------------------------------- argument types


def parse_floats(text: str) -> tuple[float, ...]:
    """``"0.7,0.3"`` -> ``(0.7, 0.3)``."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def parse_names(text: str) -> tuple[str, ...]:
    """``"relu1_1, relu2_1"`` -> ``("relu1_1", "relu2_1")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"128,256"`` -> ``(128, 256)``, each at least 16 pixels."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas, got {text!r}"
        ) from None
    if any(size < 16 for size in sizes):
        raise argparse.ArgumentTypeError(f"every size must be at least 16 pixels, got {text!r}")
    return sizes


def parse_specs(text: str) -> tuple[str, ...]:
    """Specs separated by commas outside parentheses: ``"gram,mmd:poly(degree=3, c=1)"``."""
    specs = split_specs(text)
    if not specs:
        raise argparse.ArgumentTypeError(f"expected specs separated by commas, got {text!r}")
    return specs


def parse_layer_loss(text: str) -> tuple[str, str]:
    """``"relu1_1=bn"`` -> ``("relu1_1", "bn")``."""
    layer, separator, spec = text.partition("=")
    if not separator or not layer or not spec:
        raise argparse.ArgumentTypeError(f"expected LAYER=SPEC, e.g. relu1_1=bn, got {text!r}")
    return layer.strip(), spec.strip()


def number(kind: type, accept: Callable[[Any], bool], requirement: str) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)``, refused unless ``accept(value)``, explained by ``requirement``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    return parse


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for whole numbers >= ``minimum``."""
    return number(int, lambda value: value >= minimum, f"at least {minimum}")


level = number(float, lambda value: 0 < value < 1, "between 0 and 1")
positive_float = number(float, lambda value: value > 0, "> 0")

# ---------------------------------------------------------------- option groups


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """``--extractor``, ``--weights``, ``--pooling``, ``--padding``: read by :func:`extractor_from`."""
    network = parser.add_argument_group("network")
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


def add_loss_options(parser: argparse.ArgumentParser, *, synthesis: bool, one_loss: bool = True) -> None:
    """The style and content terms: their layers, weights and (with ``one_loss``) the loss spec.

    ``compare`` runs several losses and declares its own ``--losses``, so it passes ``one_loss=False``.
    """
    loss = parser.add_argument_group("losses")
    if one_loss:
        loss.add_argument(
            "--loss", default="gram", metavar="SPEC", help="style loss for every style layer (see below)"
        )
        loss.add_argument(
            "--layer-loss",
            type=parse_layer_loss,
            action="append",
            default=[],
            metavar="LAYER=SPEC",
            help="another loss for one layer, e.g. relu1_1=bn (repeatable)",
        )
    loss.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default="biased",
        help="MMD estimator of every mmd term (default biased)",
    )
    loss.add_argument("--style-layers", type=parse_names, metavar="L1,L2", help="default: the extractor's")
    loss.add_argument(
        "--style-layer-weights", type=parse_floats, metavar="W1,W2", help="default: equal, summing to 1"
    )
    loss.add_argument(
        "--style-weight",
        type=float,
        help="beta (default: the extractor's, else 1e3, for the Gram loss; other losses balanced against it)",
    )
    loss.add_argument(
        "--redraw-every",
        type=int,
        default=0,
        metavar="N",
        help="new draws for @rff/@sliced and sw terms every N steps (default 0: one draw per stage)",
    )
    loss.add_argument("--tv-weight", type=float, default=0.0, help="total variation weight (default 0)")
    if not synthesis:
        loss.add_argument(
            "--content-layers", type=parse_names, metavar="L1,L2", help="default: the extractor's"
        )
        loss.add_argument(
            "--content-weight", type=float, help="alpha (default: the extractor's, else Gatys' 1)"
        )


def add_size_options(parser: argparse.ArgumentParser, *, size: int) -> None:
    """``--size``, ``--scales`` (a pyramid) and ``--style-scale``."""
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument(
        "--size", type=int, default=size, help="longer side of the result in pixels (default %(default)s)"
    )
    sizes.add_argument(
        "--scales", type=parse_sizes, metavar="S1,S2", help="a pyramid, e.g. 128,256 (overrides --size)"
    )
    sizes.add_argument(
        "--style-scale", type=float, default=1.0, help="style image size / result size (default 1)"
    )


def add_optimiser_options(
    parser: argparse.ArgumentParser,
    *,
    synthesis: bool,
    steps: int,
    init: str | None,
    several_styles: bool,
    min_progress: float = 0.0,
) -> None:
    """The optimiser group: ``--steps``, ``--min-progress``, ``--optimizer``, ``--init``, ...

    Also ``--learning-rate`` and ``--seed``. With ``several_styles`` also
    ``--style-blend-weights``, and, unless ``synthesis``, ``--original-colors``. ``init=None``
    starts from the content, or from noise for a synthesis, whichever the run is.
    """
    run = parser.add_argument_group("optimiser")
    run.add_argument(
        "--steps", type=int, default=steps, help="optimiser steps per scale (default %(default)s)"
    )
    run.add_argument(
        "--min-progress",
        type=float,
        default=min_progress,
        metavar="F",
        help=f"end a scale early once the loss falls by less than this fraction of its value over "
        f"{PROGRESS_WINDOW} steps (default %(default)s{': every step runs' if not min_progress else ''})",
    )
    run.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs", help="default lbfgs")
    run.add_argument(
        "--learning-rate", type=float, default=0.02, help="Adam's step in pixel units (default 0.02)"
    )
    run.add_argument(
        "--init",
        default=init,
        metavar="content|noise|PATH",
        help=f"starting image (default: {init or 'content, or noise for a synthesis'})",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    if several_styles:
        run.add_argument(
            "--style-blend-weights",
            type=parse_floats,
            metavar="W1,W2",
            help="one per style image; default equal",
        )
    if several_styles and not synthesis:
        run.add_argument(
            "--original-colors", action="store_true", help="transfer luminance only, keep the colours"
        )


def add_check_option(group: argparse._ArgumentGroup, checked: str) -> None:
    """``--check``: run every check (``checked`` names them), then stop before the work."""
    group.add_argument(
        "--check",
        action="store_true",
        help=f"check the {checked}, then stop without running (exit 0: ready)",
    )


def speaker(quiet: bool) -> Callable[[str], None]:
    """A function that prints a message on stderr, or (``--quiet``) says nothing."""
    return (lambda _: None) if quiet else (lambda text: print(text, file=sys.stderr))


def checks_passed(what: str, *, quiet: bool = False) -> int:
    """What ``--check`` ends with: every check passed (said unless ``quiet``); exit status 0."""
    speaker(quiet)(f"mmdstyle: ready: every check passed ({what})")
    return 0


# ---------------------------------------------------------------- reading the options


def extractor_from(arguments: argparse.Namespace) -> FeatureExtractor:
    """The extractor the network options ask for."""
    return resolve_extractor(
        arguments.extractor,
        weights=arguments.weights,
        pooling=arguments.pooling,
        padding=arguments.padding,
        quiet=getattr(arguments, "quiet", False),
    )


#: Images with a side shorter than this are refused: too few pixels to carry a style or a content.
MIN_IMAGE_SIDE = 16


def load_images(names: list[str]) -> list[np.ndarray]:
    """Image arguments (paths or ``sample:NAME``) as arrays, each checked and read in turn."""
    images = []
    for name in names:
        image = load_image(resolve_image(name))
        if min(image.shape[:2]) < MIN_IMAGE_SIDE:
            height, width = image.shape[:2]
            raise ValueError(
                f"{name} is {width} x {height} pixels: too few to carry a style or a content (at least "
                f"{MIN_IMAGE_SIDE} on each side); upscale it first if that is what you mean."
            )
        images.append(image)
    return images


def start_from(arguments: argparse.Namespace, *, synthesis: bool) -> str | np.ndarray:
    """``--init``: ``"content"``, ``"noise"`` (the default of a synthesis) or an image read from a file."""
    init = arguments.init or ("noise" if synthesis else "content")
    return init if init in ("content", "noise") else load_images([init])[0]


def config_from(arguments: argparse.Namespace, *, synthesis: bool, chunk: int = 10) -> TransferConfig:
    """The run's settings from the options; options a command does not have keep their defaults."""
    option = functools.partial(getattr, arguments)
    return TransferConfig(
        size=arguments.size,
        scales=arguments.scales,
        steps=arguments.steps,
        min_progress=arguments.min_progress,
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
        init=start_from(arguments, synthesis=synthesis),
        seed=arguments.seed,
        redraw_every=option("redraw_every", 0),
        original_colors=False if synthesis else option("original_colors", False),
        chunk=chunk,
    )

"""``mmdstyle weights download | info`` and ``mmdstyle extractors``: the networks and their weights."""

from __future__ import annotations

import argparse
import sys

from mmdstyle.cli.command import Command
from mmdstyle.features.pretrained import WeightsNotFoundError, describe_cache, download_weights
from mmdstyle.features.registry import available_extractors


def run_download(arguments: argparse.Namespace) -> int:
    """Fetch, check and convert the weights: 0 when they are ready, 1 when every source failed."""
    try:
        path = download_weights(
            arguments.source,
            progress=not arguments.quiet,
            keep_original=arguments.keep,
            force=arguments.force,
        )
    except (WeightsNotFoundError, OSError) as error:  # the network, not the user's input
        print(f"mmdstyle: {error}", file=sys.stderr)
        return 1
    print(f"VGG-19 weights ready: {path}")
    return 0


def run_info(arguments: argparse.Namespace) -> int:
    """Where the weights are kept and what is there."""
    for key, value in describe_cache().items():
        print(f"{key}: {value}")
    return 0


def run_extractors(arguments: argparse.Namespace) -> int:
    """The registered extractors, one a line."""
    for name, description in available_extractors().items():
        print(f"{name:<20} {description}")
    return 0


def add_weights_actions(parser: argparse.ArgumentParser) -> None:
    """The actions of ``weights``: ``download`` and ``info``."""
    actions = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    download = actions.add_parser(
        "download",
        help="fetch torchvision's VGG-19 (575 MB), check it, keep its convolutions (80 MB)",
        description=(
            "Fetch the ImageNet VGG-19 weights, check their SHA-256, and convert the convolutions to "
            "safetensors in the cache. A file already in the cache's weights/ folder (copied by hand) is "
            "checked and converted without any download."
        ),
    )
    download.add_argument(
        "--source",
        choices=("torchvision", "timm"),
        help="where from: torchvision's .pth or timm's safetensors (default: torchvision, then timm)",
    )
    download.add_argument("--keep", action="store_true", help="keep the downloaded file after conversion")
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    download.add_argument("--force", action="store_true", help="convert again even if the cache looks intact")
    download.set_defaults(run=run_download)
    info = actions.add_parser("info", help="where the weights are kept and what is there")
    info.set_defaults(run=run_info)


COMMANDS = (
    Command(
        name="weights",
        summary="download and inspect the pretrained VGG-19 weights",
        description=(
            "Pretrained VGG-19 weights live in the cache directory ($MMDSTYLE_HOME, else the user cache "
            "directory, e.g. ~/.cache/mmdstyle), checked by SHA-256 and converted once to safetensors."
        ),
        add_arguments=add_weights_actions,
        run=None,
    ),
    Command(
        name="extractors",
        summary="list the feature extractors by name",
        description="The feature extractors registered by name, for --extractor NAME.",
        add_arguments=lambda parser: None,
        run=run_extractors,
    ),
)

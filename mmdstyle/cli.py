"""The ``mmdstyle`` command: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence

from mmdstyle import __version__

EPILOG_TRANSFER = """examples:
  mmdstyle transfer photo.jpg painting.jpg -o out.png
  mmdstyle transfer photo.jpg painting.jpg -o out.png --loss "mmd:gaussian(sigma=median)" --style-weight 1e6
  mmdstyle transfer photo.jpg a.jpg b.jpg --style-blend-weights 0.7,0.3 --scales 128,256 -o out.png
  mmdstyle transfer -o out.png          (the bundled samples: sample:chelsea sample:hubble)"""

EPILOG_SYNTHESIZE = """examples:
  mmdstyle synthesize sample:gravel -o gravel.png --size 128
  mmdstyle synthesize texture.jpg -o out.png --loss "0.5*mmd:linear + 0.5*bn" --layer-loss relu1_1=gram"""


def _weights_download(arguments: argparse.Namespace) -> int:
    from mmdstyle.features import WeightsNotFoundError, download_weights

    try:
        path = download_weights(
            arguments.source,
            progress=not arguments.quiet,
            keep_original=arguments.keep,
            force=arguments.force,
        )
    except (WeightsNotFoundError, OSError) as error:
        print(f"mmdstyle: {error}", file=sys.stderr)
        return 1
    print(f"VGG-19 weights ready: {path}")
    return 0


def _weights_info(arguments: argparse.Namespace) -> int:
    from mmdstyle.features.pretrained import describe_cache

    for key, value in describe_cache().items():
        print(f"{key}: {value}")
    return 0


def _extractors(arguments: argparse.Namespace) -> int:
    from mmdstyle.features import available_extractors

    for name, description in available_extractors().items():
        print(f"{name:<20} {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmdstyle",
        description="Neural style transfer as Maximum Mean Discrepancy: Gram and MMD style losses in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"mmdstyle {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    from mmdstyle import reports, runs

    reports.add_commands(commands, ("verify",))
    weights = commands.add_parser(
        "weights",
        help="download and inspect the pretrained VGG-19 weights",
        description=(
            "Pretrained VGG-19 weights live in the cache directory ($MMDSTYLE_HOME, else the user cache "
            "directory, e.g. ~/.cache/mmdstyle), checked by SHA-256 and converted once to safetensors."
        ),
    )
    weights_commands = weights.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    download = weights_commands.add_parser(
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
    download.set_defaults(run=_weights_download)
    info = weights_commands.add_parser("info", help="where the weights are kept and what is there")
    info.set_defaults(run=_weights_info)

    run_commands = (
        (
            "transfer",
            False,
            {},
            "style transfer: CONTENT STYLE [STYLE ...] -o OUT.png with any style loss",
            "Style transfer (Gatys et al.) with the Gram loss or any MMD, BN or mixed style loss.",
            EPILOG_TRANSFER,
        ),
        (
            "synthesize",
            True,
            {},
            "texture synthesis: STYLE [STYLE ...] -o OUT.png with any style loss",
            "Texture synthesis from noise: style terms only.",
            EPILOG_SYNTHESIZE,
        ),
        (
            "demo",
            False,
            {"output": "mmdstyle-demo.png", "size": 128, "steps": 30},
            "style transfer of the bundled sample images, small and offline",
            "mmdstyle transfer sample:chelsea sample:hubble, 128 pixels, 30 steps; every option of transfer "
            "applies.",
            "",
        ),
    )
    for name, synthesis, defaults, summary, description, examples in run_commands:
        command = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog="\n\n".join(filter(None, (examples, runs.LOSS_HELP))),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        runs.add_arguments(command, synthesis=synthesis, **defaults)
        command.set_defaults(run=functools.partial(runs.run, synthesis=synthesis))

    reports.add_commands(commands, ("compare", "test"))
    extractors = commands.add_parser("extractors", help="list the feature extractors by name")
    extractors.set_defaults(run=_extractors)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.print_help()
        return 0
    return arguments.run(arguments)


if __name__ == "__main__":
    sys.exit(main())

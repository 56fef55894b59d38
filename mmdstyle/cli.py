"""The ``mmdstyle`` command: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence

from mmdstyle import __version__

EPILOG_VERIFY = """examples:
  mmdstyle verify                  check the identity on VGG-19-shaped ReLU features (64 x 64 image)
  mmdstyle verify --size 128 --json report.json

exit status: 0 when every float64 identity holds, 1 when one fails (usable as a CI guard)."""


def _verify(arguments: argparse.Namespace) -> int:
    from mmdstyle.verification import synthetic_vgg_layers, verify_gram_mmd_identity

    layers = synthetic_vgg_layers(arguments.size, arguments.seed)
    source = f"synthetic ReLU features with VGG-19 shapes, {arguments.size} x {arguments.size} image"
    report = verify_gram_mmd_identity(layers, tolerance=arguments.tolerance, source=source)
    print(report.format_table())
    if arguments.json:
        _write_json(arguments.json, report.to_dict())
    return 0 if report.passed else 1


def _write_json(path: str, data: dict) -> None:
    """Write JSON atomically: a half-written file never stands under the final name."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".mmdstyle-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _positive_multiple_of_16(text: str) -> int:
    value = int(text)
    if value < 16 or value % 16:
        raise argparse.ArgumentTypeError(f"must be a multiple of 16 (>= 16), got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmdstyle",
        description="Neural style transfer as Maximum Mean Discrepancy: Gram and MMD style losses in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"mmdstyle {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    verify = commands.add_parser(
        "verify",
        help="check numerically, layer by layer, that the Gram loss is biased poly2 MMD / (4 d^2)",
        description=(
            "Check, layer by layer, in float64 (the proof) and float32, that Gatys' Gram loss equals "
            "the biased MMD^2 with k(a, b) = (a^T b)^2 divided by 4 d^2: values, gradients, the "
            "feature route against the pairwise route, and the unbiased estimator's gap against "
            "its closed form."
        ),
        epilog=EPILOG_VERIFY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("--size", type=_positive_multiple_of_16, default=64, help="image side (default 64)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the synthetic features (default 0)")
    verify.add_argument(
        "--tolerance", type=_positive_float, default=1e-10, help="float64 relative tolerance (default 1e-10)"
    )
    verify.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    verify.set_defaults(run=_verify)
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

"""The ``mmdstyle`` command: a thin layer that parses arguments and calls the library.

Every command is a :class:`~mmdstyle.cli.command.Command` record in :data:`COMMANDS`; the option
groups that several commands share are defined once, in :mod:`mmdstyle.cli.options`; bad input
becomes a one-line message and exit status 2 through :func:`~mmdstyle.cli.command.user_errors`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mmdstyle import __version__
from mmdstyle.cli import analysis, transfer, weights
from mmdstyle.cli.command import Command

#: The commands, in the order ``mmdstyle --help`` lists them.
COMMANDS: tuple[Command, ...] = (*transfer.COMMANDS, *analysis.COMMANDS, *weights.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    """The ``mmdstyle`` parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="mmdstyle",
        description="Neural style transfer as Maximum Mean Discrepancy: Gram and MMD style losses in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"mmdstyle {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_to(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mmdstyle`` with ``argv`` (default: the process's arguments); returns the exit status."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.print_help()
        return 0
    return arguments.run(arguments)


if __name__ == "__main__":
    sys.exit(main())

"""The ``mmdstyle`` command: a thin layer that parses arguments and calls the library.

Every command is a :class:`~mmdstyle.cli.command.Command` record in :data:`COMMANDS`; the option
groups that several commands share are defined once, in :mod:`mmdstyle.cli.options`; bad input
becomes a one-line message and exit status 2 through :func:`~mmdstyle.cli.command.user_errors`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import jax

from mmdstyle import __version__
from mmdstyle.cli import analysis, transfer, weights
from mmdstyle.cli.command import Command
from mmdstyle.features.pretrained import cache_directory

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


#: Set to 0 to compile every program afresh in every run.
CACHE_VARIABLE = "MMDSTYLE_COMPILATION_CACHE"
#: Every program is kept: a command's many small ones (feature extraction, eager operations) add
#: up to as much as its step (measured: 24 programs, 2.1 s to compile, 0.16 s from the cache).
CACHE_MIN_COMPILE_SECONDS = 0.0


def compilation_cache() -> Path | None:
    """Where the command keeps compiled programs between runs, or None for nowhere.

    ``<cache directory>/xla`` (``$MMDSTYLE_HOME``, else the user cache directory), unless
    ``$MMDSTYLE_COMPILATION_CACHE`` is 0 or JAX's own ``$JAX_COMPILATION_CACHE_DIR`` names one
    (JAX then uses that, as everywhere else).
    """
    if os.environ.get(CACHE_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    return cache_directory() / "xla"


def use_compilation_cache(directory: Path | None) -> None:
    """Let JAX keep compiled programs in ``directory``: the next run of a command starts sooner.

    A folder that cannot be made leaves the run uncached; an unreadable or stale entry is
    compiled afresh (JAX warns and overwrites it): the cache never stops a run.
    """
    if directory is None:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECONDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mmdstyle`` with ``argv`` (default: the process's arguments); returns the exit status."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.print_help()
        return 0
    use_compilation_cache(compilation_cache())
    try:
        return arguments.run(arguments)
    except KeyboardInterrupt:  # a second Ctrl-C during a run, or one outside it: no traceback
        print("mmdstyle: aborted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""What every ``mmdstyle`` command shares: its record in the command table, and how it fails."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass

Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """One ``mmdstyle`` command: its name, its help, its options and what it runs.

    Attributes:
        name: the word on the command line.
        summary: one line for ``mmdstyle --help``.
        description: the top of ``mmdstyle NAME --help``.
        add_arguments: adds the command's arguments and option groups to its parser.
        run: the command itself, ``run(arguments) -> exit status``; ``None`` for a command
            whose actions (``weights download``, ``weights info``) set their own.
        epilog: examples and reference text at the end of its help.
    """

    name: str
    summary: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Run | None
    epilog: str = ""

    def add_to(self, commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
        """Register this command's parser on the ``mmdstyle`` parser's subcommands."""
        parser = commands.add_parser(
            self.name,
            help=self.summary,
            description=self.description,
            epilog=self.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.add_arguments(parser)
        if self.run is not None:
            parser.set_defaults(run=self.run)
        return parser


def user_errors(run: Run) -> Run:
    """Turn bad input into a one-line message on stderr and exit status 2.

    Bad input is what the library refuses with a message that says what to do: a ValueError
    (bad specs, layers, sizes, files that are not images or weights), a FileNotFoundError (a
    missing image or output folder) or a MemoryError (a run too large for this machine, refused
    before it starts).
    """

    @functools.wraps(run)
    def guarded(arguments: argparse.Namespace) -> int:
        try:
            return run(arguments)
        except (ValueError, FileNotFoundError, MemoryError) as error:
            print(f"mmdstyle: {error}", file=sys.stderr)
            return 2

    return guarded

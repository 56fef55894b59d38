"""What every ``mmdstyle`` command shares: its record in the command table, and how it fails."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

from mmdstyle.style.objective import TransferConfig

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


#: TransferConfig's fields that no option sets: the engine's read-back interval, the dtype.
_WITHOUT_OPTION = ("chunk", "dtype")
#: The library's names of settings (TransferConfig's fields, the analysis functions' arguments)
#: that the command line spells as options; see :func:`in_flags`.
FLAGS = {
    **{
        field.name: "--" + field.name.replace("_", "-")
        for field in dataclasses.fields(TransferConfig)
        if field.name not in _WITHOUT_OPTION
    },
    "layer_losses": "--layer-loss",  # one --layer-loss LAYER=SPEC per layer
    "max_samples": "--max-samples",
    "num_permutations": "--permutations",
}


def in_flags(message: str) -> str:
    """A library message with its names of settings spelt as the options the user typed.

    ``style_weight must be ...`` -> ``--style-weight must be ...``. Names with an underscore are
    replaced wherever they stand; one-word names (``steps``, ``size``) only where they open the
    message, since the same words also appear in prose.
    """
    for name, flag in FLAGS.items():
        if "_" in name:
            message = re.sub(rf"(?<![\w-]){name}\b", flag, message)
        elif message.startswith(f"{name} "):
            message = flag + message[len(name) :]
    return message


def user_errors(run: Run) -> Run:
    """Turn bad input into a one-line message on stderr and exit status 2.

    Bad input is what the library refuses with a message that says what to do: a ValueError
    (bad specs, layers, sizes, files that are not images or weights), a FileNotFoundError (a
    missing image or output folder) or a MemoryError (a run too large for this machine, refused
    before it starts). Settings are named as options (:func:`in_flags`).
    """

    @functools.wraps(run)
    def guarded(arguments: argparse.Namespace) -> int:
        try:
            return run(arguments)
        except (ValueError, FileNotFoundError, MemoryError) as error:
            print(f"mmdstyle: {in_flags(str(error))}", file=sys.stderr)
            return 2

    return guarded

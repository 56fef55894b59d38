"""What the commands that write files share: outputs checked before the work, nothing finished lost.

- :func:`check_outputs` refuses, before anything is computed, an output that is a folder, whose
  folder is missing or takes no files, whose format is unknown, or that another output also names.
- :class:`Writer` writes a finished run's files; one that still cannot be written (a full disk, a
  folder removed meanwhile) is saved beside it as ``NAME.rescued.EXT``, else in the temporary
  folder, and the message says where.
- :class:`Interrupts` turns Ctrl-C (SIGINT) and SIGTERM during a run into a request to stop after
  the current step; the command then writes what it has. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from mmdstyle.analysis.figures import check_figure_format
from mmdstyle.features.files import check_output_folder
from mmdstyle.style.images import image_format

#: What each kind of output is checked for beyond its folder.
KINDS = ("image", "json", "figure")


def check_outputs(*outputs: tuple[str, str | Path | None, str]) -> dict[str, Path]:
    """Check each ``(option, path, kind)`` whose path is given; returns ``{option: path}``.

    ``kind`` is ``"image"`` (an extension an image is saved as), ``"figure"`` (one a figure is
    saved as) or ``"json"``. Messages name the option, as the user typed it. An option that
    writes several files (``compare --save-images``) comes once per file; the dict keeps its last.

    Raises:
        ValueError: a path that is a folder, in a folder that takes no files, of an unknown format,
            or named by two options.
        FileNotFoundError: a missing folder.
    """
    checked: list[tuple[str, Path]] = []
    for option, path, kind in outputs:
        if path is None:
            continue
        if kind not in KINDS:
            raise ValueError(f"unknown kind of output {kind!r}; one of {', '.join(KINDS)}.")
        path = check_output_folder(path, option)
        if kind == "image":
            image_format(path)
        elif kind == "figure":
            check_figure_format(path, option)
        checked.append((option, path))
    first: dict[Path, str] = {}
    for option, path in checked:
        if path.resolve() in first:
            raise ValueError(
                f"{first[path.resolve()]} and {option} both name {str(path)!r}: one would overwrite the "
                "other; give each output a file of its own."
            )
        first[path.resolve()] = option
    return dict(checked)


class Writer:
    """Writes a finished run's outputs; never loses one to a write that fails at the end.

    ``writer(write, path, option)`` calls ``write(path)``; on an OSError it saves the file as
    ``NAME.rescued.EXT`` beside ``path``, else in the temporary folder, says so on stderr and
    returns where it went. :attr:`written` lists every file written, :attr:`rescued` those saved
    elsewhere than asked.
    """

    def __init__(self) -> None:
        self.written: list[Path] = []
        self.rescued: list[Path] = []

    def __call__(self, write: Callable[[Path], Any], path: str | Path, option: str) -> Path:
        """``write(path)``, or the rescue above; returns where the file went."""
        path = Path(path)
        try:
            write(path)
        except OSError as error:
            path = self._rescue(write, path, option, error)
        self.written.append(path)
        return path

    def _rescue(self, write: Callable[[Path], Any], path: Path, option: str, error: OSError) -> Path:
        name = f"{path.stem}.rescued{path.suffix}"
        reason = error.strerror or str(error)
        for place in (path.with_name(name), Path(tempfile.gettempdir()) / name):
            try:
                write(place)
            except OSError:
                continue
            print(
                f"mmdstyle: could not write {option} {str(path)!r} ({reason}); saved it as {str(place)!r}.",
                file=sys.stderr,
            )
            self.rescued.append(place)
            return place
        raise ValueError(
            f"could not write {option} {str(path)!r} ({reason}), nor beside it, nor in the temporary folder."
        ) from error

    def __str__(self) -> str:
        return ", ".join(str(path) for path in self.written)


class Interrupts:
    """A context in which Ctrl-C (SIGINT) and SIGTERM ask the run to stop after its current step.

    Call it, as :func:`mmdstyle.style.transfer`'s ``stop``, to ask whether one came. The first
    signal is noted (``say`` tells the user); a second SIGINT raises KeyboardInterrupt at once
    (the command exits with 130, writing nothing). Outside the main thread, where Python cannot
    take signals, it changes nothing. On leaving, the previous handlers are back.
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        """Whether a signal asked the run to stop."""
        return self.signal is not None

    @property
    def exit_status(self) -> int:
        """128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports it."""
        if self.signal is None:
            raise ValueError("no signal came: there is no exit status of an interrupted run.")
        return 128 + self.signal

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exception: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            if number == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.signal = number
        self.say(
            f"mmdstyle: {signal.Signals(number).name}: stopping after this step to save the result "
            "(Ctrl-C again to abort at once)"
        )

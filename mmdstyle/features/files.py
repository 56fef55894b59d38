"""Output files: checked before the work, written whole or not at all (a temporary file, then a rename)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def check_output_folder(path: str | os.PathLike, what: str = "the output") -> Path:
    """``path`` as a Path that a file can be written to: outputs are checked before any work.

    The path must not be a folder, and its folder must exist and take a new file: a temporary
    file is made there and removed, as :func:`atomic_path` will do (that also catches a
    read-only file system, or a folder such as /proc that takes no files). ``what`` names the
    path in the messages (an option such as ``"--plot"``).

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: the path is a folder, or nothing can be written in its folder.
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder: name the file to write.")
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"{what} {str(path)!r}: the folder {str(folder)!r} {problem}.")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".mmdstyle-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(
            f"{what} {str(path)!r}: cannot write in the folder {str(folder)!r} ({reason}); choose a folder "
            "you can write to."
        ) from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    If the body raises (or is interrupted), the temporary file is removed and ``path`` keeps
    whatever it held before, so no half-written file ever stands under the final name.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".mmdstyle-", suffix=suffix or ".tmp")
    os.close(handle)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; the file should look like any other
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())  # the bytes reach the disk before the name does
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically; NaN and infinities become null (JSON has none)."""
    with atomic_path(path, suffix=".json") as temporary, open(temporary, "w") as file:
        json.dump(_finite(data), file, indent=2, allow_nan=False)
        file.write("\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value

"""Download a file whole, SHA-256-checked, resumable, never leaving a partial file under its name.

The bytes go to ``<name>.part`` beside the destination. An interrupted transfer is resumed from
where it stopped with an HTTP range request (or started over if the server ignores ranges); the
complete file is hashed, and only a file whose SHA-256 matches is renamed to its final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from mmdstyle._checks import check_integer
from mmdstyle.features.progress import progress_bar

CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """The file could not be fetched (offline, server error, interrupted too often)."""


class ChecksumError(ValueError):
    """A file's SHA-256 is not the one its publisher gives."""


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file as 64 lower-case hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise :class:`ChecksumError` naming the file and both hashes unless they agree."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"{os.fspath(path)} has SHA-256 {actual}, expected {expected.lower()}: the file is truncated, "
            "corrupted or not the published one. Delete it and download it again."
        )


def download_file(
    url: str,
    destination: str | os.PathLike,
    sha256: str,
    *,
    progress: bool = True,
    attempts: int = 4,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` to ``destination`` and check its SHA-256.

    Args:
        url: where to fetch from (http, https or file).
        destination: the final path; its directory is created if needed.
        sha256: the publisher's SHA-256 of the file (64 hex digits).
        progress: show a progress bar (on stderr).
        attempts: how many failures in a row, without any bytes received, before giving up;
            each retry resumes the partial file.
        timeout: seconds to wait for the server on each connection.

    Returns:
        ``destination`` as a Path, holding exactly the published bytes.

    Raises:
        DownloadError: the server could not be reached or the transfer kept failing. The partial
            file is kept, so the next call resumes it.
        ChecksumError: the complete file has another hash. The partial file is deleted, so the
            next call starts afresh.
    """
    if not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}.")
    check_integer("attempts", attempts)
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    attempt = 0
    while True:
        before = partial.stat().st_size if partial.exists() else 0
        try:
            _transfer(url, partial, progress=progress, timeout=timeout)
            break
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
            if isinstance(error, urllib.error.HTTPError) and error.code not in (408, 429, 500, 502, 503, 504):
                raise DownloadError(f"could not download {url}: HTTP {error.code} {error.reason}.") from error
            progressed = partial.exists() and partial.stat().st_size > before
            attempt = 1 if progressed else attempt + 1  # only failures in a row without progress count
            if attempt >= attempts:
                kept = f" The partial file {partial} is kept and will be resumed." if partial.exists() else ""
                raise DownloadError(
                    f"could not download {url} after {attempts} attempts ({type(error).__name__}: {error})."
                    + kept
                ) from error
            time.sleep(min(2.0 ** (attempt - 1), 8.0) * 0.25)  # back off: 0.25, 0.5, 1, 2 s
    try:
        check_sha256(partial, sha256)
    except ChecksumError:
        partial.unlink()
        raise
    os.replace(partial, destination)
    return destination


def _range_starts_at(response, start: int) -> bool:
    """Whether a 206 answer's Content-Range (``bytes START-END/TOTAL``) begins at ``start``."""
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return match is not None and int(match.group(1)) == start


def _transfer(url: str, partial: Path, *, progress: bool, timeout: float) -> None:
    """Append the missing bytes of ``url`` to ``partial``; raise if the transfer stops early."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to fetch: the partial file is complete
            return
        raise
    with response:
        if have and (getattr(response, "status", 200) != 206 or not _range_starts_at(response, have)):
            have = 0  # the server sent the whole file (or another range): start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            open(partial, "ab" if have else "wb") as file,
            progress_bar(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=partial.name.removesuffix(".part"),
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            received = have
            while chunk := response.read(CHUNK_BYTES):
                file.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise http.client.IncompleteRead(b"", total - received)

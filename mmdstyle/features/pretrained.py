"""Pretrained VGG-19 weights: where they come from, where they are kept, how they are loaded.

``mmdstyle weights download`` (or the first use of the ``vgg19`` extractor) fetches torchvision's
published ImageNet VGG-19, checks its full SHA-256, and converts it once into a small
features-only safetensors file in the cache; every later run loads that file. The cache is
``$MMDSTYLE_HOME`` if set, else the platform's user cache directory (``$XDG_CACHE_HOME/mmdstyle``
or ``~/.cache/mmdstyle`` on Linux).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from mmdstyle.features.checkpoint import CheckpointError, read_checkpoint
from mmdstyle.features.download import DownloadError, check_sha256, download_file, sha256_of
from mmdstyle.features.files import atomic_path
from mmdstyle.features.vgg import (
    TORCHVISION_INDEX,
    VGG19,
    VGG19_BLOCKS,
    VGG19_CONVOLUTIONS,
    Padding,
    Pooling,
    unfilled_vgg19,
)

CONVERTED_NAME = "vgg19-features.safetensors"


@dataclass(frozen=True)
class WeightSource:
    """A published copy of the ImageNet VGG-19 weights, with its publisher's SHA-256 and size."""

    name: str
    url: str
    filename: str
    sha256: str
    size: int | None  # bytes, where the publisher states it
    preprocessing: str
    description: str


#: torchvision's VGG-19 (IMAGENET1K_V1, top-1 72.4 %); the file name carries the SHA-256 prefix.
TORCHVISION = WeightSource(
    name="torchvision",
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    filename="vgg19-dcbb9e9d.pth",
    sha256="dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
    size=574_673_361,
    preprocessing="torchvision",
    description="torchvision's ImageNet VGG-19 (PyTorch legacy format, read without torch)",
)
#: The same weights as safetensors on the Hugging Face hub (timm; SHA-256 is the Git LFS id).
TIMM = WeightSource(
    name="timm",
    url="https://huggingface.co/timm/vgg19.tv_in1k/resolve/main/model.safetensors",
    filename="vgg19.tv_in1k.safetensors",
    sha256="11aea017b543ff59233749d8f1cf544cda749378f5790d2fedab841fb86b7669",
    size=None,  # the hub shows "575 MB", not the byte count
    preprocessing="torchvision",
    description="the same weights as safetensors, from timm on the Hugging Face hub",
)
SOURCES: dict[str, WeightSource] = {source.name: source for source in (TORCHVISION, TIMM)}


class WeightsNotFoundError(FileNotFoundError):
    """No pretrained weights in the cache, and they could not be (or were not to be) downloaded."""


def cache_directory() -> Path:
    """Where mmdstyle keeps downloaded weights: ``$MMDSTYLE_HOME``, else the user cache directory."""
    if home := os.environ.get("MMDSTYLE_HOME"):
        return Path(home).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("mmdstyle")


def converted_weights_path() -> Path:
    """The features-only safetensors file that :func:`pretrained_vgg19` loads."""
    return cache_directory() / "weights" / CONVERTED_NAME


def vgg19_parameters(
    arrays: Mapping[str, np.ndarray], *, origin: str = "the weights"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pick VGG-19's sixteen convolutions out of a state dict, as ``{"conv1_1": (kernel HWIO, bias)}``.

    Accepted names: torchvision's and timm's ``features.<index>.weight`` (with any prefix, e.g.
    ``module.`` or ``vgg.``), or mmdstyle's ``conv1_1.weight``; weights are PyTorch's
    (out, in, 3, 3), biases (out,). Classifier weights are ignored.
    """
    parameters = {}
    missing = []
    for name in VGG19_CONVOLUTIONS:
        candidates = (f"features.{TORCHVISION_INDEX[name]}", name)
        found = None
        for stem in candidates:
            weights = [key for key in arrays if key == f"{stem}.weight" or key.endswith(f".{stem}.weight")]
            if len(weights) == 1:
                found = weights[0].removesuffix(".weight")
                break
        if found is None or f"{found}.bias" not in arrays:
            missing.append(f"{candidates[0]}.weight/bias (or {name}.weight/bias)")
            continue
        weight, bias = np.asarray(arrays[f"{found}.weight"]), np.asarray(arrays[f"{found}.bias"])
        if weight.ndim != 4:
            raise CheckpointError(
                f"{origin}: {found}.weight has shape {weight.shape}, expected (out, in, 3, 3)."
            )
        parameters[name] = (weight.transpose(2, 3, 1, 0), bias)
    if missing:
        shown = ", ".join(list(arrays)[:6]) + (" ..." if len(arrays) > 6 else "")
        raise CheckpointError(
            f"{origin}: not a VGG-19 state dict, missing {', '.join(missing[:3])}"
            f"{' and more' if len(missing) > 3 else ''}. The file holds: {shown or 'no tensors'}."
        )
    return parameters


def load_vgg19(
    path: str | os.PathLike,
    *,
    pooling: Pooling = "max",
    padding: Padding = "zero",
    preprocessing: str | None = None,
    sha256: str | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> VGG19:
    """VGG-19 with the weights in ``path`` (PyTorch .pth, safetensors or .npz).

    The channel counts are read from the file, so narrower networks of VGG-19's shape load too.

    Args:
        path: the weight file. PyTorch files are read without torch and without running code.
        pooling: ``"max"`` (as trained) or ``"average"`` (Gatys et al.'s choice for synthesis).
        padding: ``"zero"`` (as trained) or ``"reflect"``.
        preprocessing: what the weights expect: ``"torchvision"``, ``"caffe"`` (e.g. for the
            original Caffe VGG converted to PyTorch) or ``"none"``. ``None``: the file's own
            metadata if it has some (mmdstyle's converted files do), else ``"torchvision"``.
        sha256: if given, the file must have this SHA-256. A file named as a published source
            (e.g. ``vgg19-dcbb9e9d.pth``) is checked against its publisher's hash in any case.
        param_dtype: dtype of the loaded weights (float32; float64 for exact comparisons).

    Raises:
        FileNotFoundError: no such file.
        ChecksumError: ``sha256`` was given and the file's differs.
        CheckpointError: unreadable, unsafe, or not a VGG-19 (the message says which).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no VGG-19 weight file at {str(path)!r}. Pass the path of a .pth, .safetensors or .npz file, "
            "or run `mmdstyle weights download` to fetch torchvision's."
        )
    published = {source.filename: source.sha256 for source in SOURCES.values()}
    if (expected := sha256 or published.get(path.name)) is not None:
        check_sha256(path, expected)
    arrays, metadata = read_checkpoint(path)
    parameters = vgg19_parameters(arrays, origin=str(path))
    widths, start = [], 0
    for block in VGG19_BLOCKS:
        names = VGG19_CONVOLUTIONS[start : start + len(block)]
        widths.append(tuple(int(parameters[name][1].shape[0]) for name in names))
        start += len(block)
    model = unfilled_vgg19(
        pooling=pooling,
        padding=padding,
        preprocessing=preprocessing or metadata.get("preprocessing", "torchvision"),
        param_dtype=param_dtype,
        widths=widths,
    )
    model.load_parameters(parameters, origin=str(path))
    return model


def convert_to_features_safetensors(
    source: str | os.PathLike, destination: str | os.PathLike, /, **metadata: str
) -> Path:
    """Write VGG-19's convolution weights from ``source`` as safetensors (about 80 MB), atomically.

    Keys keep torchvision's names (``features.<index>.weight``, PyTorch layout), so other tools
    read the file too; ``metadata`` (strings) is stored in the header, and a ``.sha256`` file
    beside it records the result's hash, checked on every load.
    """
    from safetensors.numpy import save_file

    arrays, _ = read_checkpoint(source)
    parameters = vgg19_parameters(arrays, origin=os.fspath(source))
    tensors = {}
    for name, (kernel, bias) in parameters.items():
        stem = f"features.{TORCHVISION_INDEX[name]}"
        tensors[f"{stem}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)
        tensors[f"{stem}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
    destination = Path(destination)
    recorded = destination.with_name(destination.name + ".sha256")
    recorded.unlink(missing_ok=True)  # until the new hash is written, the file counts as unchecked
    with atomic_path(destination, suffix=".safetensors") as temporary:
        save_file(tensors, temporary, metadata={key: str(value) for key, value in metadata.items()})
        digest = sha256_of(temporary)
    with atomic_path(recorded) as hash_file:
        Path(hash_file).write_text(f"{digest}  {destination.name}\n")
    return destination


def download_weights(
    source: str | None = None, *, progress: bool = True, keep_original: bool = False, force: bool = False
) -> Path:
    """Download the ImageNet VGG-19 weights once, check them, and convert them for mmdstyle.

    A file of the source's name already in the cache's ``weights/`` folder (copied there by
    hand) is checked and converted without any download, and kept.

    Args:
        source: ``"torchvision"`` or ``"timm"``; ``None`` tries torchvision, then timm.
        progress: show a progress bar.
        keep_original: keep the downloaded file (~575 MB) beside the converted one (~80 MB).
        force: convert again even if intact converted weights are already in the cache.

    Returns:
        The path of the converted features-only safetensors file (see :func:`converted_weights_path`).

    Raises:
        WeightsNotFoundError: every source failed; the message says where to put a file fetched by hand.
    """
    if source is not None and source not in SOURCES:
        raise ValueError(f"source must be one of {tuple(SOURCES)}, got {source!r}.")
    destination = converted_weights_path()
    if not force and _converted_weights_intact(destination):
        return destination
    errors = []
    for candidate in [SOURCES[source]] if source else list(SOURCES.values()):
        original = destination.parent / candidate.filename
        placed_by_hand = original.is_file()
        try:
            if placed_by_hand:
                check_sha256(original, candidate.sha256)
            else:
                download_file(candidate.url, original, candidate.sha256, progress=progress)
            convert_to_features_safetensors(
                original,
                destination,
                source=candidate.url,
                source_sha256=candidate.sha256,
                preprocessing=candidate.preprocessing,
            )
        except (DownloadError, ValueError) as error:  # ChecksumError and CheckpointError are ValueErrors
            errors.append(f"  {candidate.name}: {error}")
            if placed_by_hand:
                print(f"mmdstyle: ignoring {original}: {error}", file=sys.stderr)
            continue
        if not (keep_original or placed_by_hand):
            original.unlink()
        return destination
    raise WeightsNotFoundError(_offline_message(errors))


def _converted_weights_intact(path: Path) -> bool:
    try:
        _check_recorded_hash(path)
    except (FileNotFoundError, ValueError):
        return False
    return True


def _check_recorded_hash(path: Path) -> None:
    """Check a converted file against the SHA-256 recorded beside it at conversion time."""
    if not path.is_file():
        raise FileNotFoundError(f"no converted weights at {path}.")
    recorded = path.with_name(path.name + ".sha256")
    words = recorded.read_text().split() if recorded.is_file() else []
    if not words:
        raise CheckpointError(
            f"{path} has no recorded hash ({recorded.name} is missing or empty). Delete {path} and run "
            "`mmdstyle weights download` again."
        )
    check_sha256(path, words[0])


def _offline_message(errors: list[str]) -> str:
    folder = converted_weights_path().parent
    return (
        "could not download the pretrained VGG-19 weights:\n" + "\n".join(errors) + "\n"
        f"To install them by hand, fetch {TORCHVISION.url}\n(SHA-256 {TORCHVISION.sha256}) on a machine "
        f"with network access, copy it into {folder}/ and run `mmdstyle weights download` again (it checks "
        "and converts a file it finds there), or pass the file directly: --weights FILE / "
        "mmdstyle.features.load_vgg19(FILE). Set MMDSTYLE_HOME to use another cache directory."
    )


def cached_weights_available() -> bool:
    """Whether converted pretrained weights are in the cache (no network, no hashing)."""
    return converted_weights_path().is_file()


def pretrained_vgg19(
    *,
    pooling: Pooling = "max",
    padding: Padding = "zero",
    download_if_missing: bool = True,
    progress: bool = True,
) -> VGG19:
    """The ImageNet VGG-19, from the cache, downloading and converting it on first use.

    The cached file's SHA-256 is checked against the one recorded when it was converted, so a
    truncated or altered file is reported instead of silently giving wrong features.

    Args:
        pooling: ``"max"`` (as trained) or ``"average"`` (Gatys et al.'s choice for synthesis).
        padding: ``"zero"`` (as trained) or ``"reflect"``.
        download_if_missing: download (about 575 MB, once) when the cache has no weights.
        progress: show a progress bar while downloading.

    Raises:
        WeightsNotFoundError: no weights in the cache, and downloading failed or was not allowed.
        ChecksumError: the cached file is not the one that was converted.
        CheckpointError: the cached file has no recorded hash or cannot be read.
    """
    path = converted_weights_path()
    if not path.is_file():
        if not download_if_missing:
            raise WeightsNotFoundError(
                f"no pretrained VGG-19 weights in {path.parent}. Run `mmdstyle weights download`, or pass "
                "a weight file with --weights FILE / mmdstyle.features.load_vgg19(FILE)."
            )
        download_weights(progress=progress)
    _check_recorded_hash(path)
    return load_vgg19(path, pooling=pooling, padding=padding)


def describe_cache() -> dict[str, str]:
    """What the cache holds, for ``mmdstyle weights info`` (reads headers only, never raises)."""
    path = converted_weights_path()
    info = {
        "cache directory": str(cache_directory()),
        "weights folder": str(path.parent),
        "converted weights": str(path) if path.is_file() else "none",
    }
    if path.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(path), "np") as file:
                info.update({f"  {key}": value for key, value in (file.metadata() or {}).items()})
            _check_recorded_hash(path)
            info["  integrity"] = "SHA-256 matches the hash recorded at conversion"
        except Exception as error:  # a report: say what is wrong instead of failing
            info["  integrity"] = f"unusable ({error}); run `mmdstyle weights download --force`"
    return info


__all__ = [
    "SOURCES",
    "TIMM",
    "TORCHVISION",
    "WeightSource",
    "WeightsNotFoundError",
    "cache_directory",
    "cached_weights_available",
    "convert_to_features_safetensors",
    "converted_weights_path",
    "download_weights",
    "load_vgg19",
    "pretrained_vgg19",
    "vgg19_parameters",
]

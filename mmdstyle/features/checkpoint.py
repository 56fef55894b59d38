"""Read weight files as ``{name: numpy array}``: PyTorch .pth without torch, safetensors, .npz.

A PyTorch checkpoint is a pickle, and unpickling runs whatever functions the file names. mmdstyle
never imports torch and never lets a file name a function outside a short allow-list (an ordered
dict, tensor rebuilding, storage types): anything else is refused with an error naming the file
and the global. Two layouts of the file exist, and both are read:

- zip (``torch.save`` since PyTorch 1.6): ``<archive>/data.pkl`` holds the pickle; each storage is
  a separate entry ``<archive>/data/<key>``, named by the pickle's persistent ids.
- legacy (what torchvision's 2017 VGG files are): consecutive pickles (magic number, protocol
  version, system info, the object, the storage keys), then each storage's raw bytes preceded by
  its element count as a little-endian int64.

The format is recognised from the file's first bytes, not its name.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(jnp.bfloat16),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(ValueError):
    """A weight file that cannot be read: unknown format, truncated, corrupted or unsafe."""


@dataclass(frozen=True, slots=True)
class _StorageType:
    dtype: np.dtype


@dataclass(slots=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class _TensorReference:
    """A tensor whose storage may not be read yet (the legacy format stores data after the pickle)."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> _TensorReference:
    """torch._utils._rebuild_tensor(_v2): check every argument's type, keep a reference."""
    integers = lambda values: isinstance(values, tuple) and all(type(v) is int for v in values)  # noqa: E731
    if (
        type(storage) is not _Storage
        or type(storage_offset) is not int
        or not integers(size)
        or not integers(stride)
    ):
        raise CheckpointError("a tensor with malformed storage, offset, size or stride")
    if len(size) != len(stride):
        raise CheckpointError(f"a tensor of size {size} with stride {stride}")
    return _TensorReference(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_unused):
    if type(data) is not _TensorReference:
        raise CheckpointError("a parameter that is not a tensor")
    return data


_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves only allow-listed globals and hands storages to ``persistent``.

    Globals resolve to fresh wrappers (never to shared objects a pickle could alter), and BUILD,
    which sets attributes, is allowed only to give a state dict its ``_metadata``, as torch
    writes it. The pure-Python unpickler is used because the C one cannot intercept BUILD; the
    pickle holds only names and storage ids (the data is stored apart), so it is small.
    """

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BufferedIOBase, path: str, persistent) -> None:
        super().__init__(file)
        self._path = path
        self._persistent = persistent

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if (module, name) in _FUNCTIONS:
            function = _FUNCTIONS[(module, name)]
            return lambda *arguments: function(*arguments)
        raise CheckpointError(
            f"{self._path}: refusing to load the global {module}.{name}. mmdstyle reads only tensors "
            "from PyTorch files, and a pickle that calls other functions can run arbitrary code. "
            "If you trust the file, re-save just its state dict (torch.save(model.state_dict(), ...)) "
            "or convert it to safetensors."
        )

    def load_build(self) -> None:
        state, target = self.stack[-1], self.stack[-2]
        if type(target) is not OrderedDict or not isinstance(state, dict) or set(state) - {"_metadata"}:
            raise CheckpointError(
                f"{self._path}: the pickle sets attributes of {type(target).__name__}: refused."
            )
        self.stack.pop()  # the metadata of a state dict is not needed

    dispatch[pickle.BUILD[0]] = load_build

    def persistent_load(self, saved_id: Any) -> _Storage:
        if not (
            isinstance(saved_id, tuple) and len(saved_id) >= 5 and saved_id[0] in ("storage", b"storage")
        ):
            raise CheckpointError(f"{self._path}: unexpected persistent id {saved_id!r} in the pickle.")
        storage_type, key, _location, numel = saved_id[1:5]
        view = saved_id[5] if len(saved_id) > 5 else None
        if type(storage_type) is not _StorageType or type(numel) is not int or numel < 0:
            raise CheckpointError(f"{self._path}: a storage of unsupported type or size: {saved_id!r}.")
        if view is not None:
            raise CheckpointError(f"{self._path}: storage views (PyTorch < 0.4 files) are not supported.")
        return self._persistent(str(key), storage_type.dtype, numel)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read every array of a weight file, and its text metadata (safetensors only, else empty).

    Args:
        path: a PyTorch checkpoint (zip or legacy), a safetensors file or a NumPy .npz archive.

    Returns:
        ``(arrays, metadata)``: a dict from the file's names to NumPy arrays, and a dict of strings.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is of no known format, truncated, corrupted, or asks to run code.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weight file at {path!r}.")
    with open(path, "rb") as file:
        head = file.read(16)
    try:
        if head.startswith(b"PK"):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if any(name.endswith("data.pkl") for name in names):
                    return _read_torch_zip(archive, path), {}
                if names and all(name.endswith(".npy") for name in names):
                    return _read_npz(path), {}
            raise CheckpointError(f"{path}: a zip archive that is neither a PyTorch checkpoint nor an .npz.")
        if head[:2] == b"\x80\x02":
            return _read_torch_legacy(path), {}
        if len(head) >= 9 and head[8:9] == b"{":
            return _read_safetensors(path)
    except CheckpointError as error:
        if str(error).startswith(path):
            raise
        raise CheckpointError(f"{path}: {error}; the file is corrupted or not a plain state dict.") from error
    except (
        zipfile.BadZipFile,
        EOFError,
        pickle.UnpicklingError,
        struct.error,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        MemoryError,
        OverflowError,
    ) as error:
        raise CheckpointError(
            f"{path}: the file is truncated or corrupted ({type(error).__name__}: {error}). "
            "Delete it and download or copy it again."
        ) from error
    raise CheckpointError(
        f"{path}: not a weight file mmdstyle can read. Supported: PyTorch .pth/.pt (zip or legacy), "
        ".safetensors and .npz."
    )


def _read_torch_zip(archive: zipfile.ZipFile, path: str) -> dict[str, np.ndarray]:
    pickle_name = next(name for name in archive.namelist() if name.endswith("data.pkl"))
    prefix = pickle_name[: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder").decode().strip()

    def storage(key: str, dtype: np.dtype, numel: int) -> _Storage:
        raw = archive.read(f"{prefix}data/{key}")
        order = "<" if byteorder == "little" else ">"
        data = np.frombuffer(raw, dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype)
        if data.size < numel:
            raise CheckpointError(f"{path}: storage {key} holds {data.size} values, expected {numel}.")
        return _Storage(key, dtype, numel, data.astype(dtype, copy=False))

    storages: dict[str, _Storage] = {}

    def persistent(key: str, dtype: np.dtype, numel: int) -> _Storage:
        if key not in storages:
            storages[key] = storage(key, dtype, numel)
        return storages[key]

    result = _RestrictedUnpickler(io.BytesIO(archive.read(pickle_name)), path, persistent).load()
    return _resolve(result, path)


def _read_torch_legacy(path: str) -> dict[str, np.ndarray]:
    storages: dict[str, _Storage] = {}

    def persistent(key: str, dtype: np.dtype, numel: int) -> _Storage:
        return storages.setdefault(key, _Storage(key, dtype, numel))

    with open(path, "rb") as file:
        header = _RestrictedUnpickler(file, path, persistent)
        if header.load() != LEGACY_MAGIC_NUMBER:
            raise CheckpointError(f"{path}: not a PyTorch file (wrong magic number).")
        if header.load() != LEGACY_PROTOCOL_VERSION:
            raise CheckpointError(f"{path}: unsupported PyTorch legacy protocol version.")
        system = header.load()
        if isinstance(system, dict) and not system.get("little_endian", True):
            raise CheckpointError(f"{path}: big-endian legacy checkpoints are not supported.")
        result = _RestrictedUnpickler(file, path, persistent).load()
        keys = _RestrictedUnpickler(file, path, persistent).load()
        if not isinstance(system, dict) or not isinstance(keys, list):
            raise CheckpointError(f"{path}: malformed legacy header.")
        file_size = os.fstat(file.fileno()).st_size
        for key in keys:
            storage = storages[str(key)]
            (count,) = struct.unpack("<q", file.read(8))
            expected = storage.numel * storage.dtype.itemsize
            if count != storage.numel or file.tell() + expected > file_size:  # checked before allocating
                raise CheckpointError(
                    f"{path}: storage {key} is cut short ({file_size - file.tell()} bytes left, {expected} "
                    "needed): the file is truncated."
                )
            storage.data = np.frombuffer(file.read(expected), storage.dtype)
    return _resolve(result, path)


def _resolve(result: Any, path: str) -> dict[str, np.ndarray]:
    """Turn the unpickled state dict's tensor references into NumPy arrays."""
    if isinstance(result, dict) and not any(type(v) is _TensorReference for v in result.values()):
        wrapped = [value for value in result.values() if isinstance(value, dict)]
        if (
            len(wrapped) == 1
        ):  # a training checkpoint wrapping the weights: {"state_dict": ...}, {"model": ...}
            result = wrapped[0]
    if not isinstance(result, dict):
        raise CheckpointError(
            f"{path}: expected a state dict (a dict of tensors), got {type(result).__name__}."
        )
    arrays = {}
    for name, value in result.items():
        if isinstance(value, _TensorReference):
            arrays[str(name)] = _tensor(value, path, str(name))
    return arrays


def _tensor(reference: _TensorReference, path: str, name: str) -> np.ndarray:
    storage = reference.storage
    if storage.data is None:
        raise CheckpointError(f"{path}: tensor {name} refers to storage {storage.key}, which is missing.")
    size, stride = reference.size, reference.stride
    if any(n < 0 for n in size) or math.prod(size) > max(storage.data.size, 1) * (
        1 if all(stride) else 1 << 20
    ):
        raise CheckpointError(f"{path}: tensor {name} of size {size} does not fit its storage: corrupted.")
    last = reference.offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True) if n > 0)
    if reference.offset < 0 or any(s < 0 for s in stride) or (0 not in size and last >= storage.data.size):
        raise CheckpointError(f"{path}: tensor {name} reaches outside its storage: the file is corrupted.")
    itemsize = storage.data.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.data[reference.offset :] if 0 not in size else storage.data[:0],
        shape=size,
        strides=tuple(s * itemsize for s in stride),
        writeable=False,
    )
    return np.array(view)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        arrays = load_file(path)
    except SafetensorError as error:
        raise CheckpointError(
            f"{path}: not a valid safetensors file ({error}); it may be truncated. Delete it and "
            "download or copy it again."
        ) from error
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    return arrays, dict(header.get("__metadata__", {}))

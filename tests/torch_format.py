"""Torch-free writer of tiny PyTorch checkpoint files, for testing a torch-free reader.

Two on-disk formats are written, byte for byte as ``torch.save`` lays them out:

* the ZIP format (default since PyTorch 1.6): stored entries ``{archive}/data.pkl``, ``byteorder``,
  ``data/{key}`` (raw little-endian storage bytes, 64-byte aligned as torch does), ``version`` and
  ``.data/serialization_id``;
* the legacy format read by ``torch.serialization._legacy_load``: consecutive pickles (magic number,
  protocol version, sys info, the object, the storage keys) followed by each storage as an int64
  element count and its raw bytes.

The pickles are written opcode by opcode (protocol 2), because the globals they reference
(``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``...) cannot be imported here. Globals
are memoized with BINPUT/BINGET, as the standard pickler does, so readers must handle the memo.
"""

import pickle
import struct
import zipfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np

STORAGE_TYPES: dict[np.dtype, str] = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}
"""The ``torch.<name>`` storage class pickled for each NumPy dtype."""

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
LEGACY_SYS_INFO = {
    "protocol_version": 1001,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}

Path = str | PathLike[str]


@dataclass(frozen=True)
class _Global:
    """A ``module.name`` global, pickled with the GLOBAL opcode."""

    module: str
    name: str


@dataclass(frozen=True)
class _Reduce:
    """``func(*args)`` (REDUCE), then ``obj[k] = v`` for each item (SETITEMS), then BUILD with state."""

    func: _Global
    args: tuple[Any, ...]
    items: tuple[tuple[Any, Any], ...] = ()
    state: Any = None


@dataclass(frozen=True)
class _PersistentId:
    """An object the unpickler resolves with ``persistent_load(pid)`` (BINPERSID)."""

    pid: tuple[Any, ...]


_ORDERED_DICT = _Global("collections", "OrderedDict")
_REBUILD_TENSOR = _Global("torch._utils", "_rebuild_tensor_v2")
_REBUILD_TENSOR_V1 = _Global("torch._utils", "_rebuild_tensor")


class _Emitter:
    """Writes a protocol-2 pickle of plain values and the node classes above, opcode by opcode."""

    def __init__(self) -> None:
        self.out = bytearray(pickle.PROTO + b"\x02")
        self.memo: dict[_Global, int] = {}

    def emit(self, obj: Any) -> None:
        """Append the opcodes that push ``obj`` onto the unpickler's stack."""
        out = self.out
        if obj is None:
            out += pickle.NONE
        elif isinstance(obj, bool):
            out += pickle.NEWTRUE if obj else pickle.NEWFALSE
        elif isinstance(obj, int):
            if 0 <= obj < 1 << 8:
                out += pickle.BININT1 + struct.pack("<B", obj)
            elif 0 <= obj < 1 << 16:
                out += pickle.BININT2 + struct.pack("<H", obj)
            elif -(1 << 31) <= obj < 1 << 31:
                out += pickle.BININT + struct.pack("<i", obj)
            else:
                encoded = obj.to_bytes(obj.bit_length() // 8 + 1, "little", signed=True)
                out += pickle.LONG1 + struct.pack("<B", len(encoded)) + encoded
        elif isinstance(obj, float):
            out += pickle.BINFLOAT + struct.pack(">d", obj)
        elif isinstance(obj, str):
            encoded = obj.encode("utf-8")
            out += pickle.BINUNICODE + struct.pack("<I", len(encoded)) + encoded
        elif isinstance(obj, tuple):
            if not obj:
                out += pickle.EMPTY_TUPLE
                return
            if len(obj) > 3:
                out += pickle.MARK
            for item in obj:
                self.emit(item)
            out += {1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}.get(len(obj), pickle.TUPLE)
        elif isinstance(obj, list):
            out += pickle.EMPTY_LIST
            self._batch([(item,) for item in obj], pickle.APPEND, pickle.APPENDS)
        elif isinstance(obj, dict):
            out += pickle.EMPTY_DICT
            self._batch(list(obj.items()), pickle.SETITEM, pickle.SETITEMS)
        elif isinstance(obj, _Global):
            self._global(obj)
        elif isinstance(obj, _PersistentId):
            self.emit(obj.pid)
            out += pickle.BINPERSID
        elif isinstance(obj, _Reduce):
            self.emit(obj.func)
            self.emit(obj.args)
            out += pickle.REDUCE
            self._batch(list(obj.items), pickle.SETITEM, pickle.SETITEMS)
            if obj.state is not None:
                self.emit(obj.state)
                out += pickle.BUILD
        else:
            raise TypeError(f"cannot pickle {type(obj).__name__}")

    def _batch(self, groups: list[tuple[Any, ...]], one: bytes, many: bytes) -> None:
        """Apply ``groups`` to the object on top of the stack: ``one`` op for a single group, as the
        standard pickler does, else MARK, the groups and ``many`` (APPEND/APPENDS, SETITEM/SETITEMS)."""
        out = self.out
        if len(groups) > 1:
            out += pickle.MARK
        for value in (value for group in groups for value in group):
            self.emit(value)
        out += (many if len(groups) > 1 else one) if groups else b""

    def _global(self, obj: _Global) -> None:
        if obj not in self.memo:  # first use: GLOBAL, then BINPUT to the memo as the standard pickler does
            self.memo[obj] = len(self.memo)
            assert self.memo[obj] < 256, "BINPUT/BINGET address 256 memo slots"
            self.out += pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode() + pickle.BINPUT
        else:
            self.out += pickle.BINGET
        self.out += struct.pack("<B", self.memo[obj])


def _dumps(obj: Any) -> bytes:
    """A complete protocol-2 pickle of ``obj``."""
    emitter = _Emitter()
    emitter.emit(obj)
    return bytes(emitter.out + pickle.STOP)


def _state_dict(items: list[tuple[str, Any]]) -> _Reduce:
    """An OrderedDict with ``_metadata`` (one ``{"version": 1}`` per module prefix), as torch pickles it."""
    prefixes = {""}
    for key, _ in items:
        parts = key.split(".")[:-1]
        prefixes.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    metadata = _Reduce(_ORDERED_DICT, (), items=tuple((p, {"version": 1}) for p in sorted(prefixes)))
    return _Reduce(_ORDERED_DICT, (), items=tuple(items), state={"_metadata": metadata})


def _tensors(
    state_dict: Mapping[str, np.ndarray],
    share_storage: bool,
    transpose_keys: Collection[str],
    legacy: bool,
    rebuild_v1: bool = False,
) -> tuple[list[tuple[str, Any]], list[tuple[str, int, bytes]]]:
    """The pickled tensor nodes and the storages ``(key, numel, little-endian bytes)`` they reference."""
    keys: dict[str, str] = {}  # storage group (the dtype's storage type, or the tensor name) -> key
    chunks: dict[str, list[bytes]] = {}
    numels: dict[str, int] = {}
    nodes = []
    for name, value in state_dict.items():
        array = np.asarray(value)
        if array.dtype not in STORAGE_TYPES:
            raise ValueError(f"{name}: dtype {array.dtype} has no torch storage type here")
        shape = array.shape
        transposed = name in transpose_keys
        order = range(len(shape)) if transposed else reversed(range(len(shape)))
        stride, step = [0] * len(shape), 1
        for axis in order:  # torch's contiguous strides (dims of size 0 count as 1) in the stored order
            stride[axis], step = step, step * max(shape[axis], 1)
        data = array.astype(array.dtype.newbyteorder("<")).tobytes(order="F" if transposed else "C")
        storage_type = STORAGE_TYPES[array.dtype]
        key = keys.setdefault(storage_type if share_storage else name, str(len(keys)))
        offset = numels.setdefault(key, 0)
        chunks.setdefault(key, []).append(data)
        numels[key] += array.size
        nodes.append((name, key, storage_type, offset, tuple(shape), tuple(stride)))
    storages = [(key, numels[key], b"".join(parts)) for key, parts in chunks.items()]
    tensors, legacy_tail = [], ((None,) if legacy else ())  # legacy ids end with view_metadata
    for name, key, storage_type, offset, shape, stride in nodes:
        pid = ("storage", _Global("torch", storage_type), key, "cpu", numels[key], *legacy_tail)
        if rebuild_v1:  # PyTorch 0.2-0.3: _rebuild_tensor(storage, offset, size, stride)
            tensors.append((name, _Reduce(_REBUILD_TENSOR_V1, (_PersistentId(pid), offset, shape, stride))))
            continue
        args = (_PersistentId(pid), offset, shape, stride, False, _Reduce(_ORDERED_DICT, ()))
        tensors.append((name, _Reduce(_REBUILD_TENSOR, args)))
    return tensors, storages


def _write_zip(path: Path, archive_name: str, records: list[tuple[str, bytes]]) -> None:
    """Stored (uncompressed) entries, each payload 64-byte aligned by an ``FB`` extra field as torch pads."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in records:
            info = zipfile.ZipInfo(f"{archive_name}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            payload_start = archive.fp.tell() + 30 + len(info.filename.encode()) + 4  # 30: local header
            padding = -payload_start % 64
            info.extra = b"FB" + struct.pack("<H", padding) + b"Z" * padding
            archive.writestr(info, data)


def save_zip(
    path: Path,
    state_dict: Mapping[str, np.ndarray],
    *,
    archive_name: str = "archive",
    share_storage: bool = False,
    transpose_keys: Collection[str] = (),
    extra_globals: Mapping[str, tuple[str, str, tuple[Any, ...]]] | None = None,
) -> None:
    """Write ``state_dict`` as ``torch.save`` does by default (the ZIP format, PyTorch >= 1.6).

    Args:
        path: the ``.pth`` file to write.
        state_dict: tensor name -> array (a dtype of ``STORAGE_TYPES``), loaded back as an OrderedDict.
        archive_name: the top folder of every entry (torch uses the file's stem; readers must not care).
        share_storage: pack all arrays of one dtype into one storage, each tensor at its own offset.
        transpose_keys: names whose storage holds the array in column-major order, so the tensor's
            stride is permuted: size ``(a, b)``, stride ``(1, a)``; element ``[i, j]`` at ``i + j * a``.
        extra_globals: name -> ``(module, function, args)``: entries whose value the unpickler builds by
            calling the global ``module.function(*args)`` (for testing restricted unpicklers).
    """
    tensors, storages = _tensors(state_dict, share_storage, transpose_keys, legacy=False)
    for name, (module, function, args) in (extra_globals or {}).items():
        tensors.append((name, _Reduce(_Global(module, function), tuple(args))))
    records = [("data.pkl", _dumps(_state_dict(tensors))), ("byteorder", b"little")]
    records += [(f"data/{key}", data) for key, _, data in storages]
    records += [("version", b"3\n"), (".data/serialization_id", b"0" * 40)]
    _write_zip(path, archive_name, records)


def save_legacy(
    path: Path, state_dict: Mapping[str, np.ndarray], *, share_storage: bool = False, rebuild_v1: bool = False
) -> None:
    """Write ``state_dict`` in PyTorch's legacy (pre-1.6, non-ZIP) format.

    The file holds consecutive pickles: the magic number, the protocol version, the sys info, the
    OrderedDict of tensors (storage persistent ids ``("storage", type, key, "cpu", numel, None)``),
    the list of storage keys; then, for each key in that order, the storage's element count as
    little-endian int64 followed by its raw little-endian bytes. ``rebuild_v1`` pickles tensors
    with ``torch._utils._rebuild_tensor`` (four arguments), as PyTorch 0.2-0.3 did.
    """
    tensors, storages = _tensors(state_dict, share_storage, (), legacy=True, rebuild_v1=rebuild_v1)
    with open(path, "wb") as file:
        for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, LEGACY_SYS_INFO):
            file.write(_dumps(header))
        file.write(_dumps(_state_dict(tensors)))
        file.write(_dumps([key for key, _, _ in storages]))
        for _, numel, data in storages:
            file.write(struct.pack("<q", numel) + data)


def malicious_pickle_payload(module: str = "os", name: str = "system", argument: str = "echo pwned") -> bytes:
    """A protocol-2 pickle that calls ``module.name(argument)`` when unpickled (nothing runs when built)."""
    return _dumps(_Reduce(_Global(module, name), (argument,)))


def save_zip_with_global(path: Path, module: str, name: str, argument: str = "echo pwned") -> None:
    """A ZIP checkpoint whose ``data.pkl`` calls ``module.name(argument)``, which readers must refuse."""
    save_zip(
        path, {"weight": np.zeros(2, np.float32)}, extra_globals={"payload": (module, name, (argument,))}
    )

"""Reading weight files without torch: every dtype and layout, and every way a file can be bad."""

from __future__ import annotations

import importlib.util
import struct
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from mmdstyle.features import CheckpointError, read_checkpoint
from tests import torch_format


def arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One array of each dtype PyTorch files hold, with the shapes that trip readers up."""
    return {
        "float32": rng.normal(size=(3, 4, 2)).astype(np.float32),
        "float64": rng.normal(size=(5,)),
        "float16": rng.normal(size=(2, 3)).astype(np.float16),
        "int64": np.array([-(2**62), 2**40, 0, 7], np.int64),
        "int32": np.arange(6, dtype=np.int32).reshape(2, 3),
        "int16": np.array([-3, 4], np.int16),
        "int8": np.array([-128, 127], np.int8),
        "uint8": np.array([0, 255, 9], np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 3), np.float32),
        "matrix": rng.normal(size=(4, 3)).astype(np.float32),
    }


@pytest.mark.parametrize(
    "layout",
    ["zip", "zip-shared", "zip-transposed", "legacy", "legacy-shared", "legacy-v1", "safetensors", "npz"],
)
def test_every_array_comes_back_bit_for_bit(tmp_path, rng, layout):
    expected = arrays(rng)
    path = tmp_path / "file"
    if layout.startswith("zip"):
        torch_format.save_zip(
            path,
            expected,
            share_storage=layout == "zip-shared",
            transpose_keys={"matrix", "int32"} if layout == "zip-transposed" else (),
        )
    elif layout.startswith("legacy"):
        torch_format.save_legacy(
            path, expected, share_storage=layout == "legacy-shared", rebuild_v1=layout == "legacy-v1"
        )
    elif layout == "safetensors":
        save_file(expected, str(path))
    else:
        with open(path, "wb") as file:
            np.savez(file, **expected)
    loaded, _ = read_checkpoint(path)
    assert set(loaded) == set(expected)
    for name, array in expected.items():
        assert loaded[name].dtype == array.dtype, name
        assert loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)


def test_safetensors_metadata_is_returned(tmp_path):
    save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "w"), metadata={"preprocessing": "caffe"})
    assert read_checkpoint(tmp_path / "w")[1] == {"preprocessing": "caffe"}


@pytest.mark.parametrize(("module", "name"), [("os", "system"), ("builtins", "eval"), ("os", "mkdir")])
def test_a_pickle_naming_any_other_global_is_refused_before_it_runs(tmp_path, module, name):
    target = tmp_path / "created-by-the-payload"
    path = tmp_path / "evil.pth"
    argument = str(target) if name == "mkdir" else f"open({str(target)!r}, 'w')"
    torch_format.save_zip_with_global(path, module, name, argument)
    with pytest.raises(CheckpointError, match=f"evil.pth: refusing to load the global {module}.{name}"):
        read_checkpoint(path)
    assert not target.exists()


def test_a_truncated_zip_names_the_file(tmp_path, rng):
    path = tmp_path / "cut.pth"
    torch_format.save_zip(path, arrays(rng))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth: .*(truncated|corrupted)"):
        read_checkpoint(path)


def test_a_truncated_legacy_file_names_the_file(tmp_path, rng):
    path = tmp_path / "cut.pth"
    torch_format.save_legacy(path, arrays(rng))
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=r"cut\.pth: .*truncated"):
        read_checkpoint(path)


def test_a_corrupted_zip_entry_is_detected_by_its_crc(tmp_path, rng):
    path = tmp_path / "flipped.pth"
    torch_format.save_zip(path, {"w": rng.normal(size=1000).astype(np.float32)})
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("archive/data/0")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 200] ^= 0xFF  # inside the stored bytes of the tensor
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"flipped\.pth: the file is truncated or corrupted"):
        read_checkpoint(path)


def test_a_truncated_safetensors_file_names_the_file(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file({"w": np.zeros(1000, np.float32)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: not a valid safetensors file"):
        read_checkpoint(path)


def test_missing_and_unknown_files_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weight file"):
        read_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "notes.txt").write_text("hello, these are not weights")
    with pytest.raises(CheckpointError, match="Supported: PyTorch"):
        read_checkpoint(tmp_path / "notes.txt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match=r"neither a PyTorch checkpoint nor an \.npz"):
        read_checkpoint(tmp_path / "other.zip")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("zip_format", [True, False])
def test_files_written_by_torch_itself_are_read(tmp_path, rng, zip_format):
    import torch

    expected = {name: value for name, value in arrays(rng).items() if name != "uint8"}
    tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in expected.items()}
    tensors["matrix"] = torch.from_numpy(expected["matrix"].T.copy()).T  # a non-contiguous view
    tensors["slice"] = torch.arange(10.0)[3:7]  # an offset into a shared storage
    expected["slice"] = np.arange(3.0, 7.0, dtype=np.float32)
    path = tmp_path / "torch.pth"
    torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
    loaded, _ = read_checkpoint(path)
    for name, array in expected.items():
        assert loaded[name].dtype == array.dtype, name
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)


def write_pickle(path, payload: bytes) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)


def test_a_pickle_cannot_alter_the_allowed_globals(tmp_path, rng):
    # GLOBAL torch.FloatStorage; {"dtype": "i1"}; BUILD: would rewrite a shared object's dtype
    payload = b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x02\x00\x00\x00i1sb."
    write_pickle(tmp_path / "poison.pth", payload)
    with pytest.raises(CheckpointError, match=r"poison\.pth: .*sets attributes of _StorageType: refused"):
        read_checkpoint(tmp_path / "poison.pth")
    expected = {"w": rng.normal(size=4).astype(np.float32)}
    torch_format.save_zip(tmp_path / "after.pth", expected)  # a good file still reads as before
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "after.pth")[0]["w"], expected["w"])


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        # _rebuild_tensor_v2("storage?", 0, (2,), (1,)): a string where a storage belongs
        (
            b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00sK\x00K\x02\x85K\x01\x85tRs.",
            "malformed storage",
        ),
        (b"\x80\x02K\x05.", "expected a state dict"),
    ],
)
def test_malformed_pickles_are_reported_with_the_file(tmp_path, payload, problem):
    write_pickle(tmp_path / "odd.pth", payload)
    with pytest.raises(CheckpointError, match=rf"odd\.pth: .*{problem}"):
        read_checkpoint(tmp_path / "odd.pth")


def test_a_huge_storage_count_is_refused_before_any_allocation(tmp_path):
    path = tmp_path / "huge.pth"
    torch_format.save_legacy(path, {"w": np.zeros(4, np.float32)})
    data = path.read_bytes()
    count = struct.pack("<q", 4)
    at = data.rindex(count)
    path.write_bytes(data[:at] + struct.pack("<q", 2**40) + data[at + 8 :])
    with pytest.raises(CheckpointError, match=r"huge\.pth: storage 0 is cut short"):
        read_checkpoint(path)


def test_a_wrapped_state_dict_is_unwrapped(tmp_path, rng):
    expected = {"w": rng.normal(size=3).astype(np.float32)}
    with open(tmp_path / "plain.pth", "wb"):
        pass
    torch_format.save_zip(tmp_path / "plain.pth", expected)
    loaded, _ = read_checkpoint(tmp_path / "plain.pth")
    np.testing.assert_array_equal(loaded["w"], expected["w"])

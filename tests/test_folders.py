"""Two-sample tests on two folders of images (mmdstyle/analysis/folders.py, `mmdstyle test DIR DIR`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mmdstyle import cli
from mmdstyle.analysis.folders import collect_folder_samples, folder_two_sample_tests
from mmdstyle.features import random_vgg19
from mmdstyle.features.layers import extract_batch_samples, extract_samples
from tests.helpers import TINY_VGG_WIDTHS

LAYERS = ("relu1_1", "relu2_1")


@pytest.fixture(scope="module")
def network():
    return random_vgg19(0, widths=TINY_VGG_WIDTHS)


@pytest.fixture
def folders(tmp_path):
    """Folders of 5 and 4 noise images of several sizes, the second brighter; a text file in the first."""
    rng = np.random.default_rng(0)
    for name, count, shift in (("a", 5, 0.0), ("b", 4, 0.35)):
        (tmp_path / name).mkdir()
        for index in range(count):
            pixels = np.clip(rng.random((30 + 4 * index, 40, 3)) * 0.6 + shift, 0.0, 1.0)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(tmp_path / name / f"{index}.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    return tmp_path / "a", tmp_path / "b"


def test_a_batch_gives_each_image_its_own_samples(network, rng):
    images = rng.random((3, 24, 24, 3)).astype(np.float32)
    batch = extract_batch_samples(network, images, LAYERS)
    for index, image in enumerate(images):
        alone = extract_samples(network, image, LAYERS)
        for layer in LAYERS:
            # the same convolutions, batched by vmap: equal up to float32 summation order
            np.testing.assert_allclose(batch[layer][index], alone[layer], rtol=1e-5, atol=1e-6)


def test_the_kept_positions_do_not_depend_on_the_batch_size(network, folders):
    def collect(batch_size):
        return collect_folder_samples(
            folders[1],
            extractor=network,
            layers=LAYERS,
            size=16,
            positions_per_image=7,
            batch_size=batch_size,
        )

    (one_at_a_time, count), (three_at_a_time, _) = collect(1), collect(3)
    assert count == 4
    for layer in LAYERS:
        assert one_at_a_time[layer].shape == (4 * 7, one_at_a_time[layer].shape[1])
        np.testing.assert_allclose(one_at_a_time[layer], three_at_a_time[layer], rtol=1e-5, atol=1e-6)


def test_two_folders_of_different_images_are_told_apart(network, folders):
    skipped = []
    report = folder_two_sample_tests(
        *folders,
        extractor=network,
        size=16,
        layers=LAYERS,
        positions_per_image=12,
        batch_size=2,
        on_skip=lambda path, reason: skipped.append(path.name),
        kernel="gaussian(sigma=median)@rff(256)",
        num_permutations=99,
    )
    assert skipped == ["notes.txt"]
    assert "(5 images)" in report.source
    assert "(4 images)" in report.source
    assert [test.samples for test in report.tests] == [(60, 48), (60, 48)]
    assert all(test.different and test.p_value == 0.01 for test in report.tests)


def test_an_unreadable_file_warns_or_stops(network, folders):
    options = {"extractor": network, "layers": LAYERS, "size": 16, "positions_per_image": 4}
    with pytest.warns(UserWarning, match=r"skipped .*notes\.txt"):
        collect_folder_samples(folders[0], **options)
    with pytest.raises(ValueError, match=r"notes\.txt.*skip_unreadable=True"):
        collect_folder_samples(folders[0], skip_unreadable=False, **options)


def test_folders_without_images_are_refused(network, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    options = {"extractor": network, "layers": LAYERS}
    with pytest.raises(ValueError, match="holds no files"):
        collect_folder_samples(tmp_path / "empty", **options)
    with (
        pytest.raises(ValueError, match=r"no readable image \(1 file"),
        pytest.warns(UserWarning, match="a.txt"),
    ):
        collect_folder_samples(tmp_path / "text", **options)
    with pytest.raises(ValueError, match="is not a folder"):
        collect_folder_samples(tmp_path / "missing", **options)


def test_cli_tests_two_folders(tiny_vgg, folders, tmp_path, capsys):
    report = tmp_path / "t.json"
    arguments = ["--extractor", tiny_vgg, "--size", "16", "--layers", "relu1_1", "--per-image", "8"]
    assert (
        cli.main(["test", *map(str, folders), *arguments, "--permutations", "19", "--json", str(report)]) == 0
    )
    captured = capsys.readouterr()
    assert "skipped" in captured.err
    assert "notes.txt" in captured.err
    data = json.loads(report.read_text())
    assert data["folders"] == [str(folder) for folder in folders]
    assert data["layers"][0]["samples"] == [40, 32]


def test_cli_stops_at_an_unreadable_file_when_asked(tiny_vgg, folders, tmp_path, capsys):
    report = tmp_path / "t.json"
    arguments = ["--extractor", tiny_vgg, "--size", "16", "--layers", "relu1_1", "--json", str(report)]
    assert cli.main(["test", *map(str, folders), *arguments, "--unreadable", "stop"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert not report.exists()


def test_cli_refuses_a_folder_beside_an_image(tiny_vgg, folders, capsys):
    assert cli.main(["test", str(folders[0]), str(folders[1] / "0.png"), "--extractor", tiny_vgg]) == 2
    assert "two folders or two images" in capsys.readouterr().err

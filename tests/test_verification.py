"""The identity report and the `mmdstyle verify` command."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mmdstyle import cli
from mmdstyle.verification import LayerIdentity, synthetic_vgg_layers, verify_gram_mmd_identity


@pytest.fixture(scope="module")
def layers():
    # The shapes `mmdstyle verify --size 16` uses below, so compiled programs are shared.
    return synthetic_vgg_layers(image_size=16, seed=3)


def test_synthetic_layers_have_vgg_shapes_and_relu_statistics(layers):
    assert list(layers) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert layers["relu1_1"][0].shape == (16 * 16, 64)
    assert layers["relu5_1"][1].shape == (1, 512)
    x = layers["relu2_1"][0]
    assert x.min() == 0.0
    assert 0.2 < np.mean(x == 0.0) < 0.9


def test_report_passes_and_serialises(layers):
    report = verify_gram_mmd_identity(layers, source="test")
    assert report.passed
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is True
    assert data["source"] == "test"
    assert [row["layer"] for row in data["layers"]] == list(layers)
    expected_fields = {field.name for field in LayerIdentity.__dataclass_fields__.values()} | {"passed"}
    assert set(data["layers"][0]) == expected_fields
    for row in data["layers"]:
        assert row["route"] == "feature"
        assert max(row["value_error"], row["gradient_error"], row["route_error"]) <= 1e-10
        assert (
            row["unbiased_gap"] is None or row["unbiased_gap"] < 0
        )  # the unbiased estimate drops the positive self-pairs
    assert "relu3_1" in report.format_table()
    assert "All float64 identities hold" in report.format_table()


def test_a_failing_identity_is_reported(layers):
    # A tolerance no float64 computation can meet: the check must say so, not pass silently.
    report = verify_gram_mmd_identity({"relu1_1": layers["relu1_1"]}, tolerance=1e-30)
    assert not report.passed
    assert "FAILED" in report.format_table()


def test_bad_layers_are_refused():
    with pytest.raises(ValueError, match="layers is empty"):
        verify_gram_mmd_identity({})
    with pytest.raises(ValueError, match="same shape"):
        verify_gram_mmd_identity({"a": (np.ones((4, 3)), np.ones((5, 3)))})
    with pytest.raises(ValueError, match="multiple of 16"):
        synthetic_vgg_layers(image_size=40)


def test_cli_verify_writes_json_and_exits_0(tmp_path, capsys):
    path = tmp_path / "report.json"
    assert cli.main(["verify", "--size", "16", "--json", str(path)]) == 0
    assert "relu1_1" in capsys.readouterr().out
    assert json.loads(path.read_text())["passed"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left behind


def test_cli_verify_exits_1_when_an_identity_fails(capsys):
    assert cli.main(["verify", "--size", "16", "--tolerance", "1e-300"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["verify", "--size", "20"])
    assert exit_info.value.code == 2
    assert "multiple of 16" in capsys.readouterr().err


def test_console_entry_point_runs_in_a_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "mmdstyle", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0
    assert "verify" in result.stdout

"""``mmdstyle transfer`` / ``synthesize`` / ``demo``: end to end, outputs, and bad input."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmdstyle import cli
from mmdstyle.style.images import load_image, save_image

pytestmark = pytest.mark.usefixtures("standard_dtype_promotion", "tiny_vgg")  # see conftest
FAST = ["--extractor", "tiny-vgg", "--size", "32", "--style-layers", "relu1_1,relu2_1", "--quiet"]


def test_synthesize_end_to_end_in_a_fresh_process(tmp_path):
    # A user's fresh process: no test compilation cache, the command's own in MMDSTYLE_HOME.
    environment = {name: value for name, value in os.environ.items() if not name.startswith("JAX_")}
    environment["MMDSTYLE_HOME"] = str(tmp_path / "home")
    output = tmp_path / "texture.png"
    command = [
        *(sys.executable, "-m", "mmdstyle", "synthesize", "sample:gravel", "-o", str(output), "--size", "32"),
        *("--steps", "4", "--extractor", "random-vgg19", "--style-layers", "relu1_1,relu2_1", "--quiet"),
    ]
    run = functools.partial(subprocess.run, command, capture_output=True, text=True, timeout=600, check=False)
    finished = run(env=environment)
    assert finished.returncode == 0, finished.stderr
    assert output.is_file()
    report = json.loads((tmp_path / "texture.json").read_text())
    assert len(report["history"]) == 4
    assert report["config"]["extractor"] == "random-vgg19"
    assert (tmp_path / "texture-loss.png").is_file()

    # The compiled programs were kept; a damaged entry costs a recompilation, never the run. The
    # largest (the step) is damaged; the second run reads the others.
    entries = [path for path in (tmp_path / "home" / "xla").rglob("*") if path.is_file()]
    assert len(entries) > 1
    max(entries, key=lambda path: path.stat().st_size).write_bytes(b"not a compiled program")
    first = load_image(output)
    finished = run(env=environment)
    assert finished.returncode == 0, finished.stderr
    # the same program, compiled or read back: the same image, to the 8-bit rounding of a pixel
    np.testing.assert_allclose(load_image(output), first, rtol=0, atol=1.5 / 255)


def test_the_compilation_cache_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("MMDSTYLE_HOME", str(tmp_path))
    assert cli.compilation_cache() == tmp_path / "xla"
    for off in ("0", "off", "false"):
        monkeypatch.setenv("MMDSTYLE_COMPILATION_CACHE", off)
        assert cli.compilation_cache() is None
    monkeypatch.delenv("MMDSTYLE_COMPILATION_CACHE")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert cli.compilation_cache() is None  # JAX's own setting stands


def test_transfer_writes_image_history_plot_and_snapshots(tmp_path):
    output = tmp_path / "out.png"
    code = cli.main(
        [
            *("transfer", "sample:chelsea", "sample:hubble", "-o", str(output), "--steps", "4"),
            *("--save-every", "2"),
            *("--history", str(tmp_path / "h.json"), "--plot", str(tmp_path / "p.png")),
            *("--loss", "0.5*mmd:linear + 0.5*bn", "--layer-loss", "relu1_1=gram", *FAST),
        ]
    )
    assert code == 0
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["h.json", "out-00002.png", "out-00004.png", "out.png", "p.png"]
    config = json.loads((tmp_path / "h.json").read_text())["config"]
    assert config["layer_losses"] == {"relu1_1": "gram"}
    assert config["content_weight"] == 1.0  # VGG-19's default alpha, resolved and recorded


def test_demo_has_a_default_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--steps", "2", "--no-plot", *FAST]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mmdstyle-demo.json", "mmdstyle-demo.png"]


def test_an_overflowing_run_exits_1_and_keeps_the_last_good_image(tmp_path, capsys):
    output = tmp_path / "out.png"
    code = cli.main(
        [
            "synthesize",
            "-o",
            str(output),
            "--steps",
            "4",
            "--optimizer",
            "adam",
            "--learning-rate",
            "1e30",
            *FAST,
        ]
    )
    assert code == 1
    assert "the last with a finite loss" in capsys.readouterr().err
    assert output.is_file()
    assert json.loads((tmp_path / "out.json").read_text())["stopped_early"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["transfer", "missing.jpg", "sample:hubble"], "no image file at 'missing.jpg'"),
        (["transfer", "sample:chelsea", "sample:mona-lisa"], "no sample image 'mona-lisa'"),
        (["transfer", "sample:chelsea"], "CONTENT image and at least one STYLE"),
        (["synthesize", "--loss", "mmd:gauss"], "unknown kernel 'gauss'"),
        (["synthesize", "--loss", "mmd:" + "(" * 500 + "linear" + ")" * 500], "nested more than 64 deep"),
        (["synthesize", "--extractor", "vgg16"], "unknown extractor 'vgg16'"),
        (["synthesize", "--style-layers", "relu1_1,fc7"], "unknown layer name(s) ['fc7']"),
        (["synthesize", "--steps", "0"], "mmdstyle: --steps must be a positive integer"),
        (["synthesize", "--style-weight", "nan"], "mmdstyle: --style-weight must be a finite number"),
        (["transfer", "--layer-loss", "relu3_1=gram"], "mmdstyle: --layer-loss names layers that are not"),
        (["transfer", "--style-blend-weights", "1,2"], "mmdstyle: --style-blend-weights must give one"),
        (["synthesize", "--loss", "mmd:gaussian@rff(7)"], "num_features must be even"),
        (["synthesize", "--loss", "mmd:gaussian@sliced"], "route='sliced' cannot take gaussian"),
        (
            ["synthesize", "--loss", "mmd:energy@rff", "--estimator", "biased"],
            "route='rff' cannot take energy",
        ),
        (
            ["synthesize", "--loss", "mmd:gaussian@rff", "--estimator", "linear"],
            "has no random route",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message_and_writes_nothing(tmp_path, capsys, arguments, message):
    command, *rest = arguments
    code = cli.main([command, *FAST, *rest, "-o", str(tmp_path / "out.png")])  # the test's options win
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_bad_plot_name_is_refused_before_running(tmp_path, capsys):
    code = cli.main(["synthesize", *FAST, "-o", str(tmp_path / "out.png"), "--plot", str(tmp_path / "p.xyz")])
    assert code == 2
    assert "--plot" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_snapshots_follow_each_stage_of_a_pyramid(tmp_path):
    output = tmp_path / "out.png"
    arguments = ["--scales", "16,32", "--steps", "5", "--save-every", "5", "--no-plot"]
    assert cli.main(["synthesize", *FAST, "-o", str(output), *arguments]) == 0
    assert sorted(path.name for path in tmp_path.glob("out-*.png")) == ["out-00005.png", "out-00010.png"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-o", "out.xyz"], "cannot tell the image format"),
        (["-o", "missing/out.png"], "-o 'missing/out.png': the folder 'missing' does not exist"),
        (["-o", "folder"], "-o 'folder' is a folder"),
        (["-o", "/proc/out.png"], "-o '/proc/out.png': cannot write in the folder '/proc'"),
        (["-o", "out.png", "--history", "out.png"], "-o and --history both name 'out.png'"),
        (["-o", "out.png", "--plot", "out.png"], "-o and --plot both name 'out.png'"),
        (["-o", "out.png", "--history", "out-loss.png"], "--history and --plot both name 'out-loss.png'"),
        (["-o", "out.png", "--plot", "folder/../out.png"], "both name"),  # the same file, spelt otherwise
        (["-o", "out.png", "--save-every", "2", "--plot", "out-00002.png"], "the name of a snapshot"),
    ],
)
def test_bad_outputs_are_refused_before_running(tmp_path, monkeypatch, capsys, options, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    assert cli.main(["synthesize", *options, *FAST]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert error.count("\n") == 1, error  # one line
    assert [path.name for path in tmp_path.iterdir()] == ["folder"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_a_folder_without_write_permission_is_refused_before_running(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    assert cli.main(["synthesize", "-o", str(folder / "out.png"), *FAST]) == 2
    assert "cannot write in the folder" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_at_the_end_is_rescued(tmp_path, monkeypatch, capsys):
    # a disk that fills up during the run: the checks passed, the final rename fails once
    output = tmp_path / "out.png"
    replace = os.replace

    def full_disk(source, destination):
        if os.fspath(destination) == str(output):
            raise OSError(28, "No space left on device")
        replace(source, destination)

    monkeypatch.setattr(os, "replace", full_disk)
    assert cli.main(["synthesize", "-o", str(output), "--steps", "2", "--no-plot", *FAST]) == 1
    rescued = tmp_path / "out.rescued.png"
    assert f"could not write -o '{output}' (No space left on device); saved it as '{rescued}'" in (
        capsys.readouterr().err
    )
    assert load_image(rescued).shape == (32, 32, 3)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.json", "out.rescued.png"]


def test_a_snapshot_that_cannot_be_written_does_not_stop_the_run(tmp_path, monkeypatch, capsys):
    # the folder fills up after the checks: the second snapshot fails, the run goes on without
    # snapshots and writes its image; exit status 1, since an output asked for is missing
    from mmdstyle.cli import transfer as command

    output = tmp_path / "out.png"
    save = command.save_image

    def filling_up(path, image):
        if Path(path).name == "out-00004.png":
            raise OSError(28, "No space left on device")
        save(path, image)

    monkeypatch.setattr(command, "save_image", filling_up)
    options = ["--steps", "8", "--save-every", "2", "--optimizer", "adam", "--no-plot", *FAST]
    assert cli.main(["synthesize", "-o", str(output), *options]) == 1
    error = capsys.readouterr().err
    assert f"could not write the snapshot '{tmp_path / 'out-00004.png'}' (No space left on device)" in error
    assert "snapshots from" in error
    assert "Traceback" not in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out-00002.png", "out.json", "out.png"]
    assert len(json.loads((tmp_path / "out.json").read_text())["history"]) == 8


def test_a_run_that_ends_on_a_flat_loss_says_so(tmp_path, capsys):
    output = tmp_path / "out.png"
    options = ["--steps", "40", "--min-progress", "0.99", "--optimizer", "adam", "--no-plot", *FAST]
    assert cli.main(["synthesize", "-o", str(output), *options]) == 0
    assert "ended early" not in capsys.readouterr().err  # --quiet: errors only
    options.remove("--quiet")
    assert cli.main(["synthesize", "-o", str(output), *options]) == 0
    error = capsys.readouterr().err
    assert "the run ended early, after step 19 (40 steps per stage)" in error
    assert "Lower --min-progress (0: every step)" in error
    assert len(json.loads((tmp_path / "out.json").read_text())["history"]) == 20


def interrupting(monkeypatch, *signals):
    """Send ``signals`` to this process when the run reports its first chunk of steps."""
    from mmdstyle.cli import transfer as command

    run = command.transfer

    def transfer(*arguments, on_chunk, **options):
        def first_chunk(step, image, records):
            on_chunk(step, image, records)
            if records[0]["step"] == 0:
                for number in signals:
                    os.kill(os.getpid(), number)

        return run(*arguments, on_chunk=first_chunk, **options)

    monkeypatch.setattr(command, "transfer", transfer)


@pytest.mark.parametrize(("number", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_keeps_its_steps_and_says_how_to_go_on(
    tmp_path, monkeypatch, capsys, number, status
):
    # Ctrl-C (or SIGTERM) after step 2 of 300, at a step boundary: the run stops there and writes
    # what it has
    interrupting(monkeypatch, number)
    output = tmp_path / "out.png"
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    options = ["--steps", "300", "--save-every", "2", "--optimizer", "adam", *FAST]
    assert cli.main(["synthesize", "-o", str(output), *options]) == status
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    error = capsys.readouterr().err
    assert f"interrupted after 2 of 300 steps; wrote {output}" in error
    assert f"--init {output}" in error
    assert "Traceback" not in error
    history = json.loads((tmp_path / "out.json").read_text())
    assert len(history["history"]) == 2
    assert history["stopped_early"] == "stopped on request after step 1"
    assert load_image(output).shape == (32, 32, 3)
    assert (tmp_path / "out-loss.png").is_file()


def test_a_second_ctrl_c_aborts_at_once(tmp_path, monkeypatch, capsys):
    interrupting(monkeypatch, signal.SIGINT, signal.SIGINT)
    output = tmp_path / "out.png"
    assert cli.main(["synthesize", "-o", str(output), "--steps", "300", "--save-every", "2", *FAST]) == 130
    assert "mmdstyle: aborted." in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out-00002.png"]  # the snapshot before it


def test_an_image_of_a_few_pixels_is_refused(tmp_path, capsys):
    save_image(tmp_path / "dot.png", np.full((1, 1, 3), 0.5))
    assert cli.main(["synthesize", str(tmp_path / "dot.png"), "-o", str(tmp_path / "out.png"), *FAST]) == 2
    assert "dot.png is 1 x 1 pixels: too few to carry a style" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["dot.png"]


def test_a_non_image_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.jpg").write_text("hello")
    assert cli.main(["synthesize", str(tmp_path / "notes.jpg"), "-o", str(tmp_path / "out.png"), *FAST]) == 2
    assert "not an image" in capsys.readouterr().err


def test_help_lists_the_loss_language_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["transfer", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "mmd:gaussian(sigma=median)" in text
    assert "examples:" in text


def test_library_names_of_settings_become_the_options_typed():
    from mmdstyle.cli.command import in_flags

    assert (
        in_flags("style_weight must be >= 0; tv_weight too") == "--style-weight must be >= 0; --tv-weight too"
    )
    assert in_flags("steps must be a positive integer") == "--steps must be a positive integer"
    assert in_flags("the loss after 3 steps") == "the loss after 3 steps"  # prose keeps its words
    assert in_flags("layer_losses names relu9_1") == "--layer-loss names relu9_1"
    assert in_flags("--style-weight was given") == "--style-weight was given"


def test_every_setting_named_in_messages_is_an_option():
    from mmdstyle.cli.command import FLAGS

    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices.values()
    options = {flag for command in commands for action in command._actions for flag in action.option_strings}
    assert set(FLAGS.values()) <= options, set(FLAGS.values()) - options
    assert {"style_weight", "style_blend_weights", "redraw_every", "loss"} <= set(FLAGS)


def test_the_time_reported_covers_start_up_and_compilation():
    from mmdstyle.cli.transfer import _summary, seconds_since_the_process_started

    history = [{"loss": 2.0, "seconds": 1.0, "compile_seconds": 3.0}, {"loss": 1.5, "seconds": 2.5}]
    assert _summary(history, 10.0) == (
        "loss 1.5 after 2 steps; 10.0 s in all: 2.5 s stepping, 3.0 s compiling, 4.5 s for the rest"
    )
    if sys.platform.startswith("linux"):  # this test process started before this line
        assert 0.0 < seconds_since_the_process_started() < 24 * 3600


def test_a_size_far_beyond_this_machine_is_refused_within_seconds(tmp_path, capsys):
    # 20000 px through the multi-scale network: terabytes; refused from shapes, nothing resized
    output = tmp_path / "out.png"
    options = ["--extractor", "multiscale-random", "--size", "20000", "--quiet"]
    assert cli.main(["synthesize", "-o", str(output), *options]) == 2
    error = capsys.readouterr().err
    assert "a 20000 x 20000 image needs at least" in error
    assert "Use a size below" in error
    assert list(tmp_path.iterdir()) == []

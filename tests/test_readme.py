"""The README's Python examples run, and its commands pass their checks, as written."""

import re

import numpy as np
import pytest

from tests import REPOSITORY

README = REPOSITORY / "README.md"


@pytest.mark.usefixtures("standard_dtype_promotion")  # as a user's session: see conftest
def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README has no Python example"
    for block in blocks:
        if "jax.distributed.initialize()" in block:
            # one process per host: tests/test_sharded.py runs this recipe with two processes
            continue
        exec(compile(block, str(README), "exec"), {})


def readme_commands() -> list[str]:
    """The ``mmdstyle`` command lines of the README, as written: its shell blocks' lines and the
    commands quoted in its prose, except those with placeholders (``[CONTENT STYLE]``, ``IMAGE_A``)."""
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    joined = [block.replace("\\\n", " ") for block in blocks]  # continued lines as one
    lines = [line for block in joined for line in block.splitlines() if line.startswith("mmdstyle ")]
    quoted = [" ".join(span.split()) for span in re.findall(r"(?<!`)`(mmdstyle [^`]+)`", text)]
    return lines + [command for command in quoted if not re.search(r"\[|\b[A-Z][A-Z_]+\b", command)]


#: The commands that take ``--check``: every check, then exit 0 without the work.
CHECKED = ("transfer", "synthesize", "demo", "compare", "verify", "test")
#: Options whose value is a file the command writes (not an image to stand in for).
WRITTEN = ("-o", "--output", "--json", "--plot", "--history")


def test_readme_commands_pass_every_check_as_written(tmp_path, monkeypatch, capsys):
    # each command that does work, with --check: images, specs, layers, outputs (and memory)
    # checked, nothing run; the user's own images (photo.jpg, ...) are stand-ins here
    import shlex

    from mmdstyle import cli
    from mmdstyle.style.images import save_image

    monkeypatch.chdir(tmp_path)
    commands = [shlex.split(line, comments=True) for line in readme_commands()]
    runs = [words[1:] for words in commands if words[1] in CHECKED and "--help" not in words]
    assert {arguments[0] for arguments in runs} == set(CHECKED), commands
    assert len(runs) >= 12, commands
    stand_in = np.random.default_rng(0).uniform(size=(48, 64, 3))
    stand_ins = set()
    for arguments in runs:
        written = {arguments[i + 1] for i, word in enumerate(arguments[:-1]) if word in WRITTEN}
        for word in arguments:
            if word.endswith((".jpg", ".png")) and word not in written:
                save_image(word, stand_in)
                stand_ins.add(word)
            elif word.endswith("/"):  # a folder of images
                (tmp_path / word).mkdir(exist_ok=True)
                save_image(tmp_path / word / "0.png", stand_in)
                stand_ins.add(word.rstrip("/"))
        quiet = ["--quiet"] if arguments[0] not in ("verify", "test") else []
        assert cli.main([*arguments, "--check", *quiet]) == 0, (arguments, capsys.readouterr().err)
    assert "Traceback" not in capsys.readouterr().err
    assert {path.name for path in tmp_path.iterdir()} == stand_ins  # checked, nothing written

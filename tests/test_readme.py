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
        exec(compile(block, str(README), "exec"), {})


def readme_commands() -> list[str]:
    """The ``mmdstyle`` command lines of the README's shell blocks, as written."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.startswith("mmdstyle ")]


def test_readme_commands_pass_every_check_as_written(tmp_path, monkeypatch, capsys):
    # each transfer / synthesize / demo command with --check: images, specs, layers, outputs and
    # memory checked, nothing run; the user's own images (photo.jpg, ...) are stand-ins here
    import shlex

    from mmdstyle import cli
    from mmdstyle.style.images import save_image

    monkeypatch.chdir(tmp_path)
    commands = [shlex.split(line, comments=True) for line in readme_commands()]
    runs = [words[1:] for words in commands if words[1] in ("transfer", "synthesize", "demo")]
    assert len(runs) >= 5, commands
    stand_in = np.random.default_rng(0).uniform(size=(48, 64, 3))
    stand_ins = set()
    for arguments in runs:
        output = arguments[arguments.index("-o") + 1]
        for word in arguments:
            if word.endswith((".jpg", ".png")) and word != output:
                save_image(word, stand_in)
                stand_ins.add(word)
        assert cli.main([*arguments, "--check", "--quiet"]) == 0, (arguments, capsys.readouterr().err)
    assert capsys.readouterr().err == ""
    assert {path.name for path in tmp_path.iterdir()} == stand_ins  # checked, nothing written

"""The README's Python example runs as written."""

import re

import pytest

from tests import REPOSITORY

README = REPOSITORY / "README.md"


@pytest.mark.usefixtures("standard_dtype_promotion")  # as a user's session: see conftest
def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})

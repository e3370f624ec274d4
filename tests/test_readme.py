"""README.md as written: its python blocks and its "Command line" bash block run, offline, in a folder holding what
`make demo` writes (tests/snippets.py says what stands in for it and for the Hub checkpoint). The README's console
blocks install and run make targets: they are not run here.
"""

import re
import shutil

import pytest

from conftest import REPO
from snippets import HUB_CHECKPOINT, code_blocks, run_bash, run_python, shell_commands


README = (REPO / "README.md").read_text()


def section(title):
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_command_line_block_runs_as_written(snippet_workdir):
    (block,) = code_blocks(section("Command line"), "bash")
    commands = shell_commands(block)
    assert any(command.startswith("hf-token-prune classify") for command in commands)
    for command in commands:
        run_bash(command, snippet_workdir)


def test_python_snippets_run_as_written(snippet_workdir):
    snippets = code_blocks(README, "python")
    assert len(snippets) >= 3 and any(HUB_CHECKPOINT in snippet for snippet in snippets)
    run_python(snippets, snippet_workdir)


def test_every_block_is_run_or_an_install_command():
    fences = re.findall(r"^```(\w*)\n", README, re.M)
    assert set(fences) <= {"python", "bash", "console", ""}, fences
    assert code_blocks(README, "bash") == code_blocks(section("Command line"), "bash")
    for block in code_blocks(README, "console"):  # not run: set-up and make targets
        assert all(line.startswith(("make ", "source ", "pip install ")) for line in block.splitlines()), block
    assert len(README.splitlines()) <= 200


@pytest.fixture(autouse=True, scope="module")
def _ffmpeg():
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is needed (make setup installs it): the README reads audio files with it")

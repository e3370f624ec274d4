"""The docs site: it builds with `mkdocs build --strict`, a broken link, anchor or API reference fails the build, and
every python and bash block of its pages runs as written (tests/snippets.py: the folder they run in). A page's bash
blocks run before its python blocks, which read what they write (an exported or converted model). `console` blocks
are not run: a user-guide page says why in the paragraph before each; the reports are records of runs.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from snippets import code_blocks, run, run_bash, run_python, shell_commands


DOCS = REPO / "docs"
PAGES = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
RUN_PAGES = [page for page in PAGES if code_blocks((DOCS / page).read_text(), "python")
             or code_blocks((DOCS / page).read_text(), "bash")]  # fmt: skip


def mkdocs_build(config, site):
    if importlib.util.find_spec("mkdocstrings") is None:
        pytest.fail("building the docs needs the docs extra: pip install -e '.[docs]' (make docs installs it)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip


def test_docs_build_strict(tmp_path):
    result = mkdocs_build(REPO / "mkdocs.yml", tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr
    cli = (tmp_path / "cli" / "index.html").read_text()
    commands = ("classify", "finetune", "tag", "analyze", "calibrate", "macs", "export", "convert", "explore")
    assert all(f'<h2 id="{command}">' in cli for command in commands)
    assert cli.count("usage: ") == len(commands) + 1  # hf-token-prune --help, then each command's
    api = (tmp_path / "api" / "index.html").read_text()
    assert "hf_token_prune.PrunedASTConfig" in api and "keep_rate" in api


def docs_copy(root):
    """A copy of the docs next to links to what they build from (package, hooks, changelog)."""
    shutil.copytree(DOCS, root / "docs")
    for name in ("mkdocs.yml", "CHANGELOG.md", "hf_token_prune", "hf_token_prune_cli.py", "scripts"):
        (root / name).symlink_to(REPO / name)
    return root


@pytest.mark.full
@pytest.mark.parametrize(
    "page, broken, problem",
    [
        ("deploy.md", "[the models page](model.md)", "contains a link 'model.md', but the target is not found"),
        ("deploy.md", "[config](models.md#no-such-section)", "does not contain an anchor '#no-such-section'"),
        ("api.md", "::: hf_token_prune.macs.count_mac", "Could not collect 'hf_token_prune.macs.count_mac'"),
    ],
)
def test_docs_build_fails_on_a_broken_link_or_reference(tmp_path, page, broken, problem):
    root = docs_copy(tmp_path / "project")
    path = root / "docs" / page
    path.write_text(path.read_text() + f"\n{broken}\n")
    result = mkdocs_build(root / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0 and problem in result.stderr, result.stderr[-4000:]


def test_every_code_block_is_run_or_says_why_not():
    for page in PAGES:
        text = (DOCS / page).read_text()
        fences = re.findall(r"^```(\w*)\n", text, re.M)
        assert set(fences) <= {"python", "bash", "console", "text", ""}, (page, fences)
        if page.startswith("reports/"):
            assert "bash" not in fences, f"{page}: a report's commands are records, in console blocks"
            continue
        for before in re.findall(r"((?:^.+\n)+)\n```console\n", text, re.M):
            assert "not run" in before, f"{page}: say why this console block is not run:\n{before}"


@pytest.mark.full
@pytest.mark.parametrize("page", RUN_PAGES)
def test_docs_snippets_run_as_written(snippet_workdir, page):
    text = (DOCS / page).read_text()
    for block in code_blocks(text, "bash"):
        for command in shell_commands(block):
            run_bash(command, snippet_workdir)
    if code_blocks(text, "python"):
        run_python(code_blocks(text, "python"), snippet_workdir)


def test_finetune_help_as_the_docs_show_it(tmp_path):
    result = run([sys.executable, str(REPO / "recipes" / "finetune.py"), "--help"], tmp_path)
    assert result.returncode == 0 and "--help_all" in result.stdout


@pytest.fixture(autouse=True, scope="module")
def _ffmpeg():
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is needed (make setup installs it): the docs read audio files with it")

"""mkdocs hook (mkdocs.yml `hooks:`): the command-line reference is what each command prints for `--help` when the
site is built, so docs/cli.md never goes stale and a new command appears in it by itself.

The line `<!-- cli-reference -->` in a page becomes a section per command of `hf-token-prune` (and one for
`hf-token-prune --help`), each holding that command's `--help` text as the installed entry point
(`hf_token_prune_cli:main`) prints it in an 80-column terminal.
"""

import contextlib
import io
import os
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MARKER = "<!-- cli-reference -->"


def command_help(argv: list[str]) -> str:
    import hf_token_prune_cli

    printed, program, columns = io.StringIO(), sys.argv[0], os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        with contextlib.redirect_stdout(printed):
            try:
                status = hf_token_prune_cli.main(argv)
            except SystemExit as done:  # argparse's --help exits
                status = done.code
    finally:
        sys.argv[0] = program
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    text = printed.getvalue()
    if status not in (0, None) or not text.startswith("usage:"):
        raise RuntimeError(f"hf-token-prune {' '.join(argv)} printed no help (exit status {status})")
    return text.rstrip()


def cli_reference() -> str:
    import hf_token_prune_cli

    sections = [("hf-token-prune", ["--help"])] + [(name, [name, "--help"]) for name in hf_token_prune_cli.COMMANDS]
    return "\n\n".join(f"## {title}\n\n```text\n{command_help(argv)}\n```" for title, argv in sections)


def on_page_markdown(markdown, page, config, files):
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown

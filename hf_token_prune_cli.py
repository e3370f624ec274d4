"""`hf-token-prune`, the command line installed with the package: one subcommand per library entry point.

It lives outside the `hf_token_prune` package, so that `hf-token-prune --help` and a mistyped command import nothing of
it; each command imports only its module, hf_token_prune.commands.<command>.
`hf-token-prune COMMAND --help` (and `recipes/<script>.py --help`) prints the text that command's own parser printed
when `scripts/render_cli_help.py` last ran, shipped as package data, so it answers in a fraction of a second under
every allowed version of the dependencies: no parser takes text from them (finetune describes the TrainingArguments
flags it lists itself). A test renders the texts again from the live parsers and fails when they differ.
"""

import contextlib
import difflib
import importlib
import importlib.util
import io
import json
import os
import sys
from pathlib import Path


# command -> (module whose main(argv) runs it, summary)
COMMANDS = {
    "classify": ("hf_token_prune.commands.classify", "classify audio files at a chosen keep rate"),
    "finetune": ("hf_token_prune.commands.finetune", "fine-tune with a shrinking keep rate (--recipe demo, ast-esc50, ...)"),
    "tag": ("hf_token_prune.commands.tag", "label a long recording over time, in overlapping windows"),
    "analyze": ("hf_token_prune.commands.analyze", "the paper's analyses: which patches a model keeps, and why"),
    "calibrate": ("hf_token_prune.commands.calibrate", "the cheapest keep rate or keep mass within an accuracy budget"),
    "macs": ("hf_token_prune.commands.macs", "multiply-accumulates per keep rate, the paper's Table II"),
    "export": ("hf_token_prune.commands.export", "export a pruned model for deployment"),
    "convert": ("hf_token_prune.commands.convert", "an official AudioMAE checkpoint as a pruned model folder"),
    "explore": ("hf_token_prune.commands.explore", "a web app: which patches a model keeps, on your own audio"),
}
USAGE = "usage: hf-token-prune COMMAND [FLAGS ...]    (hf-token-prune COMMAND --help: its flags)"
# Every command's --help per program name (argparse's prog: the basename of sys.argv[0]), in the hf_token_prune package.
HELP_FILE = "cli_help.json"
HELP_COLUMNS = "80"  # argparse wraps to the terminal; the shipped text is wrapped as in an 80-column one


def _help():
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("hf-token-prune")
    except PackageNotFoundError:
        installed = "not installed"
    commands = "\n".join(f"  {name:<9} {summary}" for name, (_, summary) in COMMANDS.items())
    return (
        f"{USAGE}\n\nTopK token pruning for audio spectrogram transformers (hf-token-prune {installed}).\n\n"
        f"commands:\n{commands}\n\nexample:\n"
        "  hf-token-prune classify clip.wav --model_name_or_path outputs/demo --keep_rate 0.7\n"
    )


def help_environment() -> dict:
    """The Python the shipped texts were rendered under: argparse's layout differs slightly between its releases."""
    return {"python": "{}.{}".format(*sys.version_info[:2])}


def help_file() -> Path:
    # find_spec locates the package without running its __init__ (which imports torch)
    return Path(importlib.util.find_spec("hf_token_prune").origin).parent / HELP_FILE


def shipped_help(command: str, prog: str) -> str | None:
    """The shipped --help of `command` run as `prog`, or None when the package ships none for it."""
    try:
        shipped = json.loads(help_file().read_text())
    except (AttributeError, OSError, ValueError):
        return None
    return shipped.get("help", {}).get(command, {}).get(prog)


def render_help(command: str, prog: str) -> str:
    """What `command`'s main prints for `--help` when run as `prog`, in an 80-column terminal."""
    module = importlib.import_module(COMMANDS[command][0])
    saved_prog, saved_columns = sys.argv[0], os.environ.get("COLUMNS")
    sys.argv[0], os.environ["COLUMNS"] = prog, HELP_COLUMNS
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
            module.main(["--help"])
    finally:
        sys.argv[0] = saved_prog
        if saved_columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved_columns
    return printed.getvalue()


def run(command: str, argv: list[str]):
    """`command`'s main(argv), with sys.argv[0] as the program name; `--help` alone is answered from the shipped text."""
    if argv in (["-h"], ["--help"]):
        text = shipped_help(command, os.path.basename(sys.argv[0]))
        if text is not None:
            print(text, end="")
            return 0
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        print(f"hf-token-prune {command}: not available in this version of hf-token-prune.", file=sys.stderr)
        return 1
    return module.main(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(_help(), end="")
        return 0
    if not argv or argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1) if argv else []
        problem = f"unknown command {argv[0]!r}" if argv else "give a command"
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"{USAGE}\nhf-token-prune: error: {problem}{hint}: choose from {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    sys.argv[0] = f"hf-token-prune {argv[0]}"  # argparse names the command in its usage and errors
    try:
        result = run(argv[0], argv[1:])
    except KeyboardInterrupt:  # before the command's own error boundary is in place: while its modules import
        print(f"hf-token-prune {argv[0]}: interrupted (Ctrl-C).", file=sys.stderr)
        return 130  # hf_token_prune.errors.EXIT_INTERRUPTED: the package may be what was importing
    return result if isinstance(result, int) else 0  # finetune returns its Trainer


if __name__ == "__main__":
    sys.exit(main())

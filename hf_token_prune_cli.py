"""`hf-token-prune`, the command line installed with the package: one subcommand per library entry point.

It lives outside the `hf_token_prune` package because importing the package loads torch and transformers' models
(seconds): `hf-token-prune --help` and a mistyped command answer at once, and each command imports only its module.
"""

import difflib
import importlib
import sys


# command -> (module whose main(argv) runs it, summary)
COMMANDS = {
    "classify": ("hf_token_prune.classify", "classify audio files at a chosen keep rate"),
    "finetune": ("hf_token_prune.finetuning", "fine-tune with a shrinking keep rate (--recipe demo, ast-esc50, ...)"),
    "analyze": ("hf_token_prune.analysis.command", "the paper's analyses: which patches a model keeps, and why"),
    "macs": ("hf_token_prune.macs", "multiply-accumulates per keep rate, the paper's Table II"),
    "export": ("hf_token_prune.export", "export a pruned model for deployment"),
    "convert": ("hf_token_prune.convert_audiomae", "an official AudioMAE checkpoint as a pruned model folder"),
}
USAGE = "usage: hf-token-prune COMMAND [FLAGS ...]    (hf-token-prune COMMAND --help: its flags)"


def _help():
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("hf-token-prune")
    except PackageNotFoundError:
        installed = "not installed"
    commands = "\n".join(f"  {name:<9} {summary}" for name, (_, summary) in COMMANDS.items())
    return (
        f"{USAGE}\n\nTopK token pruning for audio spectrogram transformers (hf-token-prune {installed}).\n\n"
        f"commands:\n{commands}\n\nexample:\n  hf-token-prune classify clip.wav --model outputs/demo --keep_rate 0.7\n"
    )


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
    command, module_name = argv[0], COMMANDS[argv[0]][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        print(f"hf-token-prune {command}: not available in this version of hf-token-prune.", file=sys.stderr)
        return 1
    sys.argv[0] = f"hf-token-prune {command}"  # argparse names the command in its usage and errors
    result = module.main(argv[1:])
    return result if isinstance(result, int) else 0  # finetune returns its Trainer


if __name__ == "__main__":
    sys.exit(main())

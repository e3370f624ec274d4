"""Write hf_token_prune/cli_help.json: every command's `--help` as its live parser prints it, for each program name
it runs under, so `hf-token-prune COMMAND --help` answers without importing torch.

    python scripts/render_cli_help.py      # after changing a command's flags, or upgrading Python / transformers

tests/test_cli.py renders the same texts and fails while the file differs from them.
"""

import json
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import hf_token_prune_cli as cli  # noqa: E402


# The recipes/ scripts that run a command (through hf_token_prune_cli.run) under their own program name.
RECIPE_SCRIPTS = {"finetune": "finetune.py", "analyze": "analyze.py", "tag": "tag.py"}


def programs(command: str) -> list[str]:
    return [f"hf-token-prune {command}"] + ([RECIPE_SCRIPTS[command]] if command in RECIPE_SCRIPTS else [])


def render_all() -> dict:
    texts = {command: {prog: cli.render_help(command, prog) for prog in programs(command)} for command in cli.COMMANDS}
    return {"environment": cli.help_environment(), "help": texts}


def main():
    path = cli.help_file()
    path.write_text(json.dumps(render_all(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

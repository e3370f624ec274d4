"""Tag a recording longer than the model's window: a timeline of labels, the recording's top labels and a PNG.

    python recipes/tag.py recording.wav --model_name_or_path outputs/demo --hop 0.25 --min_score 0.8

The script is `hf_token_prune.commands.tag.main` (also `hf-token-prune tag`); `--help` lists its flags.
"""

import sys

from hf_token_prune_cli import run


def main(argv=None):
    return run("tag", sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

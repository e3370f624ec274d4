"""The paper's analyses of a pruned audio transformer on an audio classification split, as tables, figures and an index.

    python recipes/analyze.py --model_name_or_path outputs/demo --dataset_name audiofolder \\
        --data_dir data/keywords --split test --output_dir outputs/demo/analysis

The script is `hf_token_prune.commands.analyze.main` (also `hf-token-prune analyze`); `--help` lists the analyses.
"""

import sys

from hf_token_prune_cli import run


def main(argv=None):
    return run("analyze", sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

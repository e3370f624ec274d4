"""Fine-tune an audio transformer while its keep rate shrinks (TopK token pruning), then publish the pruned model.

    python recipes/finetune.py --recipe demo                      # small AST from scratch on data/keywords
    accelerate launch recipes/finetune.py --recipe ast-esc50 \\
        --model_name_or_path MIT/ast-finetuned-audioset-16-16-0.442 --fold 1 --keep_rate 0.7 \\
        --output_dir ast-esc50-kr0.7 [--push_to_hub]

The command is `hf_token_prune.commands.finetune.main` (also run by `hf-token-prune finetune`): argument dataclasses,
recipes, model, Trainer and model card are library calls in `hf_token_prune.finetuning`. `--help` lists the main
flags, `--help_all` all.
"""

import sys

from hf_token_prune_cli import run


def main(argv=None):
    return run("finetune", sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    main(sys.argv[1:])

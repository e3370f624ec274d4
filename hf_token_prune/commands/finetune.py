"""Fine-tune an audio transformer while its keep rate shrinks (TopK token pruning), then publish the pruned model.

    python recipes/finetune.py --recipe demo                      # small AST from scratch on data/keywords
    accelerate launch recipes/finetune.py --recipe ast-esc50 \\
        --model_name_or_path MIT/ast-finetuned-audioset-16-16-0.442 --fold 1 --keep_rate 0.7 \\
        --output_dir ast-esc50-kr0.7 [--push_to_hub]
    python recipes/finetune.py --dataset_name audiofolder --data_dir my_sounds/ --model_name_or_path <AST checkpoint> \\
        --keep_rate 0.7 --shrink_start_epoch 2 --shrink_epochs 5 --num_train_epochs 10 --output_dir my-model

A recipe (hf_token_prune/recipes/<name>.json) sets the flags of one of the paper's settings (its "source" says where
each value comes from and what is not reproduced; `demo` is ours); flags given on the command line override it. Batch
sizes are per process, as --per_device_train_batch_size always is. After training, the model is evaluated at each
of --eval_keep_rates on the test split and the output folder receives the weights with their remote code, the
feature extractor, a model card (README.md) and a plot of the keep-rate schedule. Distributed: run the same command
under `accelerate launch` (configure NCCL, FSDP or DeepSpeed with `accelerate config`); on CPU: `accelerate launch
--multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no recipes/finetune.py ...`.

This module is the command: its flags are the argument dataclasses of `hf_token_prune.finetuning` (a recipe's values
as their defaults) and `main(argv)` runs `hf_token_prune.finetuning.finetune` with them. `recipes/finetune.py` and
`hf-token-prune finetune` run it.
"""

import argparse
import atexit
import dataclasses
import sys

import torch
from transformers import HfArgumentParser, TrainingArguments

from ..checks import one_line, suggesting, unknown_arguments_error
from ..errors import command
from ..finetuning import (
    ARGUMENT_CLASSES,
    RecipeArguments,
    available_recipes,
    check_training_arguments,
    finetune,
    read_recipe,
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keep the usage examples of the docstring as written; one name per flag (HfArgumentParser also accepts the
    dashed spelling); the defaults that are set, except transformers' own (see TRAINING_FLAGS_SHOWN)."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=36, width=118)

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return f"{action.option_strings[0]} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_help_string(self, action):
        if action.default is None or action.dest in TRAINING_FLAGS_SHOWN:
            return action.help
        return super()._get_help_string(action)


# The TrainingArguments flags `--help` lists (all of them are accepted, `--help_all` lists them with transformers' own
# texts). They are described here, without transformers' defaults and choices, so that `--help` reads the same under
# every transformers release: the shipped text (hf_token_prune/cli_help.json) then holds for all of them.
TRAINING_FLAGS_SHOWN = {
    "output_dir": "Where the model, its card and checkpoints are written.",
    "num_train_epochs": "Epochs to train (the keep-rate schedule is counted in epochs too).",
    "max_steps": "Optimizer steps to train, instead of --num_train_epochs when > 0.",
    "learning_rate": "Peak learning rate.",
    "weight_decay": "Weight decay (not applied to biases and LayerNorm weights).",
    "per_device_train_batch_size": "Training clips per batch and process.",
    "gradient_accumulation_steps": "Batches accumulated per optimizer step.",
    "lr_scheduler_type": "Learning-rate schedule: linear, cosine, constant, ... (--help_all lists them).",
    "warmup_steps": "Linear warm-up: steps, or a fraction of all steps when below 1.",
    "eval_strategy": "When to evaluate on the validation split: no, steps or epoch.",
    "save_strategy": "When to save a checkpoint: no, steps, epoch or best.",
    "load_best_model_at_end": "Reload the best checkpoint (by --metric_for_best_model) when training ends.",
    "metric_for_best_model": "The validation metric that picks the best checkpoint, e.g. accuracy.",
    "seed": "Random seed of initialisation, shuffling and augmentation.",
    "resume_from_checkpoint": "A checkpoint folder of an interrupted run to continue from.",
    "dataloader_num_workers": "Data-loading processes (0: in the training process).",
    "report_to": "Loggers to report to (tensorboard, wandb, ...; none: no logger).",
    "push_to_hub": "Upload the model to the Hub (as --hub_model_id) when done.",
    "hub_model_id": "The Hub repository to push to.",
}
USAGE = "%(prog)s [--recipe NAME] [--FLAG VALUE ...]    (--help: the main flags, --help_all: all of them)"


def _given(argv, flag):
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def build_parser(show_all=False):
    recipes = "\n".join(f"  {name:<24} {read_recipe(name)['description']}" for name in available_recipes())
    parser = suggesting(HfArgumentParser)(
        ARGUMENT_CLASSES,
        usage=USAGE,
        description=__doc__.split("\n\nThis module")[0],
        epilog=f"recipes (--recipe):\n{recipes}\n\nEvery flag of transformers' TrainingArguments is accepted; --help "
        "lists the common ones, --help_all all of them.",
        formatter_class=HelpFormatter,
    )
    if not show_all:
        training_flags = {f.name for f in dataclasses.fields(TrainingArguments)}
        for action in parser._actions:
            if action.dest in TRAINING_FLAGS_SHOWN:
                action.help, action.metavar = TRAINING_FLAGS_SHOWN[action.dest], action.dest.upper()
            elif action.dest in training_flags:
                action.help = argparse.SUPPRESS
    # Without an accelerator, `accelerate launch --multi_gpu` starts the processes but TrainingArguments only joins
    # them (gloo) with use_cpu: make that the default there.
    parser.set_defaults(use_cpu=not torch.accelerator.is_available())
    # Every parameter takes part in every step (pruning drops tokens, not modules): DDP's search for unused ones
    # only costs time and warns.
    parser.set_defaults(ddp_find_unused_parameters=False)
    return parser


def parse_arguments(argv=None):
    """The five argument dataclasses from the command line, a recipe's values as defaults; bad values exit with
    one line naming the flag."""
    argv = sys.argv[1:] if argv is None else list(argv)
    show_all = "--help_all" in argv
    parser = build_parser(show_all)
    if show_all:
        argv = ["--help"]
    recipe_name = HfArgumentParser(RecipeArguments, add_help=False).parse_known_args(argv)[0].recipe
    required = set_recipe_defaults(parser, recipe_name) if recipe_name else []
    set_implied_defaults(parser, argv)
    try:
        parsed = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # a __post_init__ refused a value: one line, no traceback
        raise SystemExit(f"finetune: {one_line(error)}") from None
    recipe, model_args, data_args, pruning_args, training_args = parsed
    values = {name: value for arguments in parsed for name, value in vars(arguments).items()}
    missing = [name for name in required if values.get(name) is None]
    if missing:
        raise SystemExit(
            f"recipe {recipe_name} needs {', '.join('--' + name for name in missing)}: "
            f"{read_recipe(recipe_name)['source']}"
        )
    if data_args.dataset_name is None:
        parser.error(f"give --dataset_name or a --recipe ({', '.join(available_recipes())}).")
    if _given(argv, "--learning_rate"):
        pruning_args.base_learning_rate = None  # a learning rate given outright wins over a recipe's base rate
    try:
        check_training_arguments(pruning_args, training_args)
    except ValueError as error:
        raise SystemExit(f"finetune: {error}") from None
    # The transforms need the audio and labels columns that Trainer would otherwise strip as "unused".
    training_args.remove_unused_columns = False
    return parsed


def set_recipe_defaults(parser, recipe_name) -> list[str]:
    """A recipe's values as the parser's defaults; returns the flags the recipe requires."""
    recipe = read_recipe(recipe_name)
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(recipe["arguments"]) - known)
    if unknown:
        raise SystemExit(f"recipe {recipe_name} sets unknown arguments {unknown}.")
    parser.set_defaults(**recipe["arguments"])
    return recipe.get("required", [])


def set_implied_defaults(parser, argv):
    """Defaults that follow from the other flags (unknown flags are refused here, with "did you mean")."""
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        unknown_arguments_error(parser, unknown)
    if namespace.load_best_model_at_end and namespace.save_strategy == "no" and not _given(argv, "--save_strategy"):
        # A recipe that saves no checkpoints (demo) saves one per evaluation instead: the best one is reloaded from it.
        parser.set_defaults(save_strategy=namespace.eval_strategy, save_total_limit=namespace.save_total_limit or 1)
    if namespace.streaming and namespace.dataloader_num_workers and not _given(argv, "--dataloader_num_workers"):
        # A recipe's data-loader workers (demo: 1) yield to --streaming: a stream is read in the main process.
        parser.set_defaults(dataloader_num_workers=0)


@command("finetune")
def main(argv=None):
    trainer = finetune(*parse_arguments(argv))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # at the process's exit: until then a script can still evaluate or predict with the trainer returned
        atexit.register(trainer.end_distributed_run)
    return trainer

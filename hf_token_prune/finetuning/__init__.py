"""Fine-tune an audio transformer while its keep rate shrinks (TopK token pruning), then publish the pruned model.

The recipe as library calls, one module per concern: `arguments` (the argument dataclasses, validated in
`__post_init__`), `recipe` (the recipe files), `model` (the model, its feature extractor and the optimiser settings),
`inputs` (the data, its normalisation and transforms, the metric), `card` (the results table and the model card),
`output` (the staging folder, resuming, the final folder) and `run` (`finetune`, wiring them). The command line is
`hf_token_prune.commands.finetune`, run by `recipes/finetune.py` and `hf-token-prune finetune`.
"""

from .arguments import (
    ARGUMENT_CLASSES,
    DataArguments,
    ModelArguments,
    PruningArguments,
    RecipeArguments,
    check_training_arguments,
)
from .card import build_model_card, plot_training, results_table, write_card
from .model import (
    build_config,
    build_model,
    optimizer_cls_and_kwargs,
    reset_classifier,
    scaled_learning_rate,
    with_fbank_padding,
)
from .recipe import available_recipes, read_recipe
from .run import finetune


__all__ = [
    "ARGUMENT_CLASSES",
    "DataArguments",
    "ModelArguments",
    "PruningArguments",
    "RecipeArguments",
    "available_recipes",
    "build_config",
    "build_model",
    "build_model_card",
    "check_training_arguments",
    "finetune",
    "optimizer_cls_and_kwargs",
    "plot_training",
    "read_recipe",
    "reset_classifier",
    "results_table",
    "scaled_learning_rate",
    "with_fbank_padding",
    "write_card",
]

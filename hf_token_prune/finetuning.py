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

This module holds the whole recipe as library calls: the argument dataclasses (validated in `__post_init__`), the
recipe files, the model and its feature extractor, the optimiser settings, the results table and the model card;
`main(argv)` wires them, as transformers' `run_audio_classification.py` does. `recipes/finetune.py` and
`hf-token-prune finetune` run it.
"""

import argparse
import dataclasses
import json
import logging
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from transformers import (
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    HfArgumentParser,
    PretrainedConfig,
    TrainingArguments,
    set_seed,
)

from . import metrics as metric_modules
from .checks import check_audio_folder, check_model, one_line, parse_keep_rates, unknown_arguments_error
from .errors import command
from .files import OVERWRITE_HELP, check_output_dir, commit
from .loading import from_pretrained_strict
from .data import (
    DATASETS,
    AudioFeatureTransform,
    AugmentationEpochCallback,
    Mixup,
    PatchMasking,
    SpecAugment,
    StreamingEvalData,
    StreamingTrainingData,
    TimeShift,
    drop_unusable_audio,
    estimate_normalization,
    load_audio_classification,
    normalised_zero,
)
from .families import model_families, model_family
from .feature_extraction_audiomae import AudioMAEFeatureExtractor
from .model_card import METRIC_NAMES, build_model_card, plot_training
from .pruning_config import validate_drop_padding
from .scores import TOKEN_SCORES
from .token_reductions import padding_token_reductions, token_reduction_names, validate_token_reduction
from .training import (
    KeepRateScheduleCallback,
    PrunedModelTrainer,
    ScheduleDoesNotFitError,
    keep_rate_sweep,
    trainer_evaluator,
)


RECIPES = Path(__file__).resolve().parent / "recipes"
CARD_TEMPLATE = Path(__file__).resolve().parent / "templates" / "pruned_audio_model_card.md"
# In a clone of the repository, a recipe's relative data paths (the demo's data/keywords) are read from its root.
REPO = Path(__file__).resolve().parent.parent
logger = logging.getLogger("finetune")



def available_recipes():
    return sorted(path.stem for path in RECIPES.glob("*.json"))


def read_recipe(name):
    """A recipe file; relative paths in its arguments are read from the repository's root when it is there."""
    path = RECIPES / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"unknown recipe {name!r}: choose one of {', '.join(available_recipes())}.")
    recipe = json.loads(path.read_text())
    data_dir = recipe["arguments"].get("data_dir")
    if data_dir and not Path(data_dir).is_absolute() and (REPO / data_dir).is_dir():
        recipe["arguments"]["data_dir"] = str(REPO / data_dir)
    return recipe


# -- arguments ------------------------------------------------------------------------------------------------------


@dataclass
class RecipeArguments:
    recipe: str | None = field(
        default=None,
        metadata={
            "help": f"Start from the hyper-parameters of a recipe: {', '.join(available_recipes())}. Any flag given "
            "on the command line overrides the recipe."
        },
    )
    # transformers 5 dropped this TrainingArguments flag; users of transformers 4 know its name.
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint to fine-tune (folder or Hub id): an AST (stock or pruned) or a pruned AudioMAE. "
            "Without it a model is built from scratch from --model_type and --config_overrides."
        },
    )
    model_type: str = field(
        default="pruned-ast",
        metadata={"help": "Model built from scratch.", "choices": list(model_families())},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config fields of a model built from scratch, e.g. 'hidden_size=192,num_attention_heads=3'."},
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "Attention kernel: sdpa or eager."})
    drop_path_rate: float | None = field(
        default=None, metadata={"help": "Stochastic depth of a PrunedAudioMAE (its recipes: 0.1); AST has none."}
    )
    reset_classifier: bool = field(
        default=False,
        metadata={
            "help": "Start the classifier head afresh even when the checkpoint's classes are the dataset's (the "
            "paper's AST on AudioSet-20K). A head for other classes is always new."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub models and datasets are cached."})
    torch_threads: int | None = field(
        default=None,
        metadata={
            "help": "Intra-op threads of torch on CPU (default: torch's choice). Small models gain nothing from "
            "more than one, and on a shared CPU extra threads spin against other processes."
        },
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": f"A named dataset ({', '.join(DATASETS)}) or a Hub id / local folder with an audio and a "
            "label column."
        },
    )
    dataset_source: str | None = field(
        default=None,
        metadata={
            "help": "Where a named dataset is read from instead of its Hub id: a copy in the same layout, or the "
            "official archive of speech_commands (the folder holding speech_commands_v0.02/: word folders, "
            "validation_list.txt, testing_list.txt) or of voxceleb1 (wav/<speaker>/<video>/<clip>.wav and "
            "iden_split.txt; required for voxceleb1)."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Dataset configuration (load_dataset name)."}
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Dataset revision on the Hub."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of audio files (audiofolder) or data_dir of the dataset."}
    )
    fold: int | None = field(default=None, metadata={"help": "ESC-50: the held-out fold, 1 to 5."})
    audio_column_name: str = field(default="audio", metadata={"help": "Column holding the audio."})
    label_column_name: str | None = field(
        default=None, metadata={"help": "Column holding the class (default: the dataset's own)."}
    )
    sampling_rate: int = field(default=16000, metadata={"help": "Audio is decoded (and resampled) at this rate."})
    fbank_padding: str | None = field(
        default=None,
        metadata={
            "help": "What the feature extractor pads clips shorter than --num_frames with: minimum (the clip's "
            "lowest fbank value, reads as silence; AudioMAE and the paper) or zero (transformers' ASTFeatureExtractor, "
            "reads as loud). Default: the extractor's own (AST: zero, AudioMAE: minimum). Saved with the model.",
            "choices": ["minimum", "zero"],
        },
    )
    num_frames: int | None = field(
        default=None,
        metadata={
            "help": "Fbank frames per clip (10 ms each); default: the dataset's (audioset 1024, speech_commands 128, "
            "esc50 512, voxceleb1 1024), else the checkpoint's max_length."
        },
    )
    num_mel_bins: int = field(default=128, metadata={"help": "Mel bins of a model built from scratch."})
    feature_mean: float | None = field(
        default=None, metadata={"help": "Fbank normalisation mean; default: the dataset's, else estimated."}
    )
    feature_std: float | None = field(
        default=None, metadata={"help": "Fbank normalisation std; default: the dataset's, else estimated."}
    )
    freq_mask: int = field(default=0, metadata={"help": "SpecAugment: maximum masked frequency band (mel bins)."})
    time_mask: int = field(default=0, metadata={"help": "SpecAugment: maximum masked time span (frames)."})
    patch_mask_ratio: float = field(
        default=0.0,
        metadata={"help": "Fraction of time-patch columns and frequency-patch rows blanked (AudioMAE masking)."},
    )
    mixup: float = field(
        default=0.0,
        metadata={
            "help": "Probability that a training clip's waveform is blended with another clip's (targets too); needs "
            "--loss bce, the default only for multi-label data."
        },
    )
    time_shift: bool = field(
        default=False,
        metadata={
            "help": "Training augmentation: each clip at a random position of the --num_frames input (longer clips "
            "randomly cropped, shorter ones with the feature extractor's padding moved partly in front). Evaluation "
            "and the saved model use the feature extractor alone, as a pipeline does."
        },
    )
    mixup_alpha: float = field(
        default=10.0, metadata={"help": "Mixup weight ~ Beta(alpha, alpha) (AST and AudioMAE data loaders: 10)."}
    )
    loss: str | None = field(
        default=None,
        metadata={
            "help": "ce (softmax cross-entropy) or bce (sigmoid binary cross-entropy on one-hot targets); "
            "default: bce for multi-label data, else ce.",
            "choices": ["ce", "bce"],
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only this many training clips (debugging)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only this many evaluation / test clips."})
    drop_unusable_rows: bool = field(
        default=False,
        metadata={"help": "Drop clips that do not decode, are empty or hold NaN (they are reported); default: stop."},
    )
    accept_hub_test_split: bool = field(
        default=False,
        metadata={
            "help": "speech_commands from the Hub: test on its test split, TensorFlow's 12-class test set (4,890 "
            "clips), not the paper's testing_list.txt (11,005 clips, only in the official archive: --dataset_source). "
            "Refused without this flag; the model card names the test set either way."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the dataset as it is iterated (datasets' IterableDataset), for data that does not fit in "
            "memory or on disk (AudioSet-2M: --dataset_config_name unbalanced). Each process reads its own part; "
            "epochs become optimizer steps: steps per epoch = training rows / (per-device batch x processes x "
            "gradient accumulation), rounded up, the rows taken from the dataset's metadata (or "
            "--streaming_num_rows). Audio is not checked up front; needs --dataloader_num_workers 0."
        },
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={"help": "--streaming: rows in the shuffle buffer of the training stream (0: the source order)."},
    )
    streaming_num_rows: int | None = field(
        default=None,
        metadata={"help": "--streaming: training rows, when the dataset's metadata does not give them."},
    )

    def __post_init__(self):
        if self.sampling_rate <= 0:
            raise ValueError(
                f"--sampling_rate {self.sampling_rate}: audio needs a positive rate (16000 in every recipe)."
            )
        if self.sampling_rate != 16000:
            raise ValueError(
                f"--sampling_rate {self.sampling_rate}: the fbank feature extractors frame 400-sample windows every "
                "160 samples, i.e. 25 ms / 10 ms only at 16000 Hz, the rate of every recipe and checkpoint here. "
                "Audio is resampled when it is decoded: keep 16000."
            )
        if self.streaming and self.drop_unusable_rows:
            raise ValueError(
                "--drop_unusable_rows checks every clip before training, which a stream cannot do: drop --streaming "
                "or --drop_unusable_rows."
            )
        if self.shuffle_buffer_size < 0 or (self.streaming_num_rows is not None and self.streaming_num_rows <= 0):
            raise ValueError("--shuffle_buffer_size must be >= 0 and --streaming_num_rows > 0.")
        if self.mixup > 0 and self.training_loss != "bce":
            raise ValueError(
                "--mixup blends targets, which needs --loss bce (the default loss of single-label data is ce): add "
                "--loss bce or set --mixup 0."
            )

    @property
    def training_loss(self):
        """--loss, else the dataset's default: bce for multi-label data, ce otherwise."""
        multi_label = self.dataset_name in DATASETS and DATASETS[self.dataset_name].multi_label
        return self.loss or ("bce" if multi_label else "ce")


@dataclass
class PruningArguments:
    keep_rate: float = field(
        default=0.7, metadata={"help": "Target keep rate in (0, 1], reached at the end of the schedule."}
    )
    pruning_layers: str = field(default="3,6,9", metadata={"help": "0-based pruning layers, comma-separated."})
    token_score: str = field(
        default="attention", metadata={"help": "How tokens are ranked.", "choices": list(TOKEN_SCORES)}
    )
    token_reduction: str = field(
        default="prune",
        metadata={
            "help": "What the pruning layers do with the tokens they do not keep, during training and in the saved "
            "model: prune drops them (the paper), fuse adds EViT's fused token, merge is ToMe's merging (both with "
            "--token_score attention).",
            "choices": list(token_reduction_names()),
        },
    )
    drop_padding: bool = field(
        default=False,
        metadata={
            "help": "Drop short clips' padding patches before the first layer (config drop_padding); prune only."
        },
    )
    eval_token_reductions: str = field(
        default="prune,fuse,merge",
        metadata={"help": "Methods of the final evaluation table: each keep rate is evaluated under each of them."},
    )
    shrink_start_epoch: float = field(
        default=0.0,
        metadata={
            "help": "Epochs trained at keep rate 1.0 before it starts to shrink (0-based: 14 = from the 15th epoch); "
            "SpecAugment and patch masking stop there unless --augment_while_pruning."
        },
    )
    shrink_epochs: float = field(
        default=0.0, metadata={"help": "Epochs over which it shrinks from 1.0 to --keep_rate."}
    )
    augment_while_pruning: bool = field(
        default=False,
        metadata={"help": "Keep SpecAugment and patch masking on once shrinking starts (the paper turns them off)."},
    )
    optimizer: str = field(
        default="adamw",
        metadata={
            "help": "adamw: the Trainer's --optim (decoupled weight decay); adam: torch.optim.Adam with L2 weight "
            "decay, as AST's recipes (then --optim is not used).",
            "choices": ["adamw", "adam"],
        },
    )
    base_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "AudioMAE's rule: --learning_rate = this x global batch / 256, the global batch being "
            "--per_device_train_batch_size x devices x --gradient_accumulation_steps (AudioMAE recipes: 1e-3). "
            "Ignored when --learning_rate is given on the command line."
        },
    )
    layer_decay: float | None = field(
        default=None, metadata={"help": "Layer-wise learning-rate decay (AudioMAE: 0.75)."}
    )
    lr_step_decay: str | None = field(
        default=None,
        metadata={
            "help": "AST's learning-rate schedule 'start_epoch,every_epochs,factor' (replaces --lr_scheduler_type)."
        },
    )
    warmup_epochs: float | None = field(
        default=None, metadata={"help": "Linear warm-up in epochs (replaces --warmup_steps; AudioMAE recipes: 4)."}
    )
    eval_keep_rates: str = field(
        default="1.0,0.9,0.8,0.7,0.6,0.5,0.4",
        metadata={"help": "Keep rates of the final evaluation table on the test split."},
    )
    # Parsed from the flags above in __post_init__ (not flags themselves). The order, uniqueness and range of the
    # pruning layers are the pruned config's to check, against the model's depth.
    layers: list[int] = field(init=False)
    keep_rates: list[float] = field(init=False)
    token_reductions: list[str] = field(init=False)
    step_decay: tuple | None = field(init=False)

    def __post_init__(self):
        (self.keep_rate,) = _keep_rates(self.keep_rate, "--keep_rate")
        evaluated = _keep_rates(self.eval_keep_rates, "--eval_keep_rates")
        self.keep_rates = sorted(set(evaluated) | {self.keep_rate, 1.0}, reverse=True)
        validate_token_reduction(self.token_reduction, self.token_score)
        methods = [method.strip() for method in self.eval_token_reductions.split(",")] + [self.token_reduction]
        registered = token_reduction_names()
        unknown = [method for method in methods if method not in registered]
        if unknown:
            raise ValueError(f"--eval_token_reductions: unknown {unknown}; choose from {', '.join(registered)}.")
        self.token_reductions = [method for method in registered if method in methods]
        if self.drop_padding:
            validate_drop_padding(True, self.token_reduction)
            # only methods that carry a padding mask can run a mixed batch's padding
            self.token_reductions = list(padding_token_reductions())
        if self.shrink_start_epoch < 0 or self.shrink_epochs < 0:
            raise ValueError("--shrink_start_epoch and --shrink_epochs must be >= 0.")
        try:
            self.layers = [int(layer) for layer in self.pruning_layers.split(",")]
        except ValueError:
            raise ValueError(f"--pruning_layers {self.pruning_layers!r}: give 0-based layer indices, e.g. 3,6,9.")
        self.step_decay = None
        if self.lr_step_decay:
            try:
                start, every, factor = self.lr_step_decay.split(",")
                self.step_decay = (int(start), int(every), float(factor))
            except ValueError:
                raise ValueError(f"--lr_step_decay {self.lr_step_decay!r}: give start_epoch,every_epochs,factor.")
            if self.step_decay[0] < 0 or self.step_decay[1] < 1 or self.step_decay[2] <= 0:
                raise ValueError(
                    f"--lr_step_decay {self.lr_step_decay!r}: start_epoch must be >= 0, every_epochs >= 1 and the "
                    "factor > 0, e.g. 5,1,0.85."
                )
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ValueError(f"--warmup_epochs {self.warmup_epochs}: give a number of epochs >= 0.")


def _keep_rates(text, flag):
    try:
        return parse_keep_rates(text)
    except ValueError as error:
        raise ValueError(f"{flag} {error}") from None


ARGUMENT_CLASSES = (RecipeArguments, ModelArguments, DataArguments, PruningArguments, TrainingArguments)


def check_training_arguments(pruning_args, training_args):
    """What only the pruning and the training arguments together can refuse."""
    if training_args.dataloader_persistent_workers and training_args.dataloader_num_workers > 0:
        raise ValueError(
            "--dataloader_persistent_workers keeps each worker's copy of the feature transform from the first epoch: "
            "augmentation would repeat the same draws every epoch and never switch off. Leave it off."
        )
    shrink_end = pruning_args.shrink_start_epoch + pruning_args.shrink_epochs
    if pruning_args.keep_rate < 1.0 and training_args.max_steps <= 0 and shrink_end > training_args.num_train_epochs:
        raise ValueError(
            f"--shrink_start_epoch {pruning_args.shrink_start_epoch:g} + --shrink_epochs {pruning_args.shrink_epochs:g}"
            f" = {shrink_end:g} epochs, but --num_train_epochs is {training_args.num_train_epochs:g}: training would "
            f"stop before the keep rate reaches {pruning_args.keep_rate}, at which the model is evaluated and saved. "
            "Shrink earlier or train longer."
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
    parser = HfArgumentParser(
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
    recipe_args, _ = HfArgumentParser(RecipeArguments, add_help=False).parse_known_args(argv)
    required = []
    if recipe_args.recipe:
        recipe = read_recipe(recipe_args.recipe)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(recipe["arguments"]) - known)
        if unknown:
            raise SystemExit(f"recipe {recipe_args.recipe} sets unknown arguments {unknown}.")
        parser.set_defaults(**recipe["arguments"])
        required = recipe.get("required", [])
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        unknown_arguments_error(parser, unknown)
    if namespace.load_best_model_at_end and namespace.save_strategy == "no" and not _given(argv, "--save_strategy"):
        # A recipe that saves no checkpoints (demo) saves one per evaluation instead: the best one is reloaded from it.
        parser.set_defaults(save_strategy=namespace.eval_strategy, save_total_limit=namespace.save_total_limit or 1)
    if namespace.streaming and namespace.dataloader_num_workers and not _given(argv, "--dataloader_num_workers"):
        # A recipe's data-loader workers (demo: 1) yield to --streaming: a stream is read in the main process.
        parser.set_defaults(dataloader_num_workers=0)
    try:
        parsed = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # a __post_init__ refused a value: one line, no traceback
        raise SystemExit(f"finetune: {one_line(error)}") from None
    values = {name: value for arguments in parsed for name, value in vars(arguments).items()}
    missing = [name for name in required if values.get(name) is None]
    if missing:
        raise SystemExit(
            f"recipe {recipe_args.recipe} needs {', '.join('--' + name for name in missing)}: "
            f"{read_recipe(recipe_args.recipe)['source']}"
        )
    if values["dataset_name"] is None:
        parser.error(f"give --dataset_name or a --recipe ({', '.join(available_recipes())}).")
    if _given(argv, "--learning_rate"):
        parsed[3].base_learning_rate = None  # a learning rate given outright wins over a recipe's base rate
    try:
        check_training_arguments(parsed[3], parsed[4])
    except ValueError as error:
        raise SystemExit(f"finetune: {error}") from None
    # The transforms need the audio and labels columns that Trainer would otherwise strip as "unused".
    parsed[4].remove_unused_columns = False
    return parsed


# -- model ----------------------------------------------------------------------------------------------------------


def build_config(model_args, data_args, pruning_args):
    """The config of the model to fine-tune, pruning off until the schedule starts (validated by the config itself,
    so a pruning layer the model does not have is refused before any data is read). Its input length is
    --num_frames, else the dataset's, else the checkpoint's."""
    settings = {"keep_rate": 1.0, "pruning_layers": pruning_args.layers, "token_score": pruning_args.token_score,
                "token_reduction": pruning_args.token_reduction, "drop_padding": pruning_args.drop_padding}
    spec = DATASETS.get(data_args.dataset_name)
    num_frames = data_args.num_frames or (spec.num_frames if spec else None)
    if num_frames is None and not model_args.model_name_or_path:
        raise ValueError(f"--num_frames is needed for {data_args.dataset_name} (fbank frames of 10 ms per clip).")
    if num_frames is not None:
        settings["max_length"] = num_frames
    if model_args.model_name_or_path:
        name = model_args.model_name_or_path
        check_model(name, cache_dir=model_args.cache_dir)
        model_type = PretrainedConfig.get_config_dict(name, cache_dir=model_args.cache_dir)[0].get("model_type")
        try:
            config_class = model_family(model_type).config_class
        except ValueError:
            raise ValueError(
                f"{name} holds a {model_type!r} model: fine-tuning starts from an AST (stock or pruned) or a pruned "
                "AudioMAE checkpoint."
            ) from None
        config = config_class.from_pretrained(name, cache_dir=model_args.cache_dir, **settings)
    else:
        config_class = model_families()[model_args.model_type].config_class
        config = config_class(num_mel_bins=data_args.num_mel_bins, **settings)
        if model_args.config_overrides:
            config.update_from_string(model_args.config_overrides)
        config._attn_implementation = model_args.attn_implementation
    if model_args.drop_path_rate is not None and hasattr(config, "drop_path_rate"):
        config.drop_path_rate = model_args.drop_path_rate
    return config


def checkpoint_label_names(config):
    return [config.id2label[key] for key in sorted(config.id2label)]


def build_model(config, model_args, data_args, label_names):
    """The model for `config` with a head for `label_names`, and its feature extractor: the checkpoint's weights
    through the Auto classes (a head for other classes is new), or a fresh model of --model_type."""
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    if model_args.model_name_or_path:
        name = model_args.model_name_or_path
        # transformers' documented path for a new head (other classes): only the head may be missing or re-shaped.
        model = from_pretrained_strict(
            AutoModelForAudioClassification,
            name,
            new_head=("classifier.",),
            config=config,
            ignore_mismatched_sizes=True,
            attn_implementation=model_args.attn_implementation,
            cache_dir=model_args.cache_dir,
        )
        extractor = AutoFeatureExtractor.from_pretrained(name, cache_dir=model_args.cache_dir)
        extractor.max_length = config.max_length
    else:
        model = AutoModelForAudioClassification.from_config(config)
        extractor = model_families()[model_args.model_type].feature_extractor_class(
            num_mel_bins=config.num_mel_bins, max_length=config.max_length, sampling_rate=data_args.sampling_rate
        )
    extractor = with_fbank_padding(extractor, data_args.fbank_padding)
    extractor.return_attention_mask = config.drop_padding
    return model, extractor


def with_fbank_padding(extractor, fbank_padding):
    """The extractor as ours, padding short clips as asked (default: as it did). Ours is transformers' Kaldi fbank
    (`ASTFeatureExtractor`, whose zero padding it keeps) plus the minimum padding, a frame `attention_mask` on request
    and integer PCM read as [-1, 1]; the model folder carries it as remote code."""
    if not isinstance(extractor, AudioMAEFeatureExtractor):
        extractor = AudioMAEFeatureExtractor.from_dict(extractor.to_dict())
    if fbank_padding is not None:
        extractor.fbank_padding = fbank_padding
    return extractor


def reset_classifier(model):
    """A freshly initialised head. A head of the same size for other classes would load silently (only size
    mismatches are re-initialised), and `_init_weights` skips loaded weights: take a new model's head instead."""
    model.classifier.load_state_dict(type(model)(model.config).classifier.state_dict())


def scaled_learning_rate(base_learning_rate, training_args):
    """AudioMAE's rule: the base rate times the global batch over 256."""
    global_batch = training_args.train_batch_size * training_args.world_size * training_args.gradient_accumulation_steps
    return base_learning_rate * global_batch / 256


def optimizer_cls_and_kwargs(optimizer, training_args):
    """`Trainer`'s `optimizer_cls_and_kwargs`: `None` (its own AdamW from `--optim`) or AST's torch Adam with L2 weight
    decay and the Trainer's betas, epsilon and learning rate."""
    if optimizer != "adam":
        return None
    return (
        torch.optim.Adam,
        {
            "lr": training_args.learning_rate,
            "weight_decay": training_args.weight_decay,
            "betas": (training_args.adam_beta1, training_args.adam_beta2),
            "eps": training_args.adam_epsilon,
        },
    )


# -- data -----------------------------------------------------------------------------------------------------------


def load_data(data_args, cache_dir):
    if data_args.dataset_name == "audiofolder":
        check_audio_folder(data_args.data_dir)
    data = load_audio_classification(
        data_args.dataset_name,
        source=data_args.dataset_source,
        config_name=data_args.dataset_config_name,
        data_dir=data_args.data_dir,
        revision=data_args.dataset_revision,
        fold=data_args.fold,
        audio_column_name=data_args.audio_column_name,
        label_column_name=data_args.label_column_name,
        sampling_rate=data_args.sampling_rate,
        cache_dir=cache_dir,
        streaming=data_args.streaming,
        accept_hub_test_split=data_args.accept_hub_test_split,
    )
    if data_args.streaming:
        if data_args.streaming_num_rows:
            data.num_rows["train"] = data_args.streaming_num_rows
        if data_args.max_train_samples:
            data.train = data.train.take(data_args.max_train_samples)
            data.num_rows["train"] = min(data_args.max_train_samples, data.num_rows.get("train", math.inf))
        if data_args.max_eval_samples:
            data.eval, data.test = data.eval.take(data_args.max_eval_samples), data.test.take(data_args.max_eval_samples)
        return data
    if data_args.max_train_samples:
        data.train = data.train.select(range(min(data_args.max_train_samples, len(data.train))))
    if data_args.max_eval_samples:
        data.eval = data.eval.select(range(min(data_args.max_eval_samples, len(data.eval))))
        data.test = data.test.select(range(min(data_args.max_eval_samples, len(data.test))))
    for report in drop_unusable_audio(data, data_args.sampling_rate, drop=data_args.drop_unusable_rows):
        logger.warning("dropped: %s", report)
    return data


def set_normalization(extractor, data, data_args):
    """The fbank normalisation: given, the dataset's published one, or estimated on the training clips."""
    mean = data_args.feature_mean if data_args.feature_mean is not None else data.spec.mean
    std = data_args.feature_std if data_args.feature_std is not None else data.spec.std
    if mean is None or std is None:
        mean, std = estimate_normalization(data.train, extractor)
        logger.info("fbank normalisation estimated on the training clips: mean %.4f, std %.4f", mean, std)
    extractor.mean, extractor.std, extractor.do_normalize = mean, std, True


def set_transforms(data, extractor, data_args, patch_size, one_hot, seed, num_frames):
    """Features on the fly: augmented for training, plain for evaluation. Returns the training transform and the
    augmentations the keep-rate schedule may switch off."""
    fill = normalised_zero(extractor)
    augmentations = [
        SpecAugment(data_args.freq_mask, data_args.time_mask, fill),
        PatchMasking(data_args.patch_mask_ratio, patch_size, fill),
    ]
    num_labels = len(data.label_names)
    train = AudioFeatureTransform(
        extractor,
        num_labels,
        data.multi_label,
        one_hot,
        augmentations,
        Mixup(data_args.mixup, data_args.mixup_alpha),
        seed,
        time_shift=TimeShift(num_frames, data_args.sampling_rate) if data_args.time_shift else None,
    )
    plain = AudioFeatureTransform(extractor, num_labels, data.multi_label, one_hot)
    if data_args.streaming:  # the training stream is featurised by StreamingTrainingData, once the schedule exists
        data.eval, data.test = StreamingEvalData(data.eval, plain), StreamingEvalData(data.test, plain)
        return train, augmentations
    data.train.set_transform(train)
    data.eval.set_transform(plain)
    data.test.set_transform(plain)
    return train, augmentations


def make_compute_metrics(metric_name):
    metric = metric_modules.load(metric_name)

    def compute_metrics(prediction):
        logits, labels = prediction.predictions, prediction.label_ids
        if metric_name == "accuracy":
            if labels.ndim == 2:
                labels = labels.argmax(axis=1)  # one-hot targets of a BCE loss
            return metric.compute(predictions=logits.argmax(axis=1), references=labels)
        return metric.compute(predictions=logits, references=labels.astype("int64"))

    return compute_metrics


# -- results --------------------------------------------------------------------------------------------------------


def results_table(rows, metric, split, config):
    """The metric and GMACs per keep rate (rows) and method (columns), as printed at the end of a run."""
    name = METRIC_NAMES[metric]
    methods = list(dict.fromkeys(row["token_reduction"] for row in rows))
    cells = {(row["keep_rate"], row["token_reduction"]): row for row in rows}
    full = cells[(1.0, config.token_reduction)]["gmacs"]
    lines = [
        f"\n{name} on the {split} split per keep rate and token reduction (trained: {config.token_reduction} to "
        f"keep rate {config.keep_rate}; GMACs per clip, MACs vs 1.0 of {config.token_reduction}):",
        f"{'keep rate':>9} | " + " | ".join(f"{method:>8}" for method in methods) + " | "
        + " | ".join(f"{'GMACs ' + method:>11}" for method in methods) + " | MACs vs 1.0",
    ]
    for keep_rate in dict.fromkeys(row["keep_rate"] for row in rows):
        marker = "  <- trained" if math.isclose(keep_rate, config.keep_rate) else ""
        lines.append(
            f"{keep_rate:>9.2f} | " + " | ".join(f"{cells[(keep_rate, m)]['metric']:>8.4f}" for m in methods) + " | "
            + " | ".join(f"{cells[(keep_rate, m)]['gmacs']:>11.3f}" for m in methods)
            + f" | {100 * cells[(keep_rate, config.token_reduction)]['gmacs'] / full:>9.1f} %{marker}"
        )
    return "\n".join(lines)


def training_hyperparameters(trainer, model, data_args, pruning_args, recipe_name):
    """The card's hyper-parameter table."""
    args = trainer.args
    extractor = trainer.processing_class
    return {
        "recipe": recipe_name or "-",
        "keep rate schedule": f"1.0 until epoch {pruning_args.shrink_start_epoch}, cosine to {pruning_args.keep_rate} "
        f"over {pruning_args.shrink_epochs} epochs, stepped per optimizer step",
        "epochs": round(trainer.state.epoch, 2),
        "batch size (global)": args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
        "optimizer": f"{pruning_args.optimizer}, betas ({args.adam_beta1}, {args.adam_beta2}), "
        f"weight decay {args.weight_decay}",
        "learning rate": args.learning_rate,
        "warm-up steps": args.warmup_steps,
        "gradient clipping (max norm)": args.max_grad_norm or "-",
        "learning-rate schedule": f"step decay (start epoch, every, factor) {pruning_args.lr_step_decay}"
        if pruning_args.lr_step_decay
        else str(args.lr_scheduler_type.value),
        "layer decay": pruning_args.layer_decay or "-",
        "loss": "binary cross-entropy" if model.config.problem_type.startswith("multi") else "cross-entropy",
        "SpecAugment (freq, time)": f"{data_args.freq_mask}, {data_args.time_mask}",
        "patch masking": data_args.patch_mask_ratio,
        "mixup (probability, alpha)": f"{data_args.mixup}, {data_args.mixup_alpha}",
        "fbank frames / normalisation": f"{model.config.max_length} / mean {extractor.mean:.4f}, "
        f"std {extractor.std:.4f}",
        "short clips padded with": getattr(extractor, "fbank_padding", "zero"),
        "time shift (each clip at a random position of the input)": data_args.time_shift,
    }


def write_card(trainer, model_args, data_args, pruning_args, data, results, recipe_name, output=None):
    """The model card (README.md), keep-rate plot and results JSON, written to the Trainer's output folder; the card
    is also the one `trainer.push_to_hub` publishes. `output` is the folder named in them (default: that one)."""
    model, folder = trainer.model, Path(trainer.args.output_dir)
    output = Path(output or folder)
    plot_file = "keep_rate_schedule.png"
    schedule = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, KeepRateScheduleCallback))
    plot_training(
        schedule.trajectory(trainer.state.max_steps),
        trainer.state.log_history,
        results,
        model.config.keep_rate,
        data.spec.metric,
        folder / plot_file,
        title=output.name,
    )
    (folder / "keep_rate_sweep.json").write_text(json.dumps(results, indent=2))
    audiofolder = data_args.dataset_name == "audiofolder"
    card = build_model_card(
        CARD_TEMPLATE,
        model_name=output.name,
        model=model,
        base_model=model_args.model_name_or_path,
        dataset_id=Path(data.source).name if audiofolder else data.source,
        dataset_pretty_name=f"{Path(data.source).name} (audio folder)" if audiofolder else data.spec.pretty_name,
        dataset_config=data.config_name,
        dataset_split=data.splits["test"],
        metric=data.spec.metric,
        results=results,
        hyperparameters={
            "test set": data.test_set,
            **training_hyperparameters(trainer, model, data_args, pruning_args, recipe_name),
        },
        plot_file=plot_file,
        repo_id=trainer.hub_model_id if trainer.args.push_to_hub else str(output),
    )
    card.save(folder / "README.md")
    trainer.model_card = card
    print(f"\nwrote {output}: weights, remote code, feature extractor, README.md (model card), {plot_file}")
    print(f"next: classify a clip: hf-token-prune classify <clip.wav> --model {output}")
    if data_args.dataset_name not in DATASETS or audiofolder:
        print(
            f"      which patches it keeps: hf-token-prune analyze --model_name_or_path {output} --dataset_name "
            f"{data_args.dataset_name}" + (f" --data_dir {data_args.data_dir}" if data_args.data_dir else "")
            + f" --split {data.splits['test']} --output_dir {output / 'analysis'}"
        )


# -- the recipe -----------------------------------------------------------------------------------------------------


def staging_folder(output_dir) -> Path:
    """Where a run trains and saves before its output folder appears whole: `<output_dir>.partial` beside it (its
    checkpoints are what `--resume_from_checkpoint true` resumes after an interruption)."""
    output_dir = Path(output_dir).expanduser()
    return output_dir.with_name(output_dir.name + ".partial")


def prepare_output_dir(recipe, training_args) -> Path:
    """Refuse, before any training, an output folder the run could not write whole; point the Trainer at the staging
    folder. Returns the final output folder."""
    target = Path(training_args.output_dir).expanduser()
    check_output_dir(target, recipe.overwrite_output_dir)
    staging = staging_folder(target)
    if staging.exists() and not staging.is_dir():
        raise ValueError(f"{staging} is a file; this run trains in a folder of that name: move the file away.")
    if staging.is_dir() and any(staging.iterdir()) and training_args.resume_from_checkpoint is None:
        if not recipe.overwrite_output_dir:
            raise ValueError(
                f"{staging} holds an interrupted run: resume it with --resume_from_checkpoint true (its last "
                "checkpoint), or pass --overwrite_output_dir to delete it and start over."
            )
        with training_args.main_process_first(desc="removing the interrupted run"):
            shutil.rmtree(staging, ignore_errors=True)
    if training_args.push_to_hub and training_args.hub_model_id is None:
        training_args.hub_model_id = target.absolute().name  # the Trainer would name the repo after the staging folder
    training_args.output_dir = str(staging)
    return target


def resume_checkpoint(value, model, staging):
    """`--resume_from_checkpoint` checked against the model before training: `true` is the staging folder's last
    checkpoint; a path must be a complete Trainer checkpoint of this architecture."""
    from safetensors import SafetensorError, safe_open
    from transformers.trainer_utils import get_last_checkpoint

    if value is None:
        return None
    if value.lower() in ("true", "last"):
        path = get_last_checkpoint(staging) if staging.is_dir() else None
        if path is None:
            raise ValueError(
                f"--resume_from_checkpoint {value}: {staging} holds no checkpoint to resume; give a checkpoint folder."
            )
    else:
        path = value
    path = Path(path)
    flag = f"--resume_from_checkpoint {value}"
    if not path.is_dir():
        raise ValueError(f"{flag}: no such checkpoint folder (give one like {staging}/checkpoint-500).")
    if not (path / "trainer_state.json").is_file() or not (path / "model.safetensors").is_file():
        raise ValueError(
            f"{flag}: not a complete checkpoint (no trainer_state.json or model.safetensors; the run was probably "
            "killed while saving it): resume from the checkpoint before it."
        )
    try:
        with safe_open(path / "model.safetensors", "pt") as weights:
            saved = sorted(tuple(weights.get_slice(key).get_shape()) for key in weights.keys())
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{flag}: its model.safetensors is damaged ({one_line(error)}): resume from an earlier one.")
    # Checkpoints may store weights under a model's legacy names (transformers' conversion mapping): compare shapes.
    expected = sorted(tuple(tensor.shape) for tensor in model.state_dict().values())
    if saved != expected:
        raise ValueError(
            f"{flag}: it holds another architecture than this run builds ({len(saved)} weights, "
            f"{sum(math.prod(shape) for shape in saved):,} values; this run's model: {len(expected)}, "
            f"{sum(math.prod(shape) for shape in expected):,}): resume with the flags and --model_name_or_path of "
            "its run."
        )
    return str(path)


def save_final_model(trainer, target, write_outputs):
    """The trained model, card and results into the staging folder, which then becomes `target` whole. If writing
    fails (full disk, no permission), the trained weights go to a folder under the system temp folder, named in the
    error."""
    try:
        trainer.save_model()
        if trainer.is_world_process_zero():
            write_outputs()
            commit(trainer.args.output_dir, target)
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error
        if not trainer.is_world_process_zero():
            raise
        kept = rescue(trainer)
        if kept.startswith("the trained model is saved in"):  # safe elsewhere: free the disk of the unfinished folder
            shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
        raise OSError(f"could not write the trained model to {target} ({one_line(error)}); {kept}") from None
    trainer.args.output_dir = str(target)


def rescue(trainer) -> str:
    """Save the trained model somewhere else, and say where (or where its last checkpoint is)."""
    folder = None
    try:
        folder = tempfile.mkdtemp(prefix="hf-token-prune-rescued-")
        trainer.model.save_pretrained(folder)
        trainer.processing_class.save_pretrained(folder)
    except (OSError, SafetensorError):
        last = trainer.state.best_model_checkpoint or (trainer.state.global_step and trainer.args.output_dir)
        return (f"saving a copy in {folder or 'the temp folder'} failed too: the last checkpoint is in {last}"
                if last else "saving a copy in the temp folder failed too: nothing could be kept")
    return f"the trained model is saved in {folder}: free space or fix permissions, then move it where you want it"


@command("finetune")
def main(argv=None):
    recipe, model_args, data_args, pruning_args, training_args = parse_arguments(argv)
    output_dir = prepare_output_dir(recipe, training_args)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity_warning()
    if model_args.torch_threads:
        torch.set_num_threads(model_args.torch_threads)
    set_seed(training_args.seed)
    if pruning_args.base_learning_rate is not None:
        training_args.learning_rate = scaled_learning_rate(pruning_args.base_learning_rate, training_args)
        logger.info("learning rate %.3g from base %.3g", training_args.learning_rate, pruning_args.base_learning_rate)

    try:  # a config value the model refuses, e.g. a pruning layer it does not have
        config = build_config(model_args, data_args, pruning_args)
    except (OSError, ValueError) as error:  # OSError: a Hub model that does not download
        raise SystemExit(f"finetune: {one_line(error)}") from None

    with training_args.main_process_first(desc="loading and checking the dataset"):
        try:
            data = load_data(data_args, model_args.cache_dir)
        except ValueError as error:  # bad input: say what is wrong, without a traceback
            raise SystemExit(f"finetune: {error}") from None
    same_classes = False
    if model_args.model_name_or_path:
        checkpoint_labels = checkpoint_label_names(config)
        if data.align_labels(checkpoint_labels):
            logger.info("classes renumbered in the order of the checkpoint's classifier, which is kept")
        same_classes = checkpoint_labels == data.label_names
    model, extractor = build_model(config, model_args, data_args, data.label_names)
    if extractor.sampling_rate != data_args.sampling_rate:
        # the Kaldi fbank frames 25 ms windows in samples of the extractor's rate: other audio would be misread
        raise SystemExit(
            f"--sampling_rate {data_args.sampling_rate}: the feature extractor expects {extractor.sampling_rate} Hz "
            f"audio; decode at --sampling_rate {extractor.sampling_rate}."
        )
    if model_args.model_name_or_path and (model_args.reset_classifier or not same_classes):
        reset_classifier(model)
        logger.info("new classifier head for the %d classes of %s", len(data.label_names), data_args.dataset_name)
    set_normalization(extractor, data, data_args)
    loss = data_args.training_loss
    model.config.problem_type = "multi_label_classification" if loss == "bce" else "single_label_classification"
    train_transform, augmentations = set_transforms(
        data,
        extractor,
        data_args,
        model.config.patch_size,
        one_hot=loss == "bce",
        seed=training_args.seed,
        num_frames=config.max_length,
    )

    # As the paper: augmentation stops when shrinking starts, only in runs that prune.
    stop_augmenting = pruning_args.keep_rate < 1.0 and not pruning_args.augment_while_pruning
    if stop_augmenting and pruning_args.shrink_start_epoch == 0 and (
        data_args.freq_mask or data_args.time_mask or data_args.patch_mask_ratio
    ):
        logger.warning(
            "--freq_mask / --time_mask / --patch_mask_ratio have no effect: augmentation stops when the keep rate "
            "starts shrinking, which is at epoch 0 (--shrink_start_epoch). --augment_while_pruning true keeps it."
        )
    schedule = KeepRateScheduleCallback(
        pruning_args.keep_rate,
        pruning_args.shrink_start_epoch,
        pruning_args.shrink_epochs,
        augmentations=augmentations if stop_augmenting else (),
    )
    callbacks = [schedule, AugmentationEpochCallback(train_transform)]
    if data_args.streaming:
        if training_args.dataloader_num_workers:
            raise SystemExit(
                f"finetune: --dataloader_num_workers {training_args.dataloader_num_workers}: a training stream is "
                "read in the main process, where its position is saved with each checkpoint; use 0."
            )
        try:
            data.train = StreamingTrainingData(
                data.train,
                train_transform,
                training_args.per_device_train_batch_size,
                data.num_rows.get("train"),
                shuffle_buffer_size=data_args.shuffle_buffer_size,
                seed=training_args.seed,
                rank=training_args.process_index,
                world_size=training_args.world_size,
                epoch_hooks=[schedule.augment_epoch],
            )
        except ValueError as error:
            raise SystemExit(f"finetune: {error}") from None
        callbacks = [schedule]  # the stream sets the augmentation epoch itself
    trainer = PrunedModelTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=extractor,
        compute_metrics=make_compute_metrics(data.spec.metric),
        callbacks=callbacks,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(pruning_args.optimizer, training_args),
        layer_decay=pruning_args.layer_decay,
        lr_step_decay=pruning_args.step_decay,
        warmup_epochs=pruning_args.warmup_epochs,
    )
    staging = Path(training_args.output_dir)
    resume = resume_checkpoint(training_args.resume_from_checkpoint, model, staging)
    try:
        trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"the checkpoints so far are in {staging}: continue with the same flags and --resume_from_checkpoint true"
        ) from None
    except ScheduleDoesNotFitError as error:  # refused as training begins, once the steps per epoch are known
        if resume is None:  # this run's own staging folder, nothing trained in it yet
            shutil.rmtree(staging, ignore_errors=True)
        raise SystemExit(f"finetune: {error}") from None

    table = keep_rate_sweep(
        model, trainer_evaluator(trainer, data.test, data.spec.metric), pruning_args.keep_rates,
        pruning_args.token_reductions, (pruning_args.token_score,),
    )

    def write_outputs():
        print(results_table(table, data.spec.metric, data.splits["test"], model.config), flush=True)
        results = [row for row in table if row["token_reduction"] == model.config.token_reduction]
        write_card(trainer, model_args, data_args, pruning_args, data, results, recipe.recipe, output_dir)

    save_final_model(trainer, output_dir, write_outputs)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return trainer


__all__ = [
    "ARGUMENT_CLASSES",
    "DataArguments",
    "ModelArguments",
    "PruningArguments",
    "RecipeArguments",
    "available_recipes",
    "build_config",
    "build_model",
    "main",
    "optimizer_cls_and_kwargs",
    "parse_arguments",
    "read_recipe",
    "reset_classifier",
    "scaled_learning_rate",
    "write_card",
]

"""The argument dataclasses of a fine-tuning run, each validated in `__post_init__`, and the check that needs the
pruning and the training arguments together."""

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..checks import parse_keep_rates
from ..data import DATASETS
from ..families import model_families
from ..files import OVERWRITE_HELP
from ..pruning_config import validate_drop_padding, validate_keep_mass
from ..scores import TOKEN_SCORES
from ..token_reductions import padding_token_reductions, token_reduction_names, validate_token_reduction
from .recipe import available_recipes


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
        default=0.7,
        metadata={
            "help": "Target keep rate in (0, 1], reached at the end of the schedule; with --keep_mass, the fixed "
            "ceiling of the per-sample policy instead (1.0: none)."
        },
    )
    keep_mass: float | None = field(
        default=None,
        metadata={
            "help": "Train with the per-sample keep policy: each pruning layer keeps, per clip, its fewest best-scored "
            "patch tokens holding this share of the clip's score mass, in (0, 1]. Then keep_mass shrinks (from 1.0, "
            "over the same epochs) instead of the keep rate, which stays fixed as the ceiling from the first step. "
            "Prune only."
        },
    )
    min_keep_rate: float | None = field(
        default=None,
        metadata={"help": "--keep_mass: every clip keeps at least this fraction of its patch tokens (default: one)."},
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
            "help": "Epochs trained at keep rate (or --keep_mass) 1.0 before it starts to shrink (0-based: 14 = from "
            "the 15th epoch); SpecAugment and patch masking stop there unless --augment_while_pruning."
        },
    )
    shrink_epochs: float = field(
        default=0.0, metadata={"help": "Epochs over which it shrinks from 1.0 to --keep_rate (or --keep_mass)."}
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

    @property
    def scheduled_setting(self) -> str:
        """What the schedule shrinks: `keep_mass` under the per-sample policy, else `keep_rate`."""
        return "keep_rate" if self.keep_mass is None else "keep_mass"

    @property
    def scheduled_target(self) -> float:
        return getattr(self, self.scheduled_setting)

    @property
    def prunes(self) -> bool:
        return self.keep_rate < 1.0 or self.keep_mass is not None

    def __post_init__(self):
        (self.keep_rate,) = _keep_rates(self.keep_rate, "--keep_rate")
        evaluated = _keep_rates(self.eval_keep_rates, "--eval_keep_rates")
        self.keep_rates = sorted(set(evaluated) | {self.keep_rate, 1.0}, reverse=True)
        validate_token_reduction(self.token_reduction, self.token_score)
        if self.min_keep_rate is not None and self.keep_mass is None:
            raise ValueError("--min_keep_rate is the floor of the per-sample policy: give --keep_mass too.")
        validate_keep_mass(self.keep_mass, self.min_keep_rate, self.keep_rate, self.token_reduction)
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
    target = pruning_args.scheduled_target
    if target < 1.0 and training_args.max_steps <= 0 and shrink_end > training_args.num_train_epochs:
        name = "keep_mass" if pruning_args.keep_mass is not None else "the keep rate"
        raise ValueError(
            f"--shrink_start_epoch {pruning_args.shrink_start_epoch:g} + --shrink_epochs {pruning_args.shrink_epochs:g}"
            f" = {shrink_end:g} epochs, but --num_train_epochs is {training_args.num_train_epochs:g}: training would "
            f"stop before {name} reaches {target}, at which the model is evaluated and saved. "
            "Shrink earlier or train longer."
        )

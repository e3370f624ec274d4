"""What every analysis reads: a pruned model, and an audio split turned into that model's features.

Data come through ``hf_token_prune.data`` (the loaders fine-tuning uses: named benchmarks and their official archives,
any audiofolder / Hub / local dataset, one column discovery, class names and decoding) and are featurised by its
``AudioFeatureTransform``; the analyses only iterate over ``AnalysisData.batches()``.
"""

from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checks import check_audio_folder
from ..data import DATASETS, AudioFeatureTransform, load_audio_classification, num_fbank_frames
# The loader lives in hf_token_prune.loading (light to import); these names stay importable from here.
from ..loading import PRUNED_MODEL_INTERFACE, check_pruned_model, load_pruned_model  # noqa: F401


# Figures 3 and 6 of the paper are drawn at keep rate 0.5; used when the model itself does not prune.
DEFAULT_ANALYSIS_KEEP_RATE = 0.5


@contextmanager
def model_settings(model, keep_rate=None, token_score=None, attn_implementation=None, **pruning):
    """Run the model in inference mode with temporary pruning settings; restore them afterwards.

    ``pruning`` sets any other pruning field of the config (``token_reduction``, ``pruning_layers``,
    ``drop_padding``, ``keep_mass``, ``min_keep_rate``); a combination the config refuses is its ``ValueError``, with
    the model left as it was.
    """
    check_pruned_model(model)
    unknown = set(pruning) - {"token_reduction", "pruning_layers", "drop_padding", "keep_mass", "min_keep_rate"}
    if unknown:
        raise TypeError(f"model_settings() got unknown settings {sorted(unknown)}: give token_reduction, "
                        "pruning_layers, drop_padding, keep_mass or min_keep_rate.")
    requested = {**pruning, "keep_rate": keep_rate, "token_score": token_score}
    settings = {name: value for name, value in requested.items() if value is not None}
    saved_implementation, training = model.config._attn_implementation, model.training
    model.eval()
    try:
        if attn_implementation is not None and attn_implementation != saved_implementation:
            model.set_attn_implementation(attn_implementation)
        with model.reduction_settings(**settings), torch.inference_mode():
            yield model
    finally:
        if model.config._attn_implementation != saved_implementation:
            model.set_attn_implementation(saved_implementation)
        model.train(training)


def analysis_keep_rate(model, keep_rate=None):
    """The keep rate pictures and correlations are drawn at: the one given, else the model's own, else 0.5."""
    if keep_rate is not None:
        return keep_rate
    return model.config.keep_rate if model.config.keep_rate < 1.0 else DEFAULT_ANALYSIS_KEEP_RATE


def _generic_labels(config):
    return all(label == f"LABEL_{i}" for i, label in config.id2label.items())


def _label_mapping(label_names, config):
    """Model label id of every dataset class: by name when the model's labels are named, else by index."""
    label2id = config.label2id or {name: int(i) for i, name in config.id2label.items()}
    if all(name in label2id for name in label_names):
        return np.array([label2id[name] for name in label_names])
    if len(label_names) > config.num_labels:
        raise ValueError(
            f"the dataset has {len(label_names)} classes but the model only {config.num_labels}, and the names do not "
            f"match the model's labels ({list(label2id)[:5]}...): this model was not trained on this dataset."
        )
    if not _generic_labels(config):
        unknown = [name for name in label_names if name not in label2id]
        raise ValueError(
            f"the dataset's classes {unknown[:5]}{'...' if len(unknown) > 5 else ''} are not among the model's labels "
            f"({', '.join(list(label2id)[:5])}...): its metric would score them against other classes; give data "
            "labelled with the model's classes (or --label_column_name naming such a column)."
        )
    return np.arange(len(label_names))


def padding_kind(feature_extractor):
    """``"zero"`` or ``"minimum"``: what short clips are padded with in the fbank, before normalisation."""
    from transformers import ASTFeatureExtractor

    declared = getattr(feature_extractor, "fbank_padding", None)  # AudioMAEFeatureExtractor's choice
    if declared in ("zero", "minimum"):
        return declared
    if isinstance(feature_extractor, ASTFeatureExtractor):
        return "zero"  # ASTFeatureExtractor always pads the fbank with 0, whatever its padding_value says
    return "unknown"


def padding_note(feature_extractor):
    """One sentence for reports: which padding the features carry and where it lands in intensity."""
    kind = padding_kind(feature_extractor)
    name = type(feature_extractor).__name__
    if kind == "zero":
        value = 0.0
        if getattr(feature_extractor, "do_normalize", False):
            value = (0.0 - feature_extractor.mean) / (2 * feature_extractor.std)
        return (
            f"{name} pads short clips with log-mel 0 before normalising (normalised value {value:.3f}); that is louder "
            "than most real patches, so padding falls among the high-intensity clusters. The paper pads with the "
            "clip's minimum, which puts padding in C1."
        )
    if kind == "minimum":
        return (
            f"{name} pads short clips with the clip's minimum log-mel value (as the paper does): padding falls in the "
            "lowest-intensity cluster."
        )
    return f"{name}: padding value unknown; padded frames are still detected from the clip lengths."


@dataclass
class AnalysisData:
    """An audio classification split (columns ``audio``, ``labels``, ``id`` of ``hf_token_prune.data``), featurised
    on the fly for one model.

    ``batches()`` yields ``{"input_values": (B, frames, mel), "labels": (B,) or multi-hot (B, num_labels),
    "num_frames": (B,) frames of real audio, "index": (B,) row in the dataset}``.
    """

    dataset: object
    feature_extractor: object
    label_mapping: np.ndarray
    multi_label: bool
    num_labels: int
    label_names: dict  # model label id -> name shown in figures
    batch_size: int = 8
    num_workers: int = 0

    def __len__(self):
        return len(self.dataset)

    @property
    def metric_name(self):
        return "mAP" if self.multi_label else "accuracy"

    def select(self, indices):
        """The same data restricted to some rows of the dataset."""
        return replace(self, dataset=self.dataset.select(list(indices)))

    def with_feature_extractor(self, feature_extractor):
        return replace(self, feature_extractor=feature_extractor)

    def labels(self):
        """Model label ids of every row (a list of ids per row when multi-label), without decoding audio."""
        return [self._model_labels(label) for label in self.dataset["labels"]]

    def _model_labels(self, label):
        if not self.multi_label:
            return int(self.label_mapping[label])
        # a multi-label model measured on single-label data: a clip's one class is its list of one, none if unlabelled
        if not isinstance(label, list):
            label = [] if label is None or label < 0 else [label]
        return [int(self.label_mapping[i]) for i in label]

    def _collate(self, indices):
        rows = self.dataset[list(indices)]
        # Decode each clip once: datasets hands out torchcodec decoders, and a second decode of some FLAC files fails
        # ("Could not seek file to pts=...").
        audio = [{"array": clip["array"]} for clip in rows["audio"]]
        transform = AudioFeatureTransform(self.feature_extractor, self.num_labels, self.multi_label, one_hot=False)
        batch = transform({**rows, "audio": audio, "labels": [self._model_labels(label) for label in rows["labels"]]})
        rate, max_length = self.feature_extractor.sampling_rate, batch["input_values"].shape[1]
        lengths = [len(clip["array"]) for clip in audio]
        return {
            **batch,
            "num_frames": torch.tensor([min(max_length, num_fbank_frames(n, rate)) for n in lengths]),
            "index": torch.tensor(list(indices)),
        }

    def batches(self, desc=None, batch_size=None):
        """Featurised batches in dataset order, with a progress bar named ``desc``."""
        loader = torch.utils.data.DataLoader(
            range(len(self.dataset)),
            batch_size=batch_size or self.batch_size,
            collate_fn=self._collate,
            num_workers=self.num_workers,
        )
        return tqdm(loader, desc=desc, unit="batch", leave=False, disable=desc is None)


def prepare_analysis_data(
    split, label_names, multi_label, feature_extractor, model, batch_size=8, max_samples=None, num_workers=0
):
    """Check a split of ``hf_token_prune.data`` (columns ``audio``, ``labels``, ``id``; ``labels`` indexing
    ``label_names``) against the model and return ``AnalysisData``."""
    if len(split) == 0:
        raise ValueError("the dataset split is empty: choose another --split.")
    if max_samples is not None:
        split = split.select(range(min(max_samples, len(split))))
    if split.features["audio"].sampling_rate != feature_extractor.sampling_rate:
        raise ValueError(
            f"the audio is decoded at {split.features['audio'].sampling_rate} Hz but the feature extractor expects "
            f"{feature_extractor.sampling_rate} Hz: load it with sampling_rate={feature_extractor.sampling_rate}."
        )
    mapping = _label_mapping(label_names, model.config)
    names = dict(model.config.id2label)
    if _generic_labels(model.config):  # a model saved without names: show the dataset's
        names.update({int(model_id): name for model_id, name in zip(mapping, label_names)})
    if getattr(feature_extractor, "max_length", model.config.max_length) != model.config.max_length or getattr(
        feature_extractor, "num_mel_bins", model.config.num_mel_bins
    ) != model.config.num_mel_bins:
        raise ValueError(
            f"the feature extractor makes {feature_extractor.max_length} frames x {feature_extractor.num_mel_bins} mel "
            f"bins but the model expects {model.config.max_length} x {model.config.num_mel_bins}: use the extractor "
            "saved with the model."
        )
    return AnalysisData(
        dataset=split,
        feature_extractor=feature_extractor,
        label_mapping=mapping,
        multi_label=multi_label or model.config.problem_type == "multi_label_classification",
        num_labels=model.config.num_labels,
        label_names=names,
        batch_size=batch_size,
        num_workers=num_workers,
    )


def load_analysis_data(
    model,
    feature_extractor,
    dataset_name,
    split="test",
    batch_size=8,
    max_samples=None,
    num_workers=0,
    **dataset_options,
):
    """Read split ``split`` of ``dataset_name`` through ``hf_token_prune.data.load_audio_classification`` (a named
    benchmark or its official archive, an audiofolder, any Hub / local dataset; ``dataset_options`` are its keyword
    arguments, e.g. ``data_dir``, ``source``, ``label_column_name``), decoded at the extractor's rate, as
    ``AnalysisData`` for ``model``."""
    (data,) = load_analysis_splits(
        model, feature_extractor, dataset_name, {"--split": split}, batch_size, max_samples, num_workers,
        **dataset_options,
    )
    return data


def load_analysis_splits(
    model, feature_extractor, dataset_name, splits, batch_size=8, max_samples=None, num_workers=0, **dataset_options
):
    """:func:`load_analysis_data` for several splits of one dataset, read once: ``splits`` maps the flag that named
    each split (for the error naming a missing one) to its name; one ``AnalysisData`` per split, in that order."""
    data = load_audio_classification(dataset_name, sampling_rate=feature_extractor.sampling_rate, **dataset_options)
    roles = {name: role for role, name in data.splits.items()}
    for flag, split in splits.items():
        if split not in roles:
            raise ValueError(
                f"no split {split!r} here: choose {flag} from {', '.join(sorted(roles))} (the training split is "
                f"{data.splits['train']!r})."
            )
    return [
        prepare_analysis_data(
            getattr(data, roles[split]), data.label_names, data.multi_label, feature_extractor, model, batch_size,
            max_samples, num_workers,
        )
        for split in splits.values()
    ]


def add_dataset_arguments(parser):
    """The flags naming a dataset, as finetune reads it; :func:`dataset_options` turns them into loader arguments."""
    parser.add_argument("--dataset_name", required=True,
                        help=f"a named dataset ({', '.join(DATASETS)}) or a Hub id / local folder, as in finetune")
    parser.add_argument("--dataset_source", help="a named dataset's copy or official archive instead of its Hub id")
    parser.add_argument("--dataset_config_name", help="dataset configuration (load_dataset name)")
    parser.add_argument("--dataset_revision", help="dataset revision on the Hub")
    parser.add_argument("--data_dir", help="folder of audio files (audiofolder) or data_dir of the dataset")
    parser.add_argument("--fold", type=int, help="ESC-50: the held-out fold, 1 to 5")
    parser.add_argument("--accept_hub_test_split", action="store_true",
                        help="speech_commands from the Hub: accept its 12-class test split (not the paper's)")
    parser.add_argument("--audio_column_name", default="audio", help="column holding the audio (default: audio)")
    parser.add_argument("--label_column_name", help="column holding the class (default: the dataset's own)")


def dataset_options(args):
    """The keyword arguments of :func:`load_analysis_splits` that :func:`add_dataset_arguments`' flags give; an
    audiofolder without audio is refused first."""
    if args.dataset_name == "audiofolder":
        check_audio_folder(args.data_dir)
    return dict(
        source=args.dataset_source, config_name=args.dataset_config_name, data_dir=args.data_dir,
        revision=args.dataset_revision, fold=args.fold, audio_column_name=args.audio_column_name,
        label_column_name=args.label_column_name, accept_hub_test_split=args.accept_hub_test_split,
    )


def batch_patch_statistics(model, input_values, num_frames):
    """Intensity, variation and padded fraction of every patch token of a batch, each ``(batch, patches)``.

    The padded fraction is the share of a patch's pixels that lie in padded frames, computed with the same
    ``patch_statistics`` windows as the intensity so it follows any patch order and stride.
    """
    layout = model.patch_layout
    intensity, variation = layout.patch_statistics(input_values)
    frames = torch.arange(input_values.shape[1], device=input_values.device)
    padded_frames = (frames[None, :] >= num_frames[:, None].to(frames.device)).float()
    padding_fraction, _ = layout.patch_statistics(padded_frames[:, :, None].expand_as(input_values))
    return intensity, variation, padding_fraction

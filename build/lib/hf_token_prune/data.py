"""Audio classification datasets for fine-tuning: named loaders for the paper's benchmarks, checks, features.

Every loader maps its Hub layout to the same three columns: `audio` (decoded at 16 kHz by `datasets.Audio`),
`labels` (a class index, or a list of class indices for multi-label data) and `id` (a row name for reports), plus the
class names. Features are made on the fly by the model's feature extractor (`set_transform`), with SpecAugment, patch
masking and mixup on the training split when a recipe asks for them.
"""

import copy
import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from collections.abc import Callable

import numpy as np
import torch
from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, Sequence, load_dataset
from datasets.exceptions import DatasetNotFoundError
from tqdm.auto import tqdm
from transformers import TrainerCallback


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a benchmark lives on the Hub and how the paper feeds it to the model."""

    pretty_name: str
    hub_id: str | None
    loader: Callable
    multi_label: bool = False
    metric: str = "accuracy"
    config_name: str | None = None
    data_dir: str | None = None
    revision: str | None = None
    num_frames: int | None = None  # fbank frames (10 ms each) the paper crops or pads to
    mean: float | None = None  # fbank normalisation of the paper: (x - mean) / (2 * std)
    std: float | None = None
    num_classes: int | None = None


@dataclass
class AudioClassificationData:
    """Splits with columns `audio`, `labels`, `id`; `eval` is watched during training, `test` gets the final table."""

    train: Dataset
    eval: Dataset
    test: Dataset
    label_names: list[str]
    multi_label: bool
    spec: DatasetSpec
    source: str
    config_name: str | None = None
    splits: dict = field(default_factory=dict)  # which source split each role came from, for the model card

    def align_labels(self, model_label_names: list[str]) -> bool:
        """Renumber the classes in the order of a pretrained head that knows the same class names (e.g. the 527
        AudioSet classes of an AudioSet-trained AST), so its classifier is reused rather than scrambled. Returns whether
        the labels were renumbered."""
        if sorted(model_label_names) != sorted(self.label_names) or model_label_names == self.label_names:
            return False
        new_index = {name: i for i, name in enumerate(model_label_names)}
        mapping = [new_index[name] for name in self.label_names]

        def renumber(labels):
            return {"labels": [[mapping[i] for i in row] if isinstance(row, list) else mapping[row] for row in labels]}

        for role in ("train", "eval", "test"):
            split = getattr(self, role)
            features = split.features.copy()
            features["labels"] = _label_feature(model_label_names, self.multi_label)
            setattr(self, role, split.map(renumber, input_columns="labels", batched=True, features=features))
        self.label_names = list(model_label_names)
        return True


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def _label_feature(names, multi_label):
    return Sequence(ClassLabel(names=names)) if multi_label else ClassLabel(names=names)


def _load(source, config_name=None, data_dir=None, revision=None, cache_dir=None):
    """`load_dataset` for a Hub id or a local folder, with an error that says what to do when it is neither."""
    local = os.path.isdir(source)
    try:
        return load_dataset(
            source,
            config_name,
            data_dir=data_dir,
            revision=None if local else revision,
            cache_dir=cache_dir,
        )
    except (DatasetNotFoundError, FileNotFoundError, ConnectionError) as error:
        raise ValueError(
            f"could not load the dataset {source!r}{f' (config {config_name!r})' if config_name else ''}: {error}. "
            f"Give a local folder, a Hub dataset id you can reach (offline: download it first), or one of the named "
            f"datasets: {', '.join(DATASETS)}."
        ) from error


def _require_columns(dataset: DatasetDict, columns, hint: str):
    for split_name, split in dataset.items():
        missing = [column for column in columns if column not in split.column_names]
        if missing:
            raise ValueError(
                f"split {split_name!r} has no column {', '.join(map(repr, missing))} (columns: {split.column_names}). "
                f"{hint}"
            )


def _finish(dataset: DatasetDict, audio_column: str, sampling_rate: int) -> DatasetDict:
    """Keep `audio`, `labels`, `id`; decode audio at `sampling_rate` (resampling when the source differs)."""
    dataset = DatasetDict(
        {
            name: split.select_columns([audio_column, "labels", "id"]).rename_columns(
                {audio_column: "audio"} if audio_column != "audio" else {}
            )
            for name, split in dataset.items()
        }
    )
    return dataset.cast_column("audio", Audio(sampling_rate=sampling_rate))


def _with_ids(split: Dataset, candidates=("file", "id")):
    """An `id` column naming each row in reports: the first of `candidates` the split has, else the row number."""
    column = next((name for name in candidates if name in split.column_names), None)
    if column is not None:
        return split.map(
            lambda values: {"id": [str(v) for v in values]}, input_columns=column, batched=True, desc="row ids"
        )
    return split.add_column("id", [f"row {i}" for i in range(len(split))])


def _load_audioset(source, config_name, data_dir, revision, cache_dir, **_):
    """agkphysics/AudioSet: `video_id`, `audio`, `labels` (list of ontology ids such as "/m/09x0r"), `human_labels`
    (their names); config "balanced" has `train` (bal_train, AS-20K) and `test` (eval)."""
    raw = _load(source, config_name, data_dir, revision, cache_dir)
    _require_columns(raw, ["audio", "labels", "human_labels"], "AudioSet rows need ontology ids and their names.")
    names = {}
    for split in raw.values():
        for ids, human in zip(split["labels"], split["human_labels"]):
            names.update(zip(ids, human))
    ontology_ids = sorted(names)
    index = {mid: i for i, mid in enumerate(ontology_ids)}
    label_names = [names[mid] for mid in ontology_ids]
    dataset = DatasetDict()
    for split_name, split in raw.items():
        split = _with_ids(split, ["video_id"])
        split = split.map(
            lambda ids: {"labels": [[index[mid] for mid in row] for row in ids]},
            input_columns="labels",
            batched=True,
            features=Features({**split.features, "labels": _label_feature(label_names, True)}),
        )
        dataset[split_name] = split
    return dataset, label_names, {"train": "train", "eval": "test", "test": "test"}


def _load_speech_commands(source, config_name, data_dir, revision, cache_dir, **_):
    """google/speech_commands v0.02 (its parquet export): `file`, `audio`, `label` (36 names: 35 words and
    `_silence_`), `is_unknown`, `speaker_id`, `utterance_id`; splits train / validation / test. The paper's 35-class
    task has no silence class: those rows are dropped."""
    raw = _load(source, config_name, data_dir, revision, cache_dir)
    _require_columns(raw, ["audio", "label"], "Speech Commands rows need `audio` and a `label` class.")
    names = raw["train"].features["label"].names
    words = [name for name in names if name != "_silence_"]
    mapping = {names.index(word): i for i, word in enumerate(words)}
    dataset = DatasetDict()
    for split_name, split in raw.items():
        split = split.filter(lambda labels: [label in mapping for label in labels], input_columns="label", batched=True)
        split = _with_ids(split, ["file"])
        split = split.map(
            lambda labels: {"labels": [mapping[label] for label in labels]},
            input_columns="label",
            batched=True,
            features=Features({**split.features, "labels": ClassLabel(names=words)}),
        )
        dataset[split_name] = split
    return dataset, words, {"train": "train", "eval": "validation", "test": "test"}


def _load_esc50(source, config_name, data_dir, revision, cache_dir, fold=None, **_):
    """ashraq/esc50: one `train` split of 2000 clips with `filename`, `fold` (1-5), `target` (0-49), `category`,
    `esc10`, `src_file`, `take`, `audio`. The paper's protocol is 5-fold cross-validation: fold `fold` is held out."""
    if fold not in (1, 2, 3, 4, 5):
        raise ValueError(f"fold={fold!r} is invalid: ESC-50 has folds 1 to 5; choose the held-out one with --fold.")
    raw = _load(source, config_name, data_dir, revision, cache_dir)
    _require_columns(raw, ["audio", "fold", "target", "category"], "ESC-50 rows need `fold`, `target`, `category`.")
    split = raw["train"] if "train" in raw else next(iter(raw.values()))
    names = dict(zip(split["target"], split["category"]))
    label_names = [names.get(target, f"class {target}") for target in range(max(names) + 1)]
    split = _with_ids(split, ["filename"])
    split = split.map(
        lambda targets: {"labels": targets},
        input_columns="target",
        batched=True,
        features=Features({**split.features, "labels": ClassLabel(names=label_names)}),
    )
    dataset = DatasetDict(
        {
            "train": split.filter(lambda folds: [f != fold for f in folds], input_columns="fold", batched=True),
            f"fold{fold}": split.filter(lambda folds: [f == fold for f in folds], input_columns="fold", batched=True),
        }
    )
    return dataset, label_names, {"train": "train", "eval": f"fold{fold}", "test": f"fold{fold}"}


def _labels_from_column(raw: DatasetDict, label_column: str, hint: str):
    """Class indices from a label column holding class names, speaker ids or a `ClassLabel`."""
    _require_columns(raw, [label_column], f"Name the label column with --label_column_name ({hint}).")
    feature = raw["train" if "train" in raw else next(iter(raw))].features[label_column]
    if isinstance(feature, ClassLabel):
        label_names, to_index = list(feature.names), None
    else:
        label_names = sorted({str(value) for split in raw.values() for value in split[label_column]})
        to_index = {name: i for i, name in enumerate(label_names)}
    dataset = DatasetDict()
    for split_name, split in raw.items():
        split = _with_ids(split)
        dataset[split_name] = split.map(
            lambda values: {"labels": values if to_index is None else [to_index[str(v)] for v in values]},
            input_columns=label_column,
            batched=True,
            features=Features({**split.features, "labels": ClassLabel(names=label_names)}),
        )
    return dataset, label_names, _default_roles(dataset)


def _load_voxceleb1(source, config_name, data_dir, revision, cache_dir, label_column=None, **_):
    """VoxCeleb-1 speaker identification (1251 speakers), in the layout of the Hub's VoxCeleb copies: `audio` and
    `speaker_id` ("id10001", ...), optionally `file`; splits train / validation / test of the official
    iden_split.txt (1 = train, 2 = validation, 3 = test)."""
    if source is None:
        raise ValueError(
            "VoxCeleb-1 cannot be downloaded anonymously: pass --dataset_source with your copy (a Hub id or a local "
            "folder) holding `audio` and `speaker_id` columns and train / validation / test splits."
        )
    raw = _load(source, config_name, data_dir, revision, cache_dir)
    return _labels_from_column(raw, label_column or "speaker_id", "VoxCeleb names the speaker in speaker_id")


def _load_audiofolder(source, config_name, data_dir, revision, cache_dir, label_column=None, **_):
    """Local files in `audiofolder` layout (`<split>/<label>/<clip>`, or a metadata.csv); labels from folder names."""
    folder = data_dir or source
    if folder is None or not os.path.isdir(folder):
        raise ValueError(f"audiofolder needs --data_dir pointing at a folder of audio files, got {folder!r}.")
    try:
        raw = load_dataset("audiofolder", data_dir=folder, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"could not read audio files from {folder!r}: {error}") from error

    def relative_paths(audio):
        return {"file": [os.path.relpath(value["path"], folder) for value in audio]}

    raw = DatasetDict(
        {
            name: split.cast_column("audio", Audio(decode=False))
            .map(relative_paths, input_columns="audio", batched=True)
            .cast_column("audio", Audio())
            for name, split in raw.items()
        }
    )
    return _labels_from_column(raw, label_column or "label", "audiofolder takes labels from folder names")


def _load_generic(source, config_name, data_dir, revision, cache_dir, label_column=None, **_):
    """Any Hub or local dataset with an audio column and a label column (class names or indices)."""
    raw = _load(source, config_name, data_dir, revision, cache_dir)
    return _labels_from_column(raw, label_column or "label", "one class per clip")


def _default_roles(dataset):
    if "train" not in dataset:
        raise ValueError(f"the dataset has no `train` split (splits: {list(dataset)}).")
    held_out = [name for name in ("validation", "valid", "dev", "test", "eval") if name in dataset]
    if not held_out:
        raise ValueError(
            f"the dataset has no validation or test split (splits: {list(dataset)}): add one (for audiofolder, a "
            "`validation/` or `test/` folder next to `train/`)."
        )
    test = "test" if "test" in dataset else held_out[0]
    return {"train": "train", "eval": held_out[0], "test": test}


DATASETS = {
    "audioset": DatasetSpec(
        "AudioSet-20K (balanced)",
        "agkphysics/AudioSet",
        _load_audioset,
        multi_label=True,
        metric="mean_average_precision",
        config_name="balanced",
        num_frames=1024,
        mean=-4.2677393,
        std=4.5689974,
        num_classes=527,
    ),
    "speech_commands": DatasetSpec(
        "Speech Commands V2",
        "google/speech_commands",
        _load_speech_commands,
        data_dir="v0.02",
        revision="refs/convert/parquet",
        num_frames=128,
        mean=-6.845978,
        std=5.5654526,
        num_classes=35,
    ),
    "esc50": DatasetSpec(
        "ESC-50",
        "ashraq/esc50",
        _load_esc50,
        num_frames=512,
        mean=-6.6268077,
        std=5.358466,
        num_classes=50,
    ),
    "voxceleb1": DatasetSpec(
        "VoxCeleb-1 (identification)",
        None,
        _load_voxceleb1,
        num_frames=1024,
        mean=-6.370,
        std=3.074,
        num_classes=1251,
    ),
    "audiofolder": DatasetSpec("audio files (audiofolder)", None, _load_audiofolder),
}


def load_audio_classification(
    dataset_name: str,
    source: str | None = None,
    config_name: str | None = None,
    data_dir: str | None = None,
    revision: str | None = None,
    fold: int | None = None,
    audio_column_name: str = "audio",
    label_column_name: str | None = None,
    sampling_rate: int = 16000,
    cache_dir: str | None = None,
) -> AudioClassificationData:
    """Load a named benchmark (`audioset`, `speech_commands`, `esc50`, `voxceleb1`, `audiofolder`) or any Hub / local
    dataset with an audio and a label column, as `AudioClassificationData`.

    `source` replaces the benchmark's Hub id (e.g. a local copy in the same layout); `config_name`, `data_dir` and
    `revision` go to `load_dataset`.
    """
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, int) or sampling_rate <= 0:
        raise ValueError(
            f"sampling_rate={sampling_rate!r} is invalid: give the rate (samples per second, > 0) audio is decoded at; "
            "every recipe of the paper uses 16000."
        )
    if dataset_name in DATASETS:
        spec = DATASETS[dataset_name]
        source = source or spec.hub_id
        config_name = config_name or spec.config_name
        data_dir = data_dir or spec.data_dir
        revision = revision or spec.revision
    elif "/" in dataset_name or os.path.isdir(dataset_name):
        spec = DatasetSpec(dataset_name, dataset_name, _load_generic)
        source = source or dataset_name
    else:
        raise ValueError(
            f"unknown dataset {dataset_name!r}: choose one of {', '.join(DATASETS)}, or give a Hub dataset id "
            "(owner/name) or a local folder."
        )
    dataset, label_names, roles = spec.loader(
        source=source,
        config_name=config_name,
        data_dir=data_dir,
        revision=revision,
        cache_dir=cache_dir,
        fold=fold,
        label_column=label_column_name,
    )
    if audio_column_name not in next(iter(dataset.values())).column_names:
        raise ValueError(
            f"no audio column {audio_column_name!r} (columns: {next(iter(dataset.values())).column_names}): name it "
            "with --audio_column_name."
        )
    dataset = _finish(dataset, audio_column_name, sampling_rate)
    if spec.num_classes is not None and len(label_names) != spec.num_classes:
        logger.warning(
            "%s has %d classes here, the benchmark has %d: a partial copy of the dataset?",
            spec.pretty_name,
            len(label_names),
            spec.num_classes,
        )
    return AudioClassificationData(
        train=dataset[roles["train"]],
        eval=dataset[roles["eval"]],
        test=dataset[roles["test"]],
        label_names=label_names,
        multi_label=spec.multi_label,
        spec=spec,
        source=source or data_dir,
        config_name=config_name,
        splits=roles,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Checks before training


def find_unusable_audio(split: Dataset, sampling_rate: int, description: str = "checking audio") -> list[tuple]:
    """`(id, reason)` for every row whose audio does not decode, is empty, shorter than one 25 ms fbank window or
    holds NaN / infinite samples.

    Decoding each row once here, before training, turns a bad file into a report instead of a crash mid-epoch; the
    result is cached by `datasets`, so a second run over the same data is free.
    """
    decoder = Audio(sampling_rate=sampling_rate)

    def check(batch):
        problems = []
        for value in batch["audio"]:
            audio = None
            try:  # whatever the codec raises, the row is unusable
                audio = decoder.decode_example(value)
                samples = np.asarray(audio["array"])
            except Exception as error:
                # FFmpeg refuses to decode a file without samples: say so rather than pass on its message.
                if audio is not None and not audio.metadata.duration_seconds:
                    problems.append("empty audio (0 samples)")
                else:
                    problems.append(f"does not decode ({type(error).__name__}: {str(error)[:80]})")
                continue
            if samples.size == 0:
                problems.append("empty audio (0 samples)")
            elif num_fbank_frames(samples.size, sampling_rate) == 0:
                problems.append(f"{samples.size} samples, shorter than one 25 ms fbank window")
            elif not np.isfinite(samples).all():
                problems.append("NaN or infinite samples")
            else:
                problems.append("")
        return {"problem": problems}

    checked = split.cast_column("audio", Audio(decode=False)).map(
        check, batched=True, batch_size=64, remove_columns=["audio", "labels"], desc=description
    )
    return [(row_id, problem) for row_id, problem in zip(checked["id"], checked["problem"]) if problem]


def report_unusable(problems: list[tuple], split_name: str, num_rows: int) -> str:
    shown = "; ".join(f"{row_id}: {problem}" for row_id, problem in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"{len(problems)} of {num_rows} rows of the {split_name} split cannot be used: {shown}{more}"


def drop_unusable_audio(data: AudioClassificationData, sampling_rate: int, drop: bool) -> list[str]:
    """Check every split; raise `ValueError` with the count and the first ids, or (`drop=True`) drop those rows and
    return the reports."""
    reports = []
    for role in ("train", "eval", "test"):
        split = getattr(data, role)
        if role == "test" and data.splits.get("test") == data.splits.get("eval"):
            data.test = data.eval
            continue
        problems = find_unusable_audio(split, sampling_rate, description=f"checking {role} audio")
        if not problems:
            continue
        report = report_unusable(problems, data.splits.get(role, role), len(split))
        if not drop:
            raise ValueError(
                f"{report}. Fix or remove these files, or pass --drop_unusable_rows to train without them."
            )
        bad = {row_id for row_id, _ in problems}
        setattr(data, role, split.filter(lambda ids: [i not in bad for i in ids], input_columns="id", batched=True))
        reports.append(report)
        if len(getattr(data, role)) == 0:
            raise ValueError(f"{report}: nothing is left to train or evaluate on.")
    return reports


# ---------------------------------------------------------------------------------------------------------------------
# Features and augmentation


@dataclass
class TimeShift:
    """Training augmentation: put each clip at a random position of the model's `num_frames`-frame input, like AST's
    time-shift augmentation for Speech Commands.

    Longer clips are cropped at a random offset before the features are made. For shorter ones, the feature extractor
    pads the fbank after the clip; `roll` then moves that padding, partly or wholly, in front of the clip. The padding
    is thus exactly what the feature extractor gives at inference (zeros or the clip minimum), and evaluation, the
    saved model and `pipeline` all see the extractor's own features.
    """

    num_frames: int
    sampling_rate: int = 16000

    def crop(self, waves: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        length = samples_for_frames(self.num_frames, self.sampling_rate)
        cropped = []
        for wave in waves:
            offset = int(rng.integers(0, len(wave) - length + 1)) if len(wave) > length else 0
            cropped.append(wave[offset : offset + length])
        return cropped

    def roll(self, features: torch.Tensor, waves: list[np.ndarray], rng: np.random.Generator) -> torch.Tensor:
        for sample, wave in zip(features, waves):
            room = sample.shape[0] - min(sample.shape[0], num_fbank_frames(len(wave), self.sampling_rate))
            sample.copy_(sample.roll(int(rng.integers(0, room + 1)), dims=0))
        return features


def samples_for_frames(num_frames: int, sampling_rate: int) -> int:
    """Waveform length that gives exactly `num_frames` Kaldi fbank frames (25 ms windows, 10 ms shift)."""
    return (num_frames - 1) * (sampling_rate // 100) + sampling_rate * 25 // 1000


def num_fbank_frames(num_samples: int, sampling_rate: int) -> int:
    """Frames of real audio in a Kaldi fbank of `num_samples` samples (25 ms windows every 10 ms, a partial last
    window dropped); the rest of the extractor's `max_length` is padding."""
    window, shift = sampling_rate * 25 // 1000, sampling_rate // 100
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


@dataclass
class SpecAugment:
    """Random frequency and time masking (SpecAugment) of normalised fbank features, as AST and AudioMAE use it:
    one band of width uniform in [0, freq_mask) and one span of width uniform in [0, time_mask) per clip.

    `fill_value` is what a masked bin becomes: the recipes mask the raw fbank with 0 before normalising, which is
    `-mean / (2 * std)` after normalisation.
    """

    freq_mask: int = 0
    time_mask: int = 0
    fill_value: float = 0.0
    enabled: bool = True

    def __call__(self, features: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if not self.enabled:
            return features
        batch, frames, bins = features.shape
        for sample in features:
            for width_max, axis_length, axis in ((self.freq_mask, bins, 1), (self.time_mask, frames, 0)):
                if width_max <= 0:
                    continue
                width = int(rng.integers(0, min(width_max, axis_length)))
                start = int(rng.integers(0, axis_length - width + 1))
                sample.narrow(axis, start, width).fill_(self.fill_value)
        return features


@dataclass
class PatchMasking:
    """Mask a fraction of the time-patch columns and of the frequency-patch rows of the spectrogram (AudioMAE's
    fine-tuning masking, ratio 0.3 in the paper's AS-20K and ESC-50 recipes). AudioMAE removes those tokens inside the
    model; here they are blanked in the input, which keeps the model a plain ViT."""

    ratio: float = 0.0
    patch_size: int = 16
    fill_value: float = 0.0
    enabled: bool = True

    def __call__(self, features: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if not self.enabled or self.ratio <= 0:
            return features
        batch, frames, bins = features.shape
        for sample in features:
            for axis, length in ((0, frames // self.patch_size), (1, bins // self.patch_size)):
                for patch in rng.permutation(length)[: int(length * self.ratio)].tolist():
                    sample.narrow(axis, patch * self.patch_size, self.patch_size).fill_(self.fill_value)
        return features


@dataclass
class Mixup:
    """Mix each clip, with probability `probability`, with another clip of the batch, in the waveform, as AST's and
    AudioMAE's data loaders do: `w * a + (1 - w) * b` with `b` cut or zero-padded to `a`'s length, the mean removed,
    `w ~ Beta(alpha, alpha)`; the targets are mixed with the same `w`. Both papers: probability 0.5 (AST on Speech
    Commands 0.6), alpha 10. The partner comes from the (shuffled) batch rather than the whole dataset.
    Targets must be float (one-hot or multi-hot): mixup needs a BCE-style loss."""

    probability: float = 0.0
    alpha: float = 10.0
    enabled: bool = True

    def __call__(self, waves: list[np.ndarray], targets: torch.Tensor, rng: np.random.Generator):
        if not self.enabled or self.probability <= 0 or len(waves) < 2:
            return waves, targets
        batch = len(waves)
        partner = (np.arange(batch) + rng.integers(1, batch, batch)) % batch  # never the clip itself
        weight = np.where(rng.random(batch) < self.probability, rng.beta(self.alpha, self.alpha, batch), 1.0)
        mixed = []
        for wave, other, w in zip(waves, (waves[j] for j in partner), weight):
            if w == 1.0:
                mixed.append(wave)
                continue
            other = other - other.mean()  # before padding, so the padding is silence for any DC offset
            other = other[: len(wave)] if len(other) >= len(wave) else np.pad(other, (0, len(wave) - len(other)))
            blend = w * (wave - wave.mean()) + (1 - w) * other
            mixed.append((blend - blend.mean()).astype(np.float32))
        w = torch.as_tensor(weight, dtype=targets.dtype).view(-1, 1)
        return mixed, w * targets + (1 - w) * targets[torch.as_tensor(partner)]


def normalised_zero(feature_extractor) -> float:
    """Where a raw fbank value of 0 lands after the extractor's normalisation (the recipes' masking value)."""
    if not getattr(feature_extractor, "do_normalize", False):
        return 0.0
    return (0.0 - feature_extractor.mean) / (2.0 * feature_extractor.std)


class AudioFeatureTransform:
    """`set_transform` for a split: decode, make features with the model's feature extractor, encode targets and,
    on the training split, augment.

    Targets are class indices for a cross-entropy loss (`one_hot=False`) and float one-hot / multi-hot vectors for a
    BCE loss, the multi-label case or mixup. Mixup blends waveforms before the features are made; `time_shift`
    (if any) moves each clip in the input, then feature augmentations run in the order given.

    Random draws come from a numpy generator seeded by `seed`, `epoch` and the ids of the batch's clips, not from
    torch's global generator: a run resumed from a checkpoint then augments every batch exactly as the uninterrupted
    run did (`Trainer` restores the global generator only after fetching the first batch), and data-loader workers
    need no seeding. `AugmentationEpochCallback` keeps `epoch` current.
    """

    def __init__(
        self,
        feature_extractor,
        num_labels: int,
        multi_label: bool,
        one_hot: bool,
        augmentations=(),
        mixup: Mixup | None = None,
        seed: int = 0,
        time_shift: TimeShift | None = None,
    ):
        if mixup is not None and mixup.probability > 0 and not one_hot:
            raise ValueError("mixup blends targets, so it needs float targets: use the BCE loss (--loss bce).")
        self.feature_extractor = feature_extractor
        self.num_labels = num_labels
        self.multi_label = multi_label
        self.one_hot = one_hot or multi_label
        self.augmentations = list(augmentations)
        self.mixup = mixup
        self.seed = seed
        self.epoch = 0
        self.time_shift = time_shift

    def targets(self, labels) -> torch.Tensor:
        if not self.one_hot:
            return torch.as_tensor(labels, dtype=torch.long)
        targets = torch.zeros(len(labels), self.num_labels)
        for row, label in enumerate(labels):
            targets[row, label] = 1.0
        return targets

    def rng(self, ids) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}|{self.epoch}|{'|'.join(map(str, ids))}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def __call__(self, batch):
        waves = [np.asarray(audio["array"], dtype=np.float32) for audio in batch["audio"]]
        random = self.augmentations or self.mixup is not None or self.time_shift is not None
        rng = self.rng(batch["id"]) if random else None
        targets = self.targets(batch["labels"])
        if self.time_shift is not None:
            waves = self.time_shift.crop(waves, rng)
        if self.mixup is not None:
            waves, targets = self.mixup(waves, targets, rng)
        features = torch.as_tensor(
            self.feature_extractor(waves, sampling_rate=self.feature_extractor.sampling_rate, return_tensors="np")[
                "input_values"
            ]
        )
        if rng is not None:
            if self.time_shift is not None:
                features = self.time_shift.roll(features, waves, rng)
            for augmentation in self.augmentations:
                features = augmentation(features, rng)
        return {"input_values": features, "labels": targets}


class AugmentationEpochCallback(TrainerCallback):
    """Tell a training transform which epoch is about to run (before its data loader is created), so each epoch
    draws new augmentations and a resumed run draws the same ones."""

    def __init__(self, transform: AudioFeatureTransform):
        self.transform = transform

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.transform.epoch = math.floor(state.epoch or 0)


def estimate_normalization(split: Dataset, feature_extractor, max_clips: int = 1000, seed: int = 0):
    """Mean and std of the extractor's un-normalised fbank over up to `max_clips` training clips (padding included,
    as AST's statistics are), for datasets without published statistics."""
    raw = copy.deepcopy(feature_extractor)
    raw.do_normalize = False
    if len(split) > max_clips:
        split = split.shuffle(seed=seed).select(range(max_clips))
    total, total_sq, count = 0.0, 0.0, 0
    for start in tqdm(range(0, len(split), 64), desc="feature statistics"):
        waves = [np.asarray(a["array"], dtype=np.float32) for a in split[start : start + 64]["audio"]]
        features = raw(waves, sampling_rate=raw.sampling_rate, return_tensors="np")["input_values"].astype(np.float64)
        total += features.sum()
        total_sq += (features**2).sum()
        count += features.size
    mean = total / count
    return float(mean), float(np.sqrt(total_sq / count - mean**2))

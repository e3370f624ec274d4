"""Audio classification datasets for fine-tuning: named loaders for the paper's benchmarks, checks, features.

Every loader maps its Hub layout to the same three columns: `audio` (decoded at 16 kHz by `datasets.Audio`),
`labels` (a class index, or a list of class indices for multi-label data) and `id` (a row name for reports), plus the
class names. Features are made on the fly by the model's feature extractor (`set_transform`, or `StreamingTrainingData`
for a streamed training split), with SpecAugment, patch masking and mixup on the training split when a recipe asks
for them. Speech Commands and VoxCeleb-1 also read their official archives (word folders + `testing_list.txt`,
`wav/` + `iden_split.txt`); `streaming=True` reads any loader as `datasets.IterableDataset`s.
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
from datasets import (
    Audio,
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    IterableDataset,
    IterableDatasetDict,
    Sequence,
    Value,
    load_dataset,
)
from datasets.exceptions import DatasetNotFoundError
from tqdm.auto import tqdm
from transformers import TrainerCallback

from .checks import audio_extensions


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
    test_set: str | None = None  # what the test split is, in words, for the model card
    num_rows: dict = field(default_factory=dict)  # rows per role when known without reading the data (streaming)

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


def _load(source, config_name=None, data_dir=None, revision=None, cache_dir=None, streaming=False, columns=None):
    """`load_dataset` for a Hub id or a local folder (`columns`: read only these columns of parquet files); whatever
    goes wrong comes back as a one-line `ValueError` that says what to do (the recipes print it without a
    traceback)."""
    local = os.path.isdir(source)
    where = f"{source!r}" + (f" (config {config_name!r})" if config_name else "") + (
        f" (data_dir {data_dir!r})" if data_dir else ""
    )
    if local and data_dir and not os.path.isdir(os.path.join(source, data_dir)):
        raise ValueError(f"{source!r} has no folder {data_dir!r}: fix --data_dir (a folder inside the dataset).")
    try:
        return load_dataset(
            source,
            config_name,
            data_dir=data_dir,
            revision=None if local else revision,
            cache_dir=cache_dir,
            streaming=streaming,
            **({"columns": columns} if columns else {}),
        )
    except RuntimeError as error:
        if "Dataset scripts are no longer supported" not in str(error):
            raise
        raise ValueError(
            f"{where} is a loading script, which datasets >= 4 no longer runs: use its parquet export "
            "(--dataset_revision refs/convert/parquet, if the Hub made one) or a local copy in a layout datasets reads "
            "(--dataset_source <folder>)."
        ) from error
    except (DatasetNotFoundError, FileNotFoundError, ConnectionError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"could not load the dataset {where}: {reason}. Give a local folder, a Hub dataset id you can reach "
            f"(offline: download it first) with an existing config and data_dir, or one of the named datasets: "
            f"{', '.join(DATASETS)}."
        ) from error


def _require_splits(dataset, needed, what: str, hint: str):
    """Refuse a copy that lacks a split a benchmark needs, naming the splits it has."""
    missing = [name for name in needed if name not in dataset]
    if missing:
        raise ValueError(
            f"{what} needs the split{'s' if len(missing) > 1 else ''} {', '.join(missing)}, but this copy has only "
            f"{', '.join(dataset) or 'none'}: {hint}"
        )


def _column(split, name):
    """All values of one column; a streamed split is read once for it, without decoding audio."""
    if isinstance(split, Dataset):
        return split[name]
    return [row[name] for row in split.select_columns([name])]


def _from_files(rows: dict, label_names: list[str]) -> Dataset:
    """A split from local audio files: `audio` (path, decoded by `datasets.Audio`), `file`, `labels`."""
    features = Features({"audio": Audio(), "file": Value("string"), "labels": ClassLabel(names=label_names)})
    return Dataset.from_dict(rows, features=features)


def _require_columns(dataset: DatasetDict, columns, hint: str):
    for split_name, split in dataset.items():
        missing = [column for column in columns if column not in split.column_names]
        if missing:
            raise ValueError(
                f"split {split_name!r} has no column {', '.join(map(repr, missing))} (columns: {split.column_names}). "
                f"{hint}"
            )


def _finish(dataset, audio_column: str, sampling_rate: int):
    """Keep `audio`, `labels`, `id`; decode audio at `sampling_rate` (resampling when the source differs)."""
    dataset = type(dataset)(
        {
            name: split.select_columns([audio_column, "labels", "id"]).rename_columns(
                {audio_column: "audio"} if audio_column != "audio" else {}
            )
            for name, split in dataset.items()
        }
    )
    return dataset.cast_column("audio", Audio(sampling_rate=sampling_rate))


def _with_ids(split, candidates=("file", "id")):
    """An `id` column naming each row in reports: the first of `candidates` the split has, else the row number."""
    column = next((name for name in candidates if name in split.column_names), None)
    if column is None and isinstance(split, Dataset):
        return split.add_column("id", [f"row {i}" for i in range(len(split))])
    # a stream's features are only known after a map that is told them
    features = Features({**split.features, "id": Value("string")}) if split.features is not None else None
    if column is None:
        return split.map(lambda _, index: {"id": f"row {index}"}, with_indices=True, features=features)
    return split.map(
        lambda values: {"id": [str(v) for v in values]}, input_columns=column, batched=True, features=features
    )


def _with_labels(split, function, input_column, label_feature):
    """`labels` computed from `input_column` by a batched `function`, typed as `label_feature`."""
    features = Features({**split.features, "labels": label_feature}) if split.features is not None else None
    return split.map(
        lambda values: {"labels": function(values)}, input_columns=input_column, batched=True, features=features
    )


def _load_audioset(source, config_name, data_dir, revision, cache_dir, streaming=False, **_):
    """agkphysics/AudioSet: `video_id`, `audio`, `labels` (list of ontology ids such as "/m/09x0r"), `human_labels`
    (their names), parquet shards under data/bal_train, data/unbal_train and data/eval. Config "balanced" has `train`
    (bal_train, AS-20K) and `test` (eval); "unbalanced" has `train` (unbal_train, 1,738,788 clips on the card: the
    AudioSet-2M scale, to be streamed) and the same `test`. The classes are the ontology ids the copy uses."""
    raw = _load(source, config_name, data_dir, revision, cache_dir, streaming)
    _require_splits(raw, ["train"], "AudioSet", "use the config balanced or unbalanced (splits train and test).")
    _require_columns(raw, ["audio", "labels", "human_labels"], "AudioSet rows need ontology ids and their names.")
    # a stream reads the label columns alone for the class list (parquet column projection: no audio bytes)
    columns = ["labels", "human_labels"]
    labels = _load(source, config_name, data_dir, revision, cache_dir, True, columns) if streaming else raw
    names = {}
    for split in labels.values():
        for row in split.select_columns(columns) if streaming else split.select_columns(columns).to_list():
            names.update(zip(row["labels"], row["human_labels"]))
    ontology_ids = sorted(names)
    index = {mid: i for i, mid in enumerate(ontology_ids)}
    label_names = [names[mid] for mid in ontology_ids]
    dataset = type(raw)()
    for split_name, split in raw.items():
        dataset[split_name] = _with_labels(
            _with_ids(split, ["video_id"]),
            lambda rows: [[index[mid] for mid in row] for row in rows],
            "labels",
            _label_feature(label_names, True),
        )
    held_out = "test" if "test" in dataset else next(name for name in dataset if name != "train")
    return dataset, label_names, {"train": "train", "eval": held_out, "test": held_out}


def _speech_commands_archive(source):
    """The `speech_commands_v0.02` folder of the official archive at or directly inside `source`, else None."""
    if source is None or not os.path.isdir(source):
        return None
    for folder in (source, os.path.join(source, "speech_commands_v0.02")):
        if os.path.isfile(os.path.join(folder, "testing_list.txt")):
            return folder
    return None


def _read_list(path):
    with open(path) as handle:
        return [line.strip() for line in handle if line.strip()]


def _missing_files(folder, relative_paths, list_name):
    missing = [path for path in relative_paths if not os.path.isfile(os.path.join(folder, path))]
    if missing:
        raise ValueError(
            f"{list_name} names {len(missing)} files that are not in {folder!r} (first: {', '.join(missing[:3])}): an "
            "incomplete copy of the archive; extract it again."
        )


def _load_speech_commands_archive(folder):
    """The official speech_commands_v0.02 archive: one folder per word (35), `validation_list.txt` and
    `testing_list.txt` naming the validation and test clips (`<word>/<speaker>_nohash_<n>.wav`), every other clip
    training; `_background_noise_` (long noise recordings, no word) is not a class. The real archive gives
    84,843 / 9,981 / 11,005 clips, the split of AST's prep_sc.py and of the paper."""
    words = sorted(
        name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name)) and not name.startswith("_")
    )
    if not words:
        raise ValueError(f"{folder!r} has testing_list.txt but no word folders: not a Speech Commands archive.")
    lists = {}
    for split_name, list_name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        path = os.path.join(folder, list_name)
        if not os.path.isfile(path):
            raise ValueError(f"{folder!r} has no {list_name}: the official archive ships it next to the word folders.")
        lists[split_name] = _read_list(path)
        _missing_files(folder, lists[split_name], list_name)
    held_out = {path: split_name for split_name, paths in lists.items() for path in paths}
    index = {word: i for i, word in enumerate(words)}
    rows = {name: {"audio": [], "file": [], "labels": []} for name in ("train", "validation", "test")}
    for word in words:
        for clip in sorted(os.listdir(os.path.join(folder, word))):
            if not clip.endswith(".wav"):
                continue
            relative = f"{word}/{clip}"
            split_rows = rows[held_out.get(relative, "train")]
            split_rows["audio"].append(os.path.join(folder, word, clip))
            split_rows["file"].append(relative)
            split_rows["labels"].append(index[word])
    dataset = DatasetDict({name: _with_ids(_from_files(split, words)) for name, split in rows.items()})
    return dataset, words, {"train": "train", "eval": "validation", "test": "test"}


def _load_speech_commands(
    source, config_name, data_dir, revision, cache_dir, streaming=False, accept_hub_test_split=False, **_
):
    """Speech Commands V2, 35 words. Either the official archive (a folder holding `speech_commands_v0.02/` or its
    contents: see `_load_speech_commands_archive`), or google/speech_commands v0.02 on the Hub (its parquet export):
    `file`, `audio`, `label` (36 names: 35 words and `_silence_`), `is_unknown`, `speaker_id`, `utterance_id`; splits
    train / validation / test, the `_silence_` rows dropped. The Hub's test split is TensorFlow's 12-class test set,
    not the archive's testing_list.txt, so it is refused unless `accept_hub_test_split`."""
    archive = _speech_commands_archive(source)
    if archive is not None:
        dataset, words, roles = _load_speech_commands_archive(archive)
        return dataset, words, roles
    if not accept_hub_test_split:
        raise ValueError(
            f"the test split of {source!r} (the Hub's Speech Commands) is TensorFlow's 12-class test set, not the "
            "11,005 clips of testing_list.txt that the paper and AST test on (no Hub split holds those): give the "
            "official archive with --dataset_source <folder holding speech_commands_v0.02/>, or accept the Hub's "
            "test set with --accept_hub_test_split."
        )
    raw = _load(source, config_name, data_dir, revision, cache_dir, streaming)
    _require_splits(raw, ["train", "validation", "test"], "Speech Commands", "use the v0.02 config (data_dir v0.02).")
    _require_columns(raw, ["audio", "label"], "Speech Commands rows need `audio` and a `label` class.")
    names = raw["train"].features["label"].names
    words = [name for name in names if name != "_silence_"]
    mapping = {names.index(word): i for i, word in enumerate(words)}
    dataset = type(raw)()
    for split_name, split in raw.items():
        split = split.filter(lambda labels: [label in mapping for label in labels], input_columns="label", batched=True)
        dataset[split_name] = _with_labels(
            _with_ids(split, ["file"]), lambda labels: [mapping[label] for label in labels], "label", ClassLabel(names=words)
        )
    return dataset, words, {"train": "train", "eval": "validation", "test": "test"}


def _load_esc50(source, config_name, data_dir, revision, cache_dir, fold=None, streaming=False, **_):
    """ashraq/esc50: one `train` split of 2000 clips with `filename`, `fold` (1-5), `target` (0-49), `category`,
    `esc10`, `src_file`, `take`, `audio`. The paper's protocol is 5-fold cross-validation: fold `fold` is held out."""
    if fold not in (1, 2, 3, 4, 5):
        raise ValueError(f"fold={fold!r} is invalid: ESC-50 has folds 1 to 5; choose the held-out one with --fold.")
    raw = _load(source, config_name, data_dir, revision, cache_dir, streaming)
    _require_columns(raw, ["audio", "fold", "target", "category"], "ESC-50 rows need `fold`, `target`, `category`.")
    split = raw["train"] if "train" in raw else next(iter(raw.values()))
    names = dict(zip(_column(split, "target"), _column(split, "category")))
    label_names = [names.get(target, f"class {target}") for target in range(max(names) + 1)]
    split = _with_labels(_with_ids(split, ["filename"]), list, "target", ClassLabel(names=label_names))
    dataset = type(raw)(
        {
            "train": split.filter(lambda folds: [f != fold for f in folds], input_columns="fold", batched=True),
            f"fold{fold}": split.filter(lambda folds: [f == fold for f in folds], input_columns="fold", batched=True),
        }
    )
    return dataset, label_names, {"train": "train", "eval": f"fold{fold}", "test": f"fold{fold}"}


def _labels_from_column(raw, label_column: str, hint: str):
    """Class indices from a label column holding class names, speaker ids or a `ClassLabel`."""
    _require_columns(raw, [label_column], f"Name the label column with --label_column_name ({hint}).")
    features = raw["train" if "train" in raw else next(iter(raw))].features
    feature = features[label_column] if features is not None else None
    if isinstance(feature, ClassLabel):
        label_names, to_index = list(feature.names), None
    else:
        label_names = sorted({str(value) for split in raw.values() for value in _column(split, label_column)})
        to_index = {name: i for i, name in enumerate(label_names)}
    dataset = type(raw)()
    for split_name, split in raw.items():
        dataset[split_name] = _with_labels(
            _with_ids(split),
            lambda values: values if to_index is None else [to_index[str(v)] for v in values],
            label_column,
            ClassLabel(names=label_names),
        )
    return dataset, label_names, _default_roles(dataset)


VOXCELEB_SPLITS = {"1": "train", "2": "validation", "3": "test"}


def _load_voxceleb1_official(folder):
    """The official VoxCeleb-1 layout: `wav/<speaker>/<video>/<clip>.wav` and `iden_split.txt`, one line per clip,
    `<1|2|3> <speaker>/<video>/<clip>.wav` (1 train, 2 validation, 3 test); the speaker (`id10001`...) is the
    class."""
    rows = {name: {"audio": [], "file": [], "labels": []} for name in VOXCELEB_SPLITS.values()}
    entries = []
    for number, line in enumerate(_read_list(os.path.join(folder, "iden_split.txt")), start=1):
        parts = line.split()
        if len(parts) != 2 or parts[0] not in VOXCELEB_SPLITS or parts[1].count("/") != 2:
            raise ValueError(
                f"iden_split.txt line {number} reads {line!r}: expected '<1|2|3> <speaker>/<video>/<clip>.wav' "
                "(the official identification split)."
            )
        entries.append((VOXCELEB_SPLITS[parts[0]], parts[1]))
    _missing_files(os.path.join(folder, "wav"), [path for _, path in entries], "iden_split.txt")
    speakers = sorted({path.split("/")[0] for _, path in entries})
    index = {speaker: i for i, speaker in enumerate(speakers)}
    for split_name, path in entries:
        rows[split_name]["audio"].append(os.path.join(folder, "wav", path))
        rows[split_name]["file"].append(path)
        rows[split_name]["labels"].append(index[path.split("/")[0]])
    empty = [name for name, split in rows.items() if not split["file"]]
    if empty:
        raise ValueError(f"iden_split.txt in {folder!r} puts no clip in the {', '.join(empty)} split.")
    dataset = DatasetDict({name: _with_ids(_from_files(split, speakers)) for name, split in rows.items()})
    return dataset, speakers, {"train": "train", "eval": "validation", "test": "test"}


def _load_voxceleb1(source, config_name, data_dir, revision, cache_dir, label_column=None, streaming=False, **_):
    """VoxCeleb-1 speaker identification (1251 speakers): the official layout (a folder with `wav/` and
    `iden_split.txt`), or a Hub / local copy with `audio` and `speaker_id` ("id10001", ...) columns and the
    train / validation / test splits of iden_split.txt."""
    if source is None:
        raise ValueError(
            "VoxCeleb-1 cannot be downloaded anonymously: pass --dataset_source with your copy, the official layout "
            "(a folder with wav/<speaker>/<video>/<clip>.wav and iden_split.txt) or a Hub id / folder with `audio` and "
            "`speaker_id` columns and train / validation / test splits."
        )
    if os.path.isfile(os.path.join(source, "iden_split.txt")):
        return _load_voxceleb1_official(source)
    if os.path.isdir(os.path.join(source, "wav")):
        raise ValueError(
            f"{source!r} has a wav/ folder but no iden_split.txt: put the official identification split "
            "(iden_split.txt, from the VoxCeleb-1 site) next to wav/."
        )
    raw = _load(source, config_name, data_dir, revision, cache_dir, streaming)
    _require_splits(
        raw,
        ["train", "test"],
        "VoxCeleb-1 identification",
        "give the official layout (wav/ and iden_split.txt) or a copy with all splits of iden_split.txt as "
        "--dataset_source.",
    )
    return _labels_from_column(raw, label_column or "speaker_id", "VoxCeleb names the speaker in speaker_id")


def _load_audiofolder(source, config_name, data_dir, revision, cache_dir, label_column=None, streaming=False, **_):
    """Local files in `audiofolder` layout (`<split>/<label>/<clip>`, or a metadata.csv); labels from folder names."""
    folder = data_dir or source
    if folder is None or not os.path.isdir(folder):
        raise ValueError(f"audiofolder needs --data_dir pointing at a folder of audio files, got {folder!r}.")
    try:
        raw = load_dataset("audiofolder", data_dir=folder, cache_dir=cache_dir, streaming=streaming)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"could not read audio files from {folder!r}: {error}") from error

    def relative_paths(audio):
        return {"file": [os.path.relpath(value["path"], folder) for value in audio]}

    def with_files(split):
        split = split.cast_column("audio", Audio(decode=False))
        # a stream's map forgets the features unless told them, and a stream without features cannot be cast
        features = Features({**split.features, "file": Value("string")}) if split.features is not None else None
        return split.map(relative_paths, input_columns="audio", batched=True, features=features)

    raw = type(raw)({name: with_files(split).cast_column("audio", Audio()) for name, split in raw.items()})
    return _labels_from_column(raw, label_column or "label", "audiofolder takes labels from folder names")


def _load_generic(source, config_name, data_dir, revision, cache_dir, label_column=None, streaming=False, **_):
    """Any Hub or local dataset with an audio column and a label column (class names or indices)."""
    raw = _load(source, config_name, data_dir, revision, cache_dir, streaming)
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


def _streamed_num_rows(source, config_name, data_dir, revision, cache_dir) -> dict:
    """Rows per split of a streamed dataset without reading its data: the split sizes of the dataset's metadata (the
    card's `dataset_info`), else the row counts in the footers of its parquet files, else (an audiofolder: a row per
    audio file) its audio files. Splits of other formats are left out (their size is unknown until read)."""
    import fsspec
    import pyarrow.parquet as pq
    from datasets import load_dataset_builder

    local = os.path.isdir(source)
    builder = load_dataset_builder(
        source, config_name, data_dir=data_dir, revision=None if local else revision, cache_dir=cache_dir
    )
    if builder.info.splits:
        return {name: info.num_examples for name, info in builder.info.splits.items() if info.num_examples}
    rows = {}
    for name, files in (builder.config.data_files or {}).items():
        if files and all(str(path).endswith(".parquet") for path in files):
            total = 0
            for path in files:
                with fsspec.open(path) as handle:
                    total += pq.ParquetFile(handle).metadata.num_rows
            rows[name] = total
        elif files and builder.name == "audiofolder":
            rows[name] = sum(str(path).lower().endswith(audio_extensions()) for path in files)
    return rows


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
    streaming: bool = False,
    accept_hub_test_split: bool = False,
) -> AudioClassificationData:
    """Load a named benchmark (`audioset`, `speech_commands`, `esc50`, `voxceleb1`, `audiofolder`) or any Hub / local
    dataset with an audio and a label column, as `AudioClassificationData`.

    `source` replaces the benchmark's Hub id: a local copy in the same layout, or, for `speech_commands` and
    `voxceleb1`, the folder of the official archive. `config_name`, `data_dir` and `revision` go to `load_dataset`.
    `streaming=True` returns `datasets.IterableDataset` splits, read as they are iterated (nothing is downloaded up
    front), with `num_rows` filled where the size is known without reading the data. `accept_hub_test_split` lets
    `speech_commands` test on the Hub copy's test split, which is not the benchmark's test set.
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
        streaming=streaming,
        accept_hub_test_split=accept_hub_test_split,
    )
    if audio_column_name not in next(iter(dataset.values())).column_names:
        raise ValueError(
            f"no audio column {audio_column_name!r} (columns: {next(iter(dataset.values())).column_names}): name it "
            "with --audio_column_name."
        )
    dataset = _finish(dataset, audio_column_name, sampling_rate)
    num_rows = {}
    if streaming and isinstance(dataset, DatasetDict):  # built from a file list: its size is known
        num_rows = {name: len(split) for name, split in dataset.items()}
        # shards let split_dataset_by_node give each process its own files rather than every n-th row
        dataset = IterableDatasetDict(
            {name: split.to_iterable_dataset(num_shards=min(64, len(split))) for name, split in dataset.items()}
        )
    elif streaming and spec.loader is _load_audiofolder:
        num_rows = _streamed_num_rows("audiofolder", None, data_dir or source, None, cache_dir)
    elif streaming:
        num_rows = _streamed_num_rows(source, config_name, data_dir, revision, cache_dir)
    if spec.num_classes is not None and len(label_names) != spec.num_classes:
        logger.warning(
            "%s has %d classes here, the benchmark has %d: a partial copy of the dataset?",
            spec.pretty_name,
            len(label_names),
            spec.num_classes,
        )
    test_set = f"the {roles['test']!r} split of {source or data_dir}"
    if dataset_name == "speech_commands":
        test_set = (
            "testing_list.txt of the official speech_commands_v0.02 archive (the paper's and AST's test set)"
            if _speech_commands_archive(source)
            else "the Hub copy's test split: TensorFlow's 12-class test set, NOT the paper's testing_list.txt"
        )
    elif dataset_name == "voxceleb1" and os.path.isfile(os.path.join(source or "", "iden_split.txt")):
        test_set = "the clips marked 3 in iden_split.txt (the official identification test set)"
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
        test_set=test_set,
        num_rows={role: num_rows[split] for role, split in roles.items() if split in num_rows},
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

    def roll(self, features: torch.Tensor, waves: list[np.ndarray], rng: np.random.Generator, frame_mask=None):
        """Roll each sample's frames in place; a ``frame_mask`` ``(batch, frames)`` moves with them."""
        for index, (sample, wave) in enumerate(zip(features, waves)):
            room = sample.shape[0] - min(sample.shape[0], num_fbank_frames(len(wave), self.sampling_rate))
            shift = int(rng.integers(0, room + 1))
            sample.copy_(sample.roll(shift, dims=0))
            if frame_mask is not None:
                frame_mask[index] = frame_mask[index].roll(shift, dims=0)
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

    def set_epoch(self, epoch: int):
        self.epoch = epoch

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
        extracted = self.feature_extractor(waves, sampling_rate=self.feature_extractor.sampling_rate, return_tensors="np")
        features = torch.as_tensor(extracted["input_values"])
        # An extractor saved for a drop_padding model returns its frame mask: it goes to the model with the features.
        frame_mask = torch.as_tensor(extracted["attention_mask"]) if "attention_mask" in extracted else None
        if rng is not None:
            if self.time_shift is not None:
                features = self.time_shift.roll(features, waves, rng, frame_mask)
            for augmentation in self.augmentations:
                features = augmentation(features, rng)
        batch = {"input_values": features, "labels": targets}
        return batch if frame_mask is None else {**batch, "attention_mask": frame_mask}


class AugmentationEpochCallback(TrainerCallback):
    """Tell a training transform which epoch is about to run (before its data loader is created), so each epoch
    draws new augmentations and a resumed run draws the same ones."""

    def __init__(self, transform: AudioFeatureTransform):
        self.transform = transform

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.transform.epoch = math.floor(state.epoch or 0)


def estimate_normalization(split, feature_extractor, max_clips: int = 1000, seed: int = 0):
    """Mean and std of the extractor's un-normalised fbank over up to `max_clips` training clips (padding included,
    as AST's statistics are), for datasets without published statistics: a random sample of a map-style split, the
    first clips of a stream."""
    raw = copy.deepcopy(feature_extractor)
    raw.do_normalize = False
    if isinstance(split, Dataset):
        if len(split) > max_clips:
            split = split.shuffle(seed=seed).select(range(max_clips))
        batches = (split[start : start + 64]["audio"] for start in range(0, len(split), 64))
    else:
        batches = (batch["audio"] for batch in split.take(max_clips).iter(batch_size=64))
    total, total_sq, count = 0.0, 0.0, 0
    for audio in tqdm(batches, desc="feature statistics"):
        waves = [np.asarray(a["array"], dtype=np.float32) for a in audio]
        features = raw(waves, sampling_rate=raw.sampling_rate, return_tensors="np")["input_values"].astype(np.float64)
        total += features.sum()
        total_sq += (features**2).sum()
        count += features.size
    mean = total / count
    return float(mean), float(np.sqrt(total_sq / count - mean**2))


# ---------------------------------------------------------------------------------------------------------------------
# Streaming


class StreamingTrainingData(torch.utils.data.IterableDataset):
    """A streamed training split as `Trainer` reads it: featurised examples in one endless stream of epochs.

    Each process reads its own part of `dataset` (`datasets.distributed.split_dataset_by_node`: whole shards when the
    number of shards divides by `world_size`, else every `world_size`-th row), shuffled through a buffer of
    `shuffle_buffer_size` rows filled from up to `max_buffer_input_shards` shards at a time (seeded, shard order and
    rows reshuffled every epoch with `set_epoch`; 0: source order). Rows are featurised
    `batch_size` at a time by `transform` (an `AudioFeatureTransform`), so mixup partners and augmentation draws come
    from the training batch, as on map-style data. Epochs follow each other without a break: `Trainer` stops at
    `max_steps`, and `epoch_hooks` (called with each epoch number as it starts) switch epoch-wise settings such as
    augmentation.

    The position reached after every batch is kept until the next checkpoint (`position_after`), and a run resumed
    with `resume_from(position)` continues the stream exactly where the checkpoint left it: through
    `IterableDataset.load_state_dict` without a shuffle buffer, and by skipping the consumed rows of the epoch with
    one (a shuffle buffer's content is not part of `datasets`' state, so its state alone would drop those rows). Rows
    are skipped before decoding, so no audio is decoded twice.

    Read in the main process: data-loader workers would each hold a part of the position (use
    `dataloader_num_workers=0`).
    """

    def __init__(
        self,
        dataset: IterableDataset,
        transform: "AudioFeatureTransform",
        batch_size: int,
        num_rows: int,
        shuffle_buffer_size: int = 1000,
        max_buffer_input_shards: int = 10,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_hooks: tuple = (),
    ):
        from datasets.distributed import split_dataset_by_node

        if shuffle_buffer_size < 0:
            raise ValueError(f"shuffle_buffer_size={shuffle_buffer_size}: give a number of rows >= 0 (0: no shuffling).")
        if not num_rows or num_rows <= 0:
            raise ValueError(
                "the number of training rows is unknown (the dataset's metadata does not give it): a stream's epochs "
                "are counted in rows; give it with --streaming_num_rows."
            )
        if shuffle_buffer_size:
            dataset = dataset.shuffle(
                seed=seed, buffer_size=shuffle_buffer_size, max_buffer_input_shards=max_buffer_input_shards
            )
        if world_size > 1:
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        self.dataset = dataset
        self.transform = transform
        self.batch_size = batch_size
        self.num_rows = num_rows
        self.shuffled = bool(shuffle_buffer_size)
        self.epoch_hooks = [transform.set_epoch, *epoch_hooks]
        self.rank = rank
        self.start = {"epoch": 0, "rows": 0, "dataset": None}
        self.batches = 0  # batches handed out since `start`
        self._positions = {}  # batches handed out -> position after them

    def resume_from(self, position: dict, batches: int):
        """Continue after `batches` batches, at `position` (from `position_after` of the interrupted run)."""
        self.start, self.batches, self._positions = dict(position), batches, {}

    def position_after(self, batches: int) -> dict:
        """Where the stream stood once `batches` batches had been handed out; forgets the positions before."""
        if batches == self.batches and not self._positions:
            return dict(self.start)
        if batches not in self._positions:
            raise RuntimeError(f"the stream position after batch {batches} was not recorded (reached: {self.batches}).")
        self._positions = {key: value for key, value in self._positions.items() if key >= batches}
        return self._positions[batches]

    def _epoch_rows(self, epoch: int, skip: int, state):
        self.dataset.set_epoch(epoch)
        if not skip:
            return self.dataset
        if not self.shuffled:
            self.dataset.load_state_dict(state)
            return self.dataset
        rest = self.dataset.skip(skip)
        rest.set_epoch(epoch)
        return rest

    def __iter__(self):
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError(
                "StreamingTrainingData is read in the main process, where its position is saved with each "
                "checkpoint: set dataloader_num_workers=0 (--dataloader_num_workers 0)."
            )
        epoch, skip, state = self.start["epoch"], self.start["rows"], self.start["dataset"]
        rows = []  # a last partial batch of an epoch is completed with the first rows of the next one
        while True:
            for hook in self.epoch_hooks:
                hook(epoch)
            stream, read = self._epoch_rows(epoch, skip, state), skip
            for row in stream:
                rows.append(row)
                read += 1
                if len(rows) < self.batch_size:
                    continue
                batch = self.transform({key: [row[key] for row in rows] for key in rows[0]})
                self.batches += 1
                self._positions[self.batches] = {
                    "epoch": epoch,
                    "rows": read,
                    "dataset": None if self.shuffled else stream.state_dict(),
                }
                rows = []
                for i in range(len(batch["labels"])):
                    yield {key: value[i] for key, value in batch.items()}
            if read == 0:
                raise ValueError("the training stream is empty: no rows to train on.")
            epoch, skip, state = epoch + 1, 0, None


class StreamingEvalData(torch.utils.data.IterableDataset):
    """A streamed evaluation or test split, featurised row by row with a deterministic `transform`.

    A plain torch `IterableDataset` on purpose: accelerate then gives every process the same number of batches
    (`IterableDatasetShard`, padded at the end, which `Trainer` trims), where shards of unequal size would leave one
    process waiting for the others. Every process reads the whole split for that.
    """

    def __init__(self, dataset: IterableDataset, transform: "AudioFeatureTransform"):
        self.dataset = dataset
        self.transform = transform

    def __iter__(self):
        for row in self.dataset:
            batch = self.transform({key: [value] for key, value in row.items()})
            yield {key: value[0] for key, value in batch.items()}

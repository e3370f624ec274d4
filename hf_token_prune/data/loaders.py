"""The named benchmarks (AudioSet, Speech Commands, ESC-50, VoxCeleb-1, audiofolder) and any Hub / local dataset with
an audio and a label column: each loader maps its layout, Hub copy or official archive, to the columns `audio`,
`labels` and `id`, and says which of its splits trains, is watched during training and is tested on."""

import os
from collections.abc import Callable
from dataclasses import dataclass

from datasets import Audio, ClassLabel, DatasetDict, Features, Value, load_dataset
from datasets.exceptions import DatasetNotFoundError

from .columns import (
    _column,
    _from_files,
    _label_feature,
    _labels_from_column,
    _require_columns,
    _require_splits,
    _with_ids,
    _with_labels,
)


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

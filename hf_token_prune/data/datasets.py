"""`load_audio_classification`: a named benchmark or any audio dataset as `AudioClassificationData` (train, eval and
test splits with `audio`, `labels`, `id`, the class names and what the model card says about them), streamed on
request; and the check before training that every clip decodes."""

import logging
import os
from dataclasses import dataclass, field

import numpy as np
from datasets import Audio, Dataset, DatasetDict, IterableDatasetDict

from ..checks import audio_extensions
from .columns import _label_feature
from .features import num_fbank_frames
from .loaders import DATASETS, DatasetSpec, _load_audiofolder, _load_generic, _speech_commands_archive


logger = logging.getLogger(__name__)


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
    if streaming:
        dataset, num_rows = _as_stream(dataset, spec, source, config_name, data_dir, revision, cache_dir)
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
        test_set=_test_set(dataset_name, roles, source, data_dir),
        num_rows={role: num_rows[split] for role, split in roles.items() if split in num_rows},
    )


def _as_stream(dataset, spec, source, config_name, data_dir, revision, cache_dir):
    """The splits as `IterableDataset`s, and the rows per split known without reading the data."""
    if isinstance(dataset, DatasetDict):  # built from a file list: its size is known
        num_rows = {name: len(split) for name, split in dataset.items()}
        # shards let split_dataset_by_node give each process its own files rather than every n-th row
        dataset = IterableDatasetDict(
            {name: split.to_iterable_dataset(num_shards=min(64, len(split))) for name, split in dataset.items()}
        )
        return dataset, num_rows
    if spec.loader is _load_audiofolder:
        return dataset, _streamed_num_rows("audiofolder", None, data_dir or source, None, cache_dir)
    return dataset, _streamed_num_rows(source, config_name, data_dir, revision, cache_dir)


def _test_set(dataset_name, roles, source, data_dir) -> str:
    """What the test split is, in words, for the model card."""
    if dataset_name == "speech_commands":
        return (
            "testing_list.txt of the official speech_commands_v0.02 archive (the paper's and AST's test set)"
            if _speech_commands_archive(source)
            else "the Hub copy's test split: TensorFlow's 12-class test set, NOT the paper's testing_list.txt"
        )
    if dataset_name == "voxceleb1" and os.path.isfile(os.path.join(source or "", "iden_split.txt")):
        return "the clips marked 3 in iden_split.txt (the official identification test set)"
    return f"the {roles['test']!r} split of {source or data_dir}"


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

"""Split and column helpers the dataset loaders share: required splits and columns, the `id` and `labels` columns,
splits built from lists of local files, and which split plays which role."""

from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, Sequence, Value


def _label_feature(names, multi_label):
    return Sequence(ClassLabel(names=names)) if multi_label else ClassLabel(names=names)

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

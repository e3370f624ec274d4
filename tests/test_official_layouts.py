"""Speech Commands V2 and VoxCeleb-1 read from their official archives' layouts (tiny generated copies), the Hub
copies' test-split and missing-split refusals, one-line errors for datasets that cannot be read, and every loader
streamed (`streaming=True`) giving the rows it loads."""

import numpy as np
import pytest
import soundfile
from datasets import Audio, ClassLabel, Dataset, Features, IterableDataset, Value

from conftest import KEYWORDS
from hf_token_prune.data import load_audio_classification
from test_streaming import audioset_copy


SPEECH_COMMANDS_WORDS = (
    "yes no up down left right on off stop go zero one two three four five six seven eight nine "
    "bed bird cat dog happy house marvin sheila tree wow backward forward follow learn visual"
).split()


def write_clip(path, seconds=0.05, rate=16000, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.random.default_rng(seed).normal(0, 0.1, int(seconds * rate)).astype(np.float32), rate)


def speech_commands_archive(root, clips_per_word=4):
    """speech_commands_v0.02/ as the official tarball unpacks: 35 word folders of `<speaker>_nohash_<n>.wav`,
    validation_list.txt and testing_list.txt (`<word>/<file>` per line), _background_noise_/, README.md, LICENSE.
    Per word: clip 0 in the validation list, clip 1 in the testing list, the rest training."""
    folder = root / "speech_commands_v0.02"
    validation, testing = [], []
    for w, word in enumerate(SPEECH_COMMANDS_WORDS):
        for n in range(clips_per_word):
            name = f"{word}/{w:04x}beef_nohash_{n}.wav"
            write_clip(folder / name, seed=w * 10 + n)
            (validation if n == 0 else testing if n == 1 else []).append(name)
    write_clip(folder / "_background_noise_" / "white_noise.wav", seconds=0.5)
    (folder / "_background_noise_" / "README.md").write_text("noise\n")
    (folder / "validation_list.txt").write_text("\n".join(validation) + "\n")
    (folder / "testing_list.txt").write_text("\n".join(testing) + "\n")
    (folder / "README.md").write_text("# Speech Commands Data Set v0.02\n")
    (folder / "LICENSE").write_text("CC BY 4.0\n")
    return folder


@pytest.mark.parametrize("level", ["parent", "archive"])
def test_speech_commands_official_archive(tmp_path, level):
    folder = speech_commands_archive(tmp_path)
    data = load_audio_classification("speech_commands", source=str(tmp_path if level == "parent" else folder))
    assert data.label_names == sorted(SPEECH_COMMANDS_WORDS) and len(data.label_names) == 35
    assert (len(data.train), len(data.eval), len(data.test)) == (70, 35, 35)
    assert data.splits == {"train": "train", "eval": "validation", "test": "test"}
    assert "testing_list.txt" in data.test_set
    testing = set((folder / "testing_list.txt").read_text().split())
    assert set(data.test["id"]) == testing and not testing & set(data.train["id"])
    assert set((folder / "validation_list.txt").read_text().split()) == set(data.eval["id"])
    assert not any(row_id.startswith("_background_noise_") for row_id in data.train["id"])
    row = data.test[0]
    assert data.label_names[row["labels"]] == row["id"].split("/")[0]
    assert row["audio"]["sampling_rate"] == 16000 and len(row["audio"]["array"]) == 800


def test_speech_commands_archive_with_a_missing_listed_clip(tmp_path):
    folder = speech_commands_archive(tmp_path, clips_per_word=2)
    (folder / "yes" / "0000beef_nohash_1.wav").unlink()
    with pytest.raises(ValueError, match=r"testing_list.txt names 1 files that are not in .*yes/0000beef_nohash_1"):
        load_audio_classification("speech_commands", source=str(tmp_path))


def hub_speech_commands(root):
    # google/speech_commands' parquet export: v0.02/{train,validation,test}/0000.parquet, 36 names with _silence_
    names = SPEECH_COMMANDS_WORDS + ["_silence_"]
    features = Features({"file": Value("string"), "audio": Audio(sampling_rate=16000), "label": ClassLabel(names=names)})
    for split, labels in (("train", [0, 35, 34]), ("validation", [1]), ("test", [2, 35])):
        rows = {
            "file": [f"{names[label]}/{i}.wav" for i, label in enumerate(labels)],
            "audio": [{"array": np.zeros(1600, np.float32), "sampling_rate": 16000} for _ in labels],
            "label": labels,
        }
        path = root / "v0.02" / split / "0000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(rows, features=features).to_parquet(str(path))


def test_hub_speech_commands_test_split_is_refused_unless_accepted(tmp_path):
    hub_speech_commands(tmp_path)
    with pytest.raises(ValueError) as error:
        load_audio_classification("speech_commands", source=str(tmp_path))
    message = str(error.value)
    assert "12-class test set" in message and "--dataset_source" in message and "--accept_hub_test_split" in message
    assert "\n" not in message
    data = load_audio_classification("speech_commands", source=str(tmp_path), accept_hub_test_split=True)
    assert data.test["labels"] == [2] and "NOT the paper's testing_list.txt" in data.test_set


def voxceleb1_official(root):
    """VoxCeleb-1 as distributed: wav/<speaker>/<video>/<clip>.wav and iden_split.txt ('<1|2|3> <path>')."""
    lines = []
    for s, speaker in enumerate(["id10001", "id10002", "id10003"]):
        for v, video in enumerate(["1zcIwhmdeo4", "7gWzIy6yIIk"]):
            for c in range(1, 3):
                path = f"{speaker}/{video}/{c:05d}.wav"
                write_clip(root / "wav" / path, seconds=0.1, seed=s * 100 + v * 10 + c)
                lines.append(f"{3 if (v, c) == (1, 2) else 2 if (v, c) == (1, 1) else 1} {path}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return lines


def test_voxceleb1_official_layout(tmp_path):
    lines = voxceleb1_official(tmp_path)
    data = load_audio_classification("voxceleb1", source=str(tmp_path))
    assert data.label_names == ["id10001", "id10002", "id10003"]
    assert (len(data.train), len(data.eval), len(data.test)) == (6, 3, 3)
    assert data.test["id"] == [line.split()[1] for line in lines if line.startswith("3 ")]
    assert data.test["labels"] == [0, 1, 2] and data.train["labels"] == [0, 0, 1, 1, 2, 2]
    assert "iden_split.txt" in data.test_set
    assert data.eval[0]["audio"]["sampling_rate"] == 16000


def test_voxceleb1_official_layout_errors(tmp_path):
    voxceleb1_official(tmp_path)
    split_file = tmp_path / "iden_split.txt"
    good = split_file.read_text()
    split_file.write_text(good + "4 id10001/xyz/00001.wav\n")
    with pytest.raises(ValueError, match=r"iden_split.txt line 13 reads '4 id10001/xyz/00001.wav'"):
        load_audio_classification("voxceleb1", source=str(tmp_path))
    split_file.write_text(good + "1 id10009/xyz/00001.wav\n")
    with pytest.raises(ValueError, match="iden_split.txt names 1 files that are not in"):
        load_audio_classification("voxceleb1", source=str(tmp_path))
    split_file.unlink()
    with pytest.raises(ValueError, match="no iden_split.txt"):
        load_audio_classification("voxceleb1", source=str(tmp_path))


def test_voxceleb1_copy_without_a_train_split(tmp_path):
    # the Hub copy with the assumed columns has only a test split
    features = Features({"audio": Audio(sampling_rate=16000), "speaker_id": Value("string")})
    rows = {"audio": [{"array": np.zeros(1600, np.float32), "sampling_rate": 16000}], "speaker_id": ["id10270"]}
    Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "test.parquet"))
    with pytest.raises(ValueError, match="needs the split train, but this copy has only test: give the official layout"):
        load_audio_classification("voxceleb1", source=str(tmp_path))


def one_line_error(**kwargs):
    with pytest.raises(ValueError) as error:
        load_audio_classification(**kwargs)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_unreadable_datasets_give_one_line_errors(tmp_path):
    script_only = tmp_path / "speech_commands"
    script_only.mkdir()
    (script_only / "speech_commands.py").write_text("import datasets\n")  # a Hub repo's main branch: only a script
    assert "loading script" in one_line_error(dataset_name=str(script_only))
    assert "refs/convert/parquet" in one_line_error(dataset_name=str(script_only))

    copy = audioset_copy(tmp_path / "copy", shards=1, rows_per_shard=2)
    message = one_line_error(dataset_name="audioset", source=str(copy), config_name="full")
    assert "could not load the dataset" in message and "'full'" in message and "'balanced', 'unbalanced'" in message
    message = one_line_error(dataset_name="audioset", source=str(copy), data_dir="v0.02")
    assert "has no folder 'v0.02'" in message and "--data_dir" in message


def loader_arguments(layout, root):
    if layout == "audiofolder":  # the shipped keyword clips
        return {"dataset_name": "audiofolder", "data_dir": str(KEYWORDS)}
    if layout == "speech_commands archive":
        speech_commands_archive(root, clips_per_word=3)
        return {"dataset_name": "speech_commands", "source": str(root)}
    if layout == "voxceleb1 official":
        voxceleb1_official(root)
        return {"dataset_name": "voxceleb1", "source": str(root)}
    hub_speech_commands(root)  # the Hub's parquet export
    return {"dataset_name": "speech_commands", "source": str(root), "accept_hub_test_split": True}


@pytest.mark.parametrize("layout", ["audiofolder", "speech_commands archive", "voxceleb1 official", "hub parquet"])
def test_every_loader_streams_the_rows_it_loads(tmp_path, layout):
    arguments = loader_arguments(layout, tmp_path)
    loaded = load_audio_classification(**arguments)
    streamed = load_audio_classification(**arguments, streaming=True)
    assert streamed.label_names == loaded.label_names and streamed.splits == loaded.splits
    for role in ("train", "eval", "test"):
        split = getattr(streamed, role)
        assert isinstance(split, IterableDataset)
        rows = [(row["id"], row["labels"]) for row in split.select_columns(["id", "labels"])]
        assert rows == list(zip(getattr(loaded, role)["id"], getattr(loaded, role)["labels"]))
    first = next(iter(streamed.test))
    np.testing.assert_array_equal(first["audio"]["array"], loaded.test[0]["audio"]["array"])
    assert first["audio"]["sampling_rate"] == 16000
    if layout != "hub parquet":  # files, one row each; the Hub copy's footers also count the _silence_ rows dropped
        assert streamed.num_rows == {role: len(getattr(loaded, role)) for role in ("train", "eval", "test")}

"""Dataset loaders on tiny local copies in each dataset's real Hub layout, checks, features and augmentation."""

import csv

import numpy as np
import pytest
import soundfile
import torch
from datasets import Audio, ClassLabel, Dataset, Features, List, Value
from transformers import ASTFeatureExtractor

from conftest import KEYWORDS
from test_streaming import write_audioset_card
from hf_token_prune.data import (
    AudioFeatureTransform,
    Mixup,
    PatchMasking,
    SpecAugment,
    TimeShift,
    drop_unusable_audio,
    estimate_normalization,
    load_audio_classification,
    normalised_zero,
    num_fbank_frames,
    samples_for_frames,
)


def tone(seconds, rate, frequency=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def write_parquet(rows, features, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(rows, features=features).to_parquet(str(path))


def audio_rows(n, rate, seconds=0.5):
    return [{"array": tone(seconds, rate, 200 + 50 * i), "sampling_rate": rate} for i in range(n)]


def assert_decoded_at_16k(split, seconds):
    audio = split[0]["audio"]
    assert audio["sampling_rate"] == 16000
    assert abs(len(audio["array"]) - seconds * 16000) <= 2


# 1. each named loader on its Hub layout ------------------------------------------------------------------------------


def test_audioset_balanced_layout(tmp_path):
    # agkphysics/AudioSet: config "balanced" = data/bal_train/*.parquet (train) + data/eval/*.parquet (test).
    write_audioset_card(tmp_path)
    features = Features(
        {
            "video_id": Value("string"),
            "audio": Audio(),
            "labels": List(Value("string")),
            "human_labels": List(Value("string")),
        }
    )
    write_parquet(
        {
            "video_id": ["--PJHxphWEs", "a1", "b2"],
            "audio": audio_rows(3, 48000, 1.0),
            "labels": [["/m/09x0r", "/t/dd00088"], ["/m/04rlf"], ["/m/09x0r"]],
            "human_labels": [["Speech", "Gush"], ["Music"], ["Speech"]],
        },
        features,
        tmp_path / "data" / "bal_train" / "00.parquet",
    )
    write_parquet(
        {
            "video_id": ["e1", "e2"],
            "audio": audio_rows(2, 44100, 1.0),
            "labels": [["/m/04rlf", "/t/dd00088"], ["/m/0dgw9r"]],
            "human_labels": [["Music", "Gush"], ["Human sounds"]],
        },
        features,
        tmp_path / "data" / "eval" / "00.parquet",
    )

    data = load_audio_classification("audioset", source=str(tmp_path))
    assert data.multi_label and data.spec.metric == "mean_average_precision"
    mids = sorted(["/m/09x0r", "/t/dd00088", "/m/04rlf", "/m/0dgw9r"])
    names = {"/m/09x0r": "Speech", "/t/dd00088": "Gush", "/m/04rlf": "Music", "/m/0dgw9r": "Human sounds"}
    assert data.label_names == [names[mid] for mid in mids]
    index = {names[mid]: i for i, mid in enumerate(mids)}
    assert data.train["labels"] == [[index["Speech"], index["Gush"]], [index["Music"]], [index["Speech"]]]
    assert data.eval["labels"] == [[index["Music"], index["Gush"]], [index["Human sounds"]]]
    assert data.train["id"] == ["--PJHxphWEs", "a1", "b2"]
    assert data.splits == {"train": "train", "eval": "test", "test": "test"}
    assert_decoded_at_16k(data.train, 1.0)
    assert_decoded_at_16k(data.eval, 1.0)


SPEECH_COMMANDS_V2 = [
    "yes",
    "no",
    "up",
    "down",
    "left",
    "right",
    "on",
    "off",
    "stop",
    "go",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "bed",
    "bird",
    "cat",
    "dog",
    "happy",
    "house",
    "marvin",
    "sheila",
    "tree",
    "wow",
    "backward",
    "forward",
    "follow",
    "learn",
    "visual",
    "_silence_",
]


def test_speech_commands_v2_parquet_export_layout(tmp_path):
    # google/speech_commands on refs/convert/parquet: v0.02/{train,validation,test}/0000.parquet
    features = Features(
        {
            "file": Value("string"),
            "audio": Audio(sampling_rate=16000),
            "label": ClassLabel(names=SPEECH_COMMANDS_V2),
            "is_unknown": Value("bool"),
            "speaker_id": Value("string"),
            "utterance_id": Value("int8"),
        }
    )
    for split, labels in (("train", [0, 35, 34, 12]), ("validation", [1, 35]), ("test", [2, 30])):
        rows = {
            "file": [f"{split}/{SPEECH_COMMANDS_V2[label]}/{i}.wav" for i, label in enumerate(labels)],
            "audio": audio_rows(len(labels), 16000, 1.0),
            "label": labels,
            "is_unknown": [label >= 10 for label in labels],
            "speaker_id": ["a"] * len(labels),
            "utterance_id": [0] * len(labels),
        }
        write_parquet(rows, features, tmp_path / "v0.02" / split / "0000.parquet")

    data = load_audio_classification("speech_commands", source=str(tmp_path), accept_hub_test_split=True)
    assert len(data.label_names) == 35 and "_silence_" not in data.label_names
    assert data.label_names == SPEECH_COMMANDS_V2[:35]
    assert data.train["labels"] == [0, 34, 12]  # the _silence_ row is gone
    assert data.train["id"] == ["train/yes/0.wav", "train/visual/2.wav", "train/two/3.wav"]
    assert data.eval["labels"] == [1] and data.test["labels"] == [2, 30]
    assert_decoded_at_16k(data.test, 1.0)


def test_esc50_layout_and_folds(tmp_path):
    # ashraq/esc50: a single train split of parquet shards with the ESC-50 metadata columns.
    features = Features(
        {
            "filename": Value("string"),
            "fold": Value("int64"),
            "target": Value("int64"),
            "category": Value("string"),
            "esc10": Value("bool"),
            "src_file": Value("int64"),
            "take": Value("string"),
            "audio": Audio(),
        }
    )
    rows = {
        "filename": [
            f"{fold}-1000{i}-A-{target}.wav"
            for i, (fold, target) in enumerate([(1, 0), (2, 1), (3, 2), (2, 0), (5, 2)])
        ],
        "fold": [1, 2, 3, 2, 5],
        "target": [0, 1, 2, 0, 2],
        "category": ["dog", "rooster", "pig", "dog", "pig"],
        "esc10": [True, False, False, True, False],
        "src_file": [10000, 10001, 10002, 10003, 10004],
        "take": ["A"] * 5,
        "audio": audio_rows(5, 44100, 0.5),
    }
    write_parquet(rows, features, tmp_path / "data" / "train-00000-of-00001-abc.parquet")

    data = load_audio_classification("esc50", source=str(tmp_path), fold=2)
    assert data.label_names == ["dog", "rooster", "pig"]
    assert data.eval["id"] == ["2-10001-A-1.wav", "2-10003-A-0.wav"] and data.eval["labels"] == [1, 0]
    assert sorted(data.train["id"]) == ["1-10000-A-0.wav", "3-10002-A-2.wav", "5-10004-A-2.wav"]
    assert data.test["id"] == data.eval["id"]
    assert_decoded_at_16k(data.train, 0.5)
    with pytest.raises(ValueError, match="folds 1 to 5"):
        load_audio_classification("esc50", source=str(tmp_path), fold=6)


def test_voxceleb1_identification_layout(tmp_path):
    # Hub VoxCeleb copies: `audio`, `id`, `speaker_id` ("id10001", ...), train / validation / test splits.
    features = Features({"audio": Audio(sampling_rate=16000), "id": Value("string"), "speaker_id": Value("string")})
    for split, speakers in (
        ("train", ["id10002", "id10001", "id10003"]),
        ("validation", ["id10001"]),
        ("test", ["id10003", "id10002"]),
    ):
        rows = {
            "audio": audio_rows(len(speakers), 16000, 0.8),
            "id": [f"{s}/vid/{i:05d}.wav" for i, s in enumerate(speakers)],
            "speaker_id": speakers,
        }
        write_parquet(rows, features, tmp_path / "data" / f"{split}-00000-of-00001.parquet")

    data = load_audio_classification("voxceleb1", source=str(tmp_path))
    assert data.label_names == ["id10001", "id10002", "id10003"]
    assert data.train["labels"] == [1, 0, 2] and data.test["labels"] == [2, 1]
    assert data.eval["id"] == ["id10001/vid/00000.wav"]
    with pytest.raises(ValueError, match="--dataset_source"):
        load_audio_classification("voxceleb1")


def test_shipped_keywords_hold_out_their_voices():
    # The extra test speakers must reuse only the test split's voice variants, or test would measure memorisation.
    with open(KEYWORDS / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all((KEYWORDS / row["path"]).is_file() for row in rows)
    assert sorted(p.relative_to(KEYWORDS).as_posix() for p in KEYWORDS.glob("*/*/*.flac")) == sorted(
        row["path"] for row in rows)
    variants = {split: {row["voice"].partition("+")[2] for row in rows if row["split"] == split}
                for split in ("train", "validation", "test")}
    assert not variants["train"] & variants["test"] and not variants["train"] & variants["validation"]
    assert not variants["validation"] & variants["test"]
    speakers = {split: {row["speaker"] for row in rows if row["split"] == split} for split in variants}
    assert [len(speakers[split]) for split in ("train", "validation", "test")] == [70, 6, 30]


def test_audiofolder_on_the_shipped_keywords():
    data = load_audio_classification("audiofolder", data_dir=str(KEYWORDS))
    assert data.label_names == ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]
    assert (len(data.train), len(data.eval), len(data.test)) == (700, 60, 300)
    assert data.splits == {"train": "train", "eval": "validation", "test": "test"}
    row = data.test[0]
    assert row["id"].startswith("test/") and row["id"].split("/")[1] == data.label_names[row["labels"]]
    assert row["audio"]["sampling_rate"] == 16000


def test_generic_dataset_with_class_names(tmp_path):
    features = Features({"audio": Audio(), "label": Value("string")})
    write_parquet({"audio": audio_rows(3, 8000), "label": ["cat", "dog", "cat"]}, features, tmp_path / "train.parquet")
    write_parquet({"audio": audio_rows(1, 8000), "label": ["dog"]}, features, tmp_path / "test.parquet")
    data = load_audio_classification(str(tmp_path))
    assert data.label_names == ["cat", "dog"] and data.train["labels"] == [0, 1, 0] and data.test["labels"] == [1]
    assert_decoded_at_16k(data.train, 0.5)


def test_labels_align_with_a_pretrained_head(tmp_path):
    data = load_audio_classification("audiofolder", data_dir=str(KEYWORDS))
    before = data.test["labels"]
    order = list(reversed(data.label_names))
    assert data.align_labels(order)
    assert data.label_names == order
    assert data.test["labels"] == [9 - label for label in before]
    assert not data.align_labels(["a", "b"])  # other classes: a new head is trained instead


# 2. bad input --------------------------------------------------------------------------------------------------------


def test_unknown_dataset_and_missing_columns(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset'.*audioset"):
        load_audio_classification("no_such_dataset")
    with pytest.raises(ValueError, match="could not load the dataset 'nobody/nothing'"):
        load_audio_classification("nobody/nothing")
    features = Features({"audio": Audio(), "category": Value("string")})
    write_parquet({"audio": audio_rows(2, 16000), "category": ["a", "b"]}, features, tmp_path / "train.parquet")
    write_parquet({"audio": audio_rows(1, 16000), "category": ["a"]}, features, tmp_path / "test.parquet")
    with pytest.raises(ValueError, match="no column 'label'.*--label_column_name"):
        load_audio_classification(str(tmp_path))
    assert load_audio_classification(str(tmp_path), label_column_name="category").label_names == ["a", "b"]
    with pytest.raises(ValueError, match="no audio column 'sound'"):
        load_audio_classification(str(tmp_path), label_column_name="category", audio_column_name="sound")
    write_parquet(
        {"audio": audio_rows(2, 16000), "category": ["a", "b"]}, features, tmp_path / "train_only" / "train.parquet"
    )
    with pytest.raises(ValueError, match="no validation or test split"):
        load_audio_classification(str(tmp_path / "train_only"), label_column_name="category")


@pytest.mark.parametrize("rate", [0, -16000, 16000.5])
def test_sampling_rate_must_be_positive(rate):
    with pytest.raises(ValueError, match="sampling_rate"):
        load_audio_classification("audiofolder", data_dir=str(KEYWORDS), sampling_rate=rate)


def keyword_copy_with_bad_files(tmp_path):
    folder = tmp_path / "words"
    for split, words in (("train", ["yes", "no"]), ("test", ["yes", "no"])):
        for word in words:
            (folder / split / word).mkdir(parents=True)
            for i in range(2):
                soundfile.write(folder / split / word / f"{word}_{i}.wav", tone(0.3, 16000), 16000)
    soundfile.write(folder / "train" / "no" / "no_empty.wav", np.zeros(0, np.float32), 16000)
    (folder / "train" / "yes" / "yes_broken.wav").write_bytes(b"RIFF this is not audio")
    soundfile.write(folder / "train" / "yes" / "yes_click.wav", tone(0.00625, 16000), 16000)  # 100 samples
    return folder


def test_unusable_rows_are_reported_with_their_ids_before_training(tmp_path):
    folder = keyword_copy_with_bad_files(tmp_path)
    data = load_audio_classification("audiofolder", data_dir=str(folder))
    with pytest.raises(ValueError) as error:
        drop_unusable_audio(data, 16000, drop=False)
    message = str(error.value)
    assert "3 of 7 rows of the train split cannot be used" in message
    assert "train/no/no_empty.wav: empty audio" in message
    assert "train/yes/yes_click.wav: 100 samples, shorter than one 25 ms fbank window" in message
    assert "train/yes/yes_broken.wav: does not decode" in message
    assert "--drop_unusable_rows" in message

    reports = drop_unusable_audio(data, 16000, drop=True)
    assert len(reports) == 1 and len(data.train) == 4 and len(data.test) == 4
    transform = AudioFeatureTransform(ASTFeatureExtractor(num_mel_bins=32, max_length=64), 2, False, False)
    data.train.set_transform(transform)
    assert data.train[0:4]["input_values"].shape == (4, 64, 32)


# 3. features and augmentation ----------------------------------------------------------------------------------------


def test_feature_transform_matches_the_feature_extractor():
    data = load_audio_classification("audiofolder", data_dir=str(KEYWORDS))
    extractor = ASTFeatureExtractor(num_mel_bins=64, max_length=100, mean=-2.0, std=4.0)
    rows = data.test.select(range(3))
    expected = extractor([r["audio"]["array"] for r in rows], sampling_rate=16000, return_tensors="pt")
    rows.set_transform(AudioFeatureTransform(extractor, 10, multi_label=False, one_hot=False))
    batch = rows[0:3]
    assert torch.equal(batch["input_values"], expected["input_values"])
    assert batch["labels"].tolist() == data.test["labels"][:3] and batch["labels"].dtype == torch.long
    one_hot = AudioFeatureTransform(extractor, 10, multi_label=False, one_hot=True)
    rows.set_transform(one_hot)
    assert torch.equal(
        rows[0:3]["labels"], torch.nn.functional.one_hot(torch.tensor(data.test["labels"][:3]), 10).float()
    )


def test_multi_hot_targets():
    transform = AudioFeatureTransform(None, 5, multi_label=True, one_hot=False)
    assert transform.targets([[0, 3], [4], []]).tolist() == [[1, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]


def test_spec_augment_masks_one_band_and_one_span_with_the_fill_value():
    features = torch.randn(64, 100, 32) + 10
    masked = SpecAugment(freq_mask=8, time_mask=20, fill_value=-3.0)(features.clone(), np.random.default_rng(0))
    for before, after in zip(features, masked):
        changed = after != before
        bins = changed.all(dim=0).nonzero().flatten()
        frames = changed.all(dim=1).nonzero().flatten()
        assert len(bins) < 8 and len(frames) < 20
        if len(bins):
            assert (bins.diff() == 1).all()
        expected = torch.zeros_like(changed)
        expected[:, bins] = True
        expected[frames, :] = True
        assert torch.equal(changed, expected) and (after[changed] == -3.0).all()
    off = SpecAugment(8, 20, -3.0, enabled=False)
    assert torch.equal(off(features.clone(), np.random.default_rng(0)), features)


def test_patch_masking_blanks_whole_patch_rows_and_columns():
    features = torch.randn(2, 128, 64) + 10
    masked = PatchMasking(ratio=0.3, patch_size=16, fill_value=0.0)(features.clone(), np.random.default_rng(0))
    for sample in masked:
        columns = (sample.reshape(8, 16, 64) == 0).all(dim=(1, 2)).sum().item()
        rows = (sample.reshape(128, 4, 16) == 0).all(dim=(0, 2)).sum().item()
        assert (columns, rows) == (int(8 * 0.3), int(4 * 0.3))


def test_mixup_blends_waveforms_and_targets_with_the_same_weight():
    generator = np.random.default_rng(3)
    waves = [generator.normal(0, 0.1, int(n)).astype(np.float32) for n in generator.integers(3000, 5000, 16)]
    targets = torch.eye(16)  # one class per clip: the targets reveal the partner
    mixed, mixed_targets = Mixup(probability=0.6, alpha=10.0)(waves, targets, np.random.default_rng(0))
    num_mixed = 0
    for i in range(16):
        others = [j for j in range(16) if j != i and mixed_targets[i, j] > 0]
        if not others:  # left alone
            assert mixed[i] is waves[i] and mixed_targets[i, i] == 1
            continue
        (j,) = others  # never mixed with itself
        weight = mixed_targets[i, i].item()
        assert 0 < weight < 1 and mixed_targets[i, j].item() == pytest.approx(1 - weight)
        # both de-meaned, the partner cut or zero-padded to this clip's length, the blend de-meaned (AST's loader)
        other = np.pad(waves[j] - waves[j].mean(), (0, max(0, len(waves[i]) - len(waves[j]))))[: len(waves[i])]
        blend = weight * (waves[i] - waves[i].mean()) + (1 - weight) * other
        assert len(mixed[i]) == len(waves[i]) and np.allclose(mixed[i], blend - blend.mean(), atol=1e-6)
        num_mixed += 1
    assert 3 <= num_mixed <= 14
    untouched, same = Mixup(probability=0.0)(waves, targets, np.random.default_rng(0))
    assert untouched is waves and same is targets


def test_mixup_needs_float_targets():
    with pytest.raises(ValueError, match="--loss bce"):
        AudioFeatureTransform(None, 3, multi_label=False, one_hot=False, mixup=Mixup(0.5))


def test_normalisation_statistics_and_masking_value():
    data = load_audio_classification("audiofolder", data_dir=str(KEYWORDS))
    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=50)
    mean, std = estimate_normalization(data.eval, extractor)
    raw = ASTFeatureExtractor(num_mel_bins=32, max_length=50, do_normalize=False)
    features = raw([r["audio"]["array"] for r in data.eval], sampling_rate=16000, return_tensors="np")["input_values"]
    assert mean == pytest.approx(float(features.astype(np.float64).mean()), abs=1e-6)
    assert std == pytest.approx(float(features.astype(np.float64).std()), abs=1e-6)
    assert extractor.do_normalize  # the estimate does not change the extractor it was given
    extractor.mean, extractor.std = mean, std
    assert normalised_zero(extractor) == pytest.approx((0 - mean) / (2 * std))
    assert normalised_zero(raw) == 0.0


def test_time_shift_moves_clips_within_the_feature_extractors_own_padding():
    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=100, mean=-2.0, std=4.0)
    shift = TimeShift(100)
    short = tone(0.3, 16000)
    long = np.random.default_rng(1).normal(0, 0.1, 24000).astype(np.float32)
    plain = torch.as_tensor(extractor([short], sampling_rate=16000, return_tensors="np")["input_values"])[0]
    valid = num_fbank_frames(len(short), 16000)
    assert valid == 28 and (plain[valid:] == normalised_zero(extractor)).all()
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(30):
        features = plain.clone()[None]
        (moved,) = shift.roll(features, [short], rng)
        offset = int(torch.nonzero((moved != normalised_zero(extractor)).any(1))[0])
        offsets.add(offset)
        # the clip's frames unchanged and in order, every other frame the extractor's own padding value
        assert torch.equal(moved[offset : offset + valid], plain[:valid])
        assert (torch.cat([moved[:offset], moved[offset + valid :]]) == normalised_zero(extractor)).all()
    assert len(offsets) > 15 and max(offsets) <= 100 - valid
    (cropped,) = shift.crop([long], rng)
    start = int(np.flatnonzero(long == cropped[0])[0])
    assert len(cropped) == samples_for_frames(100, 16000) and np.array_equal(cropped, long[start : start + len(cropped)])
    assert np.array_equal(shift.crop([short], rng)[0], short)  # shorter clips are left to the extractor's padding


@pytest.mark.parametrize("num_frames", [100, 128, 1024])
def test_samples_for_frames_fills_exactly_that_many_fbank_frames(num_frames):
    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=num_frames, do_normalize=False)
    samples = samples_for_frames(num_frames, 16000)
    noise = np.random.default_rng(0).normal(0, 0.1, samples + 1).astype(np.float32)
    full = extractor(noise[:samples], sampling_rate=16000, return_tensors="np")["input_values"][0]
    short = extractor(noise[: samples - 1], sampling_rate=16000, return_tensors="np")["input_values"][0]
    assert (full[-1] != 0).any() and (short[-1] == 0).all()  # one sample less leaves the last frame to padding

"""Streaming: local parquet shards in AudioSet's Hub layout read as IterableDatasets, epochs counted in steps, and a
2-process run (torchrun, gloo on CPU) that is interrupted and resumed ends with the weights and keep-rate trajectory
of the uninterrupted run."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from datasets import Audio, Dataset, Features, IterableDataset, List, Value
from safetensors.torch import load_file
from transformers import ASTFeatureExtractor

from conftest import REPO
from hf_token_prune.data import AudioFeatureTransform, StreamingTrainingData, load_audio_classification


CLASSES = {"/m/09x0r": "Speech", "/m/04rlf": "Music", "/t/dd00088": "Gush", "/m/0dgw9r": "Human sounds"}


AUDIOSET_CONFIGS = """\
configs:
- config_name: balanced
  data_files:
  - split: train
    path: data/bal_train/*.parquet
  - split: test
    path: data/eval/*.parquet
- config_name: unbalanced
  data_files:
  - split: train
    path: data/unbal_train/*.parquet
  - split: test
    path: data/eval/*.parquet
"""


def write_audioset_card(root, dataset_info=""):
    """agkphysics/AudioSet's README.md front matter: its configs (and `dataset_info`, if given)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(f"---\n{dataset_info}{AUDIOSET_CONFIGS}---\n")


def audioset_copy(root, shards=4, rows_per_shard=6, with_sizes=True):
    """agkphysics/AudioSet's layout: README configs balanced (data/bal_train, data/eval) and unbalanced
    (data/unbal_train, data/eval), parquet shards of `video_id`, `audio`, `labels` (ontology ids), `human_labels`.
    `with_sizes` adds the card's dataset_info split sizes (the real card has them: unbalanced train 1738788)."""
    sizes = textwrap.dedent(f"""\
        dataset_info:
        - config_name: unbalanced
          splits:
          - name: train
            num_bytes: {shards * rows_per_shard * 16044}
            num_examples: {shards * rows_per_shard}
          - name: test
            num_bytes: {4 * 16044}
            num_examples: 4
        """)
    write_audioset_card(root, sizes if with_sizes else "")
    features = Features(
        {"video_id": Value("string"), "audio": Audio(), "labels": List(Value("string")), "human_labels": List(Value("string"))}
    )
    mids = sorted(CLASSES)
    rng = np.random.default_rng(0)

    def shard(path, n, offset):
        labels = [[mids[(offset + i) % 4]] + ([mids[(offset + i + 1) % 4]] if i % 3 == 0 else []) for i in range(n)]
        rows = {
            "video_id": [f"vid{offset + i:05d}" for i in range(n)],
            "audio": [{"array": rng.normal(0, 0.1, 8000).astype(np.float32), "sampling_rate": 16000} for _ in range(n)],
            "labels": labels,
            "human_labels": [[CLASSES[mid] for mid in row] for row in labels],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(rows, features=features).to_parquet(str(path))

    for s in range(shards):
        shard(root / "data" / "unbal_train" / f"{s:02d}.parquet", rows_per_shard, 100 * s)
    shard(root / "data" / "bal_train" / "00.parquet", 3, 900)
    shard(root / "data" / "eval" / "00.parquet", 4, 1000)
    return root


@pytest.mark.parametrize("with_sizes", [True, False])
def test_streamed_audioset_layout_and_its_size(tmp_path, with_sizes):
    audioset_copy(tmp_path, with_sizes=with_sizes)
    data = load_audio_classification("audioset", source=str(tmp_path), config_name="unbalanced", streaming=True)
    assert isinstance(data.train, IterableDataset) and isinstance(data.test, IterableDataset)
    # from the card's dataset_info, else from the parquet footers: nothing decoded
    assert data.num_rows == {"train": 24, "eval": 4, "test": 4}
    assert data.label_names == [CLASSES[mid] for mid in sorted(CLASSES)] and data.multi_label
    rows = list(data.train)
    assert len(rows) == 24 and rows[0]["id"] == "vid00000" and rows[0]["audio"]["sampling_rate"] == 16000
    mapped = load_audio_classification("audioset", source=str(tmp_path), config_name="unbalanced")
    assert [row["labels"] for row in rows] == mapped.train["labels"]


def collect(stream, limit):
    rows = []
    for row in stream:
        rows.append(row)
        if len(rows) == limit:
            return rows
    return rows


@pytest.mark.parametrize("shuffle_buffer_size", [0, 5])
def test_stream_resumes_where_it_stopped(tmp_path, shuffle_buffer_size):
    # across an epoch boundary, with and without a shuffle buffer (the state_dict and the skip path)
    audioset_copy(tmp_path)
    data = load_audio_classification("audioset", source=str(tmp_path), config_name="unbalanced", streaming=True)
    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=48)

    def stream():
        transform = AudioFeatureTransform(extractor, 4, True, True)
        return StreamingTrainingData(
            data.train, transform, 2, 24, shuffle_buffer_size=shuffle_buffer_size, seed=3,
            max_buffer_input_shards=1,  # interleaving shards costs datasets a 5 s pause per pass (an arrow workaround)
        )

    whole = collect(stream(), 60)  # 2.5 epochs of 24 rows
    first = stream()
    collect(first, 2 * 7 + 2)  # as accelerate does: one batch fetched ahead of the 7 consumed
    resumed = stream()
    resumed.resume_from(first.position_after(7), 7)
    rest = collect(resumed, 60 - 14)
    for expected, got in zip(whole[14:], rest, strict=True):
        assert torch.equal(expected["input_values"], got["input_values"])
        assert torch.equal(expected["labels"], got["labels"])
    epochs = [torch.cat([row["labels"] for row in whole[e * 24 : e * 24 + 24]]) for e in range(2)]
    assert not torch.equal(epochs[0], epochs[1]) or not shuffle_buffer_size  # reshuffled every epoch


def launch(*args):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "tests" / "streaming_run.py"), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.full
def test_two_process_streaming_resume_equals_the_uninterrupted_run(tmp_path):
    source = audioset_copy(tmp_path / "audioset")
    launch(source, tmp_path / "whole")
    launch(source, tmp_path / "parts", "--stop_at", 4)
    saved = {name for name in os.listdir(tmp_path / "parts" / "checkpoint-4") if name.startswith("stream_position")}
    assert saved == {"stream_position_rank0.json", "stream_position_rank1.json"}
    assert not (tmp_path / "parts" / "checkpoint-8").exists()
    launch(source, tmp_path / "parts", "--resume", tmp_path / "parts" / "checkpoint-4")

    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    parts = json.loads((tmp_path / "parts" / "summary.json").read_text())
    # 24 rows / (2 per device x 2 processes) = 6 steps per epoch, 2 epochs
    assert (whole["steps_per_epoch"], whole["max_steps"], whole["world_size"]) == (6, 12, 2)
    assert whole["test_predictions"] == 4
    schedule = [(entry["step"], entry["keep_rate"]) for entry in whole["log"]]
    assert [step for step, _ in schedule] == list(range(1, 13))
    assert schedule == [(entry["step"], entry["keep_rate"]) for entry in parts["log"]]
    assert schedule[0][1] == 1.0 and schedule[-1][1] == 0.5 and len({rate for _, rate in schedule}) > 3
    assert [entry["epoch"] for entry in whole["log"]] == pytest.approx([step / 6 for step in range(1, 13)])
    assert [entry["loss"] for entry in whole["log"]] == pytest.approx([entry["loss"] for entry in parts["log"]])
    weights, resumed = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "parts" / "model.safetensors")
    assert weights.keys() == resumed.keys()
    for name in weights:
        assert torch.equal(weights[name], resumed[name]), name

"""Batches of similar kept counts (issue 22, point 3): the cheap count prediction, the sampler, and tag_recording's
bucket_by_count, whose scores must be those of the unbucketed call, in time order."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader
from transformers import Trainer, TrainingArguments

from conftest import tiny_pruned_classifier
from hf_token_prune import tag_recording
from hf_token_prune.bucketing import CountOrderedSampler, predicted_kept_counts
from hf_token_prune.feature_extraction_audiomae import AudioMAEFeatureExtractor
from test_adaptive_keep import reference_kept


def reference_intensity(input_values, patch_size=16, stride=16):
    """AST's token order (frequency-major): the mean log-mel of patch (f, t), one patch at a time."""
    batch, frames, bins = input_values.shape
    time_patches, frequency_patches = (frames - patch_size) // stride + 1, (bins - patch_size) // stride + 1
    return torch.tensor([[
        input_values[b, t * stride : t * stride + patch_size, f * stride : f * stride + patch_size].mean().item()
        for f in range(frequency_patches) for t in range(time_patches)
    ] for b in range(batch)])  # fmt: skip


def recording_like_inputs(lengths, generator):
    """Clips of ``lengths`` loud frames, padded with the clip's minimum as the demo's extractor pads."""
    inputs = torch.randn(len(lengths), 128, 64, generator=generator) * 2
    for sample, length in enumerate(lengths):
        inputs[sample, length:] = inputs[sample, :length].min()
    return inputs


@pytest.mark.parametrize("settings", [
    dict(keep_rate=1.0, keep_mass=0.5), dict(keep_rate=0.7, keep_mass=0.8, min_keep_rate=0.3),
    dict(keep_rate=1.0, keep_mass=0.6, drop_padding=True), dict(keep_rate=0.5, drop_padding=True),
    dict(keep_rate=0.5),
])  # fmt: skip
def test_predicted_counts_are_the_real_patches_or_the_policy_on_intensity(settings):
    model = tiny_pruned_classifier("ast", **settings)
    lengths = [128, 20, 70, 5, 100]
    inputs = recording_like_inputs(lengths, torch.Generator().manual_seed(0))
    mask = (torch.arange(128)[None] < torch.tensor(lengths)[:, None]).int()
    predicted = predicted_kept_counts(model, inputs, mask)
    if settings.get("drop_padding"):
        expected = model.patch_layout.real_patches(mask).sum(dim=1).tolist()  # rule tested in test_drop_padding.py
    elif "keep_mass" in settings:
        real = torch.ones(len(lengths), model.patch_layout.num_patches, dtype=torch.bool)
        expected = [len(kept) for kept in reference_kept(reference_intensity(inputs), real, settings["keep_rate"],
                                                         settings["keep_mass"], settings.get("min_keep_rate"))]
    else:
        expected = [math.ceil(model.patch_layout.num_patches * settings["keep_rate"])] * len(lengths)
    assert predicted.tolist() == expected
    if settings == dict(keep_rate=0.5):
        assert len(set(predicted.tolist())) == 1  # a fixed rate on the whole window: nothing to bucket by
    else:
        assert len(set(predicted.tolist())) > 2


def test_the_sampler_orders_by_count_and_batches_consecutive_indices():
    counts = [5, 2, 5, 1, 2, 9, 1]
    sampler = CountOrderedSampler(counts)
    assert list(sampler) == [3, 6, 1, 4, 0, 2, 5] and len(sampler) == 7  # ties in dataset order
    assert list(BatchSampler(sampler, 3, drop_last=False)) == [[3, 6, 1], [4, 0, 2], [5]]
    loader = DataLoader(torch.tensor(counts), batch_size=3, sampler=sampler)
    assert [batch.tolist() for batch in loader] == [[1, 1, 2], [2, 5, 5], [9]]


def test_a_trainer_evaluates_in_count_order(tmp_path):
    counts = [4, 0, 3, 1, 2]

    class BucketedTrainer(Trainer):
        def _get_eval_sampler(self, eval_dataset):
            return CountOrderedSampler(counts)

    dataset = [{"input_values": torch.full((2,), float(i)), "labels": i} for i in range(len(counts))]
    arguments = TrainingArguments(tmp_path, per_device_eval_batch_size=2, report_to="none", use_cpu=True)
    trainer = BucketedTrainer(model=tiny_pruned_classifier("ast"), args=arguments)
    batches = [batch["labels"].tolist() for batch in trainer.get_eval_dataloader(dataset)]
    assert batches == [[1, 3], [4, 2], [0]]


def loud_and_quiet_recording(seconds=5.6, seed=0):
    """Noise whose loudness changes every 0.3 s, with silent stretches: windows differ in how much of them is loud."""
    generator = np.random.default_rng(seed)
    wave = generator.uniform(-1, 1, round(16000 * seconds)).astype(np.float32)
    levels = generator.choice([0.0, 1e-3, 0.05, 0.5], size=-(-wave.size // 4800))
    return wave * np.repeat(levels, 4800)[: wave.size].astype(np.float32)


@pytest.mark.parametrize("drop_padding", [False, True])
def test_tag_recording_bucketed_gives_the_unbucketed_scores_in_time_order(drop_padding):
    torch.manual_seed(0)
    model = tiny_pruned_classifier("ast", keep_rate=1.0, keep_mass=0.5, drop_padding=drop_padding,
                                   initializer_range=0.1)
    extractor = AudioMAEFeatureExtractor(num_mel_bins=64, max_length=128, fbank_padding="minimum")
    wave = loud_and_quiet_recording()
    batches = []
    model.register_forward_pre_hook(lambda module, args, kwargs: batches.append(kwargs["input_values"]),
                                    with_kwargs=True)
    plain = tag_recording(wave, model, extractor, hop=0.25, batch_size=4, progress=False)
    unbucketed_batches, batches[:] = list(batches), []
    bucketed = tag_recording(wave, model, extractor, hop=0.25, batch_size=4, bucket_by_count=True, progress=False)
    assert np.array_equal(bucketed.starts, plain.starts) and (np.diff(bucketed.starts) > 0).all()
    assert np.array_equal(bucketed.real_frames, plain.real_frames)
    assert np.abs(bucketed.scores - plain.scores).max() <= 1e-5
    # the windows really ran in another grouping: the same inputs, in another order (with drop_padding only the
    # last window, shorter than the others, moves)
    assert len(batches) == len(unbucketed_batches)
    assert not all(torch.equal(a, b) for a, b in zip(batches, unbucketed_batches))
    assert torch.equal(torch.cat(batches).sum(dim=(1, 2)).sort().values,
                       torch.cat(unbucketed_batches).sum(dim=(1, 2)).sort().values)


def test_the_tag_command_buckets_with_the_same_timeline(tmp_path, capsys):
    import soundfile

    from hf_token_prune.commands.tag import main as tag_main

    torch.manual_seed(0)
    folder = tmp_path / "model"
    tiny_pruned_classifier("ast", keep_rate=1.0, keep_mass=0.5, drop_padding=True,
                           initializer_range=0.1).save_pretrained(folder)
    AudioMAEFeatureExtractor(num_mel_bins=64, max_length=128, fbank_padding="minimum",
                             return_attention_mask=True).save_pretrained(folder)
    soundfile.write(tmp_path / "recording.wav", loud_and_quiet_recording(), 16000)
    printed = {}
    for flags in ([], ["--bucket_by_count"]):
        argv = [str(tmp_path / "recording.wav"), "--model_name_or_path", str(folder), "--hop", "0.25", "--min_score",
                "0", "--no_progress", "--output", str(tmp_path / "tags.png"), *flags]
        assert tag_main(argv) == 0
        printed[bool(flags)] = capsys.readouterr().out
    assert printed[True] == printed[False] and printed[True].count("\n") > 4

"""drop_padding: the padding patches of short clips are gathered out before the first layer (issue 13, point 2).

The reference for a mixed-length batch is each clip run alone (one clip has no padding slot left, so no mask at
all); a clip without padding is today's forward bit for bit.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import pipeline

from conftest import REPO, tiny_pruned_classifier
from hf_token_prune import AudioMAEFeatureExtractor
from hf_token_prune.commands.macs import main
from hf_token_prune.macs import count_forward_macs, count_macs
from hf_token_prune.scores import TOKEN_SCORES
from hf_token_prune.selection import kept_token_counts
from hf_token_prune.visualization import kept_patch_mask


FAMILIES = ("ast", "audiomae")
GEOMETRIES = {"ast": {}, "ast-overlapping": dict(frequency_stride=10, time_stride=10), "audiomae": {}}
LENGTHS = [128, 70, 23]  # frames of the 128-frame window: no padding, about half, a short clip


def drop_padding_model(geometry, keep_rate=1.0, token_score="attention", attn_implementation="sdpa"):
    family = geometry.split("-")[0]
    model = tiny_pruned_classifier(
        family, drop_padding=True, keep_rate=keep_rate, token_score=token_score, initializer_range=0.1,
        **GEOMETRIES[geometry],
    )
    model.set_attn_implementation(attn_implementation)
    if family == "audiomae":  # its head starts near zero (std 2e-5): logits of order 1 make 1e-5 a real bound
        torch.nn.init.normal_(model.classifier.weight, std=model.config.hidden_size**-0.5)
    return model


def frame_mask(lengths, max_length=128):
    return (torch.arange(max_length)[None] < torch.tensor(lengths)[:, None]).to(torch.int32)


def run(model, inputs, mask, seed=3):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(inputs, attention_mask=mask, output_kept_patches=True)


def real_patch_counts(model, lengths):
    """Real patches of each clip, counted from the layout by hand: time steps whose first frame is real."""
    layout = model.patch_layout
    return [min(layout.num_time_patches, -(-n // layout.time_stride)) * layout.num_frequency_patches for n in lengths]


# 1. a mixed-length batch equals each clip run alone ------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("keep_rate, token_score", [(1.0, "attention")] + [(0.5, s) for s in TOKEN_SCORES[:3]])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_mixed_lengths_equal_each_clip_alone(geometry, keep_rate, token_score, attn_implementation):
    model = drop_padding_model(geometry, keep_rate, token_score, attn_implementation)
    inputs, mask = torch.randn(3, 128, 64), frame_mask(LENGTHS)
    batch = run(model, inputs, mask)
    real = real_patch_counts(model, LENGTHS)
    for sample, num_real in enumerate(real):
        alone = run(model, inputs[sample : sample + 1], mask[sample : sample + 1])
        assert (batch.logits[sample] - alone.logits[0]).abs().max() <= 1e-5
        counts = kept_token_counts(num_real, keep_rate, len(model.config.pruning_layers))
        for kept_batch, kept_alone, count in zip(batch.kept_patches, alone.kept_patches, counts):
            assert kept_alone.shape[1] == count  # ceil(n_real * keep_rate), compounded, from the clip's own patches
            assert torch.equal(kept_batch[sample, :count], kept_alone[0])
            assert (kept_batch[sample, count:] == -1).all()  # the batch's other slots are empty


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_random_score_keeps_each_clips_own_count_and_never_padding(geometry):
    # Random draws depend on the batch, so logits cannot match a clip run alone; the counts and the padding can.
    model = drop_padding_model(geometry, 0.5, "random")
    batch = run(model, torch.randn(3, 128, 64), frame_mask(LENGTHS))
    assert_each_clip_keeps_its_count_of_real_patches(model, batch, LENGTHS)


@pytest.mark.parametrize("token_score", TOKEN_SCORES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_padding_is_never_kept(geometry, token_score):
    model = drop_padding_model(geometry, 0.7, token_score)
    inputs = torch.randn(3, 128, 64)
    inputs[:, 60:] = 1e3  # loud padding would win intensity and variation if it were ranked at all
    batch = run(model, inputs, frame_mask([128, 60, 9]))
    assert_each_clip_keeps_its_count_of_real_patches(model, batch, [128, 60, 9])


def assert_each_clip_keeps_its_count_of_real_patches(model, outputs, lengths):
    real = model.patch_layout.real_patches(frame_mask(lengths))
    for sample, num_real in enumerate(real_patch_counts(model, lengths)):
        counts = kept_token_counts(num_real, model.config.keep_rate, len(model.config.pruning_layers))
        for kept, count in zip(outputs.kept_patches, counts):
            filled = kept[sample][kept[sample] >= 0]
            assert len(filled) == count and len(set(filled.tolist())) == count
            assert real[sample, filled].all()
            assert (kept[sample, count:] == -1).all()


def test_real_patches_follow_the_frames_of_each_patch():
    ast = drop_padding_model("ast-overlapping")  # 12 time windows of 16 frames every 10, 5 frequency rows
    real = ast.patch_layout.real_patches(frame_mask([21]))[0].reshape(5, 12)  # frequency-major
    assert real[:, :3].all() and not real[:, 3:].any()  # windows start at 0, 10, 20 < 21; the next at 30
    audiomae = drop_padding_model("audiomae")  # 8 time patches of 16 frames, 4 frequency rows, time-major
    real = audiomae.patch_layout.real_patches(frame_mask([17]))[0].reshape(8, 4)
    assert real[:2].all() and not real[2:].any()  # frame 16 is real: the second patch is not all padding


# 2. no padding: today's forward; drop_padding=False: today's model -----------------------------------------------------


@pytest.mark.parametrize("keep_rate, token_score", [(1.0, "attention"), (0.5, "attention"), (0.5, "intensity")])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_clips_without_padding_are_identical_to_drop_padding_false(geometry, keep_rate, token_score):
    model = drop_padding_model(geometry, keep_rate, token_score)
    inputs = torch.randn(2, 128, 64)
    dropped = run(model, inputs, frame_mask([128, 128]))
    model.config.drop_padding = False
    today = run(model, inputs, None)
    assert torch.equal(dropped.logits, today.logits)
    assert all(torch.equal(a, b) for a, b in zip(dropped.kept_patches or (), today.kept_patches or ()))


@pytest.mark.parametrize("family", FAMILIES)
def test_drop_padding_is_off_by_default_and_saved(family, tmp_path):
    model = tiny_pruned_classifier(family)
    assert model.config.drop_padding is False
    model.config.drop_padding = True
    model.save_pretrained(tmp_path)
    assert type(model).from_pretrained(tmp_path).config.drop_padding is True


@pytest.mark.parametrize("family", FAMILIES)
def test_drop_padding_without_a_mask_drops_nothing(family):
    model = drop_padding_model(family)
    inputs = torch.randn(2, 128, 64)
    dropped = run(model, inputs, None)
    model.config.drop_padding = False
    assert torch.equal(dropped.logits, run(model, inputs, None).logits)


# 3. bad input ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_masks_of_the_wrong_kind_are_clear_errors(family):
    model = drop_padding_model(family, 0.5)
    inputs = torch.randn(2, 128, 64)
    tokens = model.num_extra_tokens + model.patch_layout.num_patches
    with pytest.raises(ValueError, match=r"frame mask of shape \(batch_size, max_length\) = \(2, 128\)"):
        # a per-token mask with padding (an all-ones mask of any shape is no padding, accepted as stock AST does)
        model(inputs, attention_mask=torch.ones(2, tokens).index_fill(1, torch.tensor([tokens - 1]), 0))
    with pytest.raises(ValueError, match="every frame of a sample as padding"):
        model(inputs, attention_mask=frame_mask([128, 0]))
    model.config.drop_padding = False
    with pytest.raises(ValueError, match="drop_padding=True"):
        model(inputs, attention_mask=frame_mask([128, 60]))


@pytest.mark.parametrize("family", FAMILIES)
def test_config_refuses_bad_drop_padding(family):
    model = tiny_pruned_classifier(family)
    with pytest.raises(ValueError, match="must be True or False"):
        model.config.drop_padding = "yes"
    for method in ("fuse", "merge"):
        model.config.token_reduction = method
        with pytest.raises(ValueError, match=f"drop_padding=True is not supported with token_reduction='{method}'"):
            model.config.drop_padding = True
        assert model.config.drop_padding is False  # a refused value leaves the config unchanged
    model.config.token_reduction = "prune"


# 4. torch.compile and torch.export ------------------------------------------------------------------------------------


def assert_same_up_to_empty_slots(actual, expected):
    """Traced graphs keep every slot (static shapes), so their kept_patches may have more empty (-1) columns."""
    assert (actual.logits - expected.logits).abs().max() <= 1e-5
    for kept_actual, kept_expected in zip(actual.kept_patches, expected.kept_patches):
        width = kept_expected.shape[1]
        assert torch.equal(kept_actual[:, :width], kept_expected)
        assert (kept_actual[:, width:] == -1).all()


@pytest.mark.parametrize("lengths", [LENGTHS, [70, 23, 40]])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.full
def test_compile_fullgraph_and_export_equal_eager(family, lengths):
    # Two pruning layers after a first one: a freshly initialised layer 0 attends almost uniformly, and ties rank
    # by position, which differs between a clip's slots in a batch and alone.
    model = tiny_pruned_classifier(family, drop_padding=True, num_hidden_layers=3, pruning_layers=[1, 2],
                                   keep_rate=0.5, initializer_range=0.1)
    inputs, mask = torch.randn(3, 128, 64), frame_mask(lengths)
    expected = run(model, inputs, mask)
    backend = "aot_eager" if family == "ast" else "eager"
    assert_same_up_to_empty_slots(run(torch.compile(model, fullgraph=True, backend=backend), inputs, mask), expected)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(
        model, (inputs,), {"attention_mask": mask, "output_kept_patches": True},
        dynamic_shapes={"input_values": {0: batch}, "attention_mask": {0: batch}, "output_kept_patches": None},
    ).module()
    other, other_mask = torch.randn(2, 128, 64), frame_mask(lengths[1:])
    with torch.no_grad():
        actual = exported(other, attention_mask=other_mask, output_kept_patches=True)
    assert_same_up_to_empty_slots(actual, run(model, other, other_mask))


# 5. the extractor's output as is, and pipeline() ------------------------------------------------------------------------


def clips(seconds, seed=0):
    generator = np.random.default_rng(seed)
    return [generator.uniform(-0.5, 0.5, round(16000 * s)).astype(np.float32) for s in seconds]


def saved_folder(family, tmp_path):
    model = drop_padding_model(family, 0.5)
    model.save_pretrained(tmp_path)
    AudioMAEFeatureExtractor(num_mel_bins=64, max_length=128, return_attention_mask=True).save_pretrained(tmp_path)
    return model


def layer_lengths(model):
    """Sequence length each call's first layer sees, by a forward hook."""
    seen = []
    model.base_model.layers[0].register_forward_hook(lambda module, args, output: seen.append(args[0].shape[1]))
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_extractor_output_feeds_the_model_and_the_pipeline(family, tmp_path):
    model = saved_folder(family, tmp_path)
    extractor = AudioMAEFeatureExtractor.from_pretrained(tmp_path)
    waves = clips([1.28, 0.5, 0.2])
    features = extractor(waves, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
    seen = layer_lengths(model)
    with torch.no_grad():
        batch = model(**features).logits
        alone = [model(**extractor(wave, sampling_rate=16000, return_tensors="pt")).logits[0] for wave in waves]
    extra, real = model.num_extra_tokens, real_patch_counts(model, features["attention_mask"].sum(1).tolist())
    assert seen == [extra + max(real)] + [extra + count for count in real]  # the padding never reaches a layer
    assert (batch - torch.stack(alone)).abs().max() <= 1e-5

    classifier = pipeline("audio-classification", model=str(tmp_path), top_k=None)
    seen = layer_lengths(classifier.model)
    result = classifier(waves[2])
    assert seen == [extra + real[2]]
    scores = {entry["label"]: entry["score"] for entry in result}
    expected = alone[2].softmax(-1)
    labels = model.config.id2label
    assert max(abs(scores[labels[i]] - expected[i].item()) for i in range(len(labels))) <= 1e-5


def test_tag_recording_gives_every_window_its_frame_mask(tmp_path):
    from hf_token_prune import tag_recording

    model = saved_folder("audiomae", tmp_path)
    extractor = AudioMAEFeatureExtractor.from_pretrained(tmp_path)
    (wave,) = clips([3.3])
    seen = layer_lengths(model)
    tags = tag_recording(wave, model, extractor, hop=0.5, progress=False)
    last = wave[int(tags.starts[-1] * 16000) :]
    assert tags.real_frames[-1] < 128 and seen == [1 + model.patch_layout.num_patches]  # one mixed-length batch
    with torch.no_grad():
        alone = model(**extractor(last, sampling_rate=16000, return_tensors="pt")).logits.softmax(-1)[0]
    assert np.abs(tags.scores[-1] - alone.numpy()).max() <= 1e-5


# 6. MACs for a clip length ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("keep_rate", [1.0, 0.5])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_macs_of_a_clip_length_equal_the_flop_counter(geometry, keep_rate, attn_implementation):
    model = drop_padding_model(geometry, keep_rate, attn_implementation=attn_implementation)
    for real_frames in (128, 70, 23, 1):
        counted = count_forward_macs(model, torch.randn(2, 128, 64), attention_mask=frame_mask([real_frames] * 2))
        analytic = count_macs(model.config, batch_size=2, attn_implementation=attn_implementation,
                              real_frames=real_frames)
        assert counted == analytic.total, real_frames
    padded = count_macs(model.config, real_frames=23, drop_padding=False)
    assert padded == count_macs(model.config) and padded.total > count_macs(model.config, real_frames=23).total
    with pytest.raises(ValueError, match="real_frames=129"):
        count_macs(model.config, real_frames=129)


# 7. what reads kept_patches copes with empty slots -----------------------------------------------------------------------


def test_kept_patch_mask_ignores_empty_slots():
    model = drop_padding_model("ast", 0.5)
    kept = run(model, torch.randn(2, 128, 64), frame_mask([128, 23])).kept_patches[0]
    assert (kept[1] == -1).any()
    mask = kept_patch_mask(kept[1], model.patch_layout)
    assert torch.equal(mask, kept_patch_mask(kept[1][kept[1] >= 0], model.patch_layout))
    assert not mask[:, 32:].any()  # nothing drawn past the clip's two real time patches


def test_macs_command_counts_short_clips_with_padding_dropped(capsys):
    assert main(["--model_name_or_path", "audiomae-vit-b", "--clip_seconds", "2", "--keep_rates", "1.0"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.split("|")[0].strip() == "198"  # 2 s at 16 kHz: 198 fbank frames
    assert "[104, 104, 104]" in row  # 13 time patches of 16 frames x 8 frequency patches


# 8. the padding benchmark's smoke test --------------------------------------------------------------------------------


def test_quick_padding_benchmark_runs_and_reports_both_families(tmp_path):
    result = subprocess.run(
        [sys.executable, "benchmarks/benchmark_padding.py", "--quick", "--output_dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "padding.json").read_text())
    assert [entry["model"] for entry in report["results"]] == ["AST", "AudioMAE"]
    for entry in report["results"]:
        assert [row["keep_rate"] for row in entry["rows"]] == [1.0, 0.7]
        for row in entry["rows"]:
            assert row["mac_ratio"] > 1 and row["latency_ratio"] > 0 and len(row["times_kept_ms"]) == 2
    markdown = (tmp_path / "padding.md").read_text()
    assert "load average before" in markdown and "MAC ratio" in markdown

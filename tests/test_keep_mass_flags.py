"""`classify` and `tag` with --keep_mass and --min_keep_rate: the per-clip policy of one call gives exactly what the
same policy saved in the model's config gives, the loaded model's config is left as it was, and a method or a floor
that cannot run is refused in one line."""

import numpy as np
import pytest
import soundfile
import torch
from transformers import ASTFeatureExtractor

from conftest import KEYWORDS, REPO, tiny_pruned_classifier
from hf_token_prune import tag_recording
from hf_token_prune.bucketing import predicted_kept_counts
from hf_token_prune.classify import classify, read_audio
from hf_token_prune.commands import classify as classify_command, tag as tag_command
from hf_token_prune.loading import load_pruned_model


DEMO = REPO / "outputs" / "demo"
CLIPS = [KEYWORDS / "test" / "yes" / "yes_034.flac", KEYWORDS / "test" / "no" / "no_034.flac"]
POLICY = {"keep_mass": 0.6, "min_keep_rate": 0.2}
FLAGS = ["--keep_mass", "0.6", "--min_keep_rate", "0.2"]


def tiny_folder(folder, **settings):
    torch.manual_seed(0)  # attention that is not uniform, so the clips' masses differ from the fixed rate's counts
    tiny_pruned_classifier("ast", keep_rate=0.7, initializer_range=0.1, **settings).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=64, max_length=128).save_pretrained(folder)
    return folder


MODELS = {
    "demo": pytest.param(lambda tmp_path: DEMO, marks=pytest.mark.skipif(
        not (DEMO / "model.safetensors").is_file(), reason="needs the demo model: run `make demo` first")),
    "tiny": pytest.param(lambda tmp_path: tiny_folder(tmp_path / "tiny")),
}


@pytest.fixture(params=MODELS.values(), ids=MODELS.keys())
def model_folder(request, tmp_path):
    return request.param(tmp_path)


def configured_copy(folder, destination):
    """The model of `folder` saved with POLICY in its config: the route that needs no flag."""
    model, extractor = load_pruned_model(folder)
    model.config.update_reduction(**POLICY)
    model.save_pretrained(destination)
    extractor.save_pretrained(destination)
    return destination


def printed(main, argv, capsys, model_folder):
    assert main(argv) == 0
    return capsys.readouterr().out.replace(str(model_folder), "<model>")


def test_classify_flags_score_as_the_library_call_and_the_configured_model(model_folder, tmp_path, capsys):
    model, extractor = load_pruned_model(model_folder)
    waves = [read_audio(clip, extractor.sampling_rate) for clip in CLIPS]
    per_call = classify(model, extractor, waves, top_k=None, **POLICY)
    assert model.config.keep_mass is None and model.config.min_keep_rate is None  # the call changed nothing
    with model.reduction_settings(**POLICY):
        assert classify(model, extractor, waves, top_k=None) == per_call
    assert classify(model, extractor, waves, top_k=None) != per_call  # the policy changes the scores

    argv = [*map(str, CLIPS), "--top_k", "10", *FLAGS]
    out = printed(classify_command.main, [*argv, "--model_name_or_path", str(model_folder)], capsys, model_folder)
    assert out.count("keep_mass 0.6 (keep rate at most 0.7, at least 0.2)") == len(CLIPS)
    expected = [f"  {p['score']:.3f}  {p['label']}" for predictions in per_call for p in predictions[:10]]
    assert [line for line in out.splitlines() if line.startswith("  ")] == expected
    configured = configured_copy(model_folder, tmp_path / "configured")
    no_flags = printed(classify_command.main, [*map(str, CLIPS), "--top_k", "10", "--model_name_or_path",
                                               str(configured)], capsys, configured)
    assert no_flags == out


def test_tag_flags_score_as_the_library_call_and_the_configured_model(model_folder, tmp_path, capsys):
    recording = tmp_path / "recording.wav"
    soundfile.write(recording, np.concatenate([read_audio(clip, 16000) for clip in CLIPS * 3]), 16000)
    model, extractor = load_pruned_model(model_folder)
    per_call = tag_recording(recording, model, extractor, hop=0.1, batch_size=4, progress=False, **POLICY)
    assert model.config.keep_mass is None and model.config.min_keep_rate is None
    with model.reduction_settings(**POLICY):
        configured_scores = tag_recording(recording, model, extractor, hop=0.1, batch_size=4, progress=False).scores
    assert np.array_equal(per_call.scores, configured_scores)
    bucketed = tag_recording(recording, model, extractor, hop=0.1, batch_size=4, progress=False, bucket_by_count=True,
                             **POLICY)
    assert np.abs(bucketed.scores - per_call.scores).max() <= 1e-5  # other batches, as tests/test_bucketing.py bounds
    fixed = tag_recording(recording, model, extractor, hop=0.1, batch_size=4, progress=False)
    assert not np.array_equal(fixed.scores, per_call.scores)

    argv = [str(recording), "--hop", "0.1", "--min_score", "0", "--no_progress", "--output", str(tmp_path / "t.png")]
    out = printed(tag_command.main, [*argv, *FLAGS, "--model_name_or_path", str(model_folder)], capsys, model_folder)
    assert "(keep_mass 0.6 (keep rate at most 0.7, at least 0.2))" in out.splitlines()[0]
    assert f"top 5 by max: {per_call.top(5, 'max')[0]['label']} {per_call.top(5, 'max')[0]['score']:.2f}" in out
    configured = configured_copy(model_folder, tmp_path / "configured")
    no_flags = printed(tag_command.main, [*argv, "--model_name_or_path", str(configured)], capsys, configured)
    assert no_flags == out


@pytest.mark.parametrize("main", [classify_command.main, tag_command.main], ids=["classify", "tag"])
@pytest.mark.parametrize("flags, message", [
    (["--keep_mass", "0.6"], "keep_mass=0.6 is not supported with token_reduction='fuse'"),
    (["--min_keep_rate", "0.2"], "min_keep_rate=0.2 is the floor of the per-sample keep policy, which this call does "
                                 "not use: give keep_mass too"),
    (["--keep_mass", "0.6", "--min_keep_rate", "0.8"], "min_keep_rate=0.8 is above keep_rate=0.7"),
])
def test_a_policy_that_cannot_run_is_one_line(main, flags, message, tmp_path, capsys):
    fused = flags == ["--keep_mass", "0.6"]
    folder = tiny_folder(tmp_path / "model", **({"token_reduction": "fuse"} if fused else {}))
    argv = [str(CLIPS[0]), "--model_name_or_path", str(folder), *flags]
    if main is tag_command.main:
        assert main([*argv, "--no_progress", "--output", str(tmp_path / "t.png")]) == 1
        error = capsys.readouterr().err
    else:
        with pytest.raises(SystemExit) as exit:
            main(argv)
        error = str(exit.value.code)
    assert message in error and error.strip().count("\n") == 0 and "Traceback" not in error


@pytest.mark.parametrize("family", ["ast", "audiomae"])
def test_min_keep_rate_per_call_is_the_configured_floor_in_the_forward_and_the_prediction(family):
    torch.manual_seed(0)
    model = tiny_pruned_classifier(family, keep_rate=1.0, keep_mass=0.3, initializer_range=0.1)
    inputs = torch.randn(3, 128, 64)
    with torch.no_grad():
        per_call = model(inputs, min_keep_rate=0.5, output_kept_patches=True)
        assert model.config.min_keep_rate is None
        with model.reduction_settings(min_keep_rate=0.5):
            configured = model(inputs, output_kept_patches=True)
        unfloored = model(inputs, output_kept_patches=True)
    assert torch.equal(per_call.logits, configured.logits)
    assert all(torch.equal(a, b) for a, b in zip(per_call.kept_patches, configured.kept_patches))
    assert not torch.equal(per_call.logits, unfloored.logits)  # the floor binds on these clips
    predicted = predicted_kept_counts(model, inputs, keep_mass=0.3, min_keep_rate=0.5)
    with model.reduction_settings(keep_mass=0.3, min_keep_rate=0.5):
        assert torch.equal(predicted_kept_counts(model, inputs), predicted)
    assert not torch.equal(predicted_kept_counts(model, inputs, keep_mass=0.3), predicted)


@pytest.mark.parametrize("main", [classify_command.main, tag_command.main], ids=["classify", "tag"])
def test_a_lower_keep_rate_with_a_lower_floor_runs_on_a_model_with_a_floor(main, tmp_path, capsys):
    # the call's keep rate is checked against the call's floor, not against the floor saved in the config
    folder = tiny_folder(tmp_path / "model", keep_mass=0.6, min_keep_rate=0.3)
    argv = [str(CLIPS[0]), "--model_name_or_path", str(folder), "--keep_rate", "0.2", "--min_keep_rate", "0.1"]
    if main is tag_command.main:
        argv += ["--no_progress", "--output", str(tmp_path / "t.png")]
    assert main(argv) == 0
    assert "keep_mass 0.6 (keep rate at most 0.2, at least 0.1)" in capsys.readouterr().out

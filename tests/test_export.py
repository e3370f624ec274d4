"""ONNX export: ONNX Runtime against PyTorch for both families and every keep rate, the CLI, the runner."""

import json
import sys

import huggingface_hub
import numpy as np
import pytest
import torch
from conftest import KEYWORDS, run_with_package_blocked, tiny_pruned_classifier
from transformers import ASTFeatureExtractor, pipeline

from hf_token_prune import AudioMAEFeatureExtractor
from hf_token_prune.commands.export import main
from hf_token_prune.export import OnnxAudioClassifier, export_onnx, onnx_session


onnxruntime = pytest.importorskip("onnxruntime", reason='the [export] extra: pip install "hf-token-prune[export]"')

WORDS = sorted(path.name for path in (KEYWORDS / "test").iterdir())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    "keep_rate", [pytest.param(1.0, marks=pytest.mark.full), 0.7, pytest.param(0.5, marks=pytest.mark.full)]
)
@pytest.mark.parametrize("family", ["ast", "audiomae"])
def test_onnx_runtime_equals_pytorch(tmp_path, family, keep_rate):
    model = tiny_pruned_classifier(family, keep_rate=keep_rate)
    check = export_onnx(model, tmp_path / "model.onnx", torch.randn(2, 128, 64), output_kept_patches=True)
    assert check.batch_sizes == (2, 1) and max(check.max_abs_diff) <= 1e-4 and all(check.kept_patches_equal)

    # Independently of the export's own check: a batch size it never saw, every output against PyTorch.
    session = onnx_session(tmp_path / "model.onnx")
    assert isinstance(session.get_inputs()[0].shape[0], str)  # the batch axis is symbolic
    assert [output.name for output in session.get_outputs()] == ["logits", "kept_patches_0", "kept_patches_1",
                                                                  "kept_patches_2"]
    inputs = torch.randn(5, 128, 64)
    logits, *kept_patches = session.run(None, {"input_values": inputs.numpy()})
    with torch.no_grad():
        expected = model(inputs, output_kept_patches=True)
    assert np.abs(logits - expected.logits.numpy()).max() <= 1e-4
    assert [patches.shape[1] for patches in kept_patches] == {1.0: [32] * 3, 0.7: [23, 17, 12], 0.5: [16, 8, 4]}[
        keep_rate
    ]
    for onnx_patches, torch_patches in zip(kept_patches, expected.kept_patches, strict=True):
        np.testing.assert_array_equal(onnx_patches, torch_patches.numpy())


@pytest.mark.parametrize("family", ["ast", "audiomae"])
@pytest.mark.full
def test_exported_folder_predicts_what_the_pipeline_predicts(tmp_path, family, capsys):
    model = tiny_pruned_classifier(
        family, num_labels=len(WORDS), id2label=dict(enumerate(WORDS)), label2id={w: i for i, w in enumerate(WORDS)}
    )
    extractor_class = ASTFeatureExtractor if family == "ast" else AudioMAEFeatureExtractor
    model.save_pretrained(tmp_path / "model")
    extractor_class(num_mel_bins=64, max_length=128).save_pretrained(tmp_path / "model")

    status = main(["--model_name_or_path", str(tmp_path / "model"), "--keep_rate", "0.5", "--output_dir",
                   str(tmp_path / "onnx"), "--int8"])
    assert status == 0
    assert "max |logits difference|" in capsys.readouterr().out
    assert json.loads((tmp_path / "onnx" / "config.json").read_text())["keep_rate"] == 0.5
    written = {path.name for path in (tmp_path / "onnx").iterdir()}
    assert {"model.onnx", "model.int8.onnx", "config.json", "preprocessor_config.json"} <= written

    clips = [sorted((KEYWORDS / "test" / word).glob("*.flac"))[0] for word in WORDS]
    classifier = OnnxAudioClassifier(tmp_path / "onnx")
    reference = pipeline("audio-classification", model=str(tmp_path / "model"), model_kwargs=dict(keep_rate=0.5))
    for clip in clips:
        expected = reference(str(clip), top_k=None)
        actual = classifier(clip, top_k=None)
        assert [entry["label"] for entry in actual] == [entry["label"] for entry in expected]
        assert max(abs(a["score"] - e["score"]) for a, e in zip(actual, expected)) <= 1e-5
    # docs/deploy.md's plain snippet, where hf_token_prune is not installed: the folder's own extractor and onnxruntime.
    result = run_with_package_blocked(f"""
        import json, numpy, onnxruntime
        from transformers import AutoFeatureExtractor
        from transformers.pipelines.audio_utils import ffmpeg_read
        extractor = AutoFeatureExtractor.from_pretrained("onnx", trust_remote_code=True)
        session = onnxruntime.InferenceSession("onnx/model.onnx")
        waveform = ffmpeg_read(open({str(clips[0])!r}, "rb").read(), 16000)
        features = extractor(waveform, sampling_rate=16000, return_tensors="np")
        (logits,) = session.run(["logits"], {{"input_values": features["input_values"]}})
        print(json.dumps(logits.tolist()))
        """, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    standalone = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(standalone, classifier.logits(classifier.features(clips[0])), atol=1e-6)
    quantised = OnnxAudioClassifier(tmp_path / "onnx", onnx_file="model.int8.onnx")(clips[0], top_k=None)
    assert len(quantised) == len(WORDS) and abs(sum(entry["score"] for entry in quantised) - 1) <= 1e-5
    # A stated wrong rate: one line naming the resampling, for transformers' own AST extractor too.
    assert type(classifier.feature_extractor) is extractor_class
    with pytest.raises(ValueError, match=r"44100 Hz: this model's feature extractor takes 16000 Hz audio; resample it "
                       r"first, e\.g\. scipy\.signal\.resample_poly\(wave, 160, 441\)"):  # fmt: skip
        classifier(np.zeros(44100, np.float32), sampling_rate=44100)


def test_cli_refuses_bad_input_in_one_line(tmp_path, capsys, monkeypatch):
    assert main(["--model_name_or_path", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: no such folder:") and error.count("\n") == 1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["--model_name_or_path", "mymodel", "--output_dir", str(tmp_path / "out")]) == 1  # a Hub id's shape
    error = capsys.readouterr().err
    assert "the Hub model mymodel is not in the cache while offline" in error and error.count("\n") == 1
    assert main(["--model_name_or_path", str(tmp_path), "--output_dir", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "no config.json" in error and error.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["--model_name_or_path", str(tmp_path), "--output_dir", "out", "--keep_rate", "1.5"])
    assert "(0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"hf-token-prune\[export\]"):
        export_onnx(tiny_pruned_classifier("ast"), tmp_path / "model.onnx")

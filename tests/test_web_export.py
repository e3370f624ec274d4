"""export --layout transformers.js: the folder transformers.js loads, the refusal of features it would compute
otherwise, the in-graph minimum padding, and (full tier) transformers.js in Node against transformers' pipeline on
every test clip."""

import json
import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
import soundfile
import torch
from conftest import KEYWORDS, REPO, TINY_SCHEDULE, tiny_pruned_classifier
from transformers import ASTFeatureExtractor, AutoFeatureExtractor, WhisperFeatureExtractor, pipeline

from hf_token_prune import AudioMAEFeatureExtractor
from hf_token_prune.commands.export import main
from hf_token_prune.export import OnnxAudioClassifier, onnx_session, pad_with_minimum, web_zero_padding_value


onnxruntime = pytest.importorskip("onnxruntime", reason='the [export] extra: pip install "hf-token-prune[export]"')

JS = REPO / "tests" / "js"
NPM_CI = ["npm", "ci", "--prefix", str(JS), "--no-audit", "--no-fund"]  # with ONNXRUNTIME_NODE_INSTALL=skip
CLIPS = sorted((KEYWORDS / "test").glob("*/*.flac"))
WORDS = sorted(path.name for path in (KEYWORDS / "test").iterdir())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model_folder(path, extractor):
    labels = dict(id2label=dict(enumerate(WORDS)), label2id={word: i for i, word in enumerate(WORDS)})
    # 4 layers (pruning after 1, 2 and 3): the ONNX export, most of these tests' time, traces a third of 12.
    model = tiny_pruned_classifier("ast", num_hidden_layers=4, num_labels=len(WORDS), **labels)
    model.save_pretrained(path)
    extractor.save_pretrained(path)
    return path


def waveform(clip):
    samples, rate = soundfile.read(clip, dtype="float32")
    assert rate == 16000
    return samples


def test_minimum_padding_is_refused_in_one_line_naming_both_fixes(tmp_path, capsys):
    folder = tiny_model_folder(tmp_path / "model", AudioMAEFeatureExtractor(num_mel_bins=64, max_length=128))
    status = main(["--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "web"), "--layout",
                   "transformers.js"])  # fmt: skip
    stderr = capsys.readouterr().err
    error = stderr.splitlines()[-1]  # after transformers' progress bar of loading the weights
    assert status == 1 and stderr.count("error:") == 1 and not (tmp_path / "web").exists()
    assert error.startswith("error: the feature extractor pads short clips with the clip's minimum fbank value")
    assert "--pad_in_graph" in error and "--fbank_padding zero" in error
    # The in-graph padding is what the web layout needs; the plain ONNX layout takes the extractor as it is.
    assert main(["--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "onnx"), "--pad_in_graph"]) == 1
    assert "pad_in_graph is for layout='transformers.js'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extractor, config, problem",
    [
        (ASTFeatureExtractor(sampling_rate=8000), {}, "takes 8000 Hz audio"),
        (ASTFeatureExtractor(dither=1.0), {}, "dithers (dither=1.0)"),
        (AudioMAEFeatureExtractor(fbank_padding="zero"), {"drop_padding": True}, "drop_padding=True"),
        (WhisperFeatureExtractor(), {}, "not WhisperFeatureExtractor's"),
    ],
)
def test_features_transformers_js_computes_otherwise_are_refused(extractor, config, problem):
    from hf_token_prune import PrunedASTConfig

    with pytest.raises(ValueError, match=re.escape(problem)) as error:
        web_zero_padding_value(PrunedASTConfig(**config), extractor, pad_in_graph=True)
    assert "\n" not in str(error.value) and "--layout onnx" in str(error.value)


def test_zero_padding_and_transformers_ast_extractors_pass_as_they_are():
    from hf_token_prune import PrunedASTConfig

    for extractor in ASTFeatureExtractor(), AudioMAEFeatureExtractor(fbank_padding="zero"):
        assert web_zero_padding_value(PrunedASTConfig(), extractor) is None
    minimum = AudioMAEFeatureExtractor(mean=-6.845978, std=5.5654526)
    assert web_zero_padding_value(PrunedASTConfig(), minimum, pad_in_graph=True) == pytest.approx(6.845978 / 11.1309052)


def test_pad_with_minimum_turns_zero_padded_features_into_the_minimum_padded_ones():
    # A 64-frame window: most clips are shorter (padded), a few longer (cut).
    clips = [waveform(clip) for clip in CLIPS[::10]]
    zero = ASTFeatureExtractor(num_mel_bins=64, max_length=64)
    minimum = AudioMAEFeatureExtractor(num_mel_bins=64, max_length=64)
    features = zero(clips, sampling_rate=16000, return_tensors="pt")["input_values"]
    expected = minimum(clips, sampling_rate=16000, return_tensors="pt")["input_values"]
    assert (features != expected).any(dim=(1, 2)).sum() >= len(clips) // 2  # most clips are padded
    assert torch.equal(pad_with_minimum(features, float(zero.normalize(0.0))), expected)
    # Features without one real frame (a clip under one window, which Python refuses) stay finite.
    padding_only = torch.full((1, 64, 64), float(zero.normalize(0.0)))
    assert torch.equal(pad_with_minimum(padding_only, float(zero.normalize(0.0))), padding_only)


def test_web_folder_has_the_stock_names_and_its_graph_repads_with_the_minimum(tmp_path, capsys):
    extractor = AudioMAEFeatureExtractor(num_mel_bins=64, max_length=128)
    folder = tiny_model_folder(tmp_path / "model", extractor)
    web = tmp_path / "web"
    status = main(["--model_name_or_path", str(folder), "--output_dir", str(web), "--keep_rate", "0.5", "--layout",
                   "transformers.js", "--pad_in_graph"])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert "onnx/model.onnx, onnx/model_quantized.onnx" in capsys.readouterr().out
    assert {path.relative_to(web).as_posix() for path in web.rglob("*")} == {
        "config.json", "preprocessor_config.json", "onnx", "onnx/model.onnx", "onnx/model_quantized.onnx"}  # fmt: skip
    config = json.loads((web / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("audio-spectrogram-transformer",
                                                               ["ASTForAudioClassification"])  # fmt: skip
    assert config["keep_rate"] == 0.5 and config["id2label"]["3"] == WORDS[3] and "auto_map" not in config
    preprocessor = json.loads((web / "preprocessor_config.json").read_text())
    assert preprocessor["feature_extractor_type"] == "ASTFeatureExtractor" and "auto_map" not in preprocessor
    web_extractor = AutoFeatureExtractor.from_pretrained(web)
    assert type(web_extractor) is ASTFeatureExtractor
    for key in "sampling_rate", "num_mel_bins", "max_length", "do_normalize", "mean", "std":
        assert getattr(web_extractor, key) == getattr(extractor, key)

    # The graph on the zero-padded features of the web extractor = the model on the minimum-padded ones.
    clips = [waveform(clip) for clip in CLIPS[::30]]
    reference = pipeline("audio-classification", model=str(folder), model_kwargs=dict(keep_rate=0.5))
    with torch.no_grad():
        expected = reference.model(**extractor(clips, sampling_rate=16000, return_tensors="pt")).logits.numpy()
    for file in "model.onnx", "model_quantized.onnx":
        session = onnx_session(web / "onnx" / file)
        assert [output.name for output in session.get_outputs()] == ["logits"]
        assert [node.name for node in session.get_inputs()] == ["input_values"]
        (logits,) = session.run(["logits"], dict(web_extractor(clips, sampling_rate=16000, return_tensors="np")))
        assert np.abs(logits - expected).max() <= (1e-5 if file == "model.onnx" else 0.1)  # int8: 0.03 measured
    # Without the re-padding the same features give other logits: the test above can fail.
    plain = AudioMAEFeatureExtractor(num_mel_bins=64, max_length=128, fbank_padding="zero")
    with torch.no_grad():
        unpadded = reference.model(**plain(clips, sampling_rate=16000, return_tensors="pt")).logits.numpy()
    assert np.abs(unpadded - expected).max() > 1e-3


def f32_clips(folder):
    """The test clips decoded here (Node transformers.js cannot decode FLAC), as raw float32 files for Node."""
    folder.mkdir()
    paths = []
    for clip in CLIPS:
        path = folder / f"{clip.parent.name}_{clip.stem}.f32"
        waveform(clip).astype("<f4").tofile(path)
        paths.append(str(path))
    return paths


def node_top1(folder, dtype, clips) -> list[tuple[str, float]]:
    result = subprocess.run(["node", str(JS / "classify.mjs"), str(folder), dtype, *clips], capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows] == clips
    return [(label, float(score)) for _, label, score in rows]


@pytest.fixture(scope="module")
def transformers_js():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run transformers.js (apt-get install nodejs npm)")
    if not (JS / "node_modules" / "@huggingface" / "transformers").is_dir():
        # onnxruntime-node's install script would download CUDA binaries; its CPU binaries ship in the package.
        env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
        result = subprocess.run(NPM_CI, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    return JS


@pytest.fixture(scope="module")
def trained_zero_padding(tmp_path_factory):
    """The demo recipe, tiny, on every training clip for two epochs with zero padding: about 50 s, and top-1 labels
    that vary across the test clips."""
    from hf_token_prune.commands import finetune as finetuning

    output = tmp_path_factory.mktemp("web") / "zero"
    finetuning.main([
        "--recipe", "demo", "--fbank_padding", "zero", "--output_dir", str(output),
        "--config_overrides",
        "hidden_size=32,num_attention_heads=2,intermediate_size=64,frequency_stride=16,time_stride=16",
        "--num_mel_bins", "32", "--num_frames", "64", "--learning_rate", "0.001", "--max_eval_samples", "20",
        "--per_device_train_batch_size", "8", "--eval_keep_rates", "0.7", *TINY_SCHEDULE,
    ])  # fmt: skip
    return output


@pytest.mark.full
@pytest.mark.parametrize("padding", ["zero", "minimum"])
def test_transformers_js_in_node_gets_the_python_top1_on_every_test_clip(
    transformers_js, trained_zero_padding, tmp_path, padding, capsys
):
    started = time.perf_counter()
    model = trained_zero_padding
    if padding == "minimum":
        # The same weights behind a minimum-padding extractor: exported with --pad_in_graph, the web folder must give
        # what the Python pipeline gives with that extractor.
        model = tmp_path / "minimum"
        shutil.copytree(trained_zero_padding, model)
        extractor = AutoFeatureExtractor.from_pretrained(model, trust_remote_code=True)
        extractor.fbank_padding = "minimum"
        extractor.save_pretrained(model)
    web = tmp_path / "web"
    argv = ["--model_name_or_path", str(model), "--output_dir", str(web), "--layout", "transformers.js"]
    assert main(argv + (["--pad_in_graph"] if padding == "minimum" else [])) == 0, capsys.readouterr().err
    clips = f32_clips(tmp_path / "clips")
    waveforms = [np.fromfile(clip, "<f4") for clip in clips]

    reference = pipeline("audio-classification", model=str(model), trust_remote_code=True)
    python_fp32 = [reference(samples, top_k=1)[0] for samples in waveforms]
    quantised = OnnxAudioClassifier(web, onnx_file="onnx/model_quantized.onnx")
    python_int8 = [quantised(samples, sampling_rate=16000, top_k=1)[0] for samples in waveforms]
    labels = {entry["label"] for entry in python_fp32}
    assert len(labels) >= 3, f"the model predicts {labels} only: the comparison would be weak"

    for dtype, expected in ("fp32", python_fp32), ("q8", python_int8):
        actual = node_top1(web, dtype, clips)
        agree = sum(label == entry["label"] for (label, _), entry in zip(actual, expected))
        score_diff = max(abs(score - entry["score"]) for (_, score), entry in zip(actual, expected))
        with capsys.disabled():
            print(f"\n{padding} padding, transformers.js {dtype}: top-1 agrees on {agree}/{len(clips)} clips "
                  f"({len(labels)} labels), max |top-1 score difference| {score_diff:.1e}")  # fmt: skip
        assert agree == len(clips) == 300
        if dtype == "fp32":
            assert score_diff <= 1e-5
    with capsys.disabled():
        print(f"{padding} padding: {time.perf_counter() - started:.0f} s (plus the shared training)")

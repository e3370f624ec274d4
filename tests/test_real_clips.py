"""Real clips: which frames are real (attention_mask), integer PCM read as [-1, 1], and long recordings tagged in
windows (hf_token_prune.tagging, recipes/tag.py), files streamed in bounded memory."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import soundfile
import torch
from transformers import ASTFeatureExtractor, pipeline

from conftest import KEYWORDS, REPO, load_recipe, tiny_ast_kwargs
from hf_token_prune import (
    AudioMAEFeatureExtractor,
    PrunedASTConfig,
    PrunedASTForAudioClassification,
    RecordingTags,
    tag_recording,
)
from hf_token_prune.feature_extraction_audiomae import num_fbank_frames
from hf_token_prune.tagging import WindowStream, stream_audio, window_spans


RATE = 16000
MAX_LENGTH = 100  # frames: a 1.015 s window, as the demo model's
WINDOW = 400 + (MAX_LENGTH - 1) * 160


def tiny_model(**config):
    torch.manual_seed(0)
    labels = dict(enumerate(["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]))
    kwargs = tiny_ast_kwargs(num_labels=10, max_length=MAX_LENGTH, id2label=labels, **config)
    return PrunedASTForAudioClassification(PrunedASTConfig(**kwargs, keep_rate=0.7)).eval()


def extractor(**kwargs):
    return AudioMAEFeatureExtractor(num_mel_bins=64, max_length=MAX_LENGTH, mean=-11.9, std=6.1, **kwargs)


def keyword_recording(seconds, seed=0):
    spec = importlib.util.spec_from_file_location("make_long_recording", REPO / "scripts" / "make_long_recording.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.long_recording(sorted((KEYWORDS / "test").glob("*/*.flac")), seconds, seed)


# 1. attention_mask: which frames are real --------------------------------------------------------------------------


@pytest.mark.parametrize("fbank_padding", ["minimum", "zero"])
def test_attention_mask_marks_the_clips_own_frames_in_a_mixed_batch(fbank_padding):
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 0.1, n).astype(np.float32) for n in (4000, 12000, 30000)]  # 23, 73, 183 frames
    ours = extractor(fbank_padding=fbank_padding)
    batch = ours(clips, sampling_rate=RATE, return_attention_mask=True, return_tensors="pt")
    mask = batch["attention_mask"]
    assert mask.dtype == torch.int32 and mask.shape == (3, MAX_LENGTH)
    assert mask.sum(-1).tolist() == [23, 73, 100] == [min(num_fbank_frames(c.size), MAX_LENGTH) for c in clips]
    assert (mask[:, :-1] >= mask[:, 1:]).all()  # real frames first, then padding
    for row, clip in enumerate(clips):
        alone = ours(clip, sampling_rate=RATE, return_tensors="pt")["input_values"][0]
        assert torch.equal(batch["input_values"][row], alone)
        padding = alone[mask[row] == 0]
        fill = alone.min() if fbank_padding == "minimum" else (0 - ours.mean) / (2 * ours.std)
        assert torch.allclose(padding, torch.full_like(padding, float(fill)))


def test_attention_mask_only_when_asked_and_the_stock_ast_config_keeps_its_zero_padding(tmp_path, keyword_clip):
    wave, _ = soundfile.read(keyword_clip, dtype="float32")
    assert list(extractor()(wave, sampling_rate=RATE)) == ["input_values"]
    assert "attention_mask" in extractor(return_attention_mask=True)(wave, sampling_rate=RATE)
    assert "attention_mask" not in extractor(return_attention_mask=True)(wave, sampling_rate=RATE,
                                                                         return_attention_mask=False)
    # a stock AST checkpoint's extractor config, read by ours: the same features, and the mask on request
    stock = ASTFeatureExtractor(num_mel_bins=64, max_length=MAX_LENGTH, mean=-3.0, std=2.5)
    stock.save_pretrained(tmp_path)
    ours = AudioMAEFeatureExtractor.from_pretrained(tmp_path)
    assert ours.fbank_padding == "zero" and not ours.return_attention_mask
    features = ours(wave, sampling_rate=RATE, return_attention_mask=True, return_tensors="np")
    np.testing.assert_array_equal(features["input_values"], stock(wave, sampling_rate=RATE, return_tensors="np")["input_values"])
    assert features["attention_mask"].sum() == num_fbank_frames(wave.size)
    assert AudioMAEFeatureExtractor.from_pretrained(tmp_path, fbank_padding="minimum").fbank_padding == "minimum"


def test_finetune_recipe_saves_our_extractor_for_ast_with_the_same_features():
    from hf_token_prune import finetuning as finetune
    stock = ASTFeatureExtractor(num_mel_bins=32, max_length=100, mean=-3.0, std=2.5)
    wave = np.random.default_rng(0).normal(0, 0.1, 4800).astype(np.float32)
    for padding in (None, "zero"):
        saved = finetune.with_fbank_padding(stock, padding)
        assert type(saved) is AudioMAEFeatureExtractor and saved.fbank_padding == "zero"
        np.testing.assert_array_equal(saved(wave, sampling_rate=RATE)["input_values"][0],
                                      stock(wave, sampling_rate=RATE)["input_values"][0])


# 5. integer PCM ------------------------------------------------------------------------------------------------------


def test_int16_and_int32_pcm_give_the_float_files_features(keyword_clip):
    ours = extractor()
    as_float = ours(soundfile.read(keyword_clip, dtype="float32")[0], sampling_rate=RATE)["input_values"][0]
    for dtype in ("int16", "int32"):
        pcm, _ = soundfile.read(keyword_clip, dtype=dtype)
        assert pcm.dtype == dtype
        np.testing.assert_array_equal(ours(pcm, sampling_rate=RATE)["input_values"][0], as_float)
        np.testing.assert_array_equal(ours([pcm, pcm], sampling_rate=RATE)["input_values"][1], as_float)


def test_an_int16_array_written_to_wav_gives_the_features_of_that_file_read_as_float(tmp_path):
    # the other way round: start from integer PCM (what scipy.io.wavfile.read returns), compare with the float file
    pcm = (np.random.default_rng(0).normal(0, 0.1, 12000).clip(-1, 1) * 32767).astype(np.int16)
    scipy.io.wavfile.write(tmp_path / "clip.wav", RATE, pcm)
    as_float, _ = soundfile.read(tmp_path / "clip.wav", dtype="float32")
    ours = extractor()
    np.testing.assert_array_equal(ours(pcm, sampling_rate=RATE)["input_values"][0],
                                  ours(as_float, sampling_rate=RATE)["input_values"][0])


@pytest.mark.parametrize("dtype", ["int64", "uint8", "uint16", "bool"])
def test_integer_audio_of_unknown_scale_is_refused_with_the_fix(dtype):
    with pytest.raises(ValueError, match=f"dtype {dtype}.*float samples in \\[-1, 1\\]"):
        extractor()(np.zeros(4000, dtype=dtype), sampling_rate=RATE)


def test_pipeline_scores_int16_pcm_as_the_float_array_and_the_file(tmp_path, keyword_clip):
    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    extractor().save_pretrained(folder)
    classifier = pipeline("audio-classification", model=str(folder))
    by_path = classifier(str(keyword_clip), top_k=3)
    by_float = classifier(soundfile.read(keyword_clip, dtype="float32")[0], top_k=3)
    pcm = soundfile.read(keyword_clip, dtype="int16")[0]
    assert classifier(pcm, top_k=3) == by_float == by_path
    assert classifier({"array": pcm, "sampling_rate": RATE}, top_k=3) == by_float


# 4. long recordings in windows ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [400, 5000, WINDOW - 1, WINDOW, WINDOW + 1, WINDOW + 399, 3 * WINDOW + 777])
@pytest.mark.parametrize("hop", [1, 160, 4000, WINDOW // 2, WINDOW - 399, WINDOW])
def test_windows_start_once_per_hop_and_cover_the_recording(num_samples, hop):
    spans = window_spans(num_samples, WINDOW, hop)
    starts, ends = spans[:, 0], spans[:, 1]
    np.testing.assert_array_equal(starts, np.arange(len(spans)) * hop)  # one window per hop, none skipped
    assert (ends - starts <= WINDOW).all() and (ends[:-1] == starts[:-1] + WINDOW).all()  # only the last is short
    assert (starts[1:] <= ends[:-1]).all()  # no gap between neighbours
    assert len(spans) == 1 or starts[-2] + WINDOW < num_samples  # no window after one has reached the end
    tail = num_samples - ends[-1]  # only a stretch too short for one fbank frame may be left to a window's neighbour
    assert tail == 0 or (0 < tail and num_samples - (starts[-1] + hop) < 400)
    change = np.zeros(num_samples + 1, int)
    np.add.at(change, starts, 1)
    np.add.at(change, ends, -1)
    assert np.cumsum(change)[: num_samples - tail].min() >= 1  # every sample is in a window


def test_tag_recording_scores_every_window_as_the_model_scores_that_clip_alone():
    wave, words = keyword_recording(6.0)
    model, ours = tiny_model(), extractor()
    tags = tag_recording(wave, model, ours, hop=0.3, batch_size=4, progress=False)
    spans = window_spans(wave.size, WINDOW, round(0.3 * RATE))
    assert isinstance(tags, RecordingTags) and tags.scores.shape == (len(spans), 10) and len(spans) == 18
    np.testing.assert_allclose(tags.starts, spans[:, 0] / RATE)
    assert tags.duration == 6.0 and (tags.window, tags.hop) == (WINDOW / RATE, 0.3)
    with torch.no_grad():
        for row, (start, end) in enumerate(spans):
            # the last window is a short clip: the extractor pads it (with the window's minimum) as any short clip
            alone = model(**ours(wave[start:end], sampling_rate=RATE, return_tensors="pt")).logits[0].softmax(-1)
            np.testing.assert_allclose(tags.scores[row], alone.numpy(), atol=1e-6)
    assert tags.real_frames[-1] == num_fbank_frames(spans[-1, 1] - spans[-1, 0]) < MAX_LENGTH
    assert (tags.real_frames[:-1] == MAX_LENGTH).all()
    np.testing.assert_array_equal(tags.mean, tags.scores.mean(0))
    np.testing.assert_array_equal(tags.max, tags.scores.max(0))
    assert tags.top(2, by="max") == [{"label": tags.labels[i], "score": float(tags.max[i])}
                                     for i in np.argsort(-tags.max)[:2]]
    # bounded memory changes nothing: one window per batch, integer PCM, a file
    pcm = np.round(wave * 32767).astype(np.int16)
    one_by_one = tag_recording(pcm, model, ours, hop=0.3, batch_size=1, progress=False)
    as_float = tag_recording(pcm.astype(np.float32) / 32768, model, ours, hop=0.3, batch_size=7, progress=False)
    np.testing.assert_allclose(one_by_one.scores, as_float.scores, atol=1e-6)


@pytest.mark.parametrize("num_samples", [300, 399, 400, WINDOW - 1, WINDOW, WINDOW + 1, 5 * WINDOW + 123])
@pytest.mark.parametrize("hop", [160, WINDOW // 2, WINDOW - 200, WINDOW])
def test_windows_of_a_stream_in_any_chunks_are_those_of_the_whole_recording(num_samples, hop):
    wave = np.random.default_rng(num_samples).normal(0, 0.1, num_samples).astype(np.float32)
    for chunk in (1, 399, 4096, WINDOW + 7, num_samples):
        chunks = [wave[i : i + chunk] for i in range(0, num_samples, chunk)]
        windows = WindowStream(chunks, WINDOW, hop, 160)
        if num_samples < 400:
            with pytest.raises(ValueError, match="fewer than one 25 ms fbank frame"):
                list(windows)
            continue
        seen = list(windows)
        assert [[start, end] for start, end, _ in seen] == window_spans(num_samples, WINDOW, hop).tolist()
        for start, end, clip in seen:
            np.testing.assert_array_equal(clip, wave[start:end])
        whole = num_samples // 160 * 160
        np.testing.assert_array_equal(windows.peaks(), np.abs(wave[:whole]).reshape(-1, 160).max(axis=1))


@pytest.mark.parametrize("rate, suffix", [(16000, "flac"), (44100, "wav")])
def test_a_file_is_tagged_as_a_stream_with_the_scores_of_the_whole_decoded_file(tmp_path, rate, suffix):
    from scipy.signal import resample_poly
    from torchcodec.decoders import AudioDecoder

    wave, _ = keyword_recording(12.3)
    path = tmp_path / f"rec.{suffix}"
    soundfile.write(path, wave if rate == RATE else resample_poly(wave, 441, 160).astype(np.float32), rate)
    # what tag_recording read before it streamed: the whole file decoded by torchcodec (as `datasets` decodes it)
    whole = AudioDecoder(str(path), sample_rate=RATE, num_channels=1).get_all_samples().data[0].numpy()
    np.testing.assert_array_equal(np.concatenate(list(stream_audio(path, RATE, 5000))), whole)
    model = tiny_model()
    streamed = tag_recording(path, model, extractor(), hop=0.3, batch_size=3, progress=False)
    in_memory = tag_recording(whole, model, extractor(), hop=0.3, batch_size=3, progress=False)
    assert len(streamed.starts) == len(window_spans(whole.size, WINDOW, 4800)) > 3 * 3  # several chunks
    for name in ("scores", "starts", "ends", "real_frames", "peaks"):
        np.testing.assert_array_equal(getattr(streamed, name), getattr(in_memory, name))


def peak_rss_mb(*argv):
    """Peak resident memory (MB) of one `hf-token-prune` command run in a fresh process: its VmHWM, which unlike
    getrusage's ru_maxrss does not carry over the forking test process's own memory through exec."""
    code = ("import re, sys, hf_token_prune_cli; assert hf_token_prune_cli.main(sys.argv[1:]) == 0; "
            "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1]) // 1024)")
    result = subprocess.run([sys.executable, "-c", code, *map(str, argv)], cwd=REPO, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


@pytest.mark.full
def test_tag_and_classify_memory_is_flat_in_the_recordings_length(tmp_path):
    """4 and 20 minutes of faint noise: tag streams the file, classify decodes one window, so the longer file costs no
    more memory (its decoded samples alone are 61 MB more; before, classify featurised all of them: gigabytes). Both
    files are longer than tag's read chunk (16 hops of 10.24 s here): a file that fits in one chunk peaks lower."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("reads peak memory from Linux's /proc/self/status")
    folder = tmp_path / "model"
    torch.manual_seed(0)
    PrunedASTForAudioClassification(PrunedASTConfig(**tiny_ast_kwargs(max_length=1024))).save_pretrained(folder)
    AudioMAEFeatureExtractor(num_mel_bins=64, max_length=1024).save_pretrained(folder)  # a 10.24 s window
    peaks = {}
    for minutes in (4, 20):
        audio = tmp_path / f"{minutes}min.flac"
        noise = np.random.default_rng(minutes).normal(0, 1e-4, minutes * 60 * RATE).astype(np.float32)
        soundfile.write(audio, noise, RATE, subtype="PCM_16")
        del noise
        peaks[minutes] = (
            peak_rss_mb("classify", audio, "--model_name_or_path", folder, "--torch_threads", "1"),
            peak_rss_mb("tag", audio, "--model_name_or_path", folder, "--hop", "10.24", "--no_progress",
                        "--torch_threads", "1", "--output", tmp_path / f"{minutes}.png"),
        )  # fmt: skip
    for short, long in zip(peaks[4], peaks[20]):
        assert long - short < 40, peaks


def test_tag_recording_reads_integer_pcm_right_even_with_transformers_ast_extractor():
    wave, _ = keyword_recording(3.0)
    pcm = np.round(wave * 32767).astype(np.int16)
    stock, model = ASTFeatureExtractor(num_mel_bins=64, max_length=MAX_LENGTH), tiny_model()
    from_pcm = tag_recording(pcm, model, stock, progress=False)
    np.testing.assert_allclose(from_pcm.scores, tag_recording(pcm / 32768, model, stock, progress=False).scores,
                               atol=1e-6)
    first = torch.as_tensor(stock(pcm[:WINDOW], sampling_rate=RATE)["input_values"][0])  # unscaled: other features
    with torch.no_grad():
        misread = model(first[None]).logits[0].softmax(-1).numpy()
    assert np.abs(misread - from_pcm.scores[0]).max() > 1e-3


def test_tag_recording_reads_files_and_scores_a_multi_label_model_with_sigmoid(tmp_path):
    wave, _ = keyword_recording(3.0)
    soundfile.write(tmp_path / "rec.flac", wave, RATE, subtype="PCM_16")
    model = tiny_model(problem_type="multi_label_classification")
    from_file = tag_recording(tmp_path / "rec.flac", model, extractor(), progress=False)
    pcm = soundfile.read(tmp_path / "rec.flac", dtype="int16")[0]
    with torch.no_grad():
        logits = model(**extractor()(pcm[:WINDOW], sampling_rate=RATE, return_tensors="pt")).logits[0]
    np.testing.assert_allclose(from_file.scores[0], logits.sigmoid().numpy(), atol=1e-6)
    assert from_file.scores.sum(1).max() > 1.01  # independent per-label probabilities, not a softmax


def test_a_model_that_drops_padding_gets_the_extractors_frame_mask():
    model = tiny_model()
    seen = []

    class DropsPadding(torch.nn.Module):
        """Today's model behind the interface of one that drops padding tokens: records the mask it is given."""

        def __init__(self):
            super().__init__()
            self.inner, self.config = model, model.config
            self.config.drop_padding = True

        def forward(self, input_values, attention_mask=None):
            seen.append(attention_mask)
            return self.inner(input_values)

    wave, _ = keyword_recording(2.5)
    tag_recording(wave, DropsPadding(), extractor(), progress=False)
    last = window_spans(wave.size, WINDOW, WINDOW // 2)[-1]
    assert [mask.sum(-1).tolist() for mask in seen] == [[100, 100, 100, num_fbank_frames(last[1] - last[0])]]
    assert seen[0].shape == (4, MAX_LENGTH)


@pytest.mark.parametrize("kwargs, message", [
    ({"window": 1.5}, r"window=1.5 s is longer than the model's window of 1.015 s \(100 frames\)"),
    ({"window": 0.02}, "shorter than one 25 ms fbank frame"),
    ({"hop": 0}, "hop=0 s: the hop between window starts must be > 0"),
    ({"hop": -0.5}, "must be > 0"),
    ({"window": 0.5, "hop": 0.6}, "longer than the window"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"sampling_rate": 8000}, r"8000 Hz: this model's feature extractor takes 16000 Hz audio; resample it first, e.g. "
                              r"scipy.signal.resample_poly\(wave, 2, 1\)"),
])
def test_tag_recording_rejects_bad_windows_and_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tag_recording(np.zeros(40000, np.float32), tiny_model(), extractor(), progress=False, **kwargs)


@pytest.mark.parametrize("audio, error, message", [
    (np.zeros((40000, 2), np.float32), ValueError, "mix channels first"),
    (np.zeros(300, np.float32), ValueError, "fewer than one 25 ms fbank frame"),
    ("missing.flac", FileNotFoundError, "missing.flac: no such audio file"),
])
def test_tag_recording_rejects_bad_recordings(audio, error, message):
    with pytest.raises(error, match=message):
        tag_recording(audio, tiny_model(), extractor(), progress=False)


def test_timeline_joins_runs_of_windows_and_spans_tile_the_recording():
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.55, 0.45], [0.1, 0.9]])
    tags = RecordingTags(labels=["a", "b"], starts=np.arange(5) * 0.5, ends=np.minimum(np.arange(5) * 0.5 + 1, 2.6),
                         real_frames=np.full(5, 98), scores=scores, window=1.0, hop=0.5)
    assert tags.timeline() == [(0.0, 1.5, "a", 0.9), (1.0, 2.0, "b", 0.7), (1.5, 2.5, "a", 0.55), (2.0, 2.6, "b", 0.9)]
    assert tags.timeline(min_score=0.6) == [(0.0, 1.5, "a", 0.9), (1.0, 2.0, "b", 0.7), (2.0, 2.6, "b", 0.9)]
    spans = tags.spans()
    assert spans[0, 0] == 0 and spans[-1, 1] == 2.6 and (spans[1:, 0] == spans[:-1, 1]).all()
    with pytest.raises(ValueError, match="choose one of mean, max"):
        tags.top(by="median")


def test_tag_recipe_prints_a_timeline_and_writes_the_png(tmp_path, capsys):
    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    extractor().save_pretrained(folder)
    wave, _ = keyword_recording(12.0)
    soundfile.write(tmp_path / "rec.flac", wave, RATE, subtype="PCM_16")
    tag = load_recipe("tag")
    args = [str(tmp_path / "rec.flac"), "--model_name_or_path", str(folder), "--hop", "0.5", "--min_score", "0",
            "--output", str(tmp_path / "tags.png"), "--no_progress"]
    assert tag.main(args) == 0
    printed = capsys.readouterr().out
    assert "12.00 s, 23 windows of 1.015 s every 0.500 s" in printed
    assert "top 5 by mean:" in printed and "top 5 by max:" in printed
    assert re.search(r"^ +\d+\.\d\d +\d+\.\d\d  [a-z]+ +[01]\.\d\d$", printed, re.MULTILINE)  # a timeline row
    assert (tmp_path / "tags.png").read_bytes().startswith(b"\x89PNG")

    for bad, message in [([str(tmp_path / "none.flac"), "--model_name_or_path", str(folder)], "none.flac: no such audio"),
                         ([str(tmp_path / "rec.flac"), "--model_name_or_path", str(tmp_path / "nope")], "no such folder"),
                         (args + ["--window", "2"], "longer than the model's window")]:
        assert tag.main(bad) == 1  # an expected error (2 is for usage errors: every command's exit codes)
        stderr = capsys.readouterr().err  # transformers' weight-loading bar may come first
        errors = [line for line in stderr.splitlines() if line.startswith("tag: error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in stderr, stderr

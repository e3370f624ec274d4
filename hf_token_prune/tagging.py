"""Classify a recording longer than a model's window: overlapping windows, per-window scores, mean and max over them.

```python
from transformers import pipeline
from hf_token_prune import tag_recording

classifier = pipeline("audio-classification", model="outputs/demo")
tags = tag_recording("meeting.wav", classifier.model, classifier.feature_extractor, hop=0.25)
tags.scores       # (windows, labels): softmax per window (sigmoid for a multi-label model), as the pipeline scores
tags.top(3, by="max"), tags.timeline(min_score=0.5)
```

Windows start every `hop` seconds from 0; the last one is the first that reaches the end of the recording, so it is
usually shorter than `window`. It goes to the feature extractor as the short clip it is, and the extractor pads its
fbank exactly as it pads any short clip (the clip's minimum or zero, `fbank_padding`), not after zero samples; its
real frame count is kept (`real_frames`), and a model whose config has `drop_padding=True` also gets the extractor's
frame `attention_mask` for every window. Memory: a file is decoded as a stream, a batch of windows at a time, so it
stays one window plus one batch of windows' samples and features whatever the recording's length; an array is
already in memory.
"""

import math
import subprocess
import tempfile
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .bucketing import predicted_kept_counts
from .feature_extraction_audiomae import (
    KALDI_FRAME_LENGTH,
    KALDI_FRAME_SHIFT,
    as_float_waveform,
    check_sampling_rate,
    num_fbank_frames,
)


AGGREGATIONS = ("mean", "max")
PEAKS_PER_SECOND = 100  # the waveform plot draws the peak of every 10 ms: a minute holds a million samples
PLOTTED_PEAKS = 4000
# bucket_by_count sorts this many batches of windows at a time: more finds closer counts, and holds more in memory
BUCKET_BATCHES = 8


@dataclass
class RecordingTags:
    """Scores of a recording classified in windows. Times are in seconds.

    `scores[i]` is window `i`'s class probabilities: softmax for a single-label model, sigmoid for a multi-label one
    (`config.problem_type == "multi_label_classification"`), as `pipeline("audio-classification")` scores a clip.
    Two aggregates over the windows: `mean` (the average probability: how much of the recording a class fills) and
    `max` (the highest probability in any window: whether a class occurs anywhere, however briefly; the usual
    recording-level score of sound-event taggers). With overlapping windows each stretch of audio is seen by about
    window / hop windows, but its first and last stretches by fewer, so `mean` slightly under-weights the edges.
    """

    labels: list[str]
    starts: np.ndarray  # (windows,) first sample of each window, in seconds
    ends: np.ndarray  # (windows,) end of each window (exclusive); the last one is the recording's end
    real_frames: np.ndarray  # (windows,) fbank frames of audio in each window; the rest of the model input is padding
    scores: np.ndarray  # (windows, labels)
    window: float
    hop: float
    peaks: np.ndarray | None = None  # (duration x PEAKS_PER_SECOND,) peak |sample| of every 10 ms: the plot's waveform

    @property
    def mean(self) -> np.ndarray:
        return self.scores.mean(axis=0)

    @property
    def max(self) -> np.ndarray:
        return self.scores.max(axis=0)

    @property
    def duration(self) -> float:
        return float(self.ends[-1])

    def top(self, k: int = 5, by: str = "mean") -> list[dict]:
        """The `k` best labels of the recording by `mean` or `max`, as the pipeline returns them."""
        if by not in AGGREGATIONS:
            raise ValueError(f"by={by!r}: choose one of {', '.join(AGGREGATIONS)}.")
        scores = getattr(self, by)
        return [{"label": self.labels[i], "score": float(scores[i])} for i in np.argsort(-scores, kind="stable")[:k]]

    def spans(self) -> np.ndarray:
        """(windows, 2): the hop-long middle of each window (the first from 0, the last to the end); these tile the
        recording without overlap, so a plot can give each window one cell."""
        middle = self.starts + (self.window - self.hop) / 2
        return np.stack([np.concatenate([[0.0], middle[1:]]), np.concatenate([middle[1:], [self.duration]])], axis=1)

    def timeline(self, min_score: float = 0.0) -> list[tuple[float, float, str, float]]:
        """Runs of consecutive windows whose best label is the same and scores at least `min_score`, as `(start of
        the first window, end of the last, label, peak score)`: the stretch of audio those windows heard. With
        overlapping windows, neighbouring runs overlap too; windows scoring below `min_score` are left out."""
        runs, previous = [], None
        for start, end, index, score in zip(self.starts, self.ends, self.scores.argmax(axis=1), self.scores.max(axis=1)):
            label = self.labels[index] if score >= min_score else None
            if label is not None and label == previous:
                first, _, _, peak = runs[-1]
                runs[-1] = (first, float(end), label, max(peak, float(score)))
            elif label is not None:
                runs.append((float(start), float(end), label, float(score)))
            previous = label
        return runs


def window_spans(num_samples: int, window: int, hop: int) -> np.ndarray:
    """(windows, 2) sample spans `[start, end)` over a recording of `num_samples` samples: one window starts at every
    multiple of `hop`, until one reaches the end (the last is then shorter than `window`). A last window shorter than
    one 25 ms analysis frame is left out: it holds no fbank frame (its samples are in the previous window unless
    hop > window - 25 ms)."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window ({window}) and hop ({hop}) must be positive numbers of samples.")
    count = 1 + math.ceil(max(num_samples - window, 0) / hop)
    starts = np.arange(count, dtype=np.int64) * hop
    spans = np.stack([starts, np.minimum(starts + window, num_samples)], axis=1)
    if count > 1 and spans[-1, 1] - spans[-1, 0] < KALDI_FRAME_LENGTH:
        spans = spans[:-1]
    return spans


def model_window_samples(feature_extractor) -> int:
    """The longest waveform the extractor turns into features without cutting it: `max_length` fbank frames."""
    max_length = getattr(feature_extractor, "max_length", None)
    if not isinstance(max_length, int) or not hasattr(feature_extractor, "num_mel_bins"):
        raise ValueError(
            f"{type(feature_extractor).__name__} is not a Kaldi fbank extractor with a fixed max_length (AST / "
            "AudioMAE): give the feature extractor saved with a hf_token_prune or AST model."
        )
    return KALDI_FRAME_LENGTH + (max_length - 1) * KALDI_FRAME_SHIFT


def stream_audio(path, sampling_rate: int, chunk_samples: int):
    """The mono float32 samples of an audio file at `sampling_rate`, `chunk_samples` at a time (the last chunk shorter).
    FFmpeg decodes, down-mixes and resamples the file as one stream, so the samples are those of decoding it whole (as
    torchcodec, and so `datasets`, decodes it) while memory holds one chunk, whatever the file's length; closing the
    generator stops FFmpeg, so reading a file's first seconds decodes little more than them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file.")
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path), "-vn", "-sn", "-dn",
               *_downmix(path), "-ar", str(sampling_rate), "-f", "f32le", "pipe:1"]  # fmt: skip
    # FFmpeg's messages go to a file: a pipe left unread while the samples stream could fill up and stall it
    with tempfile.TemporaryFile() as messages:
        try:
            ffmpeg = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=messages)
        except FileNotFoundError:
            raise ValueError(f"{path}: reading audio files needs ffmpeg: install it (apt-get install ffmpeg).") from None
        try:
            while chunk := ffmpeg.stdout.read(4 * chunk_samples):
                yield np.frombuffer(chunk, np.float32)
            if ffmpeg.wait() != 0:
                messages.seek(0)
                reason = messages.read().decode(errors="replace").split("\n")
                reason = next((line.strip() for line in reversed(reason) if line.strip()), "no reason given")
                raise ValueError(
                    f"{path}: not audio that ffmpeg can decode (wav, flac, mp3, ogg, m4a, opus, ...): {reason}."
                )
        finally:
            ffmpeg.kill()
            ffmpeg.stdout.close()
            ffmpeg.wait()


def _downmix(path) -> list[str]:
    """FFmpeg's flags that make `path` mono. Mono and stereo take `-ac 1`, as transformers' `ffmpeg_read`, torchcodec
    and so `datasets` decode them (the training data went through it). For more channels `-ac 1` adds them with
    surround gains (8 equal channels come out 4.4 times louder), so they are averaged instead. The channel count is
    that of the audio stream FFmpeg picks by default, the one with the most channels."""
    try:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "stream=channels", "-of", "csv=p=0",
             str(path)], capture_output=True, text=True,
        )  # fmt: skip
    except FileNotFoundError:
        raise ValueError(f"{path}: reading audio files needs ffmpeg's ffprobe: install ffmpeg (apt-get install ffmpeg).")
    channels = max((int(line) for line in probe.stdout.split() if line.isdigit()), default=1)
    if channels <= 2:
        return ["-ac", "1"]
    # "<" renormalises the gains to sum to 1: the mean of the channels
    return ["-af", "pan=mono|c0<" + "+".join(f"c{channel}" for channel in range(channels))]


def load_recording(audio, sampling_rate: int | None, target_rate: int) -> np.ndarray:
    """A mono waveform at `target_rate` from a `{"array", "sampling_rate"}` dict (as `datasets` gives it) or an array
    (float in [-1, 1], or int16 / int32 PCM, scaled to [-1, 1]) at `sampling_rate` (default: `target_rate`)."""
    if isinstance(audio, dict):
        if "sampling_rate" not in audio or not ("array" in audio or "raw" in audio):
            raise ValueError('an audio dict needs "array" (or "raw") and "sampling_rate", as datasets gives it.')
        sampling_rate, audio = audio["sampling_rate"], audio.get("array", audio.get("raw"))
    check_sampling_rate(sampling_rate, target_rate)
    audio = audio.numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"Expected one mono waveform (1-D array), got shape {audio.shape}: mix channels first.")
    return as_float_waveform(audio)  # here, not per window: transformers' own AST extractor misreads integer PCM


class WindowStream:
    """The windows of `window_spans` over a recording that arrives in consecutive chunks: iterating yields each window
    as `(start, end, samples)` as soon as a later sample shows it is not the last, and holds only the samples from the
    next window's start on. Once exhausted, `num_samples` is the recording's length and `peaks()` its envelope."""

    def __init__(self, chunks, window: int, hop: int, peak_step: int):
        self.chunks, self.window, self.hop, self.peak_step = chunks, window, hop, peak_step
        self.num_samples, self._peaks = 0, []

    def __iter__(self):
        window, hop, step = self.window, self.hop, self.peak_step
        held, offset, done, peaked = np.zeros(0, np.float32), 0, 0, 0  # held: samples [offset, num_samples)
        for chunk in self.chunks:
            held = np.concatenate([held, chunk]) if held.size else chunk  # an array in one chunk is not copied
            self.num_samples += chunk.size
            whole = (self.num_samples - peaked) // step * step
            self._peaks.append(np.abs(held[peaked - offset : peaked - offset + whole]).reshape(-1, step).max(axis=1))
            peaked += whole
            # a window that ends before the last sample read is whole, and is not the last window
            ready = math.ceil(max(self.num_samples - window, 0) / hop)
            for start in range(done * hop, ready * hop, hop):
                yield start, start + window, held[start - offset : start - offset + window]
            done = ready
            keep = min(done * hop, peaked)
            held, offset = held[keep - offset :], keep
        if num_fbank_frames(self.num_samples) == 0:
            raise ValueError(
                f"The recording has {self.num_samples} samples, fewer than one 25 ms fbank frame: nothing to tag."
            )
        for start, end in window_spans(self.num_samples, window, hop)[done:]:
            yield int(start), int(end), held[start - offset : end - offset]

    def peaks(self) -> np.ndarray:
        """The peak |sample| of every `peak_step` samples read (a partial last step left out)."""
        return np.concatenate(self._peaks) if self._peaks else np.zeros(0, np.float32)


def tag_recording(
    audio,
    model,
    feature_extractor,
    *,
    sampling_rate: int | None = None,
    window: float | None = None,
    hop: float | None = None,
    batch_size: int = 16,
    bucket_by_count: bool = False,
    progress: bool = True,
    keep_rate: float | None = None,
    keep_mass: float | None = None,
    min_keep_rate: float | None = None,
) -> RecordingTags:
    """Classify `audio` in overlapping windows of `window` seconds every `hop` seconds.

    Args:
        audio: a file path (decoded by FFmpeg as a stream, a batch of windows at a time: memory stays flat in the
            recording's length), a `{"array", "sampling_rate"}` dict or a 1-D array (float in [-1, 1], or int16 /
            int32 PCM, scaled to [-1, 1] as `AudioMAEFeatureExtractor` scales it) at `sampling_rate` Hz (default: the
            extractor's rate).
        model: an audio-classification model (`model(**features).logits`) and `feature_extractor` its Kaldi fbank
            extractor (AST's or `AudioMAEFeatureExtractor`); the model's window is the extractor's `max_length` frames.
        window: seconds per window, at most the model's window (the default).
        hop: seconds between window starts, in (0, window]; default `window / 2`.
        batch_size: windows per forward pass (bounds memory).
        bucket_by_count: read `BUCKET_BATCHES` batches of windows at a time and batch them in the order of their
            predicted kept counts (:func:`hf_token_prune.bucketing.predicted_kept_counts`), so that a batch of a
            `keep_mass` (or `drop_padding`) model is gathered to a count close to each of its windows' own. The scores
            are those of the unbucketed call (each window's logits equal the window run alone) and come back in time
            order; memory holds that many batches of windows instead of one.
        progress: show a progress bar over the windows.
        keep_rate: the keep rate of this call only (a forward argument of the model; the model's own when `None`,
            and not passed on then, so any classifier works). The model is not changed, so threads may share it.
        keep_mass: the per-window keep policy of this call only, passed on as `keep_rate` is.
        min_keep_rate: the policy's floor for this call only, passed on as `keep_rate` is.
    """
    for name, seconds in (("window", window), ("hop", hop)):
        if seconds is not None and not math.isfinite(seconds):
            raise ValueError(f"{name}={seconds} s: give a finite number of seconds.")
    longest = model_window_samples(feature_extractor)
    rate = feature_extractor.sampling_rate
    window_samples = longest if window is None else round(window * rate)
    if window_samples > longest:
        raise ValueError(
            f"window={window} s is longer than the model's window of {longest / rate:.3f} s "
            f"({feature_extractor.max_length} frames): it would be cut; choose window <= {longest / rate:.3f} s or "
            "leave it out to use the model's."
        )
    if window_samples < KALDI_FRAME_LENGTH:
        raise ValueError(f"window={window} s is shorter than one 25 ms fbank frame: choose a longer window.")
    hop_samples = window_samples // 2 if hop is None else round(hop * rate)
    if hop_samples <= 0:
        raise ValueError(f"hop={hop} s: the hop between window starts must be > 0 (e.g. half the window).")
    if hop_samples > window_samples:
        raise ValueError(
            f"hop={hop} s is longer than the window ({window_samples / rate:.3f} s): the audio between windows would "
            "go unheard; choose hop <= window."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: at least one window per batch.")
    if isinstance(audio, (str, Path)):
        chunks, total = stream_audio(audio, rate, max(batch_size * hop_samples, window_samples)), None
    else:
        waveform = load_recording(audio, sampling_rate, rate)
        chunks, total = [waveform], len(window_spans(waveform.size, window_samples, hop_samples))
    windows = WindowStream(chunks, window_samples, hop_samples, rate // PEAKS_PER_SECOND)

    mask = {"return_attention_mask": True} if getattr(model.config, "drop_padding", False) else {}
    policy = {name: value for name, value in (("keep_rate", keep_rate), ("keep_mass", keep_mass),
                                              ("min_keep_rate", min_keep_rate)) if value is not None}  # fmt: skip
    multi_label = model.config.problem_type == "multi_label_classification"
    parameter = next(model.parameters())
    pool_size = batch_size * (BUCKET_BATCHES if bucket_by_count else 1)
    spans, scores = [], []
    with torch.inference_mode(), tqdm(total=total, unit="window", desc="tagging", disable=not progress) as bar:
        stream = iter(windows)
        while pool := list(islice(stream, pool_size)):
            features = feature_extractor([clip for _, _, clip in pool], sampling_rate=rate, return_tensors="pt", **mask)
            features = features.to(device=parameter.device, dtype=parameter.dtype)  # casts floating tensors only
            order = torch.arange(len(pool))
            if bucket_by_count:
                order = torch.argsort(predicted_kept_counts(model, **features, **policy), stable=True)
            pool_scores = torch.empty(len(pool), model.config.num_labels)
            for batch in order.split(batch_size):
                logits = model(**{name: value[batch] for name, value in features.items()}, **policy).logits.float()
                pool_scores[batch] = (logits.sigmoid() if multi_label else logits.softmax(-1)).cpu()
                bar.update(len(batch))
            scores.append(pool_scores.numpy())
            spans += [(start, end) for start, end, _ in pool]
    spans = np.array(spans, dtype=np.int64)
    id2label = model.config.id2label
    return RecordingTags(
        labels=[id2label[i] for i in range(len(id2label))],
        starts=spans[:, 0] / rate,
        ends=spans[:, 1] / rate,
        real_frames=np.array([min(num_fbank_frames(end - start), feature_extractor.max_length) for start, end in spans]),
        scores=np.concatenate(scores),
        window=window_samples / rate,
        hop=hop_samples / rate,
        peaks=windows.peaks(),
    )


def plot_tags(tags: RecordingTags, path, max_labels: int = 10, title: str | None = None):
    """Write a PNG of the labels over time: each window's scores as a heat map over its timeline span, for the
    `max_labels` labels with the highest `max`, below the waveform's peaks if the tags hold them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = np.argsort(-tags.max, kind="stable")[:max_labels]
    edges = np.concatenate([tags.spans()[:, 0], [tags.duration]])
    rows = 2 if tags.peaks is not None else 1
    figure, axes = plt.subplots(rows, 1, figsize=(12, 1.2 + 0.35 * len(shown) + 1.2 * (rows - 1)), sharex=True,
                                squeeze=False, gridspec_kw={"height_ratios": [1, 3][-rows:]})
    if tags.peaks is not None:
        # at most PLOTTED_PEAKS points, more than the figure has pixels: a long recording's plot costs no more memory
        group = max(1, math.ceil(tags.peaks.size / PLOTTED_PEAKS))
        peaks = np.pad(tags.peaks, (0, -tags.peaks.size % group)).reshape(-1, group).max(axis=1)
        times = (np.arange(peaks.size) + 0.5) * group / PEAKS_PER_SECOND
        axes[0, 0].fill_between(times, -peaks, peaks, color="0.3", linewidth=0)
        axes[0, 0].set_ylabel("wave")
    heat = axes[-1, 0].pcolormesh(edges, np.arange(len(shown) + 1), tags.scores[:, shown].T, vmin=0, vmax=1,
                                  cmap="magma")
    axes[-1, 0].set_yticks(np.arange(len(shown)) + 0.5, [tags.labels[i] for i in shown])
    axes[-1, 0].invert_yaxis()
    axes[-1, 0].set_xlabel("time (s)")
    figure.colorbar(heat, ax=axes[:, 0].tolist(), label="score", pad=0.01)
    axes[0, 0].set_title(title or f"{len(tags.starts)} windows of {tags.window:.2f} s every {tags.hop:.2f} s")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path

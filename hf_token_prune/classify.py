"""Classify audio files with a pruned model at a chosen keep rate.

    hf-token-prune classify clip.wav other.mp3 --model outputs/demo --keep_rate 0.7 [--top_k 3]

Files are decoded and resampled to the feature extractor's rate (16 kHz) by ffmpeg, as transformers' audio pipeline
does, so any format and rate ffmpeg reads works (wav, flac, mp3, ogg, m4a, opus, ...). The model folder is one saved by
this package (e.g. outputs/demo after `make demo`) or a stock AST checkpoint; the keep rate defaults to the model's own.
The model scores one window (its feature extractor's max_length frames; the demo model's: 1.015 s), so only a file's
first window is decoded, whatever its length; a longer file is said so, and `hf-token-prune tag` scores all of it.
"""

import argparse
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
from transformers import AudioClassificationPipeline, pipeline

from .checks import check_model, keep_rate_argument, positive_int
from .errors import command
from .feature_extraction_audiomae import check_sampling_rate


def read_audio(path, sampling_rate: int, max_samples: int | None = None) -> np.ndarray:
    """Mono float32 samples of an audio file at `sampling_rate`, decoded and resampled by ffmpeg: all of them, or only
    the first `max_samples` (the rest of the file is not decoded)."""
    from .tagging import stream_audio

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file.")
    with closing(stream_audio(path, sampling_rate, max_samples or 2**20)) as chunks:
        wave = next(chunks, np.zeros(0, np.float32)) if max_samples else np.concatenate([np.zeros(0, np.float32), *chunks])
    if wave.size == 0 or not np.isfinite(wave).all():
        raise ValueError(f"{path}: the audio is empty or holds NaN / infinite samples.")
    return wave


class KeepRatePipeline(AudioClassificationPipeline):
    """transformers' audio-classification pipeline that passes a `keep_rate` call argument on to the model."""

    def _sanitize_parameters(self, keep_rate=None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        return preprocess, {**forward, "keep_rate": keep_rate}, postprocess

    def _forward(self, model_inputs, keep_rate=None):
        return self.model(**model_inputs, keep_rate=keep_rate)


def classify(model, feature_extractor, waves, keep_rate=None, top_k=5, sampling_rate=None):
    """`[{"label", "score"}, ...]` (best first) per 1-D wave, the model at `keep_rate` (its own when `None`). The keep
    rate applies to these calls only and the model is not changed, so threads may share one model. The waves are at
    `sampling_rate` Hz, which must be the extractor's (the default): a wave at another rate passed without it cannot
    be told apart and is scored as if at the extractor's."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k}: give at least 1 (or None for every class).")
    rate = feature_extractor.sampling_rate
    check_sampling_rate(sampling_rate, rate)
    classifier = pipeline(
        "audio-classification", model=model, feature_extractor=feature_extractor, pipeline_class=KeepRatePipeline
    )
    return [classifier({"raw": wave, "sampling_rate": rate}, top_k=top_k, keep_rate=keep_rate) for wave in waves]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="audio files (any format and rate ffmpeg reads)")
    parser.add_argument("--model", required=True, help="model folder (saved by this package, or a stock AST)")
    parser.add_argument("--keep_rate", type=keep_rate_argument, help="keep rate in (0, 1] (default: the model's own)")
    parser.add_argument("--top_k", type=positive_int, default=5, help="classes shown per file (default: %(default)s)")
    parser.add_argument("--num_threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(argv)


@command("classify")
def main(argv=None):
    args = parse_args(argv)
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        raise ValueError(f"no such file: {', '.join(missing)}.")
    check_model(args.model, flag="--model")
    import torch
    from transformers.utils import logging

    from .loading import load_pruned_model
    from .tagging import model_window_samples

    logging.disable_progress_bar()  # one small folder: a loading bar is noise
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    model, extractor = load_pruned_model(args.model)
    window = model_window_samples(extractor)
    # the model scores one window: decode only that, and one sample more to tell a longer file
    waves = [read_audio(path, extractor.sampling_rate, window + 1) for path in args.files]
    results = classify(model, extractor, [wave[:window] for wave in waves], args.keep_rate, args.top_k)
    keep_rate = model.config.keep_rate if args.keep_rate is None else args.keep_rate
    seconds = window / extractor.sampling_rate
    for path, wave, predictions in zip(args.files, waves, results):
        length = f"first {seconds:.2f} s" if wave.size > window else f"{wave.size / extractor.sampling_rate:.2f} s"
        print(f"{path} ({length}, keep rate {keep_rate:g}):")
        for prediction in predictions:
            print(f"  {prediction['score']:.3f}  {prediction['label']}")
    longer = [str(path) for path, wave in zip(args.files, waves) if wave.size > window]
    if longer:
        print(
            f"classify: note: {', '.join(longer)}: longer than the model's {seconds:.2f} s window, so only the first "
            f"{seconds:.2f} s were scored; `hf-token-prune tag <file> --model_name_or_path {args.model}` tags a whole "
            "recording in windows.",
            file=sys.stderr,
        )
    return 0


__all__ = ["classify", "main", "read_audio"]

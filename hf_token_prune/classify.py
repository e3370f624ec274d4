"""Classify audio with a pruned model through transformers' audio-classification pipeline, at a chosen keep rate, and
read audio files as that pipeline does (ffmpeg decodes and resamples any format). `hf-token-prune classify` is
hf_token_prune.commands.classify.
"""

from contextlib import closing
from pathlib import Path

import numpy as np
from transformers import AudioClassificationPipeline, pipeline

from . import families  # noqa: F401  (pipeline(model=<a saved pruned folder>) beside these helpers finds its type)
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
    """transformers' audio-classification pipeline that passes the keep settings of a call (`keep_rate`, `keep_mass`,
    `min_keep_rate`) on to the model's forward; the stock pipeline drops arguments it does not know."""

    def _sanitize_parameters(self, keep_rate=None, keep_mass=None, min_keep_rate=None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        settings = {"keep_rate": keep_rate, "keep_mass": keep_mass, "min_keep_rate": min_keep_rate}
        return preprocess, {**forward, **settings}, postprocess

    def _forward(self, model_inputs, keep_rate=None, keep_mass=None, min_keep_rate=None):
        return self.model(**model_inputs, keep_rate=keep_rate, keep_mass=keep_mass, min_keep_rate=min_keep_rate)


def classify(model, feature_extractor, waves, keep_rate=None, top_k=5, sampling_rate=None, keep_mass=None,
             min_keep_rate=None):
    """`[{"label", "score"}, ...]` (best first) per 1-D wave, the model at `keep_rate`, under the per-clip policy
    `keep_mass` with its floor `min_keep_rate` (each the model's own when `None`). These settings apply to these calls
    only and the model is not changed, so threads may share one model. The waves are at `sampling_rate` Hz, which must
    be the extractor's (the default): a wave at another rate passed without it cannot be told apart and is scored as
    if at the extractor's."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k}: give at least 1 (or None for every class).")
    rate = feature_extractor.sampling_rate
    check_sampling_rate(sampling_rate, rate)
    classifier = pipeline(
        "audio-classification", model=model, feature_extractor=feature_extractor, pipeline_class=KeepRatePipeline
    )
    return [classifier({"raw": wave, "sampling_rate": rate}, top_k=top_k, keep_rate=keep_rate, keep_mass=keep_mass,
                       min_keep_rate=min_keep_rate) for wave in waves]


def keep_setting(config, keep_rate=None, keep_mass=None, min_keep_rate=None) -> str:
    """What a call with these settings runs at, each the config's when `None`, as the commands print it:
    `keep rate 0.7`, or under the per-clip policy `keep_mass 0.9 (keep rate at most 1, at least 0.4)`."""
    keep_rate = config.keep_rate if keep_rate is None else keep_rate
    keep_mass = getattr(config, "keep_mass", None) if keep_mass is None else keep_mass
    if keep_mass is None:
        return f"keep rate {keep_rate:g}"
    min_keep_rate = getattr(config, "min_keep_rate", None) if min_keep_rate is None else min_keep_rate
    floor = "one token" if min_keep_rate is None else f"{min_keep_rate:g}"
    return f"keep_mass {keep_mass:g} (keep rate at most {keep_rate:g}, at least {floor})"


__all__ = ["classify", "keep_setting", "read_audio"]

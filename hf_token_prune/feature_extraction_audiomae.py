"""Feature extractor for AudioMAE (and AST): AST's Kaldi fbank with a padding choice, frame-level attention masks and
integer PCM read as [-1, 1]."""

import math

import numpy as np
from transformers import ASTFeatureExtractor
from transformers.utils import logging


logger = logging.get_logger(__name__)

AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974
PADDING_VALUES = ("minimum", "zero")
KALDI_FRAME_LENGTH, KALDI_FRAME_SHIFT = 400, 160  # 25 ms window, 10 ms hop at 16 kHz
FBANK_SAMPLING_RATE = 16000
PCM_DTYPES = ("int8", "int16", "int32")  # scaled by 2 ** (bits - 1), as soundfile / torchaudio read PCM as float


def num_fbank_frames(num_samples: int) -> int:
    """Kaldi fbank frames of a waveform of `num_samples` samples (25 ms windows every 10 ms, a partial last window
    dropped)."""
    return 0 if num_samples < KALDI_FRAME_LENGTH else 1 + (num_samples - KALDI_FRAME_LENGTH) // KALDI_FRAME_SHIFT


def check_sampling_rate(sampling_rate, expected: int):
    """Refuse audio stated to be at another rate than the extractor's, naming the resampling that fixes it (transformers'
    own error does not, and its pipeline's resampling needs torchaudio). Audio passed without its rate cannot be
    checked: it is taken to be at `expected`."""
    if sampling_rate is None or sampling_rate == expected:
        return
    if isinstance(sampling_rate, bool) or not float(sampling_rate).is_integer() or sampling_rate <= 0:
        raise ValueError(f"sampling rate {sampling_rate!r}: give the audio's rate in Hz (e.g. {expected}).")
    step = math.gcd(int(sampling_rate), expected)
    raise ValueError(
        f"sampling rate {sampling_rate} Hz: this model's feature extractor takes {expected} Hz audio; resample it first, "
        f"e.g. scipy.signal.resample_poly(wave, {expected // step}, {int(sampling_rate) // step}) or "
        f"librosa.resample(wave, orig_sr={sampling_rate}, target_sr={expected}), or decode the file at {expected} Hz "
        f"(ffmpeg -i in.wav -ar {expected} out.wav; the entry points that take a file path, such as "
        "`hf-token-prune classify`, decode and resample it so)."
    )


def check_fbank_rate(feature_extractor):
    """Refuse an extractor set to another rate than 16 kHz. transformers' numpy fbank (the one used without
    torchaudio) frames every rate in 400 / 160 samples, 25 / 10 ms only at 16 kHz: at 44.1 kHz a clip yields 2.8 times
    the frames it should (a short clip is "cut") and features no AST or AudioMAE was trained on."""
    rate = feature_extractor.sampling_rate
    if rate != FBANK_SAMPLING_RATE:
        raise ValueError(
            f"the feature extractor is set to sampling_rate={rate}, but its Kaldi fbank works at "
            f"{FBANK_SAMPLING_RATE} Hz only (25 ms frames of {KALDI_FRAME_LENGTH} samples): set \"sampling_rate\": "
            f"{FBANK_SAMPLING_RATE} in its preprocessor_config.json and give {FBANK_SAMPLING_RATE} Hz audio (files are "
            "resampled for you)."
        )


def as_float_waveform(waveform) -> np.ndarray:
    """One waveform as float32 samples in [-1, 1]: signed integer PCM (int8 / int16 / int32, e.g. what
    `scipy.io.wavfile.read` returns) is divided by 2 ** (bits - 1), so it gives exactly the features of the same file
    read as float (`soundfile.read(path, dtype="float32")`). Any other non-float type is refused: its scale is
    unknown."""
    waveform = np.asarray(waveform)
    if waveform.dtype.name in PCM_DTYPES:
        return waveform.astype(np.float32) / np.float32(2 ** (8 * waveform.dtype.itemsize - 1))
    if waveform.dtype.kind != "f":
        raise ValueError(
            f"The waveform has dtype {waveform.dtype}: pass float samples in [-1, 1] or signed PCM "
            f"({' / '.join(PCM_DTYPES)}, scaled to [-1, 1] here); convert other integer audio yourself, e.g. "
            "(wave.astype(np.float32) - 128) / 128 for unsigned 8-bit WAV."
        )
    waveform = waveform.astype(np.float32, copy=False)
    if waveform.size and np.abs(waveform).max() > 2.0:
        # float audio lives in [-1, 1]; this is most likely integer PCM cast to float without scaling
        logger.warning_once(
            f"A float waveform peaks at {np.abs(waveform).max():.1f}, far outside [-1, 1]: if it is integer PCM cast "
            "to float, divide it by 32768 (16-bit) or pass the integer array itself, which is scaled for you."
        )
    return waveform


class AudioMAEFeatureExtractor(ASTFeatureExtractor):
    r"""
    [`ASTFeatureExtractor`] (Kaldi fbank: 128 mel bins, Hanning window, 10 ms shift, dither 0; normalised as
    `(fbank - mean) / (2 * std)`) with AudioMAE's defaults and a choice of padding.

    fbank_padding (`str`, *optional*, defaults to `"minimum"`):
        What fills the frames after a clip shorter than `max_length`: `"minimum"` (the clip's lowest fbank value, as
        the paper's and AudioMAE's data loaders do: padding reads as silence) or `"zero"` (a raw fbank value of 0, as
        `ASTFeatureExtractor` does, which after normalisation sits among the loudest values and so attracts intensity
        pruning and lands in the high-intensity clusters).

    return_attention_mask (`bool`, *optional*, defaults to `False`):
        Whether a call returns `attention_mask` (also a call argument): an int32 `(batch, max_length)` frame mask, 1 on
        the frames computed from the clip and 0 on the padding (so `attention_mask.sum(-1)` counts the real frames),
        as transformers' Speech2Text and SeamlessM4T extractors give. A model whose config has `drop_padding=True`
        takes it as is and drops the padding patches; other models refuse it (they take a per-token mask), so it is
        off by default. Save the extractor with `return_attention_mask=True` next to a `drop_padding` model, and
        `pipeline("audio-classification")` passes the mask too.

    The other arguments are [`ASTFeatureExtractor`]'s; `mean`/`std` default to AudioSet's statistics and `max_length`
    to 1024 frames (use 512 for ESC-50, 128 for Speech Commands). With `fbank_padding="zero"` the features equal
    `ASTFeatureExtractor`'s, and loading a stock AST extractor's config (`from_pretrained` of an AST checkpoint) keeps
    its zero padding, so this class can replace transformers' for AST.

    Waveforms are float samples in [-1, 1]; int8 / int16 / int32 PCM is divided by 2 ** (bits - 1) first (the features
    then equal those of the same file read as float), any other integer type is refused. A clip longer than
    `max_length` frames is cut (logged once): tag long recordings in windows with `hf_token_prune.tag_recording`.
    """

    model_input_names = ["input_values"]

    def __init__(
        self,
        feature_size=1,
        sampling_rate=16000,
        num_mel_bins=128,
        max_length=1024,
        padding_value=0.0,
        do_normalize=True,
        mean=AUDIOSET_MEAN,
        std=AUDIOSET_STD,
        return_attention_mask=False,
        fbank_padding="minimum",
        **kwargs,
    ):
        if fbank_padding not in PADDING_VALUES:
            raise ValueError(f"fbank_padding={fbank_padding!r} is invalid: choose one of {', '.join(PADDING_VALUES)}.")
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            num_mel_bins=num_mel_bins,
            max_length=max_length,
            padding_value=padding_value,
            do_normalize=do_normalize,
            mean=mean,
            std=std,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.fbank_padding = fbank_padding

    @classmethod
    def from_dict(cls, feature_extractor_dict, **kwargs):
        # a stock ASTFeatureExtractor's config (say a Hub AST checkpoint's) pads with zero: keep its features
        if feature_extractor_dict.get("feature_extractor_type") == ASTFeatureExtractor.__name__:
            feature_extractor_dict = {"fbank_padding": "zero", **feature_extractor_dict}
        return super().from_dict(feature_extractor_dict, **kwargs)

    def __call__(self, raw_speech, sampling_rate=None, return_tensors=None, return_attention_mask=None, **kwargs):
        check_fbank_rate(self)
        check_sampling_rate(sampling_rate, self.sampling_rate)
        # transformers' AST extractor casts integer PCM to float unscaled (or not at all): read it as [-1, 1] first
        waveforms = [as_float_waveform(waveform) for waveform in _as_batch(raw_speech)]
        features = super().__call__(waveforms, sampling_rate=sampling_rate, **kwargs)
        frames = np.array([num_fbank_frames(waveform.size) for waveform in waveforms])
        if frames.max(initial=0) > self.max_length:
            logger.warning_once(
                f"A clip of {frames.max()} frames was cut to this extractor's max_length={self.max_length} frames: "
                "classify longer recordings in windows with hf_token_prune.tag_recording (or recipes/tag.py)."
            )
        if self.return_attention_mask if return_attention_mask is None else return_attention_mask:
            features["attention_mask"] = (np.arange(self.max_length) < frames[:, None]).astype(np.int32)
        return features.convert_to_tensors(return_tensors)

    def _extract_fbank_features(self, waveform: np.ndarray, max_length: int) -> np.ndarray:
        waveform = np.asarray(waveform)
        if waveform.ndim != 1:
            raise ValueError(f"Expected one mono waveform (1-D array), got shape {waveform.shape}: mix channels first.")
        if waveform.size < KALDI_FRAME_LENGTH:
            raise ValueError(
                f"The waveform has {waveform.size} samples, fewer than one 25 ms analysis window "
                f"({KALDI_FRAME_LENGTH} samples at {self.sampling_rate} Hz): the clip is empty or too short."
            )
        if not np.isfinite(waveform).all():
            raise ValueError("The waveform contains NaN or infinite samples: clean or drop the clip.")
        num_frames = num_fbank_frames(waveform.size)
        fbank = super()._extract_fbank_features(waveform, max_length=num_frames)
        if num_frames >= max_length:
            return fbank[:max_length]
        fill = fbank.min() if self.fbank_padding == "minimum" else 0.0
        padding = np.full((max_length - num_frames, fbank.shape[1]), fill, dtype=fbank.dtype)
        return np.concatenate([fbank, padding])


def _as_batch(raw_speech) -> list:
    """The clips of a call, batched as transformers' audio extractors batch them: a list of clips or a 2-D array is a
    batch, anything else one clip."""
    if isinstance(raw_speech, (list, tuple)) and raw_speech and not np.isscalar(raw_speech[0]):
        return list(raw_speech)
    array = np.asarray(raw_speech)
    return list(array) if array.ndim == 2 else [array]


# save_pretrained copies this file next to preprocessor_config.json and names it in auto_map, so pipelines load it
# with trust_remote_code where this package is not installed.
AudioMAEFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = ["AudioMAEFeatureExtractor", "as_float_waveform", "check_fbank_rate", "check_sampling_rate", "num_fbank_frames"]

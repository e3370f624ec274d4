"""Feature extractor for AudioMAE: AST's Kaldi fbank with AudioMAE's defaults and padding."""

import numpy as np
from transformers import ASTFeatureExtractor


AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974
PADDING_VALUES = ("minimum", "zero")
KALDI_FRAME_LENGTH, KALDI_FRAME_SHIFT = 400, 160  # 25 ms window, 10 ms hop at 16 kHz


class AudioMAEFeatureExtractor(ASTFeatureExtractor):
    r"""
    [`ASTFeatureExtractor`] (Kaldi fbank: 128 mel bins, Hanning window, 10 ms shift, dither 0; normalised as
    `(fbank - mean) / (2 * std)`) with AudioMAE's defaults and a choice of padding.

    fbank_padding (`str`, *optional*, defaults to `"minimum"`):
        What fills the frames after a clip shorter than `max_length`: `"minimum"` (the clip's lowest fbank value, as
        the paper's and AudioMAE's data loaders do: padding reads as silence) or `"zero"` (a raw fbank value of 0, as
        `ASTFeatureExtractor` does, which after normalisation sits among the loudest values and so attracts intensity
        pruning and lands in the high-intensity clusters).

    The other arguments are [`ASTFeatureExtractor`]'s; `mean`/`std` default to AudioSet's statistics and `max_length`
    to 1024 frames (use 512 for ESC-50, 128 for Speech Commands).
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

    def __call__(self, raw_speech, sampling_rate=None, **kwargs):
        # transformers' own check names the whole extractor config; say the two rates and the fix instead
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"sampling rate {sampling_rate} Hz: this feature extractor takes {self.sampling_rate} Hz audio; resample "
                "the clip first (e.g. scipy.signal.resample_poly)."
            )
        return super().__call__(raw_speech, sampling_rate=sampling_rate, **kwargs)

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
        num_frames = 1 + (waveform.size - KALDI_FRAME_LENGTH) // KALDI_FRAME_SHIFT
        fbank = super()._extract_fbank_features(waveform, max_length=num_frames)
        if num_frames >= max_length:
            return fbank[:max_length]
        fill = fbank.min() if self.fbank_padding == "minimum" else 0.0
        padding = np.full((max_length - num_frames, fbank.shape[1]), fill, dtype=fbank.dtype)
        return np.concatenate([fbank, padding])


# save_pretrained copies this file next to preprocessor_config.json and names it in auto_map, so pipelines load it
# with trust_remote_code where this package is not installed.
AudioMAEFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = ["AudioMAEFeatureExtractor"]

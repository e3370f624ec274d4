"""Features on the fly: the model's feature extractor over a batch of clips, with the training augmentations of the
paper's recipes (time shift, mixup, SpecAugment, patch masking) drawn reproducibly, and the fbank statistics of
datasets that publish none."""

import copy
import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm


@dataclass
class TimeShift:
    """Training augmentation: put each clip at a random position of the model's `num_frames`-frame input, like AST's
    time-shift augmentation for Speech Commands.

    Longer clips are cropped at a random offset before the features are made. For shorter ones, the feature extractor
    pads the fbank after the clip; `roll` then moves that padding, partly or wholly, in front of the clip. The padding
    is thus exactly what the feature extractor gives at inference (zeros or the clip minimum), and evaluation, the
    saved model and `pipeline` all see the extractor's own features.
    """

    num_frames: int
    sampling_rate: int = 16000

    def crop(self, waves: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        length = samples_for_frames(self.num_frames, self.sampling_rate)
        cropped = []
        for wave in waves:
            offset = int(rng.integers(0, len(wave) - length + 1)) if len(wave) > length else 0
            cropped.append(wave[offset : offset + length])
        return cropped

    def roll(self, features: torch.Tensor, waves: list[np.ndarray], rng: np.random.Generator, frame_mask=None):
        """Roll each sample's frames in place; a ``frame_mask`` ``(batch, frames)`` moves with them."""
        for index, (sample, wave) in enumerate(zip(features, waves)):
            room = sample.shape[0] - min(sample.shape[0], num_fbank_frames(len(wave), self.sampling_rate))
            shift = int(rng.integers(0, room + 1))
            sample.copy_(sample.roll(shift, dims=0))
            if frame_mask is not None:
                frame_mask[index] = frame_mask[index].roll(shift, dims=0)
        return features


def samples_for_frames(num_frames: int, sampling_rate: int) -> int:
    """Waveform length that gives exactly `num_frames` Kaldi fbank frames (25 ms windows, 10 ms shift)."""
    return (num_frames - 1) * (sampling_rate // 100) + sampling_rate * 25 // 1000


def num_fbank_frames(num_samples: int, sampling_rate: int) -> int:
    """Frames of real audio in a Kaldi fbank of `num_samples` samples (25 ms windows every 10 ms, a partial last
    window dropped); the rest of the extractor's `max_length` is padding."""
    window, shift = sampling_rate * 25 // 1000, sampling_rate // 100
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


@dataclass
class SpecAugment:
    """Random frequency and time masking (SpecAugment) of normalised fbank features, as AST and AudioMAE use it:
    one band of width uniform in [0, freq_mask) and one span of width uniform in [0, time_mask) per clip.

    `fill_value` is what a masked bin becomes: the recipes mask the raw fbank with 0 before normalising, which is
    `-mean / (2 * std)` after normalisation.
    """

    freq_mask: int = 0
    time_mask: int = 0
    fill_value: float = 0.0
    enabled: bool = True

    def __call__(self, features: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if not self.enabled:
            return features
        batch, frames, bins = features.shape
        for sample in features:
            for width_max, axis_length, axis in ((self.freq_mask, bins, 1), (self.time_mask, frames, 0)):
                if width_max <= 0:
                    continue
                width = int(rng.integers(0, min(width_max, axis_length)))
                start = int(rng.integers(0, axis_length - width + 1))
                sample.narrow(axis, start, width).fill_(self.fill_value)
        return features


@dataclass
class PatchMasking:
    """Mask a fraction of the time-patch columns and of the frequency-patch rows of the spectrogram (AudioMAE's
    fine-tuning masking, ratio 0.3 in the paper's AS-20K and ESC-50 recipes). AudioMAE removes those tokens inside the
    model; here they are blanked in the input, which keeps the model a plain ViT."""

    ratio: float = 0.0
    patch_size: int = 16
    fill_value: float = 0.0
    enabled: bool = True

    def __call__(self, features: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if not self.enabled or self.ratio <= 0:
            return features
        batch, frames, bins = features.shape
        for sample in features:
            for axis, length in ((0, frames // self.patch_size), (1, bins // self.patch_size)):
                for patch in rng.permutation(length)[: int(length * self.ratio)].tolist():
                    sample.narrow(axis, patch * self.patch_size, self.patch_size).fill_(self.fill_value)
        return features


@dataclass
class Mixup:
    """Mix each clip, with probability `probability`, with another clip of the batch, in the waveform, as AST's and
    AudioMAE's data loaders do: `w * a + (1 - w) * b` with `b` cut or zero-padded to `a`'s length, the mean removed,
    `w ~ Beta(alpha, alpha)`; the targets are mixed with the same `w`. Both papers: probability 0.5 (AST on Speech
    Commands 0.6), alpha 10. The partner comes from the (shuffled) batch rather than the whole dataset.
    Targets must be float (one-hot or multi-hot): mixup needs a BCE-style loss."""

    probability: float = 0.0
    alpha: float = 10.0
    enabled: bool = True

    def __call__(self, waves: list[np.ndarray], targets: torch.Tensor, rng: np.random.Generator):
        if not self.enabled or self.probability <= 0 or len(waves) < 2:
            return waves, targets
        batch = len(waves)
        partner = (np.arange(batch) + rng.integers(1, batch, batch)) % batch  # never the clip itself
        weight = np.where(rng.random(batch) < self.probability, rng.beta(self.alpha, self.alpha, batch), 1.0)
        mixed = []
        for wave, other, w in zip(waves, (waves[j] for j in partner), weight):
            if w == 1.0:
                mixed.append(wave)
                continue
            other = other - other.mean()  # before padding, so the padding is silence for any DC offset
            other = other[: len(wave)] if len(other) >= len(wave) else np.pad(other, (0, len(wave) - len(other)))
            blend = w * (wave - wave.mean()) + (1 - w) * other
            mixed.append((blend - blend.mean()).astype(np.float32))
        w = torch.as_tensor(weight, dtype=targets.dtype).view(-1, 1)
        return mixed, w * targets + (1 - w) * targets[torch.as_tensor(partner)]


def normalised_zero(feature_extractor) -> float:
    """Where a raw fbank value of 0 lands after the extractor's normalisation (the recipes' masking value)."""
    if not getattr(feature_extractor, "do_normalize", False):
        return 0.0
    return (0.0 - feature_extractor.mean) / (2.0 * feature_extractor.std)


class AudioFeatureTransform:
    """`set_transform` for a split: decode, make features with the model's feature extractor, encode targets and,
    on the training split, augment.

    Targets are class indices for a cross-entropy loss (`one_hot=False`) and float one-hot / multi-hot vectors for a
    BCE loss, the multi-label case or mixup. Mixup blends waveforms before the features are made; `time_shift`
    (if any) moves each clip in the input, then feature augmentations run in the order given.

    Random draws come from a numpy generator seeded by `seed`, `epoch` and the ids of the batch's clips, not from
    torch's global generator: a run resumed from a checkpoint then augments every batch exactly as the uninterrupted
    run did (`Trainer` restores the global generator only after fetching the first batch), and data-loader workers
    need no seeding. `training.AugmentationEpochCallback` keeps `epoch` current.
    """

    def __init__(
        self,
        feature_extractor,
        num_labels: int,
        multi_label: bool,
        one_hot: bool,
        augmentations=(),
        mixup: Mixup | None = None,
        seed: int = 0,
        time_shift: TimeShift | None = None,
    ):
        if mixup is not None and mixup.probability > 0 and not one_hot:
            raise ValueError("mixup blends targets, so it needs float targets: use the BCE loss (--loss bce).")
        self.feature_extractor = feature_extractor
        self.num_labels = num_labels
        self.multi_label = multi_label
        self.one_hot = one_hot or multi_label
        self.augmentations = list(augmentations)
        self.mixup = mixup
        self.seed = seed
        self.epoch = 0
        self.time_shift = time_shift

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def targets(self, labels) -> torch.Tensor:
        if not self.one_hot:
            return torch.as_tensor(labels, dtype=torch.long)
        targets = torch.zeros(len(labels), self.num_labels)
        for row, label in enumerate(labels):
            targets[row, label] = 1.0
        return targets

    def rng(self, ids) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}|{self.epoch}|{'|'.join(map(str, ids))}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def __call__(self, batch):
        waves = [np.asarray(audio["array"], dtype=np.float32) for audio in batch["audio"]]
        random = self.augmentations or self.mixup is not None or self.time_shift is not None
        rng = self.rng(batch["id"]) if random else None
        targets = self.targets(batch["labels"])
        if self.time_shift is not None:
            waves = self.time_shift.crop(waves, rng)
        if self.mixup is not None:
            waves, targets = self.mixup(waves, targets, rng)
        extracted = self.feature_extractor(waves, sampling_rate=self.feature_extractor.sampling_rate, return_tensors="np")
        features = torch.as_tensor(extracted["input_values"])
        # An extractor saved for a drop_padding model returns its frame mask: it goes to the model with the features.
        frame_mask = torch.as_tensor(extracted["attention_mask"]) if "attention_mask" in extracted else None
        if rng is not None:
            if self.time_shift is not None:
                features = self.time_shift.roll(features, waves, rng, frame_mask)
            for augmentation in self.augmentations:
                features = augmentation(features, rng)
        batch = {"input_values": features, "labels": targets}
        return batch if frame_mask is None else {**batch, "attention_mask": frame_mask}

def estimate_normalization(split, feature_extractor, max_clips: int = 1000, seed: int = 0):
    """Mean and std of the extractor's un-normalised fbank over up to `max_clips` training clips (padding included,
    as AST's statistics are), for datasets without published statistics: a random sample of a map-style split, the
    first clips of a stream."""
    raw = copy.deepcopy(feature_extractor)
    raw.do_normalize = False
    if isinstance(split, Dataset):
        if len(split) > max_clips:
            split = split.shuffle(seed=seed).select(range(max_clips))
        batches = (split[start : start + 64]["audio"] for start in range(0, len(split), 64))
    else:
        batches = (batch["audio"] for batch in split.take(max_clips).iter(batch_size=64))
    total, total_sq, count = 0.0, 0.0, 0
    for audio in tqdm(batches, desc="feature statistics"):
        waves = [np.asarray(a["array"], dtype=np.float32) for a in audio]
        features = raw(waves, sampling_rate=raw.sampling_rate, return_tensors="np")["input_values"].astype(np.float64)
        total += features.sum()
        total_sq += (features**2).sum()
        count += features.size
    mean = total / count
    return float(mean), float(np.sqrt(total_sq / count - mean**2))

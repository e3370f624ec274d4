"""Audio classification datasets for fine-tuning: named loaders for the paper's benchmarks, checks, features.

Every loader maps its Hub layout to the same three columns: `audio` (decoded at 16 kHz by `datasets.Audio`),
`labels` (a class index, or a list of class indices for multi-label data) and `id` (a row name for reports), plus the
class names. Features are made on the fly by the model's feature extractor (`set_transform`, or `StreamingTrainingData`
for a streamed training split), with SpecAugment, patch masking and mixup on the training split when a recipe asks
for them. Speech Commands and VoxCeleb-1 also read their official archives (word folders + `testing_list.txt`,
`wav/` + `iden_split.txt`); `streaming=True` reads any loader as `datasets.IterableDataset`s.
"""

from .datasets import (
    AudioClassificationData,
    drop_unusable_audio,
    find_unusable_audio,
    load_audio_classification,
    report_unusable,
)
from .features import (
    AudioFeatureTransform,
    Mixup,
    PatchMasking,
    SpecAugment,
    TimeShift,
    estimate_normalization,
    normalised_zero,
    num_fbank_frames,
    samples_for_frames,
)
from .loaders import DATASETS, DatasetSpec
from .streaming import StreamingEvalData, StreamingTrainingData


__all__ = [
    "DATASETS",
    "AudioClassificationData",
    "AudioFeatureTransform",
    "DatasetSpec",
    "Mixup",
    "PatchMasking",
    "SpecAugment",
    "StreamingEvalData",
    "StreamingTrainingData",
    "TimeShift",
    "drop_unusable_audio",
    "estimate_normalization",
    "find_unusable_audio",
    "load_audio_classification",
    "normalised_zero",
    "num_fbank_frames",
    "report_unusable",
    "samples_for_frames",
]

"""A run's data: the splits loaded and checked, the fbank normalisation, the feature transforms (augmented for
training) and the metric computed on evaluation."""

import logging
import math

from .. import metrics as metric_modules
from ..checks import check_audio_folder
from ..data import (
    AudioFeatureTransform,
    Mixup,
    PatchMasking,
    SpecAugment,
    StreamingEvalData,
    TimeShift,
    drop_unusable_audio,
    estimate_normalization,
    load_audio_classification,
    normalised_zero,
)


logger = logging.getLogger("finetune")


def load_data(data_args, cache_dir):
    if data_args.dataset_name == "audiofolder":
        check_audio_folder(data_args.data_dir)
    data = load_audio_classification(
        data_args.dataset_name,
        source=data_args.dataset_source,
        config_name=data_args.dataset_config_name,
        data_dir=data_args.data_dir,
        revision=data_args.dataset_revision,
        fold=data_args.fold,
        audio_column_name=data_args.audio_column_name,
        label_column_name=data_args.label_column_name,
        sampling_rate=data_args.sampling_rate,
        cache_dir=cache_dir,
        streaming=data_args.streaming,
        accept_hub_test_split=data_args.accept_hub_test_split,
    )
    if data_args.streaming:
        if data_args.streaming_num_rows:
            data.num_rows["train"] = data_args.streaming_num_rows
        if data_args.max_train_samples:
            data.train = data.train.take(data_args.max_train_samples)
            data.num_rows["train"] = min(data_args.max_train_samples, data.num_rows.get("train", math.inf))
        if data_args.max_eval_samples:
            data.eval, data.test = data.eval.take(data_args.max_eval_samples), data.test.take(data_args.max_eval_samples)
        return data
    if data_args.max_train_samples:
        data.train = data.train.select(range(min(data_args.max_train_samples, len(data.train))))
    if data_args.max_eval_samples:
        data.eval = data.eval.select(range(min(data_args.max_eval_samples, len(data.eval))))
        data.test = data.test.select(range(min(data_args.max_eval_samples, len(data.test))))
    for report in drop_unusable_audio(data, data_args.sampling_rate, drop=data_args.drop_unusable_rows):
        logger.warning("dropped: %s", report)
    return data


def set_normalization(extractor, data, data_args):
    """The fbank normalisation: given, the dataset's published one, or estimated on the training clips."""
    mean = data_args.feature_mean if data_args.feature_mean is not None else data.spec.mean
    std = data_args.feature_std if data_args.feature_std is not None else data.spec.std
    if mean is None or std is None:
        mean, std = estimate_normalization(data.train, extractor)
        logger.info("fbank normalisation estimated on the training clips: mean %.4f, std %.4f", mean, std)
    extractor.mean, extractor.std, extractor.do_normalize = mean, std, True


def set_transforms(data, extractor, data_args, patch_size, one_hot, seed, num_frames):
    """Features on the fly: augmented for training, plain for evaluation. Returns the training transform and the
    augmentations the keep-rate schedule may switch off."""
    fill = normalised_zero(extractor)
    augmentations = [
        SpecAugment(data_args.freq_mask, data_args.time_mask, fill),
        PatchMasking(data_args.patch_mask_ratio, patch_size, fill),
    ]
    num_labels = len(data.label_names)
    train = AudioFeatureTransform(
        extractor,
        num_labels,
        data.multi_label,
        one_hot,
        augmentations,
        Mixup(data_args.mixup, data_args.mixup_alpha),
        seed,
        time_shift=TimeShift(num_frames, data_args.sampling_rate) if data_args.time_shift else None,
    )
    plain = AudioFeatureTransform(extractor, num_labels, data.multi_label, one_hot)
    if data_args.streaming:  # the training stream is featurised by StreamingTrainingData, once the schedule exists
        data.eval, data.test = StreamingEvalData(data.eval, plain), StreamingEvalData(data.test, plain)
        return train, augmentations
    data.train.set_transform(train)
    data.eval.set_transform(plain)
    data.test.set_transform(plain)
    return train, augmentations


def make_compute_metrics(metric_name):
    metric = metric_modules.load(metric_name)

    def compute_metrics(prediction):
        logits, labels = prediction.predictions, prediction.label_ids
        if metric_name == "accuracy":
            if labels.ndim == 2:
                labels = labels.argmax(axis=1)  # one-hot targets of a BCE loss
            return metric.compute(predictions=logits.argmax(axis=1), references=labels)
        return metric.compute(predictions=logits, references=labels.astype("int64"))

    return compute_metrics

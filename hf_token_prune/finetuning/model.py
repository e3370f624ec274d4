"""The model to fine-tune and its feature extractor: built from scratch or loaded from a checkpoint with a head for
the dataset's classes; and the optimiser settings of the recipes."""

import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, PretrainedConfig

from ..checks import check_model
from ..data import DATASETS
from ..families import model_families, model_family
from ..feature_extraction_audiomae import AudioMAEFeatureExtractor
from ..loading import from_pretrained_strict


def build_config(model_args, data_args, pruning_args):
    """The config of the model to fine-tune, pruning off until the schedule starts (validated by the config itself,
    so a pruning layer the model does not have is refused before any data is read). Under the per-sample policy
    (--keep_mass) the keep rate is its fixed ceiling and the floor is set; the schedule sets keep_mass itself. Its
    input length is --num_frames, else the dataset's, else the checkpoint's."""
    adaptive = pruning_args.keep_mass is not None
    settings = {"keep_rate": pruning_args.keep_rate if adaptive else 1.0, "pruning_layers": pruning_args.layers,
                "token_score": pruning_args.token_score, "token_reduction": pruning_args.token_reduction,
                "drop_padding": pruning_args.drop_padding, "keep_mass": None,
                "min_keep_rate": pruning_args.min_keep_rate}
    spec = DATASETS.get(data_args.dataset_name)
    num_frames = data_args.num_frames or (spec.num_frames if spec else None)
    if num_frames is None and not model_args.model_name_or_path:
        raise ValueError(f"--num_frames is needed for {data_args.dataset_name} (fbank frames of 10 ms per clip).")
    if num_frames is not None:
        settings["max_length"] = num_frames
    if model_args.model_name_or_path:
        name = model_args.model_name_or_path
        check_model(name, cache_dir=model_args.cache_dir)
        model_type = PretrainedConfig.get_config_dict(name, cache_dir=model_args.cache_dir)[0].get("model_type")
        try:
            config_class = model_family(model_type).config_class
        except ValueError:
            raise ValueError(
                f"{name} holds a {model_type!r} model: fine-tuning starts from an AST (stock or pruned) or a pruned "
                "AudioMAE checkpoint."
            ) from None
        config = config_class.from_pretrained(name, cache_dir=model_args.cache_dir, **settings)
    else:
        config_class = model_families()[model_args.model_type].config_class
        config = config_class(num_mel_bins=data_args.num_mel_bins, **settings)
        if model_args.config_overrides:
            config.update_from_string(model_args.config_overrides)
        config._attn_implementation = model_args.attn_implementation
    if model_args.drop_path_rate is not None and hasattr(config, "drop_path_rate"):
        config.drop_path_rate = model_args.drop_path_rate
    return config


def checkpoint_label_names(config):
    return [config.id2label[key] for key in sorted(config.id2label)]


def build_model(config, model_args, data_args, label_names):
    """The model for `config` with a head for `label_names`, and its feature extractor: the checkpoint's weights
    through the Auto classes (a head for other classes is new), or a fresh model of --model_type."""
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    if model_args.model_name_or_path:
        name = model_args.model_name_or_path
        # transformers' documented path for a new head (other classes): only the head may be missing or re-shaped.
        model = from_pretrained_strict(
            AutoModelForAudioClassification,
            name,
            new_head=("classifier.",),
            config=config,
            ignore_mismatched_sizes=True,
            attn_implementation=model_args.attn_implementation,
            cache_dir=model_args.cache_dir,
        )
        extractor = AutoFeatureExtractor.from_pretrained(name, cache_dir=model_args.cache_dir)
        extractor.max_length = config.max_length
    else:
        model = AutoModelForAudioClassification.from_config(config)
        extractor = model_families()[model_args.model_type].feature_extractor_class(
            num_mel_bins=config.num_mel_bins, max_length=config.max_length, sampling_rate=data_args.sampling_rate
        )
    extractor = with_fbank_padding(extractor, data_args.fbank_padding)
    extractor.return_attention_mask = config.drop_padding
    return model, extractor


def with_fbank_padding(extractor, fbank_padding):
    """The extractor as ours, padding short clips as asked (default: as it did). Ours is transformers' Kaldi fbank
    (`ASTFeatureExtractor`, whose zero padding it keeps) plus the minimum padding, a frame `attention_mask` on request
    and integer PCM read as [-1, 1]; the model folder carries it as remote code."""
    if not isinstance(extractor, AudioMAEFeatureExtractor):
        extractor = AudioMAEFeatureExtractor.from_dict(extractor.to_dict())
    if fbank_padding is not None:
        extractor.fbank_padding = fbank_padding
    return extractor


def reset_classifier(model):
    """A freshly initialised head. A head of the same size for other classes would load silently (only size
    mismatches are re-initialised), and `_init_weights` skips loaded weights: take a new model's head instead."""
    model.classifier.load_state_dict(type(model)(model.config).classifier.state_dict())


def scaled_learning_rate(base_learning_rate, training_args):
    """AudioMAE's rule: the base rate times the global batch over 256."""
    global_batch = training_args.train_batch_size * training_args.world_size * training_args.gradient_accumulation_steps
    return base_learning_rate * global_batch / 256


def optimizer_cls_and_kwargs(optimizer, training_args):
    """`Trainer`'s `optimizer_cls_and_kwargs`: `None` (its own AdamW from `--optim`) or AST's torch Adam with L2 weight
    decay and the Trainer's betas, epsilon and learning rate."""
    if optimizer != "adam":
        return None
    return (
        torch.optim.Adam,
        {
            "lr": training_args.learning_rate,
            "weight_decay": training_args.weight_decay,
            "betas": (training_args.adam_beta1, training_args.adam_beta2),
            "eps": training_args.adam_epsilon,
        },
    )

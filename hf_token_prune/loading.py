"""Load a saved pruned model strictly, for every command that reads one: weights that do not fit the config are an
error naming them, never a model answering from randomly initialised weights.

transformers loads what fits and reports the rest on stderr (missing keys are initialised at random, unexpected ones
dropped); here missing, unexpected or mis-shaped weights, a truncated or empty weights file, non-float weights,
non-finite weights and wrongly typed config fields each end in one `ValueError`. Light to import: no datasets,
evaluate or Trainer.
"""

import contextlib
import logging
from pathlib import Path

from .errors import one_line
from .feature_extraction_audiomae import check_fbank_rate


logger = logging.getLogger(__name__)

# The interface both pruned models share and every analysis relies on (see PrunedASTPreTrainedModel).
PRUNED_MODEL_INTERFACE = (
    "set_keep_rate", "reduction_settings", "patch_layout", "num_extra_tokens", "attention_token_scores"
)
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_SHOWN = 4  # names listed per kind of misfit before "and N more"


def check_pruned_model(model):
    """Raise ``ValueError`` unless ``model`` is a pruned audio transformer of this package (AST or AudioMAE)."""
    missing = [name for name in PRUNED_MODEL_INTERFACE if not hasattr(model, name)]
    config = getattr(model, "config", None)
    missing += [name for name in ("keep_rate", "token_score", "pruning_layers") if not hasattr(config, name)]
    if missing or not hasattr(getattr(model, "base_model", None), "layers"):
        raise ValueError(
            f"{type(model).__name__} is not a pruned audio transformer (it lacks {', '.join(missing) or 'layers'}): "
            "the analyses need hf_token_prune's models, e.g. "
            "PrunedASTForAudioClassification.from_pretrained(<AST checkpoint>), which loads any AST checkpoint."
        )


@contextlib.contextmanager
def _quiet_transformers():
    # transformers' load report and progress bar go to stderr; a misfit is our one-line error instead.
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_config(model_name_or_path, **kwargs):
    """The model's config through ``AutoConfig``; an unreadable file or a wrongly typed field is a ``ValueError``."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    from . import families  # noqa: F401  (registers the pruned model types with the Auto classes)

    try:
        return AutoConfig.from_pretrained(model_name_or_path, **kwargs)
    except (OSError, ValueError, TypeError, StrictDataclassError) as error:
        raise ValueError(
            f"cannot read a model configuration from {str(model_name_or_path)!r}: {one_line(error)} (fix config.json, "
            "or save the model again with save_pretrained)"
        ) from None


def _listed(kind, names):
    names = sorted(names)
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{kind} {', '.join(map(str, names[:_SHOWN]))}{more}"


def check_loading_info(info, model_name_or_path, new_head=()):
    """Refuse what transformers' ``output_loading_info`` reports, except missing or mis-shaped weights under the
    prefixes in ``new_head`` (a fine-tuning run's fresh classifier)."""
    def fresh(key):
        return bool(new_head) and key.startswith(tuple(new_head))

    missing = [key for key in info["missing_keys"] if not fresh(key)]
    # transformers 5 reports each mismatch as (name, saved shape, model shape)
    mismatched = [f"{key} {tuple(saved)} vs {tuple(model)}" for key, saved, model in info["mismatched_keys"]
                  if not fresh(key)]
    problems = [_listed(kind, names) for kind, names in (
        ("missing weights", missing), ("unexpected weights", info["unexpected_keys"]),
        ("mis-shaped weights (saved vs model)", mismatched), ("load errors", info.get("error_msgs", ())),
    ) if names]  # fmt: skip
    if problems:
        raise ValueError(
            f"the weights in {model_name_or_path} do not fit its config.json ({'; '.join(problems)}): the folder is "
            "damaged or mixed from two models; save the model again with save_pretrained."
        )


def _weight_files(model_name_or_path):
    folder = Path(model_name_or_path).expanduser()
    if folder.is_dir():
        return sorted(folder.glob("*.safetensors"))
    from transformers.utils import cached_file

    resolved = cached_file(model_name_or_path, "model.safetensors", _raise_exceptions_for_missing_entries=False)
    return [Path(resolved)] if resolved else []


def check_weights(model, model_name_or_path):
    """Refuse integer weights saved for float parameters (transformers casts them silently) and non-finite ones."""
    from safetensors import safe_open

    state = model.state_dict()
    for path in _weight_files(model_name_or_path):
        with safe_open(path, "pt") as weights:
            wrong = [f"{key} ({weights.get_slice(key).get_dtype()})" for key in weights.keys()
                     if weights.get_slice(key).get_dtype() not in _FLOAT_DTYPES
                     and (key not in state or state[key].is_floating_point())]  # fmt: skip
        if wrong:
            raise ValueError(
                f"{path}: {_listed('weights of a non-float type', wrong)}: the file was not written by save_pretrained "
                "from this model; save the model again."
            )
    non_finite = [name for name, tensor in state.items() if tensor.is_floating_point() and not tensor.isfinite().all()]
    if non_finite:
        raise ValueError(
            f"{model_name_or_path}: {_listed('NaN or infinite values in', non_finite)}: the weights are broken (e.g. a "
            "diverged training run); load an earlier checkpoint."
        )


def from_pretrained_strict(model_class, model_name_or_path, new_head=(), **kwargs):
    """``model_class.from_pretrained`` whose every weight must come from the checkpoint and fit (see the module)."""
    from safetensors import SafetensorError

    try:
        with _quiet_transformers():
            model, info = model_class.from_pretrained(model_name_or_path, output_loading_info=True, **kwargs)
    except RuntimeError as error:  # transformers raises it for weights whose shape does not fit the config
        raise ValueError(
            f"the weights in {model_name_or_path} do not fit its config.json ({one_line(error).split(' For details')[0]}"
            "): save the model again with save_pretrained."
        ) from None
    except TypeError as error:  # a config field of the wrong type, e.g. a list where the layers take a number
        raise ValueError(
            f"the config.json in {model_name_or_path} holds a field of the wrong type ({one_line(error)}): fix it, or "
            "save the model again with save_pretrained."
        ) from None
    except (SafetensorError, OSError, EOFError) as error:
        raise ValueError(
            f"cannot read the weights in {model_name_or_path}: {one_line(error)} (the file is truncated or damaged, e.g. "
            "by an interrupted copy or save): copy or save it again."
        ) from None
    check_loading_info(info, model_name_or_path, new_head)
    check_weights(model, model_name_or_path)
    return model


def load_pruned_model(model_name_or_path):
    """Load a pruned classification model and the feature extractor saved next to it, strictly.

    A stock AST checkpoint loads as ``PrunedASTForAudioClassification`` with pruning off (the library's own
    conversion); any other model type is refused with the reason.
    """
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    from .families import model_family

    config = load_config(model_name_or_path)
    try:
        family = model_family(config)
    except ValueError:
        raise ValueError(
            f"{model_name_or_path!r} holds a {config.model_type!r} model, not a pruned audio transformer: give a "
            "folder saved from hf_token_prune (PrunedAST / PrunedAudioMAE) or a stock AST checkpoint."
        ) from None
    if config.model_type in family.stock_model_types:
        logger.info("%s is a stock checkpoint: loading it as %s with pruning off.", model_name_or_path,
                    family.model_class.__name__)
        model = from_pretrained_strict(family.model_class, model_name_or_path)
    else:
        model = from_pretrained_strict(AutoModelForAudioClassification, model_name_or_path)
    check_pruned_model(model)
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_name_or_path)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(
            f"no feature extractor in {model_name_or_path!r}: save the one the model was trained with next to it, e.g. "
            "ASTFeatureExtractor(num_mel_bins=..., max_length=..., mean=..., std=...).save_pretrained(folder)."
        ) from error
    if hasattr(feature_extractor, "num_mel_bins"):  # a Kaldi fbank extractor (AST's or AudioMAE's)
        check_fbank_rate(feature_extractor)
    return model.eval(), feature_extractor


__all__ = ["check_loading_info", "check_pruned_model", "from_pretrained_strict", "load_config", "load_pruned_model"]

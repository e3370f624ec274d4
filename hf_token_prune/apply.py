"""Token reduction switched on and off in a stock transformers AST that is already loaded, in place.

As ToMe's ``tome.patch.timm(model)`` and tomesd's ``apply_patch`` / ``remove_patch`` do, the modules keep their
parameters and only change class: each stock AST class is swapped for its pruned subclass
(``PrunedASTForAudioClassification`` subclasses ``ASTForAudioClassification``, and so on down to the attention), so
the model stays an instance of the stock class for ``isinstance``, ``pipeline`` and ``Trainer``, and its
``save_pretrained`` writes the pruned config and remote code like any pruned model.
"""

from transformers import Pipeline
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
    ASTAttention,
    ASTForAudioClassification,
    ASTLayer,
    ASTModel,
)
from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY

from .configuration_pruned_ast import PrunedASTConfig
from .modeling_pruned_ast import PrunedASTAttention, PrunedASTForAudioClassification, PrunedASTLayer, PrunedASTModel
from .pruning import PrunedModelMixin


_PRUNED_CLASSES = {
    ASTForAudioClassification: PrunedASTForAudioClassification,
    ASTModel: PrunedASTModel,
    ASTLayer: PrunedASTLayer,
    ASTAttention: PrunedASTAttention,
}
_STOCK_CLASSES = {pruned: stock for stock, pruned in _PRUNED_CLASSES.items()}
_SUPPORTED = "ASTForAudioClassification or ASTModel (transformers' Audio Spectrogram Transformer)"


def _unwrap(model):
    """The model itself, or the model a ``pipeline`` holds."""
    return model.model if isinstance(model, Pipeline) else model


def _swap(model, classes, old_config, new_config):
    for module in model.modules():
        if type(module) in classes:
            module.__class__ = classes[type(module)]
        if getattr(module, "config", None) is old_config:
            module.config = new_config


def apply_token_reduction(
    model, keep_rate=1.0, token_reduction="prune", token_score="attention", pruning_layers=None, drop_padding=False
):
    """Turn a loaded stock ``ASTForAudioClassification`` / ``ASTModel`` (or the one a ``pipeline`` holds) into the
    pruned model, in place, and return it.

    The parameters are not copied; the model stays an instance of its stock class. The arguments are the fields of
    [`PrunedASTConfig`] (``pruning_layers=None``: the paper's positions for the model's depth). At keep rate 1.0 the
    model computes exactly what it computed before; a per-call ``keep_rate`` can be passed to its forward.
    ``save_pretrained`` then writes the pruned config and the remote code, so the folder loads with
    ``trust_remote_code=True`` without this package. [`remove_token_reduction`] restores the stock model.
    """
    model = _unwrap(model)
    if isinstance(model, PrunedModelMixin):
        raise ValueError(
            f"{type(model).__name__} already reduces tokens: change its keep rate with set_keep_rate(), or call "
            "remove_token_reduction(model) first to apply other settings."
        )
    if type(model) not in (ASTForAudioClassification, ASTModel):
        raise TypeError(
            f"apply_token_reduction supports {_SUPPORTED}, not {type(model).__name__}; for AudioMAE load "
            "PrunedAudioMAEForAudioClassification directly."
        )
    stock_config = model.config
    settings = dict(keep_rate=keep_rate, token_reduction=token_reduction, token_score=token_score,
                    pruning_layers=pruning_layers, drop_padding=drop_padding)  # fmt: skip
    fields = {name: value for name, value in stock_config.to_dict().items() if name != "model_type"}
    config = PrunedASTConfig(**fields, **settings)
    # to_dict leaves out the run-time settings (attention implementation, output flags): carry them over as they are
    for name, value in vars(stock_config).items():
        if name.startswith("_") and name != "_post_init_done":
            setattr(config, name, value)
    _swap(model, _PRUNED_CLASSES, stock_config, config)
    model._stock_config = stock_config
    # transformers registers a class's recordable outputs (hidden states, attentions) when one of its instances is
    # built; these classes may never have been
    for module in (model, model.base_model):
        _CAN_RECORD_REGISTRY[module] = type(module)._can_record_outputs
    return model


def remove_token_reduction(model):
    """Undo [`apply_token_reduction`] in place and return the model: its stock classes and its own stock config
    object come back, so it computes exactly what it did before."""
    model = _unwrap(model)
    stock_config = getattr(model, "_stock_config", None)
    if stock_config is None:
        raise ValueError(
            f"{type(model).__name__} was not made by apply_token_reduction, so there is no stock model to restore: "
            "load the checkpoint with ASTForAudioClassification.from_pretrained instead."
        )
    _swap(model, _STOCK_CLASSES, model.config, stock_config)
    del model._stock_config
    return model


__all__ = ["apply_token_reduction", "remove_token_reduction"]

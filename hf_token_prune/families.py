"""The registry of model families: which pruned config, model classes and feature extractor serve a checkpoint.

A family's config states its geometry (``num_extra_tokens``, ``patch_layout()``); this registry adds what the
commands need beside it: the classes to build and load, the feature extractor of a model built from scratch, which
checkpoint model types load as the family (a stock AST is a pruned AST with pruning off), and whether its attention
score costs MACs beside fused attention. The MAC counter, loading and fine-tuning ask it instead of branching on
model types. A new family is its configuration and modeling files plus one :func:`register_model_family` call.
Not remote code: saved models never need it.
"""

from dataclasses import dataclass

from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
)

from .configuration_pruned_ast import PrunedASTConfig
from .configuration_pruned_audiomae import PrunedAudioMAEConfig
from .feature_extraction_audiomae import AudioMAEFeatureExtractor
from .modeling_pruned_ast import PrunedASTForAudioClassification, PrunedASTModel
from .modeling_pruned_audiomae import PrunedAudioMAEForAudioClassification, PrunedAudioMAEModel


@dataclass(frozen=True)
class ModelFamily:
    name: str  # what --model_type calls a model built from scratch, e.g. "pruned-ast"
    config_class: type  # a PruningConfigMixin config: num_extra_tokens, patch_layout()
    base_model_class: type
    model_class: type  # the audio classifier
    feature_extractor_class: type
    # Checkpoint model types, besides the config's own, that load as this family with pruning off.
    stock_model_types: tuple[str, ...] = ()
    # Whether a pruning layer ranking by attention computes its score beside a fused attention kernel (AST recomputes
    # its CLS row: MACs) rather than from the attention's own probabilities (AudioMAE: none).
    scoring_costs_macs: bool = False

    @property
    def model_types(self) -> tuple[str, ...]:
        return (self.config_class.model_type, *self.stock_model_types)

    def pruned_config(self, config):
        """``config`` as this family's pruned config (a stock config's fields, pruning off)."""
        if isinstance(config, self.config_class):
            return config
        return self.config_class(**{k: v for k, v in config.to_dict().items() if k != "model_type"})


MODEL_FAMILIES: dict[str, ModelFamily] = {}


def register_model_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` and register its classes with transformers' Auto classes, so that saved models load by type."""
    MODEL_FAMILIES[family.name] = family
    AutoConfig.register(family.config_class.model_type, family.config_class, exist_ok=True)
    AutoModel.register(family.config_class, family.base_model_class, exist_ok=True)
    AutoModelForAudioClassification.register(family.config_class, family.model_class, exist_ok=True)
    AutoFeatureExtractor.register(family.config_class, family.feature_extractor_class, exist_ok=True)
    return family


def model_families() -> dict[str, ModelFamily]:
    """Every registered family by name."""
    return dict(MODEL_FAMILIES)


def model_family(config_or_model_type) -> ModelFamily:
    """The family of a config (or of a ``model_type`` string); ``ValueError`` naming the supported types otherwise."""
    model_type = getattr(config_or_model_type, "model_type", config_or_model_type)
    for family in MODEL_FAMILIES.values():
        if model_type in family.model_types:
            return family
    supported = ", ".join(t for family in MODEL_FAMILIES.values() for t in family.model_types)
    raise ValueError(
        f"model_type={model_type!r} is not a model family of hf_token_prune: supported are {supported} (an AST "
        "checkpoint, stock or pruned, or a model saved from hf_token_prune)."
    )


register_model_family(ModelFamily(
    "pruned-ast", PrunedASTConfig, PrunedASTModel, PrunedASTForAudioClassification, ASTFeatureExtractor,
    stock_model_types=(ASTConfig.model_type,), scoring_costs_macs=True,
))
register_model_family(ModelFamily(
    "pruned-audiomae", PrunedAudioMAEConfig, PrunedAudioMAEModel, PrunedAudioMAEForAudioClassification,
    AudioMAEFeatureExtractor,
))

"""Audio Spectrogram Transformer with TopK token pruning between the attention and the MLP of chosen layers.

The classes subclass transformers' own AST, so every AST checkpoint loads into them and, at keep rate 1.0, they compute
exactly what `ASTForAudioClassification` computes. The pruning itself lives in `pruning.py`.
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
    ASTAttention,
    ASTEmbeddings,
    ASTForAudioClassification,
    ASTLayer,
    ASTMLPHead,
    ASTModel,
    ASTPreTrainedModel,
    eager_attention_forward,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_pruned_ast import PrunedASTConfig
from .pruning import (
    PrunedAudioClassificationMixin,
    PrunedBlockMixin,
    PrunedModelMixin,
    PrunedModelOutput,
)
from .profiling import TOKEN_SCORING, profile_region
from .scores import cls_attention_score, cls_attention_score_from_weights


NUM_EXTRA_TOKENS = PrunedASTConfig.num_extra_tokens


class CropTimePositionEmbeddings(ConversionOps):
    """Centre-crop the time axis of a checkpoint's position embeddings to the configured `max_length`.

    An AST trained on 1024 frames fine-tuned on 512- or 128-frame clips keeps the middle of its time embeddings, as
    the original AST code does, instead of re-initialising them.
    """

    @torch.no_grad()
    def convert(self, input_dict, source_patterns, target_patterns, config=None, **kwargs):
        frequency_patches, time_patches = ASTEmbeddings.get_shape(None, config)
        cropped = {}
        for name, tensors in input_dict.items():
            embeddings = tensors[0] if isinstance(tensors, list) else tensors
            checkpoint_patches = embeddings.shape[1] - NUM_EXTRA_TOKENS
            if checkpoint_patches % frequency_patches or checkpoint_patches // frequency_patches < time_patches:
                cropped[name] = embeddings  # not a longer clip on the same grid: let the usual shape check report it
                continue
            checkpoint_time_patches = checkpoint_patches // frequency_patches
            start = checkpoint_time_patches // 2 - time_patches // 2
            grid = embeddings[:, NUM_EXTRA_TOKENS:].reshape(1, frequency_patches, checkpoint_time_patches, -1)
            grid = grid[:, :, start : start + time_patches].reshape(1, frequency_patches * time_patches, -1)
            cropped[name] = torch.cat([embeddings[:, :NUM_EXTRA_TOKENS], grid], dim=1)
        return cropped

    @property
    def reverse_op(self):
        return _SaveAsIs()


class _SaveAsIs(ConversionOps):
    def convert(self, input_dict, source_patterns, target_patterns, **kwargs):
        return input_dict


# Every AST checkpoint on the Hub uses transformers 4.x key names, which transformers renames for `ASTModel` by class
# name; our subclass needs the same renames registered under its own name, plus the position-embedding crop.
register_checkpoint_conversion_mapping(
    "PrunedASTModel",
    get_checkpoint_conversion_mapping("ASTModel")
    + [
        WeightConverter(
            "embeddings.position_embeddings", "embeddings.position_embeddings", [CropTimePositionEmbeddings()]
        )
    ],
    overwrite=True,
)


class PrunedASTAttention(ASTAttention):
    """`ASTAttention` that can also return what a token reduction needs: the CLS-attention score of the patch tokens
    (`token_signal="score"`) or the keys averaged over heads (`"keys"`, ToMe's similarity metric)."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_signal: str | None = None,
        num_extra_tokens: int = NUM_EXTRA_TOKENS,
        token_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        hidden_shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = self.o_proj(attn_output.reshape(*hidden_states.shape[:-1], -1).contiguous())

        if token_signal is None:
            return attn_output, attn_weights, None
        signal = None
        with profile_region(TOKEN_SCORING):
            if token_signal == "keys":
                signal = key_states.mean(dim=1)
            elif token_signal == "score" and attn_weights is None:
                # Fused attention kernels never materialise the weights; the CLS row alone is cheap to recompute.
                signal = cls_attention_score(query_states, key_states, self.scaling, num_extra_tokens, token_mask)
            elif token_signal == "score":
                signal = cls_attention_score_from_weights(attn_weights, num_extra_tokens)
        return attn_output, attn_weights, signal


class PrunedASTLayer(PrunedBlockMixin, ASTLayer):
    """`ASTLayer` that, given a `reduction`, prunes, fuses or merges patch tokens after the attention residual,
    before the MLP (the block body is `PrunedBlockMixin`'s)."""

    def __init__(self, config: PrunedASTConfig):
        super().__init__(config)
        self.attention = PrunedASTAttention(config)

    @property
    def residual_dropout(self) -> nn.Module:
        return self.dropout


class PrunedASTPreTrainedModel(PrunedModelMixin, ASTPreTrainedModel):
    config_class = PrunedASTConfig
    config: PrunedASTConfig
    _no_split_modules = ["ASTEmbeddings", "PrunedASTLayer"]
    _can_record_outputs = {"hidden_states": PrunedASTLayer, "attentions": PrunedASTAttention}
    remote_code_auto_map = {
        "AutoConfig": "configuration_pruned_ast.PrunedASTConfig",
        "AutoModel": "modeling_pruned_ast.PrunedASTModel",
        "AutoModelForAudioClassification": "modeling_pruned_ast.PrunedASTForAudioClassification",
    }

    @staticmethod
    def attention_token_scores(attention_weights: torch.Tensor) -> torch.Tensor:
        """The `"attention"` score of every patch token from a layer's `(batch, heads, seq, seq)` attention weights,
        e.g. from `output_attentions=True` under eager attention; for analysing layers that do not prune."""
        return cls_attention_score_from_weights(attention_weights, NUM_EXTRA_TOKENS)


class PrunedASTModel(PrunedASTPreTrainedModel, ASTModel):
    # Loading a classification checkpoint into the bare encoder leaves its head behind, as intended.
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: PrunedASTConfig):
        PrunedASTPreTrainedModel.__init__(self, config)
        self.embeddings = ASTEmbeddings(config)
        self.layers = nn.ModuleList([PrunedASTLayer(config) for _ in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_kept_patches: bool | None = None,
        keep_rate: float | None = None,
        keep_mass: float | None = None,
        min_keep_rate: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> PrunedModelOutput:
        r"""
        input_values (`torch.Tensor` of shape `(batch_size, max_length, num_mel_bins)`):
            Normalised log-mel filterbank features, as made by the model's `ASTFeatureExtractor`.
        output_kept_patches (`bool`, *optional*):
            Return `kept_patches`: for each pruning layer, which input patches its surviving tokens come from.
        keep_rate (`float`, *optional*):
            Keep rate of this call only, in (0, 1]; `config.keep_rate` when not given. Nothing is stored, so threads
            may call one model with different keep rates at once.
        keep_mass (`float`, *optional*):
            Per-sample keep policy of this call only, in (0, 1] (see `config.keep_mass`); `config.keep_mass` when not
            given.
        min_keep_rate (`float`, *optional*):
            Floor of the per-sample keep policy of this call only, in (0, keep_rate] (see `config.min_keep_rate`);
            `config.min_keep_rate` when not given.
        """
        self.check_input_values(input_values)
        hidden_states = self.embeddings(input_values)
        hidden_states, tracker = self.run_layers(
            hidden_states, input_values, attention_mask, keep_rate, keep_mass, min_keep_rate, **kwargs
        )
        sequence_output = self.layernorm(hidden_states)
        pooled_output = (sequence_output[:, 0] + sequence_output[:, 1]) / 2
        return PrunedModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            kept_patches=(tracker.kept_patches or None) if output_kept_patches else None,
            source_maps=(tracker.source_maps or None) if output_kept_patches else None,
        )


class PrunedASTForAudioClassification(
    PrunedAudioClassificationMixin, PrunedASTPreTrainedModel, ASTForAudioClassification
):
    def __init__(self, config: PrunedASTConfig):
        PrunedASTPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.audio_spectrogram_transformer = PrunedASTModel(config)
        self.classifier = ASTMLPHead(config)
        self.post_init()


# save_pretrained copies this file and what it imports relatively (config, pruning core) next to the weights.
PrunedASTConfig.register_for_auto_class()
PrunedASTModel.register_for_auto_class("AutoModel")
PrunedASTForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = ["PrunedASTForAudioClassification", "PrunedASTModel", "PrunedASTPreTrainedModel"]

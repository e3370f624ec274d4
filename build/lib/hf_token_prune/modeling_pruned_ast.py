"""Audio Spectrogram Transformer with TopK token pruning between the attention and the MLP of chosen layers.

The classes subclass transformers' own AST, so every AST checkpoint loads into them and, at keep rate 1.0, they compute
exactly what `ASTForAudioClassification` computes. The pruning itself lives in `pruning.py`.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
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
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_pruned_ast import PrunedASTConfig
from .pruning import (
    PatchLayout,
    PrunedModelMixin,
    cls_attention_score,
    cls_attention_score_from_weights,
    num_kept_tokens,
    select_tokens,
)


NUM_EXTRA_TOKENS = 2  # CLS and distillation token, never pruned


@dataclass
class PrunedASTModelOutput(BaseModelOutputWithPooling):
    r"""
    kept_patches (`tuple(torch.LongTensor)`, returned when `output_kept_patches=True`):
        One `(batch_size, num_kept)` tensor per pruning layer: the index, in the input's frequency-major patch grid
        (`f * time_patches + t`), of every patch token that survived that layer, most important first.
    """

    kept_patches: tuple[torch.LongTensor, ...] | None = None


@dataclass
class PrunedASTAudioClassifierOutput(SequenceClassifierOutput):
    r"""
    kept_patches (`tuple(torch.LongTensor)`, returned when `output_kept_patches=True`):
        See [`PrunedASTModelOutput`].
    """

    kept_patches: tuple[torch.LongTensor, ...] | None = None


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
    """`ASTAttention` that can also return the CLS-attention score of the patch tokens."""

    def forward(self, hidden_states, attention_mask=None, score_tokens=False, **kwargs):
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

        token_score = None
        if score_tokens:
            # Fused attention kernels never materialise the weights; the CLS row alone is cheap to recompute.
            if attn_weights is None:
                token_score = cls_attention_score(query_states, key_states, self.scaling, NUM_EXTRA_TOKENS)
            else:
                token_score = cls_attention_score_from_weights(attn_weights, NUM_EXTRA_TOKENS)
        return attn_output, attn_weights, token_score


class PrunedASTLayer(ASTLayer):
    """`ASTLayer` that, given a `keep_rate`, drops patch tokens after the attention residual, before the MLP."""

    def __init__(self, config: PrunedASTConfig):
        super().__init__(config)
        self.attention = PrunedASTAttention(config)

    def forward(self, hidden_states, attention_mask=None, keep_rate=None, token_scores=None, **kwargs):
        num_patches = hidden_states.shape[1] - NUM_EXTRA_TOKENS
        prunes = keep_rate is not None and num_kept_tokens(num_patches, keep_rate) < num_patches
        score_tokens = prunes and token_scores is None

        attn_output, _, attention_score = self.attention(
            self.layernorm_before(hidden_states), attention_mask, score_tokens=score_tokens, **kwargs
        )
        hidden_states = hidden_states + self.dropout(attn_output)
        kept_token_indices = None
        if prunes:
            scores = attention_score if token_scores is None else token_scores
            hidden_states, kept_token_indices = select_tokens(hidden_states, scores, keep_rate, NUM_EXTRA_TOKENS)
        hidden_states = hidden_states + self.dropout(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, kept_token_indices


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
    num_extra_tokens = NUM_EXTRA_TOKENS

    @staticmethod
    def attention_token_scores(attention_weights: torch.Tensor) -> torch.Tensor:
        """The `"attention"` score of every patch token from a layer's `(batch, heads, seq, seq)` attention weights,
        e.g. from `output_attentions=True` under eager attention; for analysing layers that do not prune."""
        return cls_attention_score_from_weights(attention_weights, NUM_EXTRA_TOKENS)

    @property
    def patch_layout(self) -> PatchLayout:
        """How patch tokens map onto the input spectrogram (frequency-major for AST)."""
        frequency_patches, time_patches = ASTEmbeddings.get_shape(None, self.config)
        return PatchLayout(
            patch_size=self.config.patch_size,
            frequency_stride=self.config.frequency_stride,
            time_stride=self.config.time_stride,
            num_frequency_patches=frequency_patches,
            num_time_patches=time_patches,
            time_major=False,
        )


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
    def forward(self, input_values=None, attention_mask=None, output_kept_patches=None, **kwargs):
        r"""
        input_values (`torch.Tensor` of shape `(batch_size, max_length, num_mel_bins)`):
            Normalised log-mel filterbank features, as made by the model's `ASTFeatureExtractor`.
        output_kept_patches (`bool`, *optional*):
            Return `kept_patches`: for each pruning layer, which input patches its surviving tokens come from.
        """
        self.check_input_values(input_values)
        hidden_states = self.embeddings(input_values)
        hidden_states, kept_patches = self.run_layers(hidden_states, input_values, attention_mask, **kwargs)
        sequence_output = self.layernorm(hidden_states)
        pooled_output = (sequence_output[:, 0] + sequence_output[:, 1]) / 2
        return PrunedASTModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            kept_patches=kept_patches if output_kept_patches else None,
        )


class PrunedASTForAudioClassification(PrunedASTPreTrainedModel, ASTForAudioClassification):
    def __init__(self, config: PrunedASTConfig):
        PrunedASTPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.audio_spectrogram_transformer = PrunedASTModel(config)
        self.classifier = ASTMLPHead(config)
        self.post_init()

    @can_return_tuple
    def forward(self, input_values=None, labels=None, attention_mask=None, output_kept_patches=None, **kwargs):
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, or float `(batch_size, num_labels)` multi-label targets):
            Targets for the loss, as for [`ASTForAudioClassification`].
        output_kept_patches (`bool`, *optional*):
            Return `kept_patches`, see [`PrunedASTModelOutput`].
        """
        outputs = self.audio_spectrogram_transformer(
            input_values, attention_mask=attention_mask, output_kept_patches=output_kept_patches, **kwargs
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None if labels is None else self.loss_function(labels, logits, self.config, **kwargs)
        return PrunedASTAudioClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            kept_patches=outputs.kept_patches,
        )


# save_pretrained copies this file and what it imports relatively (config, pruning core) next to the weights.
PrunedASTConfig.register_for_auto_class()
PrunedASTModel.register_for_auto_class("AutoModel")
PrunedASTForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = ["PrunedASTForAudioClassification", "PrunedASTModel", "PrunedASTPreTrainedModel"]

"""AudioMAE (the ViT-B that "Masked Autoencoders that Listen" fine-tunes) with TopK token pruning.

transformers has no AudioMAE; this file is one, written from the published architecture: a timm ViT on a time-major
patch grid with one CLS token, fixed 2-D sin-cos position embeddings, mean pooling over the patch tokens and
`fc_norm` before the head (no final norm). Pruning layers rank patches by the attention they receive (paper eq. 2a)
and drop the rest between attention and MLP; the pruning itself lives in `pruning.py`.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
    eager_attention_forward,
)
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_pruned_audiomae import PrunedAudioMAEConfig
from .pruning import (
    PatchLayout,
    PrunedModelMixin,
    attention_with_received_score,
    num_kept_tokens,
    received_attention_score_from_weights,
    select_tokens,
)


NUM_EXTRA_TOKENS = 1  # the CLS token, never pruned (and not pooled)
RECEIVED_ATTENTION_CHUNK = 128  # queries per chunk when scoring without eager weights: O(n * 128) memory per head


def sincos_position_embeddings(hidden_size: int, num_frequency_patches: int, num_time_patches: int) -> torch.Tensor:
    """AudioMAE's fixed position embeddings, `(1, 1 + patches, hidden_size)`, CLS row zero.

    Reproduces the official construction, quirk included: the sin-cos grid is laid out as (frequency, time) rows while
    the tokens are time-major, so token `i` gets the code of grid cell `divmod(i, num_time_patches)`, and the first
    half of the channels encodes that cell's column, the second half its row. Shorter inputs (512 or 128 frames) take
    the first `num_time_patches` columns of the 1024-frame grid, which is what this returns for a smaller grid.
    """
    quarter = hidden_size // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    rows, columns = torch.meshgrid(
        torch.arange(num_frequency_patches, dtype=torch.float32),
        torch.arange(num_time_patches, dtype=torch.float32),
        indexing="ij",
    )

    def encode(positions):
        angles = positions.reshape(-1, 1) * frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    patches = torch.cat([encode(columns), encode(rows)], dim=1)
    return torch.cat([torch.zeros(1, hidden_size), patches]).unsqueeze(0)


@dataclass
class PrunedAudioMAEModelOutput(BaseModelOutputWithPooling):
    r"""
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        `fc_norm` of the mean of the surviving patch tokens (the CLS token is not pooled).
    kept_patches (`tuple(torch.LongTensor)`, returned when `output_kept_patches=True`):
        One `(batch_size, num_kept)` tensor per pruning layer: the index, in the input's time-major patch grid
        (`t * frequency_patches + f`), of every patch token that survived that layer, most important first.
    """

    kept_patches: tuple[torch.LongTensor, ...] | None = None


@dataclass
class PrunedAudioMAEAudioClassifierOutput(SequenceClassifierOutput):
    r"""
    kept_patches (`tuple(torch.LongTensor)`, returned when `output_kept_patches=True`):
        See [`PrunedAudioMAEModelOutput`].
    """

    kept_patches: tuple[torch.LongTensor, ...] | None = None


class AudioMAEEmbeddings(nn.Module):
    """CLS token and patch embeddings plus the fixed sin-cos position embeddings."""

    def __init__(self, config: PrunedAudioMAEConfig):
        super().__init__()
        self.config = config
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = nn.Conv2d(
            1, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        grid = (config.num_mel_bins // config.patch_size, config.max_length // config.patch_size)
        # A frozen parameter rather than a buffer: it is stored in checkpoints, as the official ones store `pos_embed`.
        self.position_embeddings = nn.Parameter(
            sincos_position_embeddings(config.hidden_size, *grid), requires_grad=False
        )

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        # (batch, frames, mel) is read as a (time, frequency) image: tokens come out time-major.
        patches = self.patch_embeddings(input_values.unsqueeze(1)).flatten(2).transpose(1, 2)
        patches = patches + self.position_embeddings[:, NUM_EXTRA_TOKENS:]
        cls_tokens = (self.cls_token + self.position_embeddings[:, :NUM_EXTRA_TOKENS]).expand(len(patches), -1, -1)
        return torch.cat([cls_tokens, patches], dim=1)


class AudioMAEAttention(nn.Module):
    """timm's ViT attention (fused `qkv`, `proj`) that can also return the received-attention score."""

    def __init__(self, config: PrunedAudioMAEConfig):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states, attention_mask=None, score_tokens=False, **kwargs):
        batch_size, sequence_length, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch_size, sequence_length, 3, self.num_attention_heads, -1)
        query_states, key_states, value_states = qkv.permute(2, 0, 3, 1, 4).unbind(0)

        dropout = self.attention_dropout if self.training else 0.0
        if score_tokens and self.config._attn_implementation != "eager":
            # Fused kernels never return the weights the score needs: form them once, chunked, for output and score.
            attn_output, token_score = attention_with_received_score(
                query_states, key_states, value_states, self.scaling, NUM_EXTRA_TOKENS, RECEIVED_ATTENTION_CHUNK,
                dropout,
            )
            return self.proj(attn_output.reshape(batch_size, sequence_length, -1)), None, token_score

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self, query_states, key_states, value_states, attention_mask, dropout=dropout, scaling=self.scaling, **kwargs
        )
        attn_output = self.proj(attn_output.reshape(batch_size, sequence_length, -1))
        token_score = received_attention_score_from_weights(attn_weights, NUM_EXTRA_TOKENS) if score_tokens else None
        return attn_output, attn_weights, token_score


class AudioMAEMLP(nn.Module):
    def __init__(self, config: PrunedAudioMAEConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states):
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class AudioMAEDropPath(nn.Module):
    """Stochastic depth: during training, zero a residual branch for a random subset of samples."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states):
        if not self.training or self.drop_prob == 0.0:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        mask = hidden_states.new_empty(hidden_states.shape[0], 1, 1).bernoulli_(keep_prob)
        return hidden_states * mask / keep_prob


class PrunedAudioMAELayer(GradientCheckpointingLayer):
    """A timm ViT block that, given a `keep_rate`, drops patch tokens after the attention residual, before the MLP."""

    def __init__(self, config: PrunedAudioMAEConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = AudioMAEAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = AudioMAEMLP(config)
        self.drop_path = AudioMAEDropPath(drop_path_rate)

    def forward(self, hidden_states, attention_mask=None, keep_rate=None, token_scores=None, **kwargs):
        num_patches = hidden_states.shape[1] - NUM_EXTRA_TOKENS
        prunes = keep_rate is not None and num_kept_tokens(num_patches, keep_rate) < num_patches

        attn_output, _, attention_score = self.attention(
            self.layernorm_before(hidden_states), attention_mask, score_tokens=prunes and token_scores is None, **kwargs
        )
        hidden_states = hidden_states + self.drop_path(attn_output)
        kept_token_indices = None
        if prunes:
            scores = attention_score if token_scores is None else token_scores
            hidden_states, kept_token_indices = select_tokens(hidden_states, scores, keep_rate, NUM_EXTRA_TOKENS)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, kept_token_indices


class PrunedAudioMAEPreTrainedModel(PrunedModelMixin, PreTrainedModel):
    config_class = PrunedAudioMAEConfig
    config: PrunedAudioMAEConfig
    base_model_prefix = "audiomae"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["AudioMAEEmbeddings", "PrunedAudioMAELayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": PrunedAudioMAELayer, "attentions": AudioMAEAttention}
    remote_code_auto_map = {
        "AutoConfig": "configuration_pruned_audiomae.PrunedAudioMAEConfig",
        "AutoModel": "modeling_pruned_audiomae.PrunedAudioMAEModel",
        "AutoModelForAudioClassification": "modeling_pruned_audiomae.PrunedAudioMAEForAudioClassification",
    }
    num_extra_tokens = NUM_EXTRA_TOKENS

    @torch.no_grad()
    def _init_weights(self, module):
        """timm's ViT initialisation: truncated normal (std `initializer_range`) for weights, zero biases."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, AudioMAEEmbeddings):
            init.trunc_normal_(module.cls_token, std=std)
            grid = (self.config.num_mel_bins // self.config.patch_size, self.config.max_length // self.config.patch_size)
            init.copy_(module.position_embeddings, sincos_position_embeddings(self.config.hidden_size, *grid))

    @staticmethod
    def attention_token_scores(attention_weights: torch.Tensor) -> torch.Tensor:
        """The `"attention"` score of every patch token from a layer's `(batch, heads, seq, seq)` attention weights,
        e.g. from `output_attentions=True` under eager attention; for analysing layers that do not prune."""
        return received_attention_score_from_weights(attention_weights, NUM_EXTRA_TOKENS)

    @property
    def patch_layout(self) -> PatchLayout:
        """How patch tokens map onto the input spectrogram (time-major for AudioMAE)."""
        size = self.config.patch_size
        return PatchLayout(
            patch_size=size,
            frequency_stride=size,
            time_stride=size,
            num_frequency_patches=self.config.num_mel_bins // size,
            num_time_patches=self.config.max_length // size,
            time_major=True,
        )


class PrunedAudioMAEModel(PrunedAudioMAEPreTrainedModel):
    # Loading a classification checkpoint into the bare encoder leaves its head behind, as intended.
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: PrunedAudioMAEConfig):
        super().__init__(config)
        self.embeddings = AudioMAEEmbeddings(config)
        drop_path_rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layers = nn.ModuleList([PrunedAudioMAELayer(config, rate) for rate in drop_path_rates])
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, input_values=None, attention_mask=None, output_kept_patches=None, **kwargs):
        r"""
        input_values (`torch.Tensor` of shape `(batch_size, max_length, num_mel_bins)`):
            Normalised log-mel filterbank features, as made by the model's `AudioMAEFeatureExtractor`.
        output_kept_patches (`bool`, *optional*):
            Return `kept_patches`: for each pruning layer, which input patches its surviving tokens come from.
        """
        self.check_input_values(input_values)
        hidden_states = self.embeddings(input_values)
        hidden_states, kept_patches = self.run_layers(hidden_states, input_values, attention_mask, **kwargs)
        pooled_output = self.fc_norm(hidden_states[:, NUM_EXTRA_TOKENS:].mean(dim=1))
        return PrunedAudioMAEModelOutput(
            last_hidden_state=hidden_states,
            pooler_output=pooled_output,
            kept_patches=kept_patches if output_kept_patches else None,
        )


class PrunedAudioMAEForAudioClassification(PrunedAudioMAEPreTrainedModel):
    def __init__(self, config: PrunedAudioMAEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.audiomae = PrunedAudioMAEModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self.classifier and isinstance(module, nn.Linear):
            # The official fine-tuning starts the new head nearly at zero.
            init.trunc_normal_(module.weight, std=2e-5)

    @can_return_tuple
    def forward(self, input_values=None, labels=None, attention_mask=None, output_kept_patches=None, **kwargs):
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, or float `(batch_size, num_labels)` multi-label targets):
            Targets for the loss: cross-entropy for single labels, BCE when `config.problem_type` is
            `"multi_label_classification"` (as for every transformers classifier).
        output_kept_patches (`bool`, *optional*):
            Return `kept_patches`, see [`PrunedAudioMAEModelOutput`].
        """
        outputs = self.audiomae(
            input_values, attention_mask=attention_mask, output_kept_patches=output_kept_patches, **kwargs
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None if labels is None else self.loss_function(labels, logits, self.config, **kwargs)
        return PrunedAudioMAEAudioClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            kept_patches=outputs.kept_patches,
        )


# save_pretrained copies this file and what it imports relatively (config, pruning core) next to the weights.
PrunedAudioMAEConfig.register_for_auto_class()
PrunedAudioMAEModel.register_for_auto_class("AutoModel")
PrunedAudioMAEForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = ["PrunedAudioMAEForAudioClassification", "PrunedAudioMAEModel", "PrunedAudioMAEPreTrainedModel"]

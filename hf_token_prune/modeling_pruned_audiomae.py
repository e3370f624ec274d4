"""AudioMAE (the ViT-B that "Masked Autoencoders that Listen" fine-tunes) with TopK token pruning.

transformers has no AudioMAE; this file is one, written from the published architecture: a timm ViT on a time-major
patch grid with one CLS token, fixed 2-D sin-cos position embeddings, mean pooling over the patch tokens and
`fc_norm` before the head (no final norm). Pruning layers rank patches by the attention they receive (paper eq. 2a)
and drop the rest between attention and MLP; the pruning itself lives in `pruning.py`.
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
    eager_attention_forward,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_pruned_audiomae import PrunedAudioMAEConfig
from .pruning import (
    PrunedAudioClassificationMixin,
    PrunedBlockMixin,
    PrunedModelMixin,
    PrunedModelOutput,
)
from .profiling import TOKEN_SCORING, profile_region
from .scores import attention_with_received_score, received_attention_score_from_weights


NUM_EXTRA_TOKENS = PrunedAudioMAEConfig.num_extra_tokens
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


class AudioMAEEmbeddings(nn.Module):
    """CLS token and patch embeddings plus the fixed sin-cos position embeddings."""

    def __init__(self, config: PrunedAudioMAEConfig):
        super().__init__()
        self.config = config
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = nn.Conv2d(
            1, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        num_patches = (config.num_mel_bins // config.patch_size) * (config.max_length // config.patch_size)
        # A frozen parameter rather than a buffer: it is stored in checkpoints, as the official ones store `pos_embed`.
        # `_init_weights` writes the sin-cos code, so the model's dtype and device (meta included) apply to it.
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, NUM_EXTRA_TOKENS + num_patches, config.hidden_size), requires_grad=False
        )

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        # (batch, frames, mel) is read as a (time, frequency) image: tokens come out time-major.
        patches = self.patch_embeddings(input_values.unsqueeze(1)).flatten(2).transpose(1, 2)
        patches = patches + self.position_embeddings[:, NUM_EXTRA_TOKENS:]
        cls_tokens = (self.cls_token + self.position_embeddings[:, :NUM_EXTRA_TOKENS]).expand(patches.shape[0], -1, -1)
        return torch.cat([cls_tokens, patches], dim=1)


class AudioMAEAttention(nn.Module):
    """timm's ViT attention (fused `qkv`, `proj`) that can also return what a token reduction needs: the
    received-attention score of the patch tokens (`token_signal="score"`) or the head-mean keys (`"keys"`)."""

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

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_signal: str | None = None,
        num_extra_tokens: int = NUM_EXTRA_TOKENS,
        token_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        batch_size, sequence_length, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch_size, sequence_length, 3, self.num_attention_heads, -1)
        query_states, key_states, value_states = qkv.permute(2, 0, 3, 1, 4).unbind(0)

        dropout = self.attention_dropout if self.training else 0.0
        score_tokens = token_signal == "score"
        if score_tokens and self.config._attn_implementation != "eager":
            # Fused kernels never return the weights the score needs: form them once, chunked, for output and score.
            attn_output, token_score = attention_with_received_score(
                query_states, key_states, value_states, self.scaling, num_extra_tokens, RECEIVED_ATTENTION_CHUNK,
                dropout, token_mask,
            )
            return self.proj(attn_output.reshape(batch_size, sequence_length, -1)), None, token_score

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self, query_states, key_states, value_states, attention_mask, dropout=dropout, scaling=self.scaling, **kwargs
        )
        attn_output = self.proj(attn_output.reshape(batch_size, sequence_length, -1))
        if token_signal is None:
            return attn_output, attn_weights, None
        with profile_region(TOKEN_SCORING):
            signal = key_states.mean(dim=1) if token_signal == "keys" else None
            if score_tokens:
                signal = received_attention_score_from_weights(attn_weights, num_extra_tokens, token_mask)
        return attn_output, attn_weights, signal


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


class PrunedAudioMAELayer(PrunedBlockMixin, GradientCheckpointingLayer):
    """A timm ViT block that, given a `reduction`, prunes, fuses or merges patch tokens after the attention residual,
    before the MLP (the block body is `PrunedBlockMixin`'s)."""

    def __init__(self, config: PrunedAudioMAEConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = AudioMAEAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = AudioMAEMLP(config)
        self.drop_path = AudioMAEDropPath(drop_path_rate)

    @property
    def residual_dropout(self) -> nn.Module:
        return self.drop_path


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


class PrunedAudioMAEModel(PrunedAudioMAEPreTrainedModel):
    # Loading a classification checkpoint into the bare encoder leaves its head behind, as intended.
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: PrunedAudioMAEConfig):
        super().__init__(config)
        self.embeddings = AudioMAEEmbeddings(config)
        # timm's linear stochastic-depth rule, in Python so that the model also builds on the meta device.
        layers = config.num_hidden_layers
        drop_path_rates = [config.drop_path_rate * i / max(layers - 1, 1) for i in range(layers)]
        self.layers = nn.ModuleList([PrunedAudioMAELayer(config, rate) for rate in drop_path_rates])
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

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
            Normalised log-mel filterbank features, as made by the model's `AudioMAEFeatureExtractor`.
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
        # AudioMAE pools the surviving real patch tokens (not CLS, not padding, not a fused token; merged tokens by
        # their size) and has no final norm before fc_norm.
        pooled_output = self.fc_norm(tracker.mean_patch_token(hidden_states))
        return PrunedModelOutput(
            last_hidden_state=hidden_states,
            pooler_output=pooled_output,
            kept_patches=(tracker.kept_patches or None) if output_kept_patches else None,
            source_maps=(tracker.source_maps or None) if output_kept_patches else None,
        )


class PrunedAudioMAEForAudioClassification(PrunedAudioClassificationMixin, PrunedAudioMAEPreTrainedModel):
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


# save_pretrained copies this file and what it imports relatively (config, pruning core) next to the weights.
PrunedAudioMAEConfig.register_for_auto_class()
PrunedAudioMAEModel.register_for_auto_class("AutoModel")
PrunedAudioMAEForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = ["PrunedAudioMAEForAudioClassification", "PrunedAudioMAEModel", "PrunedAudioMAEPreTrainedModel"]

"""What the pruned models of every family share: their outputs, the block body, the reducing loop, the classifier.

A reducing layer runs its attention, then the configured token reduction method (``token_reductions.py``) between
attention and MLP; extra tokens (CLS, distillation) sit at the front of the sequence and are never reduced. The pieces
live in small sibling modules: token scores (``scores.py``), kept counts and top-k selection (``selection.py``), the
methods (``reduction.py`` and ``method_*.py``), per-forward bookkeeping (``tracker.py``), config validation
(``pruning_config.py``, the keep-rate rule in ``keep_rate.py``), patch geometry (``patch_layout.py``), named profiler
regions (``profiling.py``). This file and those are copied next to every saved model as remote code, so they import
nothing but ``torch`` and ``transformers``.
"""

import contextlib
from dataclasses import dataclass

import torch
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple

from .patch_layout import PatchLayout
from .profiling import ATTENTION, BOOKKEEPING, MLP, REDUCTION, profile_region
from .pruning_config import validate_keep_mass, validate_pruning_config
from .selection import drop_padding_tokens
from .token_reductions import get_token_reduction, padding_token_reductions
from .tracker import LayerReduction, PatchTracker


logger = logging.get_logger(__name__)


@dataclass
class PrunedModelOutput(BaseModelOutputWithPooling):
    r"""
    kept_patches (`tuple(torch.LongTensor)`, returned when `output_kept_patches=True` and `token_reduction` is
    `"prune"` or `"fuse"`):
        One `(batch_size, num_kept)` tensor per pruning layer: the index, in the input's patch grid, of every patch
        token that survived that layer, most important first. The grid is the model's `patch_layout`: frequency-major
        (`f * time_patches + t`) for AST, time-major (`t * frequency_patches + f`) for AudioMAE. Under fuse, the fused
        token holds every other patch.
    source_maps (`tuple(torch.LongTensor)`, returned when `output_kept_patches=True` and `token_reduction="merge"`):
        One `(batch_size, num_patches)` tensor per merging layer: for each input patch (same grid), the position among
        that layer's output patch tokens of the token that now carries it; equal values form one merged group.
    """

    kept_patches: tuple[torch.LongTensor, ...] | None = None
    source_maps: tuple[torch.LongTensor, ...] | None = None


@dataclass
class PrunedAudioClassifierOutput(SequenceClassifierOutput):
    r"""
    kept_patches (`tuple(torch.LongTensor)`, returned when `output_kept_patches=True`):
        See [`PrunedModelOutput`].
    source_maps (`tuple(torch.LongTensor)`, returned when `output_kept_patches=True` and `token_reduction="merge"`):
        See [`PrunedModelOutput`].
    """

    kept_patches: tuple[torch.LongTensor, ...] | None = None
    source_maps: tuple[torch.LongTensor, ...] | None = None


class PrunedBlockMixin:
    """The pre-norm ViT block both families run: attention, residual, token reduction, MLP, residual.

    A layer using it has ``layernorm_before``, ``attention`` (returning the output, the weights and, when asked for a
    ``token_signal``, the patch scores or the head-mean keys), ``layernorm_after``, ``mlp`` and ``residual_dropout``,
    the module applied to both residual branches (dropout in AST, stochastic depth in AudioMAE).
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        reduction: LayerReduction | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Returns the new hidden states and the reduction's plan (``None`` when every token was kept).

        A ``reduction`` makes this a reducing layer: it prunes, fuses or merges the patch tokens before the MLP.
        """
        reduces = reduction is not None and reduction.reduces(hidden_states)
        if reduces:
            kwargs = dict(kwargs, token_signal=reduction.token_signal, num_extra_tokens=reduction.num_extra_tokens,
                          token_mask=reduction.token_mask)
        with profile_region(ATTENTION):
            normed = self.layernorm_before(hidden_states)
            attn_output, _, token_signal = self.attention(normed, attention_mask, **kwargs)
            hidden_states = hidden_states + self.residual_dropout(attn_output)
        plan = None
        if reduces:
            with profile_region(REDUCTION):
                hidden_states, plan = reduction(hidden_states, token_signal)
        with profile_region(MLP):
            hidden_states = hidden_states + self.residual_dropout(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, plan


class PrunedModelMixin:
    """What every pruned model family shares: run-time reduction settings, input checks, the reducing loop, saving.

    A model using it has ``layers`` (on the base model), ``remote_code_auto_map`` and a config stating the family's
    geometry (``num_extra_tokens``, ``patch_layout()``, see :class:`pruning_config.PruningConfigMixin`).
    """

    remote_code_auto_map: dict

    @property
    def num_extra_tokens(self) -> int:
        """Front tokens (CLS, distillation) that are never reduced, as the family's config states them."""
        return self.config.num_extra_tokens

    @property
    def patch_layout(self) -> PatchLayout:
        """How patch tokens map onto the input spectrogram, as the family's config states it."""
        return self.config.patch_layout()

    def set_keep_rate(self, keep_rate: float):
        """Change the keep rate of every pruning layer in place (validated); used by the keep-rate schedule. For one
        call only, pass ``keep_rate`` to the forward instead."""
        self.config.update_reduction(keep_rate=keep_rate)

    @contextlib.contextmanager
    def reduction_settings(self, **settings):
        """Run with ``settings`` (any of ``keep_rate``, ``token_reduction``, ``token_score``, ``pruning_layers``,
        ``drop_padding``, ``keep_mass``, ``min_keep_rate``) changed together and validated together, restoring the
        previous ones on exit::

            with model.reduction_settings(keep_rate=0.5, token_reduction="merge", token_score="attention"):
                logits = model(**inputs).logits
        """
        config = self.config
        saved = {name: getattr(config, name) for name in settings}
        config.update_reduction(**settings)
        try:
            yield self
        finally:
            config.update_reduction(**saved)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers writes only the saved class's own Auto entry; name them all so that AutoConfig, AutoModel and
        # AutoModelForAudioClassification all load the folder with trust_remote_code.
        self.config.auto_map = dict(self.remote_code_auto_map)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def check_input_values(self, input_values):
        expected = (self.config.max_length, self.config.num_mel_bins)
        if input_values is None or input_values.dim() != 3 or tuple(input_values.shape[1:]) != expected:
            shape = None if input_values is None else tuple(input_values.shape)
            raise ValueError(
                f"input_values has shape {shape}, but this model expects (batch_size, max_length={expected[0]}, "
                f"num_mel_bins={expected[1]}): make features with the model's feature extractor, whose max_length and "
                "num_mel_bins must match the config."
            )
        # A data-dependent branch breaks torch.compile(fullgraph=True) and torch.export; graphs skip the value check
        # (their shape checks still trace), eager calls keep it.
        if not torch.compiler.is_compiling() and not torch.isfinite(input_values).all():
            raise ValueError(
                "input_values contains NaN or infinite values: check the audio (empty, NaN or clipped samples) and the "
                "feature extractor's normalisation before calling the model."
            )

    def check_attention_mask(self, attention_mask, hidden_states, pruning):
        """A pruned sequence needs a per-token padding mask it can gather; name the layout when the mask is not one."""
        if attention_mask is None:
            return None
        expected = tuple(hidden_states.shape[:2])
        if attention_mask.dim() != 2 or tuple(attention_mask.shape) != expected:
            if attention_mask.dim() == 4 and not pruning:
                return attention_mask  # a prepared 4-D mask passes through, as in transformers' own AST
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, but this model takes a 2-D padding mask of "
                f"shape (batch_size, sequence_length) = {expected}: one entry per token ({self.num_extra_tokens} extra "
                f"tokens, then the patches in the model's patch order), 1 for real tokens and 0 for padding. The "
                "feature extractor's frame mask (batch_size, max_length) with padding is for a model with "
                "config.drop_padding=True."
            )
        return attention_mask

    def is_unpadded(self, attention_mask, input_values):
        """Whether ``attention_mask`` marks nothing as padding, so the model runs as without it (transformers' mask
        helper skips such a mask too). A prepared 4-D mask is taken as it is, and a traced graph cannot branch on
        the values, so there a mask is always applied."""
        if attention_mask is None or attention_mask.dim() == 4 or torch.compiler.is_compiling():
            return False
        if self.config.drop_padding and tuple(attention_mask.shape) == tuple(input_values.shape[:2]):
            return False  # a frame mask: drop_padding_tokens keeps every patch of an all-real one
        return bool(attention_mask.bool().all())

    def check_frame_mask(self, attention_mask, input_values):
        """``drop_padding`` takes the feature extractor's frame mask; name its shape when given another."""
        expected = tuple(input_values.shape[:2])
        if attention_mask.dim() != 2 or tuple(attention_mask.shape) != expected:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, but with drop_padding=True this model takes "
                f"the feature extractor's frame mask of shape (batch_size, max_length) = {expected}: 1 on the frames "
                "computed from the clip, 0 on the padding (feature_extractor(..., return_attention_mask=True)). For a "
                "per-token mask use drop_padding=False."
            )
        if not torch.compiler.is_compiling() and not attention_mask.bool().any(dim=1).all():
            raise ValueError(
                "attention_mask marks every frame of a sample as padding: each clip needs at least one real frame "
                "(the feature extractor's mask always has one)."
            )
        return attention_mask

    def resolve_keep_rate(self, keep_rate):
        """The keep rate of one forward call: ``keep_rate`` when given (validated against the config), else the
        config's. Nothing is stored, so calls with different keep rates can share the model from many threads."""
        config = self.config
        if keep_rate is None:
            return config.keep_rate
        validate_pruning_config(keep_rate, config.pruning_layers, config.token_score, config.num_hidden_layers)
        return keep_rate

    def resolve_keep_mass(self, keep_mass, keep_rate, min_keep_rate=None):
        """The per-sample keep policy of one forward call, ``(keep_mass, min_keep_rate)``: each the call's when given,
        else the config's, validated against the call's ``keep_rate`` (the ceiling). Nothing is stored, as for the
        keep rate. A floor given without a policy in force would change nothing, so it is refused."""
        config = self.config
        if min_keep_rate is not None and keep_mass is None and config.keep_mass is None:
            raise ValueError(
                f"min_keep_rate={min_keep_rate!r} is the floor of the per-sample keep policy, which this call does not "
                "use: give keep_mass too (the model's config sets none)."
            )
        keep_mass = config.keep_mass if keep_mass is None else keep_mass
        min_keep_rate = config.min_keep_rate if min_keep_rate is None else min_keep_rate
        if keep_mass is not None:
            validate_keep_mass(keep_mass, min_keep_rate, keep_rate, config.token_reduction)
        return keep_mass, min_keep_rate

    def run_layers(self, hidden_states, input_values, attention_mask=None, keep_rate=None, keep_mass=None,
                   min_keep_rate=None, **kwargs):
        """Run every layer, reducing tokens in ``config.pruning_layers`` at ``keep_rate`` (the config's when
        ``None``), per sample under ``keep_mass`` with the floor ``min_keep_rate`` (each the config's when ``None``);
        returns the hidden states and the :class:`PatchTracker` (``kept_patches`` or ``source_maps``, token sizes).

        A 2-D padding ``attention_mask`` becomes each layer's attention mask through transformers' own mask helper, as
        in `ASTModel.forward`; a pruning layer gathers it with the survivors and the mask is rebuilt for later layers.
        A mask without padding (all ones, of any shape) means no mask, as that helper treats it: the feature
        extractor's all-ones frame mask is what ``DataCollatorWithPadding`` adds to every batch. With
        ``config.drop_padding`` the mask is the feature extractor's frame mask instead: padding patches are gathered
        out here, before the first layer (:func:`drop_padding_tokens`), and the token mask that is left covers only a
        mixed batch's shorter samples.
        """
        config = self.config
        keep_rate = self.resolve_keep_rate(keep_rate)
        keep_mass, min_keep_rate = self.resolve_keep_mass(keep_mass, keep_rate, min_keep_rate)
        pruning = keep_rate < 1.0 or keep_mass is not None
        patch_indices = None
        mask_given = attention_mask is not None
        if self.is_unpadded(attention_mask, input_values):
            attention_mask = None
        if config.drop_padding and attention_mask is not None:
            real_patches = self.patch_layout.real_patches(self.check_frame_mask(attention_mask, input_values))
            hidden_states, patch_indices, attention_mask = drop_padding_tokens(
                hidden_states, real_patches, self.num_extra_tokens
            )
        else:
            if config.drop_padding and not mask_given and not torch.compiler.is_compiling():
                logger.warning_once(
                    "drop_padding=True but no attention_mask was given: every patch is treated as real and nothing is "
                    "dropped. Pass the feature extractor's frame mask (return_attention_mask=True; save the extractor "
                    "with return_attention_mask=True for pipeline())."
                )
            attention_mask = self.check_attention_mask(attention_mask, hidden_states, pruning)
        method = get_token_reduction(config.token_reduction)
        if pruning and attention_mask is not None and not method.supports_padding:
            raise ValueError(
                f"attention_mask is not supported with token_reduction={config.token_reduction!r} while reducing "
                "(keep_rate < 1): a padded token must never be fused or merged into a real one, and only "
                f"{', '.join(padding_token_reductions())} carries the mask. Use token_reduction='prune', keep_rate=1.0, "
                "or call the model without a mask."
            )
        token_mask = attention_mask.bool() if attention_mask is not None and attention_mask.dim() == 2 else None
        static_scores = None
        if config.token_score in ("intensity", "variation"):
            intensity, variation = self.patch_layout.patch_statistics(input_values)
            static_scores = intensity if config.token_score == "intensity" else variation
            if patch_indices is not None:
                static_scores = static_scores.gather(1, patch_indices.clamp(min=0))
        num_patches = hidden_states.shape[1] - self.num_extra_tokens
        tracker = PatchTracker(
            hidden_states.shape[0], num_patches, hidden_states.device, static_scores, token_mask, self.num_extra_tokens,
            method, patch_indices, config.drop_padding, keep_mass, min_keep_rate,
        )
        # Without a padding mask there is nothing to build; under torch.export the helper would materialise a full-size
        # mask that no longer fits once a layer has reduced the tokens.
        layer_mask = None if attention_mask is None else create_bidirectional_mask(
            config=config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )

        for index, layer in enumerate(self.layers):
            mask = tracker.attention_mask(layer_mask, hidden_states.dtype)
            if pruning and index in config.pruning_layers:
                reduction = tracker.layer_reduction(keep_rate, config.token_score)
                hidden_states, plan = layer(hidden_states, mask, reduction=reduction, **kwargs)
                with profile_region(BOOKKEEPING):
                    tracker.update(plan)
                if plan is not None and tracker.token_mask is not None:
                    layer_mask = create_bidirectional_mask(
                        config=config, inputs_embeds=hidden_states, attention_mask=tracker.token_mask
                    )
            else:
                hidden_states, _ = layer(hidden_states, mask, **kwargs)
                if index in config.pruning_layers:
                    tracker.update(None)
        return hidden_states, tracker


class PrunedAudioClassificationMixin:
    """The classifier forward both families share: base model, head on its pooled output, transformers' loss."""

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_kept_patches: bool | None = None,
        keep_rate: float | None = None,
        keep_mass: float | None = None,
        min_keep_rate: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> PrunedAudioClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, or float `(batch_size, num_labels)` multi-label targets):
            Targets for the loss: cross-entropy for single labels, BCE when `config.problem_type` is
            `"multi_label_classification"`, as for every transformers classifier.
        output_kept_patches (`bool`, *optional*):
            Return `kept_patches` (prune, fuse) or `source_maps` (merge), see [`PrunedModelOutput`].
        keep_rate (`float`, *optional*):
            Keep rate of this call only, in (0, 1]; `config.keep_rate` when not given. Nothing is stored, so threads
            may call one model with different keep rates at once (`set_keep_rate` changes the model for every call).
        keep_mass (`float`, *optional*):
            Per-sample keep policy of this call only, in (0, 1] (see `config.keep_mass`); `config.keep_mass` when not
            given.
        min_keep_rate (`float`, *optional*):
            Floor of the per-sample keep policy of this call only, in (0, keep_rate] (see `config.min_keep_rate`);
            `config.min_keep_rate` when not given.
        """
        outputs = self.base_model(
            input_values,
            attention_mask=attention_mask,
            output_kept_patches=output_kept_patches,
            keep_rate=keep_rate,
            keep_mass=keep_mass,
            min_keep_rate=min_keep_rate,
            **kwargs,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None if labels is None else self.loss_function(labels, logits, self.config, **kwargs)
        return PrunedAudioClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            kept_patches=outputs.kept_patches,
            source_maps=outputs.source_maps,
        )

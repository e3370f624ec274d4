"""TopK token pruning: the one novel piece that both pruned models call.

A pruning layer scores the patch tokens, keeps the ``ceil(n * keep_rate)`` best ones and drops the rest before its
MLP; with ``token_reduction`` "fuse" or "merge" it keeps the dropped tokens' content instead (EViT's fused token,
ToMe's merging: the tensor functions are in ``reduction.py``, the layer plumbing here). Extra tokens (CLS,
distillation) sit at the front of the sequence and are never pruned. This file is copied next
to every saved model as remote code, so it imports nothing but ``torch`` and ``transformers``; the tensor functions come
first, then what the pruned configs, blocks and models of both families share.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple

from .reduction import (
    fused_token,
    merge_plan,
    merge_weighted,
    proportional_attention_bias,
    validate_token_reduction,
)


logger = logging.get_logger(__name__)

TOKEN_SCORES = ("attention", "intensity", "variation", "random")

# Absorbs float error in n * keep_rate (100 * 0.7 == 70.00000000000001) so the ceil rule gives the exact answer.
_CEIL_TOLERANCE = 1e-6


def default_pruning_layers(num_hidden_layers: int) -> list[int]:
    """The paper's pruning positions at any depth: 0-based layers ``floor(k * num_hidden_layers / 4)`` for k = 1, 2, 3.

    That is the paper's 3, 6, 9 of 12 layers, 1, 3, 4 of 6, 6, 12, 18 of 24; repeats collapse (0, 1 of 2 layers).
    """
    return sorted({k * num_hidden_layers // 4 for k in (1, 2, 3)})


def validate_pruning_config(keep_rate, pruning_layers, token_score, num_hidden_layers):
    """Raise ``ValueError`` naming the bad value and the allowed range; shared by every pruned config."""
    if isinstance(keep_rate, bool) or not isinstance(keep_rate, (int, float)) or not 0.0 < keep_rate <= 1.0:
        raise ValueError(
            f"keep_rate={keep_rate!r} is invalid: it must be a number in (0, 1], the fraction of patch tokens each "
            "pruning layer keeps (1.0 disables pruning)."
        )
    if not isinstance(pruning_layers, (list, tuple)) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in pruning_layers
    ):
        raise ValueError(
            f"pruning_layers={pruning_layers!r} is invalid: it must be a list of 0-based layer indices, e.g. [3, 6, 9]."
        )
    out_of_range = [i for i in pruning_layers if not 0 <= i < num_hidden_layers]
    if out_of_range:
        raise ValueError(
            f"pruning_layers={list(pruning_layers)!r} contains {out_of_range}, outside the model's layers: indices "
            f"must lie in [0, {num_hidden_layers - 1}] (num_hidden_layers={num_hidden_layers})."
        )
    if list(pruning_layers) != sorted(set(pruning_layers)):
        raise ValueError(
            f"pruning_layers={list(pruning_layers)!r} is invalid: indices must be sorted and unique, e.g. "
            f"{sorted(set(pruning_layers))}."
        )
    if token_score not in TOKEN_SCORES:
        raise ValueError(f"token_score={token_score!r} is invalid: choose one of {', '.join(TOKEN_SCORES)}.")
    if keep_rate < 1.0 and not pruning_layers:
        raise ValueError(
            f"keep_rate={keep_rate!r} prunes nothing: pruning_layers is empty. Give 0-based layers to prune in, e.g. "
            f"{default_pruning_layers(num_hidden_layers)} (the default for num_hidden_layers={num_hidden_layers}), "
            "or keep_rate=1.0."
        )


def validate_drop_padding(drop_padding, token_reduction):
    """``drop_padding`` is a bool, and only pruning can carry the per-sample padding it leaves in a mixed batch."""
    if not isinstance(drop_padding, bool):
        raise ValueError(f"drop_padding={drop_padding!r} is invalid: it must be True or False.")
    if drop_padding and token_reduction != "prune":
        raise ValueError(
            f"drop_padding=True is not supported with token_reduction={token_reduction!r}: in a batch of mixed lengths "
            "a padded slot must never be fused or merged into a real token, and only pruning carries the padding "
            "mask. Use token_reduction='prune', or drop_padding=False."
        )


def parse_keep_rates(text: str) -> list[float]:
    """Keep rates from a command-line list such as ``"1.0,0.7,0.5"``; ``ValueError`` names what is wrong."""
    try:
        rates = [float(value) for value in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{text!r}: give comma-separated keep rates in (0, 1], e.g. 1.0,0.7,0.5") from None
    bad = [rate for rate in rates if not 0.0 < rate <= 1.0]
    if bad:
        raise ValueError(f"{text!r} contains {bad}: every keep rate must lie in (0, 1].")
    return rates


def num_kept_tokens(num_tokens: int, keep_rate: float) -> int:
    """``ceil(num_tokens * keep_rate)``, at least one token."""
    return max(1, math.ceil(num_tokens * keep_rate - _CEIL_TOLERANCE))


def kept_token_counts(num_patches: int, keep_rate: float, num_pruning_layers: int) -> list[int]:
    """Patch tokens left after each pruning layer; the same keep rate compounds (512 at 0.7 -> 359, 252, 177)."""
    counts = []
    for _ in range(num_pruning_layers):
        num_patches = num_kept_tokens(num_patches, keep_rate)
        counts.append(num_patches)
    return counts


@dataclass(frozen=True)
class PatchLayout:
    """Where each patch token of a model comes from on the spectrogram.

    Both models take ``input_values`` of shape ``(batch, frames, mel_bins)`` but patchify them in different
    orientations: AST transposes to (frequency, time), so its tokens are frequency-major (``f * time_patches + t``);
    AudioMAE keeps (time, frequency), so its tokens are time-major (``t * frequency_patches + f``).
    """

    patch_size: int
    frequency_stride: int
    time_stride: int
    num_frequency_patches: int
    num_time_patches: int
    time_major: bool

    @property
    def num_patches(self) -> int:
        return self.num_frequency_patches * self.num_time_patches

    def patch_statistics(self, input_values: torch.Tensor):
        """Mean ("intensity") and unbiased std ("variation") of every patch, in token order: ``(batch, patches)``.

        ``unfold`` walks the windows in the row-major order of the patch embedding's flattened output, so statistic
        ``i`` belongs to patch token ``i``, overlapping strides included.
        """
        image, stride = input_values.unsqueeze(1).float(), (self.time_stride, self.frequency_stride)
        if not self.time_major:
            image, stride = image.transpose(2, 3), stride[::-1]
        patches = F.unfold(image, kernel_size=self.patch_size, stride=stride)
        return patches.mean(dim=1), patches.std(dim=1)

    def real_patches(self, frame_mask: torch.Tensor) -> torch.Tensor:
        """``(batch, patches)`` bool in token order from a ``(batch, frames)`` frame mask (1 = real frame): a patch is
        padding when all its frames are, so a patch straddling the clip's end stays real. Every frequency patch of a
        time step shares its frames; AST's time windows overlap (stride 10 of 16 frames), AudioMAE's do not."""
        real_time = frame_mask.bool().unfold(1, self.patch_size, self.time_stride).any(dim=-1)  # (batch, time patches)
        batch_size, frequency_patches = real_time.shape[0], self.num_frequency_patches
        if self.time_major:
            return real_time[:, :, None].expand(-1, -1, frequency_patches).reshape(batch_size, -1)
        return real_time[:, None, :].expand(-1, frequency_patches, -1).reshape(batch_size, -1)

    def frequency_major_index(self, patch_indices: torch.Tensor) -> torch.Tensor:
        """Token indices re-expressed on the (frequency, time) grid, the orientation spectrograms are drawn in."""
        if not self.time_major:
            return patch_indices
        time, frequency = patch_indices // self.num_frequency_patches, patch_indices % self.num_frequency_patches
        return frequency * self.num_time_patches + time


def _mask_padded_keys(logits: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """``logits`` ``(batch, heads, queries, keys)`` with padded keys (``token_mask`` False) at -inf."""
    if token_mask is None:
        return logits
    return logits.masked_fill(~token_mask[:, None, None, :], float("-inf"))


def cls_attention_score(
    query: torch.Tensor, key: torch.Tensor, scaling: float, num_extra_tokens: int, token_mask: torch.Tensor | None = None
):
    """Head-mean attention of the CLS query over the patch keys (paper eq. 2b), from ``(batch, heads, seq, dim)``.

    Only the CLS row of ``softmax(QK^T)`` is formed, so this costs O(n*d) and never needs the eager attention matrix.
    ``token_mask`` ``(batch, seq)``, False for padding, masks the keys as the attention itself does.
    """
    cls_logits = _mask_padded_keys(torch.matmul(query[:, :, :1], key.transpose(-1, -2)).float() * scaling, token_mask)
    cls_attention = cls_logits.softmax(dim=-1)[:, :, 0, num_extra_tokens:]
    return cls_attention.mean(dim=1)


def cls_attention_score_from_weights(attention_weights: torch.Tensor, num_extra_tokens: int):
    """The same score read from a full ``(batch, heads, seq, seq)`` attention matrix (eager attention)."""
    return attention_weights[:, :, 0, num_extra_tokens:].float().mean(dim=1)


def attention_with_received_score(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float, num_extra_tokens: int,
    chunk_size: int = 128, dropout: float = 0.0, token_mask: torch.Tensor | None = None,
):
    """Attention output ``(batch, seq, heads, dim)`` and the attention each patch receives (paper eq. 2a).

    The score averages ``softmax(QK^T)`` over heads and patch queries, with the softmax over all keys. Fused SDPA never
    returns those probabilities, and recomputing them costs as much again as the attention; so a pruning layer forms
    them once, ``chunk_size`` queries at a time (O(n * chunk_size) memory per head, never the n x n matrix), and uses
    them for both the output and the score. ``dropout`` (training only) applies to the output, not to the score.
    ``token_mask`` ``(batch, seq)``, False for padding: padded keys get no attention, padded queries give none.
    """
    key_transposed = key.transpose(-1, -2)
    query_weights = _patch_query_weights(query.shape[0], query.shape[2], num_extra_tokens, token_mask, query.device)
    outputs = []
    received = query.new_zeros(query.shape[0], query.shape[1], key.shape[2], dtype=torch.float32)
    for start in range(0, query.shape[2], chunk_size):
        logits = torch.matmul(query[:, :, start : start + chunk_size], key_transposed).float() * scaling
        probabilities = _mask_padded_keys(logits, token_mask).softmax(dim=-1)
        dropped = F.dropout(probabilities, p=dropout) if dropout > 0.0 else probabilities
        outputs.append(torch.matmul(dropped.to(value.dtype), value))
        received += (probabilities * query_weights[:, None, start : start + chunk_size, None]).sum(dim=2)
    score = received[:, :, num_extra_tokens:].mean(dim=1) / query_weights.sum(dim=1, keepdim=True)
    return torch.cat(outputs, dim=2).transpose(1, 2), score


def _patch_query_weights(batch_size, num_tokens, num_extra_tokens, token_mask, device):
    """``(batch, seq)`` float: 1 for the real patch queries whose attention a received score averages, else 0."""
    weights = torch.ones(batch_size, num_tokens, device=device)
    weights[:, :num_extra_tokens] = 0.0
    return weights if token_mask is None else weights * token_mask


def received_attention_score_from_weights(
    attention_weights: torch.Tensor, num_extra_tokens: int, token_mask: torch.Tensor | None = None
):
    """The same score read from a full ``(batch, heads, seq, seq)`` attention matrix (eager attention)."""
    batch_size, _, num_tokens, _ = attention_weights.shape
    query_weights = _patch_query_weights(batch_size, num_tokens, num_extra_tokens, token_mask, attention_weights.device)
    received = (attention_weights.float() * query_weights[:, None, :, None]).sum(dim=2).mean(dim=1)
    return received[:, num_extra_tokens:] / query_weights.sum(dim=1, keepdim=True)


def drop_padding_tokens(hidden_states: torch.Tensor, real_patches: torch.Tensor, num_extra_tokens: int):
    """Gather out the padding patch tokens before the first layer: ``(hidden_states, patch_indices, token_mask)``.

    Each sample's real patch tokens (``real_patches`` ``(batch, patches)``, token order) move to the front in input
    order, and the sequence is cut to the longest sample's count; a shorter sample's remaining slots are padding, with
    ``patch_indices`` (the input patch in each slot) -1 and ``token_mask`` ``(batch, extra + slots)`` False there.
    ``token_mask`` is ``None`` when no slot is padding (one clip, or clips of one length), so the forward is then
    exactly that of the real tokens alone. A traced graph (torch.compile, torch.export) has static shapes: there every
    slot stays and the padding is only masked.
    """
    num_real = real_patches.sum(dim=1)
    order = torch.argsort((~real_patches).to(torch.int8), dim=1, stable=True)
    tracing = torch.compiler.is_compiling()
    if not tracing:
        order = order[:, : int(num_real.max())]
    slot_is_real = torch.arange(order.shape[1], device=order.device) < num_real[:, None]
    gather_index = (order + num_extra_tokens).unsqueeze(-1).expand(-1, -1, hidden_states.shape[-1])
    hidden_states = torch.cat([hidden_states[:, :num_extra_tokens], hidden_states.gather(1, gather_index)], dim=1)
    token_mask = None
    if tracing or not bool(slot_is_real.all()):
        token_mask = torch.cat([slot_is_real.new_ones(slot_is_real.shape[0], num_extra_tokens), slot_is_real], dim=1)
    return hidden_states, order.masked_fill(~slot_is_real, -1), token_mask


def select_tokens(
    hidden_states: torch.Tensor, scores: torch.Tensor, keep_rate: float, num_extra_tokens: int,
    token_mask: torch.Tensor | None = None, count_real_tokens: bool = False,
):
    """Keep the extra tokens and the top ``ceil(n * keep_rate)`` patch tokens of each sample.

    Returns the pruned ``hidden_states`` and ``kept_token_indices`` ``(batch, k)``: positions among the current
    patch tokens, in descending score order, which the caller composes to map survivors back to input patches.
    With a ``token_mask`` ``(batch, seq)`` padded patches rank last, so one is kept only when no real one is left.
    With ``count_real_tokens`` (``drop_padding``) each sample keeps ``ceil(n_real * keep_rate)`` of its own real
    tokens instead: ``k`` is the batch's largest count and a sample's slots beyond its own count are empty (index -1).
    """
    if token_mask is not None:
        scores = scores.float().masked_fill(~token_mask[:, num_extra_tokens:], float("-inf"))
    num_kept = num_kept_tokens(scores.shape[1], keep_rate)
    kept_token_indices = scores.topk(num_kept, dim=1).indices
    gather_index = (kept_token_indices + num_extra_tokens).unsqueeze(-1).expand(-1, -1, hidden_states.shape[-1])
    kept_patch_tokens = hidden_states.gather(1, gather_index)
    if count_real_tokens and token_mask is not None:
        # float64: n * keep_rate in float32 can overshoot an integer by more than the tolerance (1000 * 0.3)
        num_real = token_mask[:, num_extra_tokens:].sum(dim=1, keepdim=True).double()
        sample_kept = torch.ceil(num_real * keep_rate - _CEIL_TOLERANCE).clamp(min=1)
        slots = torch.arange(num_kept, device=kept_token_indices.device)
        kept_token_indices = kept_token_indices.masked_fill(slots >= sample_kept, -1)
    return torch.cat([hidden_states[:, :num_extra_tokens], kept_patch_tokens], dim=1), kept_token_indices


@dataclass(frozen=True)
class LayerReduction:
    """How one reducing layer prunes, fuses or merges its patch tokens between attention and MLP.

    Built for each layer by :class:`PatchTracker`. Calling it is pure: it returns the reduced hidden states and a plan
    for the tracker instead of updating anything, since gradient checkpointing runs a layer twice.
    """

    method: str  # "prune", "fuse" or "merge"
    keep_rate: float
    num_extra_tokens: int  # front tokens never reduced: CLS, distillation and, once made, the fused token
    has_fused_token: bool  # the last front token is the fused token (fuse, after its first fusing layer)
    token_scores: torch.Tensor | None = None  # static ``(batch, patches)`` scores; None: rank by the attention
    sizes: torch.Tensor | None = None  # ``(batch, patches)`` input patches each token holds (merge; None: all 1)
    token_mask: torch.Tensor | None = None  # ``(batch, seq)`` False = padding (prune only); None: every token real
    count_real_tokens: bool = False  # drop_padding: each sample's kept count comes from its own real tokens

    def reduces(self, hidden_states: torch.Tensor) -> bool:
        num_patches = hidden_states.shape[1] - self.num_extra_tokens
        return num_kept_tokens(num_patches, self.keep_rate) < num_patches

    @property
    def token_signal(self) -> str | None:
        """What the layer's attention must return for it: the patch ``"score"``, the head-mean ``"keys"``, or nothing."""
        if self.method == "merge":
            return "keys"
        return "score" if self.token_scores is None else None

    def __call__(self, hidden_states: torch.Tensor, token_signal: torch.Tensor | None):
        """``(hidden_states, plan)``: ``kept_token_indices`` for prune / fuse, ``(destination, sizes)`` for merge."""
        extra = self.num_extra_tokens
        patches = hidden_states[:, extra:]
        num_kept = num_kept_tokens(patches.shape[1], self.keep_rate)
        if self.method == "merge":
            sizes = patches.new_ones(patches.shape[:2]) if self.sizes is None else self.sizes
            destination = merge_plan(token_signal[:, extra:], sizes, patches.shape[1] - num_kept)
            merged, merged_sizes = merge_weighted(patches, sizes, destination, num_kept)
            return torch.cat([hidden_states[:, :extra], merged], dim=1), (destination, merged_sizes)
        scores = token_signal if self.token_scores is None else self.token_scores
        reduced, kept_token_indices = select_tokens(
            hidden_states, scores, self.keep_rate, extra, self.token_mask, self.count_real_tokens
        )
        if self.method == "fuse":
            fused = fused_token(patches, scores, kept_token_indices)
            if self.has_fused_token:  # it absorbs this layer's dropped tokens too, and is itself never dropped
                fused = fused + reduced[:, extra - 1 : extra]
                extra -= 1
            reduced = torch.cat([reduced[:, :extra], fused, reduced[:, self.num_extra_tokens :]], dim=1)
        return reduced, kept_token_indices


class PatchTracker:
    """Per-forward bookkeeping: which input patches each patch token stands for, its static score, its size, and
    whether it is real or padding.

    Intensity and variation are computed once from the model input; after every pruning layer they must be gathered
    with the same indices as the hidden states, or later layers would rank tokens by another patch's statistic. So
    must ``token_mask`` ``(batch, extra + patches)`` (True = real token, the 2-D padding mask of the current
    sequence, ``None`` when every token is real), from which each later layer's attention mask is built.
    Prune and fuse record ``kept_patches`` (the input patch of each survivor, -1 in an empty slot); merge records
    ``source_maps`` (for each input patch, the token now carrying it) and the tokens' sizes for proportional attention
    and pooling. ``patch_indices`` gives the input patch of each starting slot when padding was dropped
    (:func:`drop_padding_tokens`); ``count_real_tokens`` then makes each sample's kept counts its own.
    """

    def __init__(
        self, batch_size: int, num_patches: int, device, static_scores: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None, num_extra_tokens: int = 0, method: str = "prune",
        patch_indices: torch.Tensor | None = None, count_real_tokens: bool = False,
    ):
        if patch_indices is None:
            patch_indices = torch.arange(num_patches, device=device).expand(batch_size, -1)
        self.patch_indices = patch_indices
        self.count_real_tokens = count_real_tokens
        self.static_scores = static_scores
        self.token_mask = token_mask
        self.num_extra_tokens = num_extra_tokens
        self.method = method
        self.has_fused_token = False
        self.sizes = None
        self.kept_patches = ()
        self.source_maps = ()

    def scores_for_next_layer(self, token_score: str) -> torch.Tensor | None:
        """Scores of the current patch tokens, or ``None`` when the layer must score them by its own attention."""
        if token_score == "attention":
            return None
        if token_score == "random":
            return torch.rand(self.patch_indices.shape, device=self.patch_indices.device)
        return self.static_scores

    def layer_reduction(self, keep_rate: float, token_score: str) -> LayerReduction:
        return LayerReduction(
            self.method, keep_rate, self.num_extra_tokens, self.has_fused_token,
            self.scores_for_next_layer(token_score), self.sizes, self.token_mask, self.count_real_tokens,
        )

    def attention_mask(self, attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """The mask for the next layer: once tokens are merged, plus ToMe's proportional attention, log(size)."""
        if self.sizes is None:
            return attention_mask
        bias = proportional_attention_bias(self.sizes, self.num_extra_tokens, dtype)
        return bias if attention_mask is None else attention_mask + bias

    def mean_patch_token(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Mean over the real input patches: a merged token counts as many times as it holds patches, padding not."""
        patches = hidden_states[:, self.num_extra_tokens :]
        if self.sizes is not None:
            weights = self.sizes
        elif self.token_mask is not None:
            weights = self.token_mask[:, self.num_extra_tokens :]
        else:
            return patches.mean(dim=1)
        weights = weights.to(patches.dtype).unsqueeze(-1)
        return (patches * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def update(self, plan):
        """Record one reducing layer's plan; ``None`` means it kept every token (keep rate too high to drop one)."""
        if self.method == "merge":
            source = self.source_maps[-1] if self.source_maps else self.patch_indices
            if plan is not None:
                destination, self.sizes = plan
                source = destination.gather(1, source)
            self.source_maps += (source,)
            return
        if plan is not None:
            index = plan.clamp(min=0) if self.count_real_tokens else plan  # -1: a slot count_real_tokens emptied
            self.patch_indices = self.patch_indices.gather(1, index)
            if self.static_scores is not None:
                self.static_scores = self.static_scores.gather(1, index)
            if self.token_mask is not None:
                extra, patches = self.token_mask[:, : self.num_extra_tokens], self.token_mask[:, self.num_extra_tokens :]
                patches = patches.gather(1, index)
                if self.count_real_tokens:
                    patches = patches & (plan >= 0)
                    self.patch_indices = self.patch_indices.masked_fill(~patches, -1)
                self.token_mask = torch.cat([extra, patches], dim=1)
            if self.method == "fuse" and not self.has_fused_token:
                self.has_fused_token, self.num_extra_tokens = True, self.num_extra_tokens + 1
        self.kept_patches += (self.patch_indices,)


_PRUNING_FIELDS = ("keep_rate", "pruning_layers", "token_score", "token_reduction", "num_hidden_layers", "drop_padding")


class PruningConfigMixin:
    """Validation of ``keep_rate``, ``pruning_layers`` and ``token_score`` for a transformers config class.

    Fields are validated at construction and on every later assignment (``from_pretrained(..., keep_rate=x)`` and
    ``set_keep_rate`` assign after ``__init__``); a refused value leaves the config unchanged. ``pruning_layers=None``
    (the default, and what a stock checkpoint's config gives) becomes ``default_pruning_layers(num_hidden_layers)``.
    """

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.pruning_layers is None:
            self.pruning_layers = default_pruning_layers(self.num_hidden_layers)
        elif isinstance(self.pruning_layers, tuple):
            self.pruning_layers = list(self.pruning_layers)
        self._validate_pruning()

    def __setattr__(self, name, value):
        if name not in _PRUNING_FIELDS or not getattr(self, "_post_init_done", False):
            return super().__setattr__(name, value)
        previous = getattr(self, name)
        super().__setattr__(name, value)
        try:
            self._validate_pruning()
        except ValueError:
            super().__setattr__(name, previous)
            raise

    def _validate_pruning(self):
        validate_pruning_config(self.keep_rate, self.pruning_layers, self.token_score, self.num_hidden_layers)
        validate_token_reduction(self.token_reduction, self.token_score)
        validate_drop_padding(self.drop_padding, self.token_reduction)


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
        attn_output, _, token_signal = self.attention(self.layernorm_before(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self.residual_dropout(attn_output)
        plan = None
        if reduces:
            hidden_states, plan = reduction(hidden_states, token_signal)
        hidden_states = hidden_states + self.residual_dropout(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, plan


class PrunedModelMixin:
    """What both pruned model families share: run-time keep rate, input checks, the pruning loop, saving.

    A model using it defines ``num_extra_tokens``, ``patch_layout``, ``layers`` (on the base model) and
    ``remote_code_auto_map``.
    """

    remote_code_auto_map: dict

    def set_keep_rate(self, keep_rate: float):
        """Change the keep rate of every pruning layer in place (validated); used by the keep-rate schedule. For one
        call only, pass ``keep_rate`` to the forward instead."""
        self.config.keep_rate = keep_rate

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

    def check_attention_mask(self, attention_mask, hidden_states, keep_rate):
        """A pruned sequence needs a per-token padding mask it can gather; name the layout when the mask is not one."""
        if attention_mask is None:
            return None
        expected = tuple(hidden_states.shape[:2])
        if attention_mask.dim() != 2 or tuple(attention_mask.shape) != expected:
            if attention_mask.dim() == 4 and keep_rate == 1.0:
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

    def run_layers(self, hidden_states, input_values, attention_mask=None, keep_rate=None, **kwargs):
        """Run every layer, reducing tokens in ``config.pruning_layers`` at ``keep_rate`` (the config's when
        ``None``); returns the hidden states and the :class:`PatchTracker` (``kept_patches`` or ``source_maps``,
        token sizes).

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
        pruning = keep_rate < 1.0
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
            attention_mask = self.check_attention_mask(attention_mask, hidden_states, keep_rate)
        if pruning and attention_mask is not None and config.token_reduction != "prune":
            raise ValueError(
                f"attention_mask is not supported with token_reduction={config.token_reduction!r} while reducing "
                "(keep_rate < 1): a padded token must never be fused or merged into a real one, and only pruning "
                "carries the mask. Use token_reduction='prune', keep_rate=1.0, or call the model without a mask."
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
            config.token_reduction, patch_indices, config.drop_padding,
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
        """
        outputs = self.base_model(
            input_values,
            attention_mask=attention_mask,
            output_kept_patches=output_kept_patches,
            keep_rate=keep_rate,
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

"""TopK token pruning: the one novel piece that both pruned models call.

A pruning layer scores the patch tokens, keeps the ``ceil(n * keep_rate)`` best ones and drops the rest before its
MLP. Extra tokens (CLS, distillation) sit at the front of the sequence and are never pruned. This file is copied next
to every saved model as remote code, so it imports nothing but ``torch``; the two mixins at the end hold what the
pruned configs and models share.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


TOKEN_SCORES = ("attention", "intensity", "variation", "random")

# Absorbs float error in n * keep_rate (100 * 0.7 == 70.00000000000001) so the ceil rule gives the exact answer.
_CEIL_TOLERANCE = 1e-6


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

    def frequency_major_index(self, patch_indices: torch.Tensor) -> torch.Tensor:
        """Token indices re-expressed on the (frequency, time) grid, the orientation spectrograms are drawn in."""
        if not self.time_major:
            return patch_indices
        time, frequency = patch_indices // self.num_frequency_patches, patch_indices % self.num_frequency_patches
        return frequency * self.num_time_patches + time


def cls_attention_score(query: torch.Tensor, key: torch.Tensor, scaling: float, num_extra_tokens: int):
    """Head-mean attention of the CLS query over the patch keys (paper eq. 2b), from ``(batch, heads, seq, dim)``.

    Only the CLS row of ``softmax(QK^T)`` is formed, so this costs O(n*d) and never needs the eager attention matrix.
    """
    cls_logits = torch.matmul(query[:, :, :1], key.transpose(-1, -2)) * scaling
    cls_attention = cls_logits.float().softmax(dim=-1)[:, :, 0, num_extra_tokens:]
    return cls_attention.mean(dim=1)


def cls_attention_score_from_weights(attention_weights: torch.Tensor, num_extra_tokens: int):
    """The same score read from a full ``(batch, heads, seq, seq)`` attention matrix (eager attention)."""
    return attention_weights[:, :, 0, num_extra_tokens:].float().mean(dim=1)


def attention_with_received_score(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float, num_extra_tokens: int,
    chunk_size: int = 128, dropout: float = 0.0,
):
    """Attention output ``(batch, seq, heads, dim)`` and the attention each patch receives (paper eq. 2a).

    The score averages ``softmax(QK^T)`` over heads and patch queries, with the softmax over all keys. Fused SDPA never
    returns those probabilities, and recomputing them costs as much again as the attention; so a pruning layer forms
    them once, ``chunk_size`` queries at a time (O(n * chunk_size) memory per head, never the n x n matrix), and uses
    them for both the output and the score. ``dropout`` (training only) applies to the output, not to the score.
    """
    key_transposed = key.transpose(-1, -2)
    outputs = []
    received = query.new_zeros(query.shape[0], query.shape[1], key.shape[2], dtype=torch.float32)
    for start in range(0, query.shape[2], chunk_size):
        logits = torch.matmul(query[:, :, start : start + chunk_size], key_transposed) * scaling
        probabilities = logits.float().softmax(dim=-1)
        dropped = F.dropout(probabilities, p=dropout) if dropout > 0.0 else probabilities
        outputs.append(torch.matmul(dropped.to(value.dtype), value))
        received += probabilities[:, :, max(num_extra_tokens - start, 0) :].sum(dim=2)
    num_patch_queries = query.shape[2] - num_extra_tokens
    score = received[:, :, num_extra_tokens:].mean(dim=1) / num_patch_queries
    return torch.cat(outputs, dim=2).transpose(1, 2), score


def received_attention_score_from_weights(attention_weights: torch.Tensor, num_extra_tokens: int):
    """The same score read from a full ``(batch, heads, seq, seq)`` attention matrix (eager attention)."""
    return attention_weights[:, :, num_extra_tokens:, num_extra_tokens:].float().mean(dim=(1, 2))


def select_tokens(hidden_states: torch.Tensor, scores: torch.Tensor, keep_rate: float, num_extra_tokens: int):
    """Keep the extra tokens and the top ``ceil(n * keep_rate)`` patch tokens of each sample.

    Returns the pruned ``hidden_states`` and ``kept_token_indices`` ``(batch, k)``: positions among the current
    patch tokens, in descending score order, which the caller composes to map survivors back to input patches.
    """
    num_kept = num_kept_tokens(scores.shape[1], keep_rate)
    kept_token_indices = scores.topk(num_kept, dim=1).indices
    gather_index = (kept_token_indices + num_extra_tokens).unsqueeze(-1).expand(-1, -1, hidden_states.shape[-1])
    kept_patch_tokens = hidden_states.gather(1, gather_index)
    return torch.cat([hidden_states[:, :num_extra_tokens], kept_patch_tokens], dim=1), kept_token_indices


class PatchTracker:
    """Per-forward bookkeeping: which input patch each surviving token came from, and its static score.

    Intensity and variation are computed once from the model input; after every pruning layer they must be gathered
    with the same indices as the hidden states, or later layers would rank tokens by another patch's statistic.
    """

    def __init__(self, batch_size: int, num_patches: int, device, static_scores: torch.Tensor | None = None):
        self.patch_indices = torch.arange(num_patches, device=device).expand(batch_size, -1)
        self.static_scores = static_scores
        self.kept_patches = ()

    def scores_for_next_layer(self, token_score: str) -> torch.Tensor | None:
        """Scores of the current patch tokens, or ``None`` when the layer must score them by its own attention."""
        if token_score == "attention":
            return None
        if token_score == "random":
            return torch.rand(self.patch_indices.shape, device=self.patch_indices.device)
        return self.static_scores

    def update(self, kept_token_indices: torch.Tensor | None):
        """Record one pruning layer; ``None`` means the layer kept every token (keep rate too high to drop one)."""
        if kept_token_indices is not None:
            self.patch_indices = self.patch_indices.gather(1, kept_token_indices)
            if self.static_scores is not None:
                self.static_scores = self.static_scores.gather(1, kept_token_indices)
        self.kept_patches += (self.patch_indices,)


_PRUNING_FIELDS = ("keep_rate", "pruning_layers", "token_score", "num_hidden_layers")


class PruningConfigMixin:
    """Validation of ``keep_rate``, ``pruning_layers`` and ``token_score`` for a transformers config class.

    Fields are validated at construction and on every later assignment (``from_pretrained(..., keep_rate=x)`` and
    ``set_keep_rate`` assign after ``__init__``); a refused value leaves the config unchanged.
    """

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
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


class PrunedModelMixin:
    """What both pruned model families share: run-time keep rate, input checks, the pruning loop, saving.

    A model using it defines ``num_extra_tokens``, ``patch_layout``, ``layers`` (on the base model) and
    ``remote_code_auto_map``.
    """

    remote_code_auto_map: dict

    def set_keep_rate(self, keep_rate: float):
        """Change the keep rate of every pruning layer in place (validated); used by the keep-rate schedule."""
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
        if not torch.isfinite(input_values).all():
            raise ValueError(
                "input_values contains NaN or infinite values: check the audio (empty, NaN or clipped samples) and the "
                "feature extractor's normalisation before calling the model."
            )

    def run_layers(self, hidden_states, input_values, attention_mask=None, **kwargs):
        """Run every layer, pruning in ``config.pruning_layers``; returns the hidden states and ``kept_patches``."""
        config = self.config
        pruning = config.keep_rate < 1.0
        if pruning and attention_mask is not None:
            raise ValueError(
                "attention_mask is not supported while pruning (keep_rate < 1): the inputs are fixed-length "
                "spectrograms, so call the model without it."
            )
        static_scores = None
        if config.token_score in ("intensity", "variation"):
            intensity, variation = self.patch_layout.patch_statistics(input_values)
            static_scores = intensity if config.token_score == "intensity" else variation
        num_patches = hidden_states.shape[1] - self.num_extra_tokens
        tracker = PatchTracker(hidden_states.shape[0], num_patches, hidden_states.device, static_scores)

        for index, layer in enumerate(self.layers):
            if pruning and index in config.pruning_layers:
                token_scores = tracker.scores_for_next_layer(config.token_score)
                hidden_states, kept_token_indices = layer(
                    hidden_states, attention_mask, keep_rate=config.keep_rate, token_scores=token_scores, **kwargs
                )
                tracker.update(kept_token_indices)
            else:
                hidden_states, _ = layer(hidden_states, attention_mask, **kwargs)
                if index in config.pruning_layers:
                    tracker.update(None)
        return hidden_states, tracker.kept_patches

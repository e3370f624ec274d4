"""Per-forward bookkeeping of a pruned model: what each patch token stands for, and each reducing layer's inputs.

Remote code: torch only.
"""

from dataclasses import dataclass

import torch

from .method_merge import proportional_attention_bias
from .reduction import TokenReduction
from .selection import fewest_kept_tokens


@dataclass(frozen=True)
class LayerReduction:
    """How one reducing layer reduces its patch tokens between attention and MLP: its method and what it needs.

    Built for each layer by :class:`PatchTracker`. Calling it is pure: it returns the reduced hidden states and a plan
    for the tracker instead of updating anything, since gradient checkpointing runs a layer twice.
    """

    method: TokenReduction
    keep_rate: float
    num_extra_tokens: int  # front tokens never reduced: CLS, distillation and those the method added
    num_added_tokens: int  # of which the method added (EViT's fused token, after its first fusing layer)
    token_scores: torch.Tensor | None = None  # static ``(batch, patches)`` scores; None: rank by the attention
    sizes: torch.Tensor | None = None  # ``(batch, patches)`` input patches each token holds (merge; None: all 1)
    token_mask: torch.Tensor | None = None  # ``(batch, seq)`` False = padding; None: every token real
    # drop_padding or keep_mass: each sample's kept count comes from its own real tokens, -1 marking empty slots
    count_real_tokens: bool = False
    keep_mass: float | None = None  # the per-sample keep policy (None: the fixed keep rate)
    min_keep_rate: float | None = None  # its floor

    def reduces(self, hidden_states: torch.Tensor) -> bool:
        num_patches = hidden_states.shape[1] - self.num_extra_tokens
        return fewest_kept_tokens(num_patches, self.keep_rate, self.keep_mass, self.min_keep_rate) < num_patches

    @property
    def token_signal(self) -> str | None:
        """What the layer's attention must return: the method's signal, none when static scores rank the tokens."""
        return self.method.signal if self.token_scores is None else None

    def __call__(self, hidden_states: torch.Tensor, token_signal: torch.Tensor | None):
        return self.method.reduce(self, hidden_states, token_signal)


class PatchTracker:
    """Per-forward bookkeeping: which input patches each patch token stands for, its static score, its size, and
    whether it is real or padding.

    Intensity and variation are computed once from the model input; after every reducing layer its method applies
    the layer's plan to them as to the hidden states, or later layers would rank tokens by another patch's statistic.
    So must ``token_mask`` ``(batch, extra + patches)`` (True = real token, the 2-D padding mask of the current
    sequence, ``None`` when every token is real), from which each later layer's attention mask is built.
    Methods that keep survivors record ``kept_patches`` (the input patch of each survivor, -1 in an empty slot);
    merging records ``source_maps`` (for each input patch, the token now carrying it) and the tokens' ``sizes`` for
    proportional attention and pooling. ``patch_indices`` gives the input patch of each starting slot when padding was
    dropped (:func:`selection.drop_padding_tokens`); ``count_real_tokens`` (``drop_padding``) makes each sample's kept
    counts its own, as ``keep_mass`` (the per-sample keep policy, with its floor ``min_keep_rate``) does: a sample
    keeping fewer than the batch's largest count gets masked empty slots.
    """

    def __init__(
        self, batch_size: int, num_patches: int, device, static_scores: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None, num_extra_tokens: int = 0, method: TokenReduction | None = None,
        patch_indices: torch.Tensor | None = None, count_real_tokens: bool = False, keep_mass: float | None = None,
        min_keep_rate: float | None = None,
    ):
        if patch_indices is None:
            patch_indices = torch.arange(num_patches, device=device).expand(batch_size, -1)
        self.patch_indices = patch_indices
        self.keep_mass = keep_mass
        self.min_keep_rate = min_keep_rate
        self.count_real_tokens = count_real_tokens or keep_mass is not None
        self.static_scores = static_scores
        self.token_mask = token_mask
        self.num_extra_tokens = num_extra_tokens
        self.num_added_tokens = 0
        self.method = method
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
            self.method, keep_rate, self.num_extra_tokens, self.num_added_tokens,
            self.scores_for_next_layer(token_score), self.sizes, self.token_mask, self.count_real_tokens,
            self.keep_mass, self.min_keep_rate,
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
        """Record one reducing layer's plan through its method; ``None`` means it kept every token."""
        self.method.record(self, plan)

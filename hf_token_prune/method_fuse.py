"""fuse (EViT, Liang et al. 2022): prune, and add the dropped tokens' score-weighted sum as one extra token.

The fused token joins the later layers, absorbs what they drop and is itself never dropped (nor pooled).
"""

import torch

from .method_prune import Prune


def fused_token(patch_tokens: torch.Tensor, scores: torch.Tensor, kept_token_indices: torch.Tensor) -> torch.Tensor:
    """EViT's inattentive token ``(batch, 1, dim)``: the sum of the dropped patch tokens weighted by their scores.

    ``kept_token_indices`` ``(batch, k)`` are the kept positions among the ``(batch, n, dim)`` patch tokens; zeroing
    their weights and taking one weighted sum over all ``n`` avoids gathering the complement.
    """
    weights = scores.scatter(1, kept_token_indices, 0.0).to(patch_tokens.dtype)
    return torch.matmul(weights.unsqueeze(1), patch_tokens)


class Fuse(Prune):
    name = "fuse"
    summary = "fuse adds EViT's fused token"
    attention_only = (
        "EViT's fused token weights each dropped token by its attention score, and a {score} value is no such "
        "weight: use token_score='attention', or token_reduction='prune' to rank tokens by {score}."
    )
    supports_padding = False
    supports_keep_mass = False
    keep_mass_refusal = (
        "a clip that keeps fewer tokens than the batch's largest count leaves masked empty slots, and EViT's fused "
        "token carries no padding mask (it would sum those slots into the fused token)."
    )
    added_tokens = 1

    def reduce(self, layer, hidden_states, signal):
        extra = layer.num_extra_tokens
        scores = self.scores(layer, signal)
        reduced, kept_token_indices = super().reduce(layer, hidden_states, signal)
        fused = fused_token(hidden_states[:, extra:], scores, kept_token_indices)
        if layer.num_added_tokens:  # the fused token absorbs this layer's dropped tokens too
            fused = fused + reduced[:, extra - 1 : extra]
            extra -= 1
        return torch.cat([reduced[:, :extra], fused, reduced[:, layer.num_extra_tokens :]], dim=1), kept_token_indices

    def record(self, tracker, plan):
        super().record(tracker, plan)
        if plan is not None and not tracker.num_added_tokens:
            tracker.num_added_tokens = self.added_tokens
            tracker.num_extra_tokens += self.added_tokens

    def macs(self, num_patches, num_kept, hidden_size, head_dim):
        return num_patches * hidden_size  # the fused token's weighted sum over the layer's patch tokens


FUSE = Fuse()

"""prune: keep the ``ceil(n * keep_rate)`` best-scored patch tokens and drop the rest (the paper's TopK pruning)."""

import torch

from .reduction import TokenReduction
from .selection import select_tokens


class Prune(TokenReduction):
    name = "prune"
    summary = "prune drops tokens"
    supports_padding = True

    def scores(self, layer, signal):
        """The layer's ranking: the attention's score, or the static score the tracker carries."""
        return signal if layer.token_scores is None else layer.token_scores

    def reduce(self, layer, hidden_states, signal):
        """Returns ``kept_token_indices`` ``(batch, k)`` as the plan (see :func:`selection.select_tokens`)."""
        return select_tokens(
            hidden_states, self.scores(layer, signal), layer.keep_rate, layer.num_extra_tokens, layer.token_mask,
            layer.count_real_tokens,
        )

    def record(self, tracker, plan):
        if plan is not None:
            index = plan.clamp(min=0) if tracker.count_real_tokens else plan  # -1: a slot count_real_tokens emptied
            tracker.patch_indices = tracker.patch_indices.gather(1, index)
            if tracker.static_scores is not None:
                tracker.static_scores = tracker.static_scores.gather(1, index)
            if tracker.token_mask is not None:
                extra = tracker.num_extra_tokens
                front, patches = tracker.token_mask[:, :extra], tracker.token_mask[:, extra:].gather(1, index)
                if tracker.count_real_tokens:
                    patches = patches & (plan >= 0)
                    tracker.patch_indices = tracker.patch_indices.masked_fill(~patches, -1)
                tracker.token_mask = torch.cat([front, patches], dim=1)
        tracker.kept_patches += (tracker.patch_indices,)


PRUNE = Prune()

"""prune: keep the ``ceil(n * keep_rate)`` best-scored patch tokens and drop the rest (the paper's TopK pruning)."""

import torch

from .reduction import TokenReduction
from .selection import select_tokens


class Prune(TokenReduction):
    name = "prune"
    summary = "prune drops tokens"
    supports_padding = True
    supports_keep_mass = True

    def scores(self, layer, signal):
        """The layer's ranking: the attention's score, or the static score the tracker carries."""
        return signal if layer.token_scores is None else layer.token_scores

    def reduce(self, layer, hidden_states, signal):
        """Returns ``kept_token_indices`` ``(batch, k)`` as the plan (see :func:`selection.select_tokens`)."""
        return select_tokens(
            hidden_states, self.scores(layer, signal), layer.keep_rate, layer.num_extra_tokens, layer.token_mask,
            layer.count_real_tokens, layer.keep_mass, layer.min_keep_rate,
        )

    def record(self, tracker, plan):
        if plan is not None:
            index = plan.clamp(min=0) if tracker.count_real_tokens else plan  # -1: a slot count_real_tokens emptied
            tracker.patch_indices = tracker.patch_indices.gather(1, index)
            if tracker.static_scores is not None:
                tracker.static_scores = tracker.static_scores.gather(1, index)
            extra = tracker.num_extra_tokens
            if tracker.count_real_tokens:
                filled = plan >= 0
                if tracker.token_mask is not None:
                    filled = filled & tracker.token_mask[:, extra:].gather(1, index)
                tracker.patch_indices = tracker.patch_indices.masked_fill(~filled, -1)
                # A batch whose samples all fill every slot needs no mask (a clip alone never does); a traced graph
                # cannot ask, so it masks whenever the counts may vary.
                tracing = torch.compiler.is_compiling()
                has_empty_slots = tracker.keep_mass is not None if tracing else not bool(filled.all())
                if tracker.token_mask is not None or has_empty_slots:
                    tracker.token_mask = torch.cat([filled.new_ones(filled.shape[0], extra), filled], dim=1)
            elif tracker.token_mask is not None:
                patches = tracker.token_mask[:, extra:].gather(1, index)
                tracker.token_mask = torch.cat([tracker.token_mask[:, :extra], patches], dim=1)
        tracker.kept_patches += (tracker.patch_indices,)


PRUNE = Prune()

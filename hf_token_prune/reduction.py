"""What a token reduction method is: the protocol every method implements, in ToMe's shape.

A reducing layer runs its attention, then hands the method the signal it asked for (``signal``: the patch ``"score"``
the layer ranks by, the head-mean ``"keys"``, or nothing) and lets it plan and apply one reduction to the hidden
states (:meth:`TokenReduction.reduce`, pure: gradient checkpointing runs a layer twice). The method then applies the
same plan to every per-token tensor the forward carries (:meth:`TokenReduction.record`: input-patch indices, static
scores, token sizes, the padding mask). It also states what it supports and what it costs, so that config
validation, the MAC counter, the sweep and the commands ask it instead of branching on its name.

Methods live in their own modules (``method_prune.py``, ``method_fuse.py``, ``method_merge.py``) and are listed in
``token_reductions.py``. Remote code: torch only.
"""

import torch


class TokenReduction:
    """One way of reducing the patch tokens of a layer between its attention and its MLP.

    Class attributes state what the method needs and supports; subclasses implement :meth:`reduce` and
    :meth:`record` and, when the reduction itself multiplies, :meth:`macs`.
    """

    name: str
    summary: str  # one phrase for lists of choices, e.g. "prune drops tokens"
    # What the layer's attention must return when the tokens are ranked by attention: "score", "keys" or None.
    signal: str | None = "score"
    # Why any token_score but "attention" is refused ({score} is filled in); None: every score works.
    attention_only: str | None = None
    # Whether a padding mask survives the reduction (a mixed batch's padding, drop_padding): a padded token must
    # never be fused or merged into a real one.
    supports_padding: bool = False
    # Whether each sample may keep its own count (``keep_mass``): a batch then has masked empty slots, so the method
    # must carry the padding mask and rank by a score; ``keep_mass_refusal`` says why not when it cannot.
    supports_keep_mass: bool = False
    keep_mass_refusal: str = "the method does not declare per-sample kept counts (TokenReduction.supports_keep_mass)."
    # Front tokens the method adds, never reduced, from its first reducing layer on (EViT's fused token).
    added_tokens: int = 0
    # Whether the forward's provenance output is ``source_maps`` (groups) rather than ``kept_patches`` (survivors).
    records_source_maps: bool = False

    def reduce(self, layer, hidden_states: torch.Tensor, signal: torch.Tensor | None):
        """``(hidden_states, plan)`` for one layer; ``layer`` is the :class:`tracker.LayerReduction` of this layer
        (keep rate, extra tokens, static scores, sizes, padding mask)."""
        raise NotImplementedError

    def record(self, tracker, plan):
        """Apply one reducing layer's ``plan`` to every per-token tensor of ``tracker``; ``plan`` is ``None`` when the
        layer kept every token (a keep rate too high to drop one), and the tracker still records the layer."""
        raise NotImplementedError

    def macs(self, num_patches: int, num_kept: int, hidden_size: int, head_dim: int) -> int:
        """Multiply-accumulates of the reduction itself (beyond scoring) in a layer reducing ``num_patches`` to
        ``num_kept`` patch tokens, per sample."""
        return 0

    def __repr__(self):
        return f"<token reduction {self.name!r}>"

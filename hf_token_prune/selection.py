"""Which patch tokens survive: the ceil rule of the kept counts, the per-sample keep_mass policy, top-k selection and
dropping padding up front.

Pure tensor functions with no model knowledge; remote code, so torch only.
"""

import math

import torch


# Absorbs float error in n * keep_rate (100 * 0.7 == 70.00000000000001) so the ceil rule gives the exact answer.
_CEIL_TOLERANCE = 1e-6


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


def fewest_kept_tokens(num_tokens: int, keep_rate: float, keep_mass: float | None = None,
                       min_keep_rate: float | None = None) -> int:
    """The fewest patch tokens a layer receiving ``num_tokens`` may keep: ``ceil(num_tokens * keep_rate)`` at a fixed
    rate, the floor ``ceil(num_tokens * min_keep_rate)`` (one token when ``None``) under ``keep_mass``. A layer reduces
    when this is below ``num_tokens``."""
    if keep_mass is None:
        return num_kept_tokens(num_tokens, keep_rate)
    return num_kept_tokens(num_tokens, 0.0 if min_keep_rate is None else min_keep_rate)


def mass_kept_counts(scores: torch.Tensor, real_tokens: torch.Tensor | None, keep_mass: float) -> torch.Tensor:
    """``(batch, 1)`` float64: per sample, the fewest best-scored real tokens whose normalised mass reaches
    ``keep_mass``.

    A token's mass is its score over the sum of its sample's real scores (``real_tokens`` ``(batch, n)``, ``None``: all
    real); when a sample's smallest real score is negative every score is first shifted by it, so masses are never
    negative. A sample with no mass (all scores equal after the shift) counts its real tokens as equal masses. The
    prefix sums run in float64 over the sorted masses, padding (mass 0) last, so a sample's count in a batch is that
    of the sample alone; the total is the last prefix sum, not a separate reduction.
    """
    scores = scores.double()
    if real_tokens is None:
        real_tokens = torch.ones_like(scores, dtype=torch.bool)
    shift = scores.masked_fill(~real_tokens, float("inf")).amin(dim=1, keepdim=True).clamp(max=0.0)
    mass = (scores - shift).masked_fill(~real_tokens, 0.0)
    mass = torch.where(mass.sum(dim=1, keepdim=True) > 0, mass, real_tokens.double())
    cumulative = mass.sort(dim=1, descending=True).values.cumsum(dim=1)
    return (cumulative < keep_mass * cumulative[:, -1:]).sum(dim=1, keepdim=True).double() + 1


def select_tokens(
    hidden_states: torch.Tensor, scores: torch.Tensor, keep_rate: float, num_extra_tokens: int,
    token_mask: torch.Tensor | None = None, count_real_tokens: bool = False, keep_mass: float | None = None,
    min_keep_rate: float | None = None,
):
    """Keep the extra tokens and the top ``ceil(n * keep_rate)`` patch tokens of each sample.

    Returns the pruned ``hidden_states`` and ``kept_token_indices`` ``(batch, k)``: positions among the current
    patch tokens, in descending score order, which the caller composes to map survivors back to input patches.
    With a ``token_mask`` ``(batch, seq)`` padded patches rank last, so one is kept only when no real one is left.

    With ``count_real_tokens`` each sample keeps a count of its own, ``n`` being its real tokens (all of them
    without a mask): ``ceil(n * keep_rate)`` (``drop_padding``), or under ``keep_mass`` the fewest tokens whose mass
    reaches it (:func:`mass_kept_counts`) clamped to ``[ceil(n * min_keep_rate), ceil(n * keep_rate)]``. ``k`` is then
    the batch's largest count and a sample's slots beyond its own count are empty (index -1). A traced graph
    (torch.compile, torch.export) cannot size a tensor by the data: there ``k`` is the ceiling of the whole sequence,
    ``ceil(n_seq * keep_rate)``, and the empty slots are only marked.
    """
    real_tokens = None if token_mask is None else token_mask[:, num_extra_tokens:]
    if real_tokens is not None:
        scores = scores.float().masked_fill(~real_tokens, float("-inf"))
    num_kept = num_kept_tokens(scores.shape[1], keep_rate)
    sample_kept = None
    if count_real_tokens:
        # float64: n * keep_rate in float32 can overshoot an integer by more than the tolerance (1000 * 0.3)
        if real_tokens is None:
            num_real = torch.full((scores.shape[0], 1), float(scores.shape[1]), device=scores.device).double()
        else:
            num_real = real_tokens.sum(dim=1, keepdim=True).double()
        sample_kept = torch.ceil(num_real * keep_rate - _CEIL_TOLERANCE).clamp(min=1)
        if keep_mass is not None:
            floor = torch.ceil(num_real * (min_keep_rate or 0.0) - _CEIL_TOLERANCE).clamp(min=1)
            sample_kept = torch.maximum(torch.minimum(mass_kept_counts(scores, real_tokens, keep_mass), sample_kept),
                                        floor)
            if not torch.compiler.is_compiling():
                num_kept = int(sample_kept.max())
    kept_token_indices = scores.topk(num_kept, dim=1).indices
    gather_index = (kept_token_indices + num_extra_tokens).unsqueeze(-1).expand(-1, -1, hidden_states.shape[-1])
    kept_patch_tokens = hidden_states.gather(1, gather_index)
    if sample_kept is not None:
        slots = torch.arange(num_kept, device=kept_token_indices.device)
        kept_token_indices = kept_token_indices.masked_fill(slots >= sample_kept, -1)
    return torch.cat([hidden_states[:, :num_extra_tokens], kept_patch_tokens], dim=1), kept_token_indices


def kept_counts_per_clip(kept_patches) -> torch.LongTensor:
    """``(batch, num_pruning_layers)``: each clip's patch tokens left after each pruning layer, from a forward's
    ``kept_patches`` (its filled, non -1 entries; under ``keep_mass`` or ``drop_padding`` clips keep counts of their
    own)."""
    return torch.stack([(kept >= 0).sum(dim=1) for kept in kept_patches], dim=1)


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

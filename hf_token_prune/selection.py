"""Which patch tokens survive: the ceil rule of the kept counts, top-k selection and dropping padding up front.

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

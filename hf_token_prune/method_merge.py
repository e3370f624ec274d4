"""merge (ToMe, Bolya et al. 2023): merge similar patch tokens instead of dropping any.

Bipartite soft matching on the attention keys pairs similar tokens, which are replaced by their size-weighted mean;
later attention adds ``log(size)`` to the logits (proportional attention). A merge is described by one index plan,
``destination`` ``(batch, n)``: the output position of each input token. It is computed once and then applied to every
per-token tensor (hidden states, sizes, source maps) by a ``scatter_add``, so a layer never loops over samples or
tokens. Remote code: torch only.
"""

import torch

from .reduction import TokenReduction
from .selection import num_kept_tokens


def merge_by_plan(tokens: torch.Tensor, destination: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """Sum the ``(batch, n, ...)`` ``tokens`` that a plan sends to the same output: ``(batch, num_outputs, ...)``."""
    index = destination.view(*destination.shape, *(1,) * (tokens.dim() - 2)).expand_as(tokens)
    return tokens.new_zeros(tokens.shape[0], num_outputs, *tokens.shape[2:]).scatter_add(1, index, tokens)


def merge_weighted(tokens: torch.Tensor, sizes: torch.Tensor, destination: torch.Tensor, num_outputs: int):
    """Size-weighted mean of the tokens merged together, and the merged sizes (how many input patches each holds)."""
    merged_sizes = merge_by_plan(sizes, destination, num_outputs)
    weighted = merge_by_plan(tokens * sizes.unsqueeze(-1).to(tokens.dtype), destination, num_outputs)
    return weighted / merged_sizes.unsqueeze(-1).to(tokens.dtype), merged_sizes


def bipartite_matching(metric: torch.Tensor, num_merged: int) -> torch.Tensor:
    """One round of ToMe's bipartite soft matching on ``(batch, n, c)`` token features; returns ``destination``.

    The tokens alternate between sets A (even positions) and B (odd); each A token draws an edge to its most similar B
    token (cosine similarity), the ``num_merged`` most similar edges are kept and their A tokens merge into their B
    partners (several may share one). Survivors keep their relative order, so output position = rank among them.
    ``num_merged`` must be at most ``ceil(n / 2)`` (the size of A) and ``n >= 2``.
    """
    metric = metric / metric.norm(dim=-1, keepdim=True)
    similarity = torch.matmul(metric[:, ::2], metric[:, 1::2].transpose(1, 2))
    best_similarity, partner = similarity.max(dim=-1)
    merged = best_similarity.argsort(dim=-1, descending=True, stable=True)[:, :num_merged]  # indices into A
    merged_positions = 2 * merged
    survives = torch.ones_like(metric[..., 0], dtype=torch.bool).scatter(1, merged_positions, False)
    rank = survives.long().cumsum(dim=1) - 1
    partner_positions = 2 * partner.gather(1, merged) + 1
    return rank.scatter(1, merged_positions, rank.gather(1, partner_positions))


def merge_rounds(num_tokens: int, num_merged: int) -> list[tuple[int, int]]:
    """``(tokens, merged)`` of each bipartite round: one round merges at most set A, ``ceil(n / 2)`` tokens."""
    rounds = []
    while num_merged > 0:
        step = min(num_merged, (num_tokens + 1) // 2)
        rounds.append((num_tokens, step))
        num_tokens, num_merged = num_tokens - step, num_merged - step
    return rounds


@torch.no_grad()
def merge_plan(metric: torch.Tensor, sizes: torch.Tensor, num_merged: int) -> torch.Tensor:
    """Plan to merge ``num_merged`` of the ``(batch, n, c)`` tokens: ``destination`` ``(batch, n)``.

    Below keep rate 0.5 one round cannot merge enough, so further rounds run on the merged tokens, whose features are
    the size-weighted means of their members' (what ToMe's merged keys would be); the rounds' plans compose into one.
    """
    rounds = merge_rounds(metric.shape[1], num_merged)
    destination = torch.arange(metric.shape[1], device=metric.device).expand(metric.shape[0], -1)
    for number, (num_tokens, step) in enumerate(rounds):
        round_destination = bipartite_matching(metric, step)
        destination = round_destination.gather(1, destination)
        if number + 1 < len(rounds):
            metric, sizes = merge_weighted(metric, sizes, round_destination, num_tokens - step)
    return destination


def proportional_attention_bias(sizes: torch.Tensor, num_extra_tokens: int, dtype: torch.dtype) -> torch.Tensor:
    """ToMe's proportional attention as an additive mask ``(batch, 1, 1, seq)``: ``log(size)`` of every key.

    Extra tokens have size 1 (bias 0). Passed as the attention mask, it keeps SDPA's fused kernels.
    """
    bias = torch.cat([sizes.new_ones(sizes.shape[0], num_extra_tokens), sizes], dim=1).log()
    return bias.to(dtype)[:, None, None, :]


class Merge(TokenReduction):
    name = "merge"
    summary = "merge is ToMe's bipartite merging"
    signal = "keys"
    attention_only = (
        "ToMe pairs tokens by the similarity of their attention keys and ranks nothing, so a token score has no "
        "role: leave token_score='attention' (the default), or use token_reduction='prune' to rank tokens by {score}."
    )
    records_source_maps = True
    keep_mass_refusal = (
        "ToMe ranks no tokens, so there is no score mass to threshold, and its bipartite rounds merge one count of "
        "tokens in every sample of a batch."
    )

    def reduce(self, layer, hidden_states, signal):
        """Returns ``(destination, merged sizes)`` as the plan."""
        extra = layer.num_extra_tokens
        patches = hidden_states[:, extra:]
        num_kept = num_kept_tokens(patches.shape[1], layer.keep_rate)
        sizes = patches.new_ones(patches.shape[:2]) if layer.sizes is None else layer.sizes
        destination = merge_plan(signal[:, extra:], sizes, patches.shape[1] - num_kept)
        merged, merged_sizes = merge_weighted(patches, sizes, destination, num_kept)
        return torch.cat([hidden_states[:, :extra], merged], dim=1), (destination, merged_sizes)

    def record(self, tracker, plan):
        source = tracker.source_maps[-1] if tracker.source_maps else tracker.patch_indices
        if plan is not None:
            destination, tracker.sizes = plan
            source = destination.gather(1, source)
        tracker.source_maps += (source,)

    def macs(self, num_patches, num_kept, hidden_size, head_dim):
        """Similarity products of the matching: ``|A| x |B|`` cosine similarities of ``head_dim`` keys per round."""
        rounds = merge_rounds(num_patches, num_patches - num_kept)
        return sum((tokens + 1) // 2 * (tokens // 2) * head_dim for tokens, _ in rounds)


MERGE = Merge()

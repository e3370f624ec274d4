"""Keeping what pruning drops: EViT's fused token and ToMe's token merging, as pure tensor functions.

Pruning (``pruning.select_tokens``) drops the patch tokens it does not keep. The two peers keep their content:

* **fuse** (EViT, Liang et al. 2022): the dropped tokens' score-weighted sum becomes one extra token.
* **merge** (ToMe, Bolya et al. 2023): bipartite soft matching on the attention keys pairs similar tokens, which are
  replaced by their size-weighted mean; later attention adds ``log(size)`` to the logits (proportional attention).

A merge is described by one index plan, ``destination`` ``(batch, n)``: the output position of each input token.
It is computed once and then applied to every per-token tensor (hidden states, sizes, source maps) by a
``scatter_add``, so a layer never loops over samples or tokens. This file is copied next to saved models as remote
code: it imports nothing but ``torch``.
"""

import torch


TOKEN_REDUCTIONS = ("prune", "fuse", "merge")

_WHY_ONLY_ATTENTION = {
    "fuse": "EViT's fused token weights each dropped token by its attention score, and a {score} value is no such "
    "weight: use token_score='attention', or token_reduction='prune' to rank tokens by {score}.",
    "merge": "ToMe pairs tokens by the similarity of their attention keys and ranks nothing, so a token score has no "
    "role: leave token_score='attention' (the default), or use token_reduction='prune' to rank tokens by {score}.",
}


def validate_token_reduction(token_reduction, token_score):
    """Raise ``ValueError`` for an unknown method, or a token score the method cannot use."""
    if token_reduction not in TOKEN_REDUCTIONS:
        raise ValueError(
            f"token_reduction={token_reduction!r} is invalid: choose one of {', '.join(TOKEN_REDUCTIONS)} "
            "(prune drops tokens, fuse adds EViT's fused token, merge is ToMe's bipartite merging)."
        )
    if token_reduction != "prune" and token_score != "attention":
        reason = _WHY_ONLY_ATTENTION[token_reduction].format(score=token_score)
        raise ValueError(f"token_reduction={token_reduction!r} cannot use token_score={token_score!r}: {reason}")


def fused_token(patch_tokens: torch.Tensor, scores: torch.Tensor, kept_token_indices: torch.Tensor) -> torch.Tensor:
    """EViT's inattentive token ``(batch, 1, dim)``: the sum of the dropped patch tokens weighted by their scores.

    ``kept_token_indices`` ``(batch, k)`` are the kept positions among the ``(batch, n, dim)`` patch tokens; zeroing
    their weights and taking one weighted sum over all ``n`` avoids gathering the complement.
    """
    weights = scores.scatter(1, kept_token_indices, 0.0).to(patch_tokens.dtype)
    return torch.matmul(weights.unsqueeze(1), patch_tokens)


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

"""Fuse (EViT) and merge (ToMe): the pure functions against per-sample references written from the papers."""

import math

import pytest
import torch

from hf_token_prune.reduction import fused_token, merge_plan, merge_weighted, proportional_attention_bias


# References, one sample at a time, in plain Python over token lists ------------------------------------------------


def reference_fused_token(tokens, scores, kept):
    """EViT: the inattentive token is sum_i a_i x_i over the tokens that were not kept."""
    dropped = [i for i in range(len(tokens)) if i not in set(kept.tolist())]
    return sum((scores[i] * tokens[i] for i in dropped), torch.zeros_like(tokens[0]))


def reference_merge(tokens, sizes, metric, num_merged):
    """ToMe's bipartite soft matching, repeated while more than half must go; returns (groups, means, sizes).

    A = even positions, B = odd; every A token's edge goes to its most cosine-similar B token; the num_merged most
    similar edges merge their A token into its B partner; a group's token is the size-weighted mean of its members.
    """
    groups = [[i] for i in range(len(tokens))]
    features = [metric[i] for i in range(len(tokens))]
    weights = [float(s) for s in sizes]
    while num_merged > 0:
        step = min(num_merged, math.ceil(len(groups) / 2))
        edges = []
        for a in range(0, len(groups), 2):
            similarities = [torch.cosine_similarity(features[a], features[b], dim=0).item()
                            for b in range(1, len(groups), 2)]
            best = max(range(len(similarities)), key=lambda j: similarities[j])
            edges.append((similarities[best], a, 2 * best + 1))
        edges.sort(key=lambda edge: -edge[0])  # stable: ties keep A's order
        into = {a: b for _, a, b in edges[:step]}
        new_groups, new_features, new_weights = [], [], []
        for position in range(len(groups)):
            if position in into:
                continue
            members = [position] + [a for a, b in into.items() if b == position]
            total = sum(weights[m] for m in members)
            new_groups.append(sorted(sum((groups[m] for m in members), [])))
            new_features.append(sum(weights[m] * features[m] for m in members) / total)
            new_weights.append(total)
        groups, features, weights = new_groups, new_features, new_weights
        num_merged -= step
    means = [sum(float(sizes[i]) * tokens[i] for i in group) / sum(float(sizes[i]) for i in group) for group in groups]
    return groups, torch.stack(means), torch.tensor(weights)


# Tests --------------------------------------------------------------------------------------------------------------


def test_fused_token_is_the_score_weighted_sum_of_the_dropped_tokens():
    tokens, scores = torch.randn(3, 10, 8), torch.rand(3, 10)
    kept = scores.topk(6, dim=1).indices
    fused = fused_token(tokens, scores, kept)
    assert fused.shape == (3, 1, 8)
    for b in range(3):
        assert (fused[b, 0] - reference_fused_token(tokens[b], scores[b], kept[b])).abs().max() <= 1e-6


@pytest.mark.parametrize("num_tokens, num_merged", [(10, 1), (10, 5), (11, 6), (32, 22), (33, 32), (7, 0)])
def test_merge_matches_the_per_sample_bipartite_reference(num_tokens, num_merged):
    batch = 4
    tokens, metric = torch.randn(batch, num_tokens, 6), torch.randn(batch, num_tokens, 5)
    sizes = torch.randint(1, 4, (batch, num_tokens)).float()  # tokens merged by earlier layers weigh more
    destination = merge_plan(metric, sizes, num_merged)
    merged, merged_sizes = merge_weighted(tokens, sizes, destination, num_tokens - num_merged)
    for b in range(batch):
        groups, means, weights = reference_merge(tokens[b], sizes[b], metric[b], num_merged)
        assert [sorted((destination[b] == g).nonzero()[:, 0].tolist()) for g in range(len(groups))] == groups
        assert (merged[b] - means).abs().max() <= 1e-5
        assert torch.equal(merged_sizes[b], weights)


def test_merge_keeps_the_size_weighted_sum():
    tokens, metric, sizes = torch.randn(2, 16, 4), torch.randn(2, 16, 3), torch.rand(2, 16) + 0.5
    destination = merge_plan(metric, sizes, 9)
    merged, merged_sizes = merge_weighted(tokens, sizes, destination, 7)
    assert torch.allclose((merged * merged_sizes[..., None]).sum(1), (tokens * sizes[..., None]).sum(1), atol=1e-5)
    assert torch.allclose(merged_sizes.sum(1), sizes.sum(1))


def test_identical_tokens_merge_first():
    metric = torch.randn(1, 8, 4)
    metric[0, 4] = 3 * metric[0, 1]  # token 4 (set A) has a B twin (token 1) up to scale: cosine similarity 1
    destination = merge_plan(metric, torch.ones(1, 8), 1)
    assert destination[0, 4] == destination[0, 1] == 1
    assert destination[0].unique().numel() == 7


def test_proportional_attention_bias_is_log_size_and_zero_for_extra_tokens():
    sizes = torch.tensor([[1.0, 2.0, 5.0]])
    bias = proportional_attention_bias(sizes, 2, torch.float32)
    assert bias.shape == (1, 1, 1, 5)
    assert torch.equal(bias[0, 0, 0], torch.tensor([0.0, 0.0, 0.0, math.log(2.0), math.log(5.0)]))

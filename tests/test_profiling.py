"""The pruned forward's named profiler regions (hf_token_prune.profiling): a profile sees every one, in the right
nesting; outside a profiler and in traced graphs they are no-ops."""

import contextlib

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from conftest import tiny_pruned_classifier
from hf_token_prune.profiling import ATTENTION, MLP, REGIONS, TOKEN_SCORING, profile_region


def profiled_regions(model, inputs):
    """``{region: (calls, CPU µs)}`` of one profiled forward."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(inputs)
    return {event.key: (event.count, event.cpu_time_total) for event in prof.key_averages() if event.key in REGIONS}


@pytest.mark.parametrize(
    "family, token_reduction, attn_implementation",
    [("ast", "prune", "sdpa"), ("ast", "merge", "sdpa"), ("ast", "fuse", "eager"), ("audiomae", "prune", "sdpa"),
     ("audiomae", "prune", "eager"), ("audiomae", "merge", "sdpa")],
)  # fmt: skip
def test_a_profiled_forward_enters_every_region_of_every_layer(family, token_reduction, attn_implementation):
    # 4 layers, 2 of them reducing: attention and MLP run in every layer, scoring, reduction and bookkeeping in 2.
    model = tiny_pruned_classifier(family, num_hidden_layers=4, pruning_layers=[1, 3], keep_rate=0.5,
                                   token_reduction=token_reduction)  # fmt: skip
    model.set_attn_implementation(attn_implementation)
    regions = profiled_regions(model, torch.randn(2, 128, 64))
    calls = {name: count for name, (count, _) in regions.items()}
    assert calls.keys() == set(REGIONS)
    assert calls[ATTENTION] == calls[MLP] == 4
    # AudioMAE's fused received-attention score enters its region once per query chunk, and once to average
    expected_scoring = 2 * (2 if (family, token_reduction, attn_implementation) == ("audiomae", "prune", "sdpa") else 1)
    assert calls[TOKEN_SCORING] == expected_scoring
    assert all(calls[name] == 2 for name in REGIONS if name not in (ATTENTION, MLP, TOKEN_SCORING))
    assert regions[TOKEN_SCORING][1] < regions[ATTENTION][1]  # scoring runs inside the attention region


def test_a_forward_that_keeps_every_token_enters_only_attention_and_mlp():
    regions = profiled_regions(tiny_pruned_classifier("ast", keep_rate=1.0), torch.randn(1, 128, 64))
    assert set(regions) == {ATTENTION, MLP}


def test_regions_are_no_ops_outside_a_profiler():
    # record_function itself costs microseconds per call even with no profiler running
    assert isinstance(profile_region(ATTENTION), contextlib.nullcontext)
    with profile(activities=[ProfilerActivity.CPU]):
        assert isinstance(profile_region(ATTENTION), torch.profiler.record_function)

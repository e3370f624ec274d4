"""torch.compile(fullgraph=True) and torch.export of both pruned families equal eager, and eager keeps its input checks.

Full-graph capture is checked with the fast "eager" / "aot_eager" backends; inductor compiles take minutes on a small
machine, so one test alone uses it.
"""

import pytest
import torch

from conftest import tiny_pruned_classifier
from hf_token_prune.scores import TOKEN_SCORES


FAMILIES = ("ast", "audiomae")
# At keep rate 1.0 nothing is scored, so one token score covers it.
SETTINGS = [(1.0, "attention")] + [(0.5, score) for score in TOKEN_SCORES]
# The quick tier compiles with the paper's score; the other scores take the same graph path (make test-full).
QUICK_SETTINGS = [s if s[1] == "attention" else pytest.param(*s, marks=pytest.mark.full) for s in SETTINGS]


def small_model(family, keep_rate, token_score):
    # Two layers, both pruning: survivors of one pruning layer are gathered again in the next, inside one graph.
    return tiny_pruned_classifier(
        family, num_hidden_layers=2, pruning_layers=[0, 1], keep_rate=keep_rate, token_score=token_score
    )


def run(model, inputs, attention_mask=None):
    torch.manual_seed(3)  # the "random" score draws inside the graph: same seed, same draw
    with torch.no_grad():
        return model(inputs, attention_mask=attention_mask, output_kept_patches=True)


def padding(model, batch_size):
    """A 2-D padding mask whose last sample has only 7 real patches."""
    mask = torch.ones(batch_size, model.num_extra_tokens + model.patch_layout.num_patches, dtype=torch.long)
    mask[-1, model.num_extra_tokens + 7 :] = 0
    return mask


def assert_same(actual, expected):
    assert (actual.logits - expected.logits).abs().max() <= 1e-5
    assert len(actual.kept_patches) == len(expected.kept_patches)
    for kept_actual, kept_expected in zip(actual.kept_patches, expected.kept_patches):
        assert torch.equal(kept_actual, kept_expected)


@pytest.mark.parametrize("keep_rate, token_score", QUICK_SETTINGS)
@pytest.mark.parametrize("family", FAMILIES)
def test_torch_compile_fullgraph_static_and_dynamic_batch(family, keep_rate, token_score):
    model = small_model(family, keep_rate, token_score)
    static = torch.compile(model, fullgraph=True, backend="eager")
    inputs = torch.randn(3, 128, 64)
    assert_same(run(static, inputs), run(model, inputs))
    torch._dynamo.reset()
    # aot_eager also traces the backward-ready graph; once is enough for its cost.
    backend = "aot_eager" if (family, keep_rate, token_score) == ("ast", 0.5, "attention") else "eager"
    dynamic = torch.compile(model, fullgraph=True, backend=backend, dynamic=True)
    run(dynamic, inputs)
    # One graph serves every batch size (but 1, which dynamo specialises for any model).
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch_size in (2, 5):
            other = torch.randn(batch_size, 128, 64)
            assert_same(run(dynamic, other), run(model, other))


@pytest.mark.parametrize("keep_rate, token_score", SETTINGS)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.full
def test_torch_export_with_a_dynamic_batch_axis(family, keep_rate, token_score):
    model = small_model(family, keep_rate, token_score)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(
        model, (torch.randn(2, 128, 64),), {"output_kept_patches": True}, dynamic_shapes=({0: batch}, None)
    ).module()
    for batch_size in (1, 3):
        inputs = torch.randn(batch_size, 128, 64)
        torch.manual_seed(3)
        with torch.no_grad():
            actual = exported(inputs, output_kept_patches=True)
        assert_same(actual, run(model, inputs))


@pytest.mark.parametrize("keep_rate", [1.0, 0.5])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.full
def test_padding_mask_through_compile_and_export(family, keep_rate):
    model = small_model(family, keep_rate, "attention")
    inputs = torch.randn(3, 128, 64)
    mask = padding(model, 3)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    assert_same(run(compiled, inputs, mask), run(model, inputs, mask))
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(
        model, (inputs,), {"attention_mask": mask, "output_kept_patches": True},
        dynamic_shapes={"input_values": {0: batch}, "attention_mask": {0: batch}, "output_kept_patches": None},
    ).module()
    other, other_mask = torch.randn(4, 128, 64), padding(model, 4)
    with torch.no_grad():
        actual = exported(other, attention_mask=other_mask, output_kept_patches=True)
    assert_same(actual, run(model, other, other_mask))


@pytest.mark.parametrize("family", FAMILIES)
def test_eager_calls_keep_the_input_checks_after_tracing(family):
    model = small_model(family, 0.5, "attention")
    torch.export.export(model, (torch.randn(2, 128, 64),))
    torch.compile(model, fullgraph=True, backend="eager")(torch.randn(2, 128, 64))
    inputs = torch.randn(2, 128, 64)
    inputs[1, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(inputs)
    with pytest.raises(ValueError, match=r"max_length=128, num_mel_bins=64"):
        model(torch.randn(2, 64, 128))


@pytest.mark.parametrize("family", FAMILIES)
def test_compile_and_export_while_a_profiler_records(family):
    # The library's profiler regions (hf_token_prune.profiling) stay out of traced graphs, also when tracing under a
    # running profiler, where they are live in eager calls.
    model = small_model(family, 0.5, "attention")
    inputs = torch.randn(2, 128, 64)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        assert_same(run(compiled, inputs), run(model, inputs))
        exported = torch.export.export(model, (inputs,), {"output_kept_patches": True}).module()
    assert not [node for node in exported.graph.nodes if "profiler" in str(node.target)]
    torch.manual_seed(3)
    with torch.no_grad():
        assert_same(exported(inputs, output_kept_patches=True), run(model, inputs))


@pytest.mark.full
def test_inductor_compile_equals_eager():
    model = tiny_pruned_classifier("ast", num_hidden_layers=1, pruning_layers=[0], keep_rate=0.5)
    inputs = torch.randn(2, 128, 64)
    compiled = torch.compile(model, fullgraph=True)
    actual, expected = run(compiled, inputs), run(model, inputs)
    assert (actual.logits - expected.logits).abs().max() <= 1e-5
    assert all(torch.equal(a, b) for a, b in zip(actual.kept_patches, expected.kept_patches))

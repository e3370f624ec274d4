"""keep_mass: each pruning layer keeps, per sample, the fewest best-scored tokens reaching a share of the score mass
(issue 22, point 1), and the MACs of each clip from its own kept counts (point 3).

The references are written from the definition, one sample at a time in plain Python: sort, shift, cumulative sum,
count, clamp. A mixed batch is checked against each clip run alone.
"""

import json
import math
from fractions import Fraction

import pytest
import torch

from conftest import tiny_pruned_classifier
from hf_token_prune.macs import clip_macs, count_forward_macs, count_macs
from hf_token_prune.method_prune import Prune
from hf_token_prune.reduction import TokenReduction
from hf_token_prune.selection import kept_counts_per_clip, select_tokens
from hf_token_prune.token_reductions import TOKEN_REDUCTIONS, keep_mass_token_reductions


FAMILIES = ("ast", "audiomae")


def ceil_share(num_tokens, rate):
    """``ceil(num_tokens * rate)``, at least one, in exact arithmetic."""
    return max(1, math.ceil(Fraction(str(rate)) * num_tokens))


def reference_kept(scores, real, keep_rate, keep_mass, min_keep_rate=None):
    """Per sample, the set of kept positions, from the definition."""
    kept = []
    for sample_scores, sample_real in zip(scores.tolist(), real.tolist()):
        positions = [i for i, is_real in enumerate(sample_real) if is_real]
        shift = min(0.0, min(sample_scores[i] for i in positions))
        masses = sorted((sample_scores[i] - shift for i in positions), reverse=True)
        if sum(masses) == 0:
            masses = [1.0] * len(positions)
        total, running, count = sum(masses), 0.0, len(positions)
        for number, mass in enumerate(masses, 1):
            running += mass
            if running >= keep_mass * total:
                count = number
                break
        floor = ceil_share(len(positions), min_keep_rate) if min_keep_rate else 1
        count = max(floor, min(count, ceil_share(len(positions), keep_rate)))
        kept.append(set(sorted(positions, key=lambda i: -sample_scores[i])[:count]))
    return kept


def filled(kept_row):
    return set(kept_row[kept_row >= 0].tolist())


# 1. the policy on scores ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_rate, keep_mass, min_keep_rate", [
    (1.0, 0.5, None), (1.0, 0.9, None), (0.6, 0.8, None), (1.0, 0.7, 0.25), (0.5, 0.3, 0.5), (1.0, 1.0, None),
])
@pytest.mark.parametrize("kind", ["attention-like", "signed", "with padding"])
def test_selection_keeps_the_reference_set_of_every_sample(kind, keep_rate, keep_mass, min_keep_rate):
    generator = torch.Generator().manual_seed(0)
    batch, tokens, extra = 6, 40, 2
    if kind == "attention-like":
        scores = torch.rand(batch, tokens, generator=generator) ** 4  # a few tokens hold most of the mass
    else:
        scores = torch.randn(batch, tokens, generator=generator) * 3 - 1  # mostly negative, as log-mel intensity
    scores[-1] = 0.25  # all equal: no ranking, equal masses
    real = torch.ones(batch, tokens, dtype=torch.bool)
    token_mask = None
    if kind == "with padding":
        real = torch.arange(tokens)[None] < torch.tensor([40, 31, 17, 5, 1, 23])[:, None]
        token_mask = torch.cat([torch.ones(batch, extra, dtype=torch.bool), real], dim=1)
    hidden = torch.arange(batch * (extra + tokens), dtype=torch.float32).reshape(batch, -1, 1)
    reduced, kept = select_tokens(hidden, scores, keep_rate, extra, token_mask, count_real_tokens=True,
                                  keep_mass=keep_mass, min_keep_rate=min_keep_rate)
    expected = reference_kept(scores, real, keep_rate, keep_mass, min_keep_rate)
    assert kept.shape[1] == max(len(sample) for sample in expected)  # gathered to the batch's largest count
    for sample, expected_set in enumerate(expected):
        row = kept[sample]
        if sample == batch - 1:  # all tied: which tokens is arbitrary, how many is not
            assert len(filled(row)) == len(expected_set) and real[sample, row[row >= 0]].all()
        else:
            assert filled(row) == expected_set
        assert (row[len(expected_set):] == -1).all() and (row[: len(expected_set)] >= 0).all()
        gathered = reduced[sample, extra : extra + len(expected_set), 0] - hidden[sample, extra, 0]
        assert set(gathered.long().tolist()) == filled(row)  # the hidden states travel with their indices
    if (keep_rate, keep_mass, kind) == (1.0, 1.0, "attention-like"):
        assert all(len(sample) == tokens for sample in expected)  # the whole mass of positive scores: every token
    if (keep_rate, keep_mass, kind) == (1.0, 1.0, "signed"):
        assert [len(sample) for sample in expected] == [tokens - 1] * (batch - 1) + [tokens]  # the weakest holds none


# 2. the model: a mixed batch equals each clip alone -------------------------------------------------------------------


def adaptive_model(family, attn_implementation="sdpa", **settings):
    settings = {"keep_rate": 1.0, "keep_mass": 0.5, **settings}
    torch.manual_seed(0)  # whether a fresh model's clips differ in count depends on its weights
    model = tiny_pruned_classifier(family, **{"initializer_range": 0.1, **settings})
    model.set_attn_implementation(attn_implementation)
    if family == "audiomae":  # its head starts near zero (std 2e-5): logits of order 1 make 1e-5 a real bound
        torch.nn.init.normal_(model.classifier.weight, std=model.config.hidden_size**-0.5)
    return model


def frame_mask(lengths, max_length=128):
    return (torch.arange(max_length)[None] < torch.tensor(lengths)[:, None]).to(torch.int32)


def run(model, inputs, mask=None, **kwargs):
    with torch.no_grad():
        return model(inputs, attention_mask=mask, output_kept_patches=True, **kwargs)


def assert_equal_up_to_empty_tail(kept_batch_row, kept_alone_row):
    width = kept_alone_row.shape[0]
    assert torch.equal(kept_batch_row[:width], kept_alone_row)
    assert (kept_batch_row[width:] == -1).all()


def padding_mask(model, padding, lengths):
    """The extractor's frame mask (drop_padding), transformers' per-token mask of the same real patches, or none."""
    if padding == "frame mask":
        return frame_mask(lengths)
    if padding == "token mask":
        real = model.patch_layout.real_patches(frame_mask(lengths))
        return torch.cat([torch.ones(len(lengths), model.num_extra_tokens, dtype=torch.long), real.long()], dim=1)
    return None


@pytest.mark.parametrize("padding", ["none", "frame mask", "token mask"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("token_score", ["attention", "intensity", "variation"])
@pytest.mark.parametrize("family", FAMILIES)
def test_each_clip_of_a_batch_equals_the_clip_alone(family, token_score, attn_implementation, padding):
    # 0.45: a fresh AudioMAE's received attention is nearly uniform, and at 0.5 its clips would tie in count
    model = adaptive_model(family, attn_implementation, token_score=token_score, drop_padding=padding == "frame mask",
                           keep_mass=0.45, min_keep_rate=0.1)
    torch.manual_seed(0)
    inputs = torch.randn(4, 128, 64)
    inputs[1] *= torch.linspace(0.1, 3, 64)  # clips of different spread: different counts
    mask = padding_mask(model, padding, [128, 100, 61, 23])
    batch = run(model, inputs, mask)
    assert any((kept == -1).any() for kept in batch.kept_patches)  # the clips really keep different counts
    for sample in range(4):
        alone = run(model, inputs[sample : sample + 1], None if mask is None else mask[sample : sample + 1])
        assert (batch.logits[sample] - alone.logits[0]).abs().max() <= 1e-5
        for kept_batch, kept_alone in zip(batch.kept_patches, alone.kept_patches):
            assert (kept_alone >= 0).all()  # alone, a clip has no empty slot
            assert_equal_up_to_empty_tail(kept_batch[sample], kept_alone[0])


@pytest.mark.parametrize("padding", ["none", "frame mask", "token mask"])
@pytest.mark.parametrize("token_score", ["intensity", "variation"])
@pytest.mark.parametrize("family", FAMILIES)
def test_static_scores_keep_the_reference_sets_layer_after_layer(family, token_score, padding):
    # A static score is a function of the input patch, so every layer's kept set follows from the input alone.
    # Padding comes as the extractor's frame mask (drop_padding) or as transformers' per-token mask; either way only
    # real patches count and are kept.
    model = adaptive_model(family, token_score=token_score, drop_padding=padding == "frame mask", keep_rate=0.8,
                           keep_mass=0.6, min_keep_rate=0.2)
    inputs = torch.randn(3, 128, 64)
    mask = padding_mask(model, padding, [128, 77, 30])
    real = model.patch_layout.real_patches(frame_mask([128, 77, 30]))
    if mask is None:
        real = torch.ones_like(real)
    outputs = run(model, inputs, mask)
    intensity, variation = model.patch_layout.patch_statistics(inputs)
    scores = intensity if token_score == "intensity" else variation
    for sample in range(3):
        survivors = real[sample].nonzero()[:, 0].tolist()
        for kept in outputs.kept_patches:
            survivor_scores = scores[sample, survivors][None]
            (kept_positions,) = reference_kept(survivor_scores, torch.ones_like(survivor_scores, dtype=bool), 0.8,
                                               0.6, 0.2)
            survivors = [survivors[position] for position in sorted(kept_positions)]
            assert filled(kept[sample]) == set(survivors)


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_mass_prunes_at_keep_rate_one_and_per_call(family):
    model = adaptive_model(family, keep_mass=None)
    inputs = torch.randn(2, 128, 64)
    fixed = run(model, inputs)
    assert fixed.kept_patches is not None and all(kept.shape[1] == 32 for kept in fixed.kept_patches)  # nothing pruned
    per_call = run(model, inputs, keep_mass=0.5)
    assert kept_counts_per_clip(per_call.kept_patches)[:, -1].max() < 32
    with model.reduction_settings(keep_mass=0.5):
        configured = run(model, inputs)
    assert torch.equal(configured.logits, per_call.logits)
    assert model.config.keep_mass is None  # restored on exit
    with pytest.raises(ValueError, match=r"keep_mass=2 is invalid: it must be None or a number in \(0, 1\]"):
        run(model, inputs, keep_mass=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_without_keep_mass_the_forward_is_unchanged_by_the_new_fields(family):
    # min_keep_rate alone is only the floor of a policy that is off: the fixed-rate forward, bit for bit.
    model = adaptive_model(family, keep_rate=0.5, keep_mass=None)
    inputs = torch.randn(2, 128, 64)
    fixed = run(model, inputs)
    model.config.min_keep_rate = 0.3
    assert torch.equal(run(model, inputs).logits, fixed.logits)


# 3. kept counts and MACs of each clip ---------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("settings", [
    dict(keep_rate=0.5, keep_mass=None), dict(keep_rate=1.0, keep_mass=0.5), dict(keep_rate=0.7, keep_mass=0.6),
    dict(keep_rate=0.6, keep_mass=None, drop_padding=True), dict(keep_rate=1.0, keep_mass=0.4, drop_padding=True),
], ids=["fixed", "adaptive", "adaptive-ceiling", "fixed-drop-padding", "adaptive-drop-padding"])
@pytest.mark.parametrize("family", FAMILIES)
def test_clip_macs_equal_the_flop_counter_on_each_clip_alone(family, settings, attn_implementation):
    model = adaptive_model(family, attn_implementation, **settings)
    inputs = torch.randn(3, 128, 64)
    inputs[2] *= torch.linspace(0.1, 3, 64)
    lengths = [128, 70, 23]
    mask = frame_mask(lengths) if model.config.drop_padding else None
    counts = kept_counts_per_clip(run(model, inputs, mask).kept_patches)
    num_patches = None
    if mask is not None:
        num_patches = model.patch_layout.real_patches(mask).sum(dim=1)
    macs = clip_macs(model, counts, num_patches)
    assert macs.dtype == torch.long and macs.shape == (3,)
    for sample in range(3):
        alone_mask = None if mask is None else mask[sample : sample + 1]
        assert macs[sample] == count_forward_macs(model, inputs[sample : sample + 1], attention_mask=alone_mask)
    if model.config.keep_mass is None and mask is None:
        assert (macs == count_macs(model.config).total).all()  # a fixed rate: one count for every clip


def test_count_macs_refuses_a_data_dependent_count():
    model = adaptive_model("ast")
    with pytest.raises(ValueError, match=r"keep_mass=0.5: each clip keeps a data-dependent count.*clip_macs"):
        count_macs(model.config)


# 4. validation and saving ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_config_refuses_bad_policies_with_one_line(family):
    config = tiny_pruned_classifier(family).config
    for name in ("keep_mass", "min_keep_rate"):
        for bad in (0, 0.0, -0.5, 1.5, "0.5", True, float("nan")):
            with pytest.raises(ValueError, match=rf"^{name}=.* is invalid: it must be None or a number in \(0, 1\]"):
                setattr(config, name, bad)
            assert getattr(config, name) is None
    config.keep_rate = 0.5
    with pytest.raises(ValueError, match=r"^min_keep_rate=0.6 is above keep_rate=0.5"):
        config.min_keep_rate = 0.6
    with pytest.raises(ValueError, match=r"^min_keep_rate=0.3 is above keep_rate=0.25"):
        config.update_reduction(keep_rate=0.25, min_keep_rate=0.3)
    assert (config.keep_rate, config.min_keep_rate) == (0.5, None)  # all land or none
    for method in ("fuse", "merge"):
        config.token_reduction = method
        with pytest.raises(ValueError, match=rf"^keep_mass=0.8 is not supported with token_reduction='{method}'"
                                             r".*Use token_reduction='prune', or keep_mass=None\.$"):
            config.keep_mass = 0.8
        config.token_reduction = "prune"
        config.keep_mass = 0.8
        with pytest.raises(ValueError, match=f"token_reduction='{method}'"):
            config.token_reduction = method
        config.keep_mass = None


def test_a_registered_method_must_declare_per_sample_counts(monkeypatch):
    class KeepAll(Prune):  # a method of its own, silent about keep_mass
        name = "keep-all"
        supports_keep_mass = TokenReduction.supports_keep_mass

    monkeypatch.setitem(TOKEN_REDUCTIONS, "keep-all", KeepAll())
    assert keep_mass_token_reductions() == ("prune",)
    config = tiny_pruned_classifier("ast", token_reduction="keep-all").config
    with pytest.raises(ValueError, match=r"declare per-sample kept counts.*Use token_reduction='prune', or"):
        config.keep_mass = 0.8


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_config_gains_no_key_by_default(family, tmp_path):
    model = tiny_pruned_classifier(family)
    model.save_pretrained(tmp_path / "default")
    saved = json.loads((tmp_path / "default" / "config.json").read_text())
    assert "keep_mass" not in saved and "min_keep_rate" not in saved
    model.config.update_reduction(keep_rate=0.9, keep_mass=0.7, min_keep_rate=0.2)
    model.save_pretrained(tmp_path / "adaptive")
    saved = json.loads((tmp_path / "adaptive" / "config.json").read_text())
    assert (saved["keep_mass"], saved["min_keep_rate"]) == (0.7, 0.2)
    loaded = type(model).from_pretrained(tmp_path / "adaptive").config
    assert (loaded.keep_mass, loaded.min_keep_rate) == (0.7, 0.2)


# 5. traced graphs: static shapes, gathered to the ceiling and masked --------------------------------------------------


def traced_model(family, **settings):
    # Two pruning layers after a first one, as in test_drop_padding.py; weights of std 0.2 sharpen the attention of
    # a fresh model enough for its clips to differ in count.
    return adaptive_model(family, num_hidden_layers=3, pruning_layers=[1, 2], keep_rate=0.75, keep_mass=0.45,
                          initializer_range=0.2, **settings)


def varied_clips(seed):
    """Four clips of different structure: noise, a spectral slope, one loud block in quiet, a time ripple."""
    torch.manual_seed(seed)
    inputs = torch.randn(4, 128, 64)
    inputs[1] *= torch.linspace(0.1, 3, 64)
    inputs[2] *= 0.1
    inputs[2, 40:60, 10:30] += 5
    inputs[3] += 3 * torch.sin(torch.arange(128.0) / 5)[:, None]
    return inputs


@pytest.mark.parametrize("drop_padding", [False, pytest.param(True, marks=pytest.mark.full)])
@pytest.mark.parametrize("family", FAMILIES)
def test_compile_fullgraph_equals_eager(family, drop_padding):
    model = traced_model(family, drop_padding=drop_padding)
    inputs = varied_clips(seed=0)
    mask = frame_mask([128, 70, 23, 100]) if drop_padding else None
    expected = run(model, inputs, mask)
    assert any((kept == -1).any() for kept in expected.kept_patches)
    compiled = run(torch.compile(model, fullgraph=True, backend="eager"), inputs, mask)
    torch._dynamo.reset()
    assert (compiled.logits - expected.logits).abs().max() <= 1e-5
    ceiling = model.patch_layout.num_patches
    for kept_compiled, kept_eager in zip(compiled.kept_patches, expected.kept_patches):
        ceiling = ceil_share(ceiling, 0.75)
        assert kept_compiled.shape[1] == ceiling  # static: the ceiling, not the batch's largest count
        for row_compiled, row_eager in zip(kept_compiled, kept_eager):
            assert_equal_up_to_empty_tail(row_compiled, row_eager[row_eager >= 0])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.full
def test_export_equals_eager(family):
    model = traced_model(family)
    inputs = varied_clips(seed=0)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(
        model, (inputs,), {"output_kept_patches": True},
        dynamic_shapes={"input_values": {0: batch}, "output_kept_patches": None},
    ).module()
    other = varied_clips(seed=1)[:3]
    with torch.no_grad():
        actual = exported(other, output_kept_patches=True)
    expected = run(model, other)
    assert (actual.logits - expected.logits).abs().max() <= 1e-5
    for kept_actual, kept_eager in zip(actual.kept_patches, expected.kept_patches):
        for row_actual, row_eager in zip(kept_actual, kept_eager):
            assert_equal_up_to_empty_tail(row_actual, row_eager[row_eager >= 0])

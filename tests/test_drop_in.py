"""Drop-in wherever stock AST works: any depth, padding masks, one test body over both families where it applies."""

import pytest
import torch
from transformers import ASTConfig, ASTForAudioClassification

from conftest import tiny_ast_kwargs, tiny_audiomae_kwargs, tiny_pruned_classifier
from hf_token_prune import (
    PrunedASTConfig,
    PrunedASTForAudioClassification,
    PrunedAudioMAEConfig,
    PrunedAudioMAEForAudioClassification,
)
from hf_token_prune.pruning import default_pruning_layers
from test_pruned_ast import stock_and_pruned


FAMILIES = ("ast", "audiomae")
CONFIGS = {"ast": (PrunedASTConfig, tiny_ast_kwargs), "audiomae": (PrunedAudioMAEConfig, tiny_audiomae_kwargs)}
CLASSIFIERS = {"ast": PrunedASTForAudioClassification, "audiomae": PrunedAudioMAEForAudioClassification}


# 1. any depth -------------------------------------------------------------------------------------------------------


def test_default_pruning_layers_are_the_papers_relative_positions():
    assert default_pruning_layers(12) == [3, 6, 9]
    assert default_pruning_layers(6) == [1, 3, 4]
    assert default_pruning_layers(24) == [6, 12, 18]
    assert default_pruning_layers(2) == [0, 1]
    assert default_pruning_layers(1) == [0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("depth", [1, 2, 6, 24])
def test_any_depth_builds_and_prunes_at_the_default_layers(family, depth):
    config_class, kwargs = CONFIGS[family]
    config = config_class(**kwargs(num_hidden_layers=depth, keep_rate=0.5))
    assert config.pruning_layers == default_pruning_layers(depth)
    model = CLASSIFIERS[family](config).eval()
    with torch.no_grad():
        kept = model(torch.randn(2, 128, 64), output_kept_patches=True).kept_patches
    assert len(kept) == len(config.pruning_layers)


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_rate_below_one_without_pruning_layers_is_a_clear_error(family):
    config_class, kwargs = CONFIGS[family]
    with pytest.raises(ValueError, match=r"keep_rate=0.5 prunes nothing: pruning_layers is empty.*\[1, 3, 4\]"):
        config_class(**kwargs(num_hidden_layers=6, keep_rate=0.5, pruning_layers=[]))
    config = config_class(**kwargs(num_hidden_layers=6, pruning_layers=[]))  # keep rate 1.0: nothing to prune
    with pytest.raises(ValueError, match="prunes nothing"):
        config.keep_rate = 0.7
    assert config.keep_rate == 1.0


# A distilled AST on the Hub (bookbot/distil-ast-audioset: 44M parameters, distilled from the 10-10 AudioSet AST) is,
# by its size and card, a stock ASTForAudioClassification with 6 layers and the teacher's overlapping strides.
SHALLOW = {"6-layer": {}, "distilled-6-layer-stride-10": dict(frequency_stride=10, time_stride=10)}


@pytest.mark.parametrize("geometry", SHALLOW)
def test_shallow_stock_checkpoints_load_and_pruning_layers_given_to_from_pretrained_win(tmp_path, geometry):
    stock = ASTForAudioClassification(ASTConfig(**tiny_ast_kwargs(num_hidden_layers=6, **SHALLOW[geometry]))).eval()
    stock.save_pretrained(tmp_path)
    default = PrunedASTForAudioClassification.from_pretrained(tmp_path).eval()
    assert default.config.pruning_layers == [1, 3, 4]
    inputs = torch.randn(2, 128, 64)
    with torch.no_grad():
        assert (default(inputs).logits - stock(inputs).logits).abs().max() <= 1e-5
    chosen = PrunedASTForAudioClassification.from_pretrained(tmp_path, pruning_layers=[1], keep_rate=0.5)
    assert (chosen.config.pruning_layers, chosen.config.keep_rate) == ([1], 0.5)
    with torch.no_grad():
        assert len(chosen(inputs, output_kept_patches=True).kept_patches) == 1
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        PrunedASTForAudioClassification.from_pretrained(tmp_path, pruning_layers=[3, 6, 9])
    chosen.save_pretrained(tmp_path / "pruned")
    reloaded = PrunedASTForAudioClassification.from_pretrained(tmp_path / "pruned")
    assert reloaded.config.pruning_layers == [1]


@pytest.mark.parametrize("family", FAMILIES)
def test_config_pruning_layers_win_over_the_default(family):
    config_class, kwargs = CONFIGS[family]
    assert config_class(**kwargs(num_hidden_layers=8, pruning_layers=[2])).pruning_layers == [2]
    assert config_class(**kwargs(num_hidden_layers=8)).pruning_layers == [2, 4, 6]


# 2. padding masks ---------------------------------------------------------------------------------------------------


def padding_mask(batch_size, num_extra_tokens, num_patches, real_patches):
    """(batch, tokens) 2-D mask: extra tokens real, sample i keeps its first real_patches[i] patches."""
    patches = torch.arange(num_patches)[None] < torch.tensor(real_patches)[:, None]
    return torch.cat([torch.ones(batch_size, num_extra_tokens, dtype=torch.long), patches.long()], dim=1)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("geometry", [{}, dict(frequency_stride=10, time_stride=10), dict(num_hidden_layers=6)])
def test_padding_mask_at_keep_rate_one_equals_transformers_ast(attn_implementation, geometry):
    stock, pruned = stock_and_pruned(attn_implementation, **geometry)
    inputs = torch.randn(3, 128, 64)
    num_patches = pruned.patch_layout.num_patches
    for mask in (None, padding_mask(3, 2, num_patches, [num_patches, num_patches // 2, 3])):
        with torch.no_grad():
            expected = stock(inputs, attention_mask=mask, output_hidden_states=True)
            actual = pruned(inputs, attention_mask=mask, output_hidden_states=True)
        assert (actual.logits - expected.logits).abs().max() <= 1e-5
        assert (actual.hidden_states[-1] - expected.hidden_states[-1]).abs().max() <= 1e-5


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("token_score", ["attention", "intensity", "variation", "random"])
@pytest.mark.parametrize("family", FAMILIES)
def test_padded_patches_are_never_kept_before_real_ones_and_do_not_change_the_output(
    family, token_score, attn_implementation
):
    model = tiny_pruned_classifier(family, keep_rate=0.5, token_score=token_score)
    model.set_attn_implementation(attn_implementation)
    extra, num_patches = model.num_extra_tokens, model.patch_layout.num_patches
    real = [num_patches, 20, 7]  # 32 patches at 0.5: 16, 8, 4 kept; sample 2 runs out of real ones
    mask = padding_mask(3, extra, num_patches, real)
    inputs = torch.randn(3, 128, 64)
    other_padding = inputs.clone()
    # New values in the padded patches only (frequency-major for AST, time-major for AudioMAE): the output must not
    # move, since padded tokens are never attended to, never pooled, and only fill places no real token is left for.
    patch_of = torch.arange(num_patches)
    layout = model.patch_layout
    for sample, count in enumerate(real):
        for patch in patch_of[count:].tolist():
            if layout.time_major:
                t, f = divmod(patch, layout.num_frequency_patches)
            else:
                f, t = divmod(patch, layout.num_time_patches)
            other_padding[sample, t * 16 : t * 16 + 16, f * 16 : f * 16 + 16] = 100.0
    with torch.no_grad():
        torch.manual_seed(1)
        first = model(inputs, attention_mask=mask, output_kept_patches=True)
        torch.manual_seed(1)
        second = model(other_padding, attention_mask=mask, output_kept_patches=True)
    assert (first.logits - second.logits).abs().max() <= 1e-5
    for kept in first.kept_patches:
        for sample, count in enumerate(real):
            is_real = (kept[sample] < count).tolist()
            assert is_real == sorted(is_real, reverse=True)  # every real patch before any padded one
            assert sum(is_real) == min(count, kept.shape[1])
    for kept_first, kept_second in zip(first.kept_patches, second.kept_patches):
        for sample, count in enumerate(real):
            survivors = kept_first[sample][kept_first[sample] < count]
            assert torch.equal(survivors, kept_second[sample][kept_second[sample] < count])


@pytest.mark.parametrize("family", FAMILIES)
def test_all_real_mask_under_pruning_equals_no_mask(family):
    model = tiny_pruned_classifier(family, keep_rate=0.5)
    inputs = torch.randn(2, 128, 64)
    mask = padding_mask(2, model.num_extra_tokens, model.patch_layout.num_patches, [32, 32])
    with torch.no_grad():
        masked = model(inputs, attention_mask=mask, output_kept_patches=True)
        plain = model(inputs, output_kept_patches=True)
    assert (masked.logits - plain.logits).abs().max() <= 1e-5
    assert all(torch.equal(a, b) for a, b in zip(masked.kept_patches, plain.kept_patches))


@pytest.mark.parametrize("family", FAMILIES)
def test_mask_of_the_wrong_shape_is_a_clear_error(family):
    model = tiny_pruned_classifier(family, keep_rate=0.5)
    extra = model.num_extra_tokens
    with pytest.raises(ValueError, match=rf"2-D padding mask of shape \(batch_size, sequence_length\) = \(2, {32 + extra}\)"):
        model(torch.randn(2, 128, 64), attention_mask=torch.ones(2, 128))

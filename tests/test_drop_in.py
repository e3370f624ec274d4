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

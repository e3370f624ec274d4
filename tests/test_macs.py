import pytest
import torch
from transformers import ASTConfig

from conftest import tiny_ast_kwargs, tiny_pruned_classifier
from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification
from hf_token_prune.commands.macs import main
from hf_token_prune.macs import (
    TABLE_II,
    TABLE_II_KEEP_RATES,
    TABLE_II_TOLERANCE,
    count_forward_macs,
    count_macs,
    preset_config,
    table_ii_comparison,
)


# 1. The paper's Table II ----------------------------------------------------------------------------------------

TABLE_II_CELLS = [
    (patches, rate, paper) for patches, row in TABLE_II.items() for rate, paper in zip(TABLE_II_KEEP_RATES, row)
]


def test_table_ii_has_21_cells():
    assert len(TABLE_II_CELLS) == 21
    assert [(patches, rate) for patches, rate, *_ in table_ii_comparison()] == [(p, r) for p, r, _ in TABLE_II_CELLS]


@pytest.mark.parametrize("patches,keep_rate,paper", TABLE_II_CELLS)
def test_table_ii_cell_within_tolerance(patches, keep_rate, paper):
    config = preset_config("vit-b", max_length=patches // 8 * 16)
    ours = count_macs(config, keep_rate, num_extra_tokens=1).paper_convention / 1e9
    assert abs(ours - paper) <= TABLE_II_TOLERANCE, f"{patches} patches, keep rate {keep_rate}: {ours:.3f} vs {paper}"


def test_table_ii_command_prints_every_cell(capsys):
    assert main(["--table2"]) == 0
    printed = capsys.readouterr().out
    assert "all within 0.1 G over 21 cells" in printed
    for patches, row in TABLE_II.items():
        assert f"{row[0]:5.2f}" in printed


# 2. Analytic count == FlopCounterMode on the real forward --------------------------------------------------------

TINY_CASES = {
    "sdpa": dict(attn_implementation="sdpa"),
    "eager": dict(attn_implementation="eager"),
    "overlapping-strides": dict(attn_implementation="sdpa", frequency_stride=10, time_stride=10),
    "intensity-score": dict(attn_implementation="sdpa", token_score="intensity"),
    "other-pruning-layers": dict(attn_implementation="sdpa", pruning_layers=[0, 5, 11]),
}


@pytest.mark.parametrize("keep_rate", [1.0, 0.7, 0.5, 0.05])
@pytest.mark.parametrize("case", TINY_CASES)
def test_analytic_count_equals_flop_counter_tiny_ast(case, keep_rate):
    kwargs = dict(TINY_CASES[case])
    attn_implementation = kwargs.pop("attn_implementation")
    config = PrunedASTConfig(**tiny_ast_kwargs(**kwargs), keep_rate=keep_rate)
    model = PrunedASTForAudioClassification(config).eval()
    model.set_attn_implementation(attn_implementation)
    inputs = torch.randn(3, config.max_length, config.num_mel_bins)

    analytic = count_macs(config, batch_size=3, attn_implementation=attn_implementation)
    assert count_forward_macs(model, inputs) == analytic.total  # within 1 % required; both count the same products

    with torch.no_grad():
        kept = model(inputs, output_kept_patches=True).kept_patches
    assert list(analytic.kept_patches) == [patches.shape[1] for patches in kept]


def test_scoring_is_counted_only_where_sdpa_recomputes_it():
    config = PrunedASTConfig(**tiny_ast_kwargs(), keep_rate=0.5)
    sdpa, eager = count_macs(config, attn_implementation="sdpa"), count_macs(config, attn_implementation="eager")
    assert eager.token_scoring == 0
    # CLS row of QK^T in each pruning layer: (tokens in that layer's attention) x hidden
    assert sdpa.token_scoring == sum(
        sdpa.tokens_per_layer[index][0] * config.hidden_size for index in config.pruning_layers
    )
    assert sdpa.total - eager.total == sdpa.token_scoring


def test_stock_ast_config_counts_as_unpruned():
    stock = ASTConfig(**tiny_ast_kwargs())
    assert count_macs(stock).total == count_macs(PrunedASTConfig(**tiny_ast_kwargs()), 1.0).total


def test_analytic_count_equals_flop_counter_vit_b_512_patches():
    config = preset_config("vit-b", max_length=1024, keep_rate=0.7)
    model = PrunedASTForAudioClassification(config).eval()
    counted = count_forward_macs(model, torch.randn(1, 1024, 128))
    analytic = count_macs(config).total
    assert abs(analytic - counted) <= 0.01 * counted
    assert analytic == counted


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("keep_rate", [1.0, 0.5])
def test_analytic_count_equals_flop_counter_tiny_audiomae(attn_implementation, keep_rate):
    model = tiny_pruned_classifier("audiomae", keep_rate=keep_rate)  # 12 layers of 64, 128 frames x 64 mel
    config = model.config
    model.set_attn_implementation(attn_implementation)
    counted = count_forward_macs(model, torch.randn(2, 128, 64))
    analytic = count_macs(config, batch_size=2, attn_implementation=attn_implementation)
    assert counted == analytic.total  # within 1 % required; both count the same products
    assert analytic.token_scoring == 0  # the score comes with the pruning layer's own attention


@pytest.mark.parametrize("keep_rate", [1.0, 0.7, 0.3])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("method", ["fuse", "merge"])
@pytest.mark.parametrize("family", ["ast", "audiomae"])
def test_analytic_count_equals_flop_counter_for_fuse_and_merge(family, method, attn_implementation, keep_rate):
    from hf_token_prune import PrunedAudioMAEConfig, PrunedAudioMAEForAudioClassification

    if family == "ast":
        config = PrunedASTConfig(**tiny_ast_kwargs(), keep_rate=keep_rate, token_reduction=method)
        model = PrunedASTForAudioClassification(config).eval()
    else:
        config = PrunedAudioMAEConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_mel_bins=64,
                                      max_length=128, num_labels=5, keep_rate=keep_rate, token_reduction=method)
        model = PrunedAudioMAEForAudioClassification(config).eval()
    model.set_attn_implementation(attn_implementation)
    counted = count_forward_macs(model, torch.randn(2, 128, 64))
    analytic = count_macs(config, batch_size=2, attn_implementation=attn_implementation)
    assert counted == analytic.total
    prune = count_macs(config, batch_size=2, attn_implementation=attn_implementation, token_reduction="prune")
    if keep_rate == 1.0:
        assert analytic == prune
    else:  # what each method adds beside pruning: one token in later layers (fuse), the matching (merge)
        assert analytic.token_reduction > 0 and analytic.total > prune.total
        assert analytic.kept_patches == prune.kept_patches


def test_method_table_prints_every_method(capsys):
    assert main(["--methods", "--keep_rates", "1.0,0.5"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("| fuse ") == printed.count("| merge ") == printed.count("| prune ") == 3


# 3. Inputs that cannot be counted ------------------------------------------------------------------------------


def test_unknown_model_type_is_refused():
    with pytest.raises(ValueError, match="model_type='bert'"):
        count_macs(type("Config", (), {"model_type": "bert", "max_length": 10})())


def test_bad_keep_rate_and_length_are_refused():
    config = preset_config("vit-b")
    with pytest.raises(ValueError, match="keep_rate=0"):
        count_macs(config, keep_rate=0)
    with pytest.raises(ValueError, match="smaller than one 16x16 patch"):
        count_macs(config, max_length=8)


def test_cli_refuses_unknown_model():
    with pytest.raises(SystemExit, match="neither a preset"):
        main(["--model_name_or_path", "no-such-model"])


def test_macs_command_counts_fixed_keep_rates_for_a_keep_mass_model(tmp_path, capsys):
    """A keep_mass model's MACs depend on each clip: the command says so and counts the fixed rates asked for, the
    same rows as the model without the policy."""
    rows = {}
    for name, policy in (("fixed", {}), ("adaptive", {"keep_mass": 0.8})):
        PrunedASTConfig(**tiny_ast_kwargs(keep_rate=0.7, **policy)).save_pretrained(tmp_path / name)
        assert main(["--model_name_or_path", str(tmp_path / name), "--keep_rates", "1.0,0.5"]) == 0
        printed = capsys.readouterr()
        rows[name] = printed.out.splitlines()[1:]
        assert ("keep_mass=0.8" in printed.err) == (name == "adaptive")
    assert rows["adaptive"] == rows["fixed"] and len(rows["fixed"]) == 4

"""The analysis toolkit (hf_token_prune.analysis, recipes/analyze.py) on tiny random models and the keyword clips.

Numbers are checked against independent computations: Kendall's tau against a direct pairwise count and scipy,
clusters against nearest-centre ranks, the sweep and cluster_drop against plain evaluation, token dropping against
a forward written out by hand, MACs against the paper's Table II.
"""

import itertools
import re
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from scipy.stats import kendalltau
from sklearn.metrics import average_precision_score
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

from conftest import KEYWORDS, one_thread, tiny_ast_kwargs
from hf_token_prune import (
    AudioMAEFeatureExtractor,
    PrunedASTConfig,
    PrunedASTForAudioClassification,
    PrunedAudioMAEConfig,
    PrunedAudioMAEForAudioClassification,
)
from hf_token_prune.analysis import (
    ANALYSES,
    check_pruned_model,
    cluster_drop,
    concordance_counts,
    dropping_tokens_after,
    evaluate_model,
    fit_value_clusters,
    fine_tuned_sweep,
    intensity_clusters,
    keep_rate_sweep,
    kendall_tau_per_block,
    kendall_tau_ties_concordant,
    load_analysis_data,
    load_pruned_model,
    padding_kind,
    parse_analyses,
    patch_statistics,
    prepare_analysis_data,
    pruning_patterns,
    retained_patch_histograms,
    variation_clusters,
)
from hf_token_prune.commands import analyze as analysis_command
from hf_token_prune.analysis.inputs import batch_patch_statistics
from hf_token_prune.data import load_audio_classification, num_fbank_frames
from hf_token_prune.macs import count_forward_macs, count_macs


SPEECH_COMMANDS_NORM = {"mean": -6.845978, "std": 5.5654526}
NUM_CLIPS = 10


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():  # for the module's shared fixtures too
        yield


def tiny_ast(**overrides):
    torch.manual_seed(0)
    config = PrunedASTConfig(**tiny_ast_kwargs(num_labels=10, keep_rate=0.5, **overrides))
    return PrunedASTForAudioClassification(config).eval()


def tiny_audiomae():
    torch.manual_seed(0)
    config = PrunedAudioMAEConfig(
        hidden_size=64, num_hidden_layers=12, num_attention_heads=4, intermediate_size=128, patch_size=16,
        num_mel_bins=64, max_length=128, num_labels=10, keep_rate=0.5,
    )
    model = PrunedAudioMAEForAudioClassification(config).eval()
    return model, AudioMAEFeatureExtractor(num_mel_bins=64, max_length=128, **SPEECH_COMMANDS_NORM)


KEYWORD_DATA = load_audio_classification("audiofolder", data_dir=str(KEYWORDS))


def keyword_subset():
    """One test clip of each of the ten words."""
    dataset = KEYWORD_DATA.test
    return dataset.select(range(0, len(dataset), len(dataset) // NUM_CLIPS))


def analysis_setup(model, extractor, **references):
    data = prepare_analysis_data(keyword_subset(), KEYWORD_DATA.label_names, False, extractor, model, batch_size=4)
    statistics = patch_statistics(model, data)
    return SimpleNamespace(
        model=model, extractor=extractor, data=data, statistics=statistics,
        intensity=intensity_clusters(statistics), variation=variation_clusters(statistics), **references,
    )


def ast_logits_by_hand(model, hidden):
    sequence = model.audio_spectrogram_transformer.layernorm(hidden)
    return model.classifier((sequence[:, 0] + sequence[:, 1]) / 2)


def audiomae_logits_by_hand(model, hidden):
    return model.classifier(model.audiomae.fc_norm(hidden[:, 1:].mean(dim=1)))


@pytest.fixture(scope="module")
def ast_setup():
    extractor = ASTFeatureExtractor(num_mel_bins=64, max_length=128, **SPEECH_COMMANDS_NORM)
    return analysis_setup(
        tiny_ast(), extractor,
        score_by_hand=lambda weights: weights[:, :, 0, 2:].mean(1),  # CLS row over patch keys (paper eq. 2b)
        logits_by_hand=ast_logits_by_hand,
    )


@pytest.fixture(scope="module")
def audiomae_setup():
    return analysis_setup(
        *tiny_audiomae(),
        score_by_hand=lambda weights: weights[:, :, 1:, 1:].mean((1, 2)),  # received attention (paper eq. 2a)
        logits_by_hand=audiomae_logits_by_hand,
    )


@pytest.fixture(params=["ast", "audiomae"])
def any_setup(request):
    """Each supported model type; the analyses use only the interface PrunedAST and PrunedAudioMAE share."""
    return request.getfixturevalue(f"{request.param}_setup")


def features_and_labels(setup):
    """Model inputs and label ids made directly from the decoded clips, without AnalysisData."""
    rows = setup.data.dataset
    waves = [row["audio"]["array"] for row in rows]
    features = setup.extractor(waves, sampling_rate=16000, return_tensors="pt")["input_values"]
    return features, torch.tensor(rows["labels"]), waves


# 1. Kendall's tau -----------------------------------------------------------------------------------------------------


def direct_pair_count(x, y, valid):
    concordant = discordant = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        if valid[i] and valid[j]:
            if (x[i] - x[j]) * (y[i] - y[j]) >= 0:
                concordant += 1
            else:
                discordant += 1
    return concordant, discordant


def test_concordance_counts_match_a_direct_pairwise_count_with_ties_and_masks():
    generator = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 6, (3, 17), generator=generator).double()  # many ties on both sides
    ranks = torch.randint(0, 5, (3, 17), generator=generator)
    valid = torch.rand(3, 17, generator=generator) > 0.3
    concordant, discordant = concordance_counts(scores, ranks, valid)
    for sample in range(3):
        expected = direct_pair_count(scores[sample].tolist(), ranks[sample].tolist(), valid[sample].tolist())
        assert (concordant[sample].item(), discordant[sample].item()) == expected
    x, y = scores[0].tolist(), ranks[0].tolist()
    c, d = direct_pair_count(x, y, [True] * len(x))
    assert kendall_tau_ties_concordant(x, y) == pytest.approx((c - d) / (c + d), abs=1e-12)


def test_tau_equals_scipy_on_tie_free_data():
    generator = np.random.default_rng(2)
    for _ in range(5):
        x, y = generator.permutation(40), generator.normal(size=40)
        assert kendall_tau_ties_concordant(x, y) == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)


def test_kendall_per_block_matches_a_pairwise_count_over_the_survivors(any_setup):
    model, data = any_setup.model, any_setup.data
    result = kendall_tau_per_block(model, data, any_setup.intensity, any_setup.variation, keep_rate=0.5)
    table = result.table
    assert list(table["block"]) == list(range(12)) and result.num_samples == NUM_CLIPS
    assert table["tau intensity"].between(-1, 1).all() and table["tau variation"].between(-1, 1).all()

    # Reference: the bookkeeping of one pruned forward done by hand, the score read off the eager weights.
    features, _, waves = features_and_labels(any_setup)
    model.set_attn_implementation("eager")
    model.set_keep_rate(0.5)
    with torch.no_grad():
        outputs = model(features, output_attentions=True, output_kept_patches=True)
    model.set_attn_implementation("sdpa")
    intensity, variation = model.patch_layout.patch_statistics(features)
    for block in (2, 4, 10):  # before any pruning, after the first, after the last
        survivors = torch.arange(intensity.shape[1]).expand_as(intensity)
        for layer, kept in zip(model.config.pruning_layers, outputs.kept_patches):
            if layer < block:
                survivors = kept
        scores = any_setup.score_by_hand(outputs.attentions[block])
        for statistic, values, clusters in (("intensity", intensity, any_setup.intensity),
                                            ("variation", variation, any_setup.variation)):
            concordant = discordant = 0
            tau_b = []
            for sample in range(len(waves)):
                patches = survivors[sample].tolist()
                ranks = clusters.assign(values[sample, patches].numpy())
                c, d = direct_pair_count(scores[sample].tolist(), ranks.tolist(), [True] * len(patches))
                concordant, discordant = concordant + c, discordant + d
                tau_b.append(kendalltau(scores[sample].numpy(), ranks).statistic)
            row = table.iloc[block]
            assert row["tokens per sample"] == len(survivors[0])
            assert row[f"tau {statistic}"] == pytest.approx((concordant - discordant) / (concordant + discordant))
            assert row[f"tau-b {statistic}"] == pytest.approx(np.nanmean(tau_b))


def test_kendall_excluding_padding_compares_fewer_tokens(ast_setup):
    full = kendall_tau_per_block(ast_setup.model, ast_setup.data, ast_setup.intensity, ast_setup.variation)
    unpadded = kendall_tau_per_block(
        ast_setup.model, ast_setup.data, ast_setup.intensity, ast_setup.variation, exclude_padding=True
    )
    padded_share = (ast_setup.statistics.padding_fraction > 0).float().mean().item()
    assert 0 < padded_share < 1  # keyword clips are shorter than the 128-frame window
    assert unpadded.table["tokens per sample"].iloc[0] == pytest.approx(32 * (1 - padded_share))
    assert (unpadded.table["tokens per sample"] < full.table["tokens per sample"]).all()


# 2. clusters and padding ----------------------------------------------------------------------------------------------


def test_clusters_are_numbered_by_ascending_centre():
    generator = np.random.default_rng(3)
    means, sizes = [3.0, -2.0, 8.0, 0.0, 5.0], [300, 100, 50, 400, 150]  # deliberately not in order
    values = np.concatenate([generator.normal(m, 0.2, n) for m, n in zip(means, sizes)])
    generator.shuffle(values)
    clusters = fit_value_clusters(values, "intensity", num_clusters=5, seed=0)
    order = np.argsort(means)
    assert clusters.names == ["C1", "C2", "C3", "C4", "C5"]
    assert list(clusters.sizes) == [sizes[i] for i in order]
    assert np.all(np.diff(clusters.centers) > 0)
    assert np.all(clusters.maximums[:-1] < clusters.minimums[1:])
    nearest = np.abs(values[:, None] - clusters.centers[None, :]).argmin(axis=1)  # independent nearest-centre rank
    assert np.array_equal(clusters.assign(values), nearest)
    assert np.array_equal(clusters.assign(torch.tensor(values)).numpy(), nearest)
    table = clusters.table()
    assert table["size (%)"].sum() == pytest.approx(100)
    assert np.allclose(table["upper boundary"][:-1], (clusters.centers[1:] + clusters.centers[:-1]) / 2)


def test_dataset_clusters_cover_every_patch_or_only_unpadded_ones(ast_setup):
    statistics = ast_setup.statistics
    assert statistics.intensity.shape == (NUM_CLIPS, 32)
    assert ast_setup.intensity.sizes.sum() == statistics.intensity.numel()
    unpadded = intensity_clusters(statistics, exclude_padding=True)
    assert unpadded.sizes.sum() == (statistics.padding_fraction == 0).sum()
    assert unpadded.exclude_padding and not ast_setup.intensity.exclude_padding


def test_padding_fraction_follows_the_clip_length(any_setup):
    model, extractor = any_setup.model, any_setup.extractor
    features, _, waves = features_and_labels(any_setup)
    num_frames = torch.tensor([num_fbank_frames(len(wave), 16000) for wave in waves])
    # The frame count is where the extractor's padding starts: AST pads with 0, AudioMAE with the clip's minimum.
    for sample, frames in enumerate(num_frames.tolist()):
        real, padded = features[sample, :frames], features[sample, frames:]
        fill = real.min() if padding_kind(extractor) == "minimum" else (0 - extractor.mean) / (2 * extractor.std)
        assert torch.all(padded == torch.as_tensor(fill, dtype=features.dtype))
        assert not torch.all(real[-1] == padded[0])
    _, _, fraction = batch_patch_statistics(model, features, num_frames)
    layout = model.patch_layout  # AST frequency-major (token f * time_patches + t), AudioMAE time-major (t * F + f)
    for sample, frames in enumerate(num_frames.tolist()):
        for token in range(layout.num_patches):
            time = token // layout.num_frequency_patches if layout.time_major else token % layout.num_time_patches
            start = time * layout.time_stride
            expected = min(max(start + layout.patch_size - frames, 0), layout.patch_size) / layout.patch_size
            assert fraction[sample, token].item() == pytest.approx(expected)


def test_labels_are_matched_to_the_model_by_name(ast_setup):
    words = KEYWORD_DATA.label_names
    reversed_words = words[::-1]
    config = PrunedASTConfig(**tiny_ast_kwargs(num_labels=10, id2label=dict(enumerate(reversed_words))))
    data = prepare_analysis_data(ast_setup.data.dataset, words, False, ast_setup.extractor, SimpleNamespace(config=config))
    dataset_ids = ast_setup.data.dataset["labels"]
    assert data.labels() == [reversed_words.index(words[i]) for i in dataset_ids]
    assert [data.label_names[i] for i in data.labels()] == [words[i] for i in dataset_ids]


def test_multi_label_data_are_scored_with_map(ast_setup):
    names = KEYWORD_DATA.label_names
    single = ast_setup.data.dataset
    features = single.features.copy()
    features["labels"] = datasets.List(datasets.ClassLabel(names=names))
    dataset = single.map(lambda row: {"labels": [row["labels"], (row["labels"] + 1) % 10]}, features=features)
    data = prepare_analysis_data(dataset, names, True, ast_setup.extractor, ast_setup.model)
    assert data.multi_label and data.metric_name == "mAP"
    value = evaluate_model(ast_setup.model, data, keep_rate=0.5)
    features, _, _ = features_and_labels(ast_setup)
    targets = np.zeros((NUM_CLIPS, 10), dtype=bool)
    for row, label in enumerate(single["labels"]):
        targets[row, [label, (label + 1) % 10]] = True
    with torch.no_grad():
        logits = ast_setup.model(features).logits.numpy()
    assert value == pytest.approx(average_precision_score(targets, logits, average="macro"))


# 3. sweep and MACs ----------------------------------------------------------------------------------------------------


def test_sweep_has_a_method_dimension_evaluated_by_each_method(ast_setup):
    model, data = ast_setup.model, ast_setup.data
    saved = (model.config.keep_rate, model.config.token_reduction)
    result = keep_rate_sweep(model, data, keep_rates=(1.0, 0.5), token_scores=("attention", "random"),
                             token_reductions=("prune", "fuse", "merge"))
    assert (model.config.keep_rate, model.config.token_reduction) == saved  # settings restored
    table = result.table
    assert len(table) == 8  # per keep rate: prune x 2 scores, fuse and merge with attention
    assert set(table[table["token_reduction"] != "prune"]["token_score"]) == {"attention"}
    assert table[table["keep_rate"] == 1.0]["accuracy (%)"].nunique() == 1  # nothing reduced: one model
    features, labels, _ = features_and_labels(ast_setup)
    for method in ("fuse", "merge"):
        model.config.token_reduction = method
        model.set_keep_rate(0.5)
        with torch.no_grad():
            accuracy = (model(features).logits.argmax(-1) == labels).float().mean().item()
        model.config.token_reduction = "prune"
        row = table[(table["token_reduction"] == method) & (table["keep_rate"] == 0.5)]
        assert np.allclose(row["accuracy (%)"], 100 * accuracy)
    model.set_keep_rate(saved[0])
    wide = result.pivot()
    assert {"fuse", "merge", "GMACs prune", "GMACs fuse", "GMACs merge"} <= set(wide.columns)
    assert (wide["GMACs fuse"] >= wide["GMACs prune"]).all() and (wide["GMACs merge"] >= wide["GMACs prune"]).all()


def test_sweep_at_keep_rate_one_equals_plain_evaluation(ast_setup):
    model, data = ast_setup.model, ast_setup.data
    result = keep_rate_sweep(model, data, keep_rates=(1.0, 0.5))
    features, labels, _ = features_and_labels(ast_setup)
    model.set_keep_rate(1.0)
    with torch.no_grad():
        accuracy = (model(features).logits.argmax(-1) == labels).float().mean().item()
    model.set_keep_rate(0.5)
    table = result.table
    assert len(table) == 8 and set(table["token_score"]) == {"attention", "intensity", "variation", "random"}
    assert np.allclose(table[table["keep_rate"] == 1.0]["accuracy (%)"], 100 * accuracy)
    with torch.no_grad():
        pruned = (model(features).logits.argmax(-1) == labels).float().mean().item()  # keep rate 0.5, attention
    attention = table[(table["keep_rate"] == 0.5) & (table["token_score"] == "attention")]
    assert attention["accuracy (%)"].item() == pytest.approx(100 * pruned)
    assert attention["patch tokens"].item() == "32 → 16 → 8 → 4"
    assert model.config.keep_rate == 0.5 and model.config.token_score == "attention"  # settings restored
    wide = result.pivot()
    assert list(wide["keep rate"]) == [1.0, 0.5] and wide["GMACs"].iloc[0] > wide["GMACs"].iloc[1]


def test_sweep_of_a_keep_mass_model_adds_its_own_setting_counted_per_clip(ast_setup, tmp_path):
    model, data = ast_setup.model, ast_setup.data
    features, labels, _ = features_and_labels(ast_setup)
    # intensity: a fresh model's attention is near uniform, so every clip would keep the same count
    with model.reduction_settings(keep_rate=1.0, keep_mass=0.6, token_score="intensity"):
        result = keep_rate_sweep(model, data, keep_rates=(1.0, 0.5), token_scores=("intensity",))
        assert model.config.keep_mass == 0.6  # settings restored
        correct, macs = 0, []
        for clip, label in zip(features, labels):  # each clip alone: the reference count is FlopCounterMode's
            with torch.no_grad():
                correct += int(model(clip[None]).logits.argmax(-1).item() == label)
            macs.append(count_forward_macs(model, clip[None]))
    table = result.table
    fixed, adaptive = table[table["keep_mass"].isna()], table[table["keep_mass"].notna()]
    assert list(fixed["keep_rate"]) == [1.0, 0.5]
    with model.reduction_settings(token_score="intensity"):
        assert list(fixed["GMACs"]) == [count_macs(model.config, rate).total / 1e9 for rate in (1.0, 0.5)]
    assert len(adaptive) == 1 and adaptive["keep_mass"].item() == 0.6 and adaptive["keep_rate"].item() == 1.0
    assert adaptive["accuracy (%)"].item() == pytest.approx(100 * correct / len(labels))
    assert adaptive["GMACs"].item() == pytest.approx(sum(macs) / len(macs) / 1e9, rel=1e-12)
    assert len(set(macs)) > 1  # the clips keep counts of their own
    wide = result.pivot()
    assert "intensity keep_mass=0.6" in wide.columns and list(wide["GMACs"]) == list(fixed["GMACs"])
    result.write(tmp_path)
    assert (tmp_path / "sweep.png").is_file()

    # the same setting saved as a folder: fine_tuned_sweep counts it per clip too
    with model.reduction_settings(keep_rate=1.0, keep_mass=0.6, token_score="intensity"):
        model.save_pretrained(tmp_path / "adaptive")
    data.feature_extractor.save_pretrained(tmp_path / "adaptive")
    (row,) = fine_tuned_sweep([tmp_path / "adaptive"], data).table.to_dict("records")
    assert row["keep_mass"] == 0.6 and row["source"] == "adaptive"
    assert (row["accuracy (%)"], row["GMACs"]) == (adaptive["accuracy (%)"].item(), adaptive["GMACs"].item())


# 4. cluster drop -----------------------------------------------------------------------------------------------------


def test_cluster_drop_that_keeps_everything_equals_the_unpruned_metric(ast_setup):
    model, data = ast_setup.model, ast_setup.data
    result = cluster_drop(model, data, ast_setup.intensity, blocks=(1, 11), groups={"nothing": ()})
    unpruned = evaluate_model(model, data, keep_rate=1.0)
    assert result.baseline == pytest.approx(unpruned)
    assert np.allclose(result.table["accuracy (%)"], 100 * unpruned)
    assert (result.table["samples evaluated"] == NUM_CLIPS).all()
    assert (result.table["patch tokens kept (mean)"] == 32).all()


def test_cluster_drop_counts_samples_left_without_tokens(ast_setup):
    model, data, clusters = ast_setup.model, ast_setup.data, ast_setup.intensity
    groups = {"all but C5": (0, 1, 2, 3), "L": (0, 1)}
    result = cluster_drop(model, data, clusters, blocks=(3,), groups=groups)
    ranks = clusters.assign(ast_setup.statistics.intensity)
    for name, members in groups.items():
        dropped = np.isin(ranks.numpy(), members)
        row = result.table[result.table["dropped"] == name].iloc[0]
        assert row["samples with no patch token"] == dropped.all(axis=1).sum()
        assert row["samples evaluated"] == NUM_CLIPS - dropped.all(axis=1).sum()
        assert row["patch tokens kept (mean)"] == pytest.approx((~dropped).sum(axis=1).mean())


def test_dropping_tokens_after_a_block_matches_a_forward_written_by_hand(any_setup):
    model = any_setup.model
    model.set_keep_rate(1.0)
    inputs = torch.randn(1, 128, 64)
    keep = torch.tensor([0, 5, 6, 17, 31])
    extra = 2 if isinstance(model, PrunedASTForAudioClassification) else 1  # CLS (+ distillation for AST)
    with torch.no_grad():
        with dropping_tokens_after(model, 3) as state:
            state["keep"] = keep
            logits = model(inputs).logits
        hidden = model.base_model.embeddings(inputs)
        for index, layer in enumerate(model.base_model.layers):
            hidden = hidden + layer.attention(layer.layernorm_before(hidden))[0]
            hidden = hidden + layer.mlp(layer.layernorm_after(hidden))
            if index == 3:
                hidden = torch.cat([hidden[:, :extra], hidden[:, extra + keep]], dim=1)
        expected = any_setup.logits_by_hand(model, hidden)
        assert (logits - expected).abs().max() < 1e-5
        assert not torch.allclose(logits, model(inputs).logits)  # and the hook is gone afterwards
    model.set_keep_rate(0.5)


# 5. histograms, patterns, and every analysis on every model type -----------------------------------------------------


def test_histograms_count_the_survivors_and_their_low_intensity_share(ast_setup):
    model, data, clusters = ast_setup.model, ast_setup.data, ast_setup.intensity
    result = retained_patch_histograms(model, data, clusters, keep_rate=0.5)
    features, _, _ = features_and_labels(ast_setup)
    with torch.no_grad():
        kept = model(features, output_kept_patches=True).kept_patches[-1]
    intensity, _ = model.patch_layout.patch_statistics(features)
    retained = intensity.gather(1, kept)
    assert len(result.all_patches) == NUM_CLIPS * 32 and len(result.retained) == NUM_CLIPS * 4
    assert np.allclose(np.sort(result.retained[:, 0]), np.sort(retained.flatten().numpy()))
    expected_share = np.isin(clusters.assign(retained.flatten().numpy()), (0, 1)).mean()
    assert result.low_intensity_share == pytest.approx(expected_share)


def test_patterns_draw_one_example_per_class_first(ast_setup, tmp_path):
    result = pruning_patterns(ast_setup.model, ast_setup.data, num_examples=3, keep_rate=0.5)
    labels = [re.search(r"label (\w+)", example.suptitle).group(1) for example in result.examples]
    assert len(set(labels)) == 3
    example = result.examples[0]
    assert len(example.masks) == 4 and example.spectrogram.shape == (64, 128)
    assert example.masks[-1].sum() == 4 * 16 * 16  # 4 patches survive the last pruning layer
    result.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patterns_1.png", "patterns_2.png", "patterns_3.png"]


@pytest.mark.parametrize("method", ["fuse", "merge"])
def test_patterns_show_what_the_fused_token_absorbed_and_the_merged_groups(ast_setup, tmp_path, method):
    model = ast_setup.model
    model.config.token_reduction = method
    try:
        result = pruning_patterns(model, ast_setup.data, num_examples=2, keep_rate=0.5)
        with torch.no_grad():
            outputs = model(ast_setup.data.select([0]).batches().__iter__().__next__()["input_values"],
                            output_kept_patches=True)
    finally:
        model.config.token_reduction = "prune"
    example = result.examples[0]
    assert all(mask.all() for mask in example.masks)  # nothing is blanked: every patch is still represented
    assert example.overlays[0] is None and len(example.overlays) == 4
    last = example.overlays[-1]
    if method == "fuse":  # coloured = not among the 4 kept patches of the last layer
        assert (last >= 0).sum() == (32 - 4) * 16 * 16
    else:  # coloured = patches in groups of two or more; 4 tokens carry all 32 patches
        sizes = torch.bincount(outputs.source_maps[-1][0])
        assert len(sizes) == 4 and (last >= 0).sum() == int(sizes[sizes > 1].sum()) * 16 * 16
        assert "4 tokens for 32 patches" in example.titles[-1]
    result.write(tmp_path)
    assert (tmp_path / "patterns_1.png").is_file()


def test_every_analysis_runs_and_writes_on_every_model_type(any_setup, tmp_path):
    model, data = any_setup.model, any_setup.data
    results = {
        "sweep": keep_rate_sweep(model, data, keep_rates=(1.0, 0.6), token_scores=("attention", "random")),
        "kendall": kendall_tau_per_block(model, data, any_setup.intensity, any_setup.variation),
        "cluster_drop": cluster_drop(model, data, any_setup.intensity, blocks=(1, 9)),
        "histograms": retained_patch_histograms(model, data, any_setup.intensity),
    }
    for name, result in results.items():
        section = result.write(tmp_path)
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name
        for link in re.findall(r"\]\(([^)]+)\)", section):
            assert (tmp_path / link).is_file(), (name, link)
    assert np.isfinite(results["kendall"].table["tau intensity"]).all()


# 6. the recipe and its errors ----------------------------------------------------------------------------------------


def save_tiny_model(path):
    model = tiny_ast()
    model.save_pretrained(path)
    ASTFeatureExtractor(num_mel_bins=64, max_length=128, **SPEECH_COMMANDS_NORM).save_pretrained(path)
    return path


def test_recipe_writes_every_analysis_and_an_index_linking_them(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    output_dir = tmp_path / "analysis"
    analysis_command.main([
        "--model_name_or_path", str(model_dir), "--dataset_name", "audiofolder", "--data_dir", str(KEYWORDS),
        "--split", "test", "--max_samples", "6", "--keep_rates", "1.0,0.5", "--blocks", "1,11",
        "--num_examples", "2", "--exclude_padding", "--sweep_models", str(model_dir), "--output_dir", str(output_dir),
    ])
    index = (output_dir / "index.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", index)
    assert all((output_dir / link).is_file() for link in links)
    for name in ("sweep_table", "clusters", "kendall", "cluster_drop", "histograms"):
        assert f"{name}.csv" in links and f"{name}.md" in links
    for figure in ("sweep", "clusters", "kendall", "cluster_drop", "histograms", "patterns_1", "patterns_2"):
        assert f"{figure}.png" in links
    assert "pads short clips with log-mel 0" in index and "excluded from the statistics" in index
    sweep = (output_dir / "sweep.csv").read_text()
    assert "model" in sweep  # the fine-tuned folder's own row, named after it


def test_recipe_reads_an_audiomae_folder_and_notes_its_minimum_padding(tmp_path):
    model, extractor = tiny_audiomae()
    model.save_pretrained(tmp_path / "model")
    extractor.save_pretrained(tmp_path / "model")
    analysis_command.main([
        "--model_name_or_path", str(tmp_path / "model"), "--dataset_name", "audiofolder", "--data_dir", str(KEYWORDS),
        "--max_samples", "6", "--analyses", "clusters,patterns", "--num_examples", "1",
        "--output_dir", str(tmp_path / "analysis"),
    ])
    index = (tmp_path / "analysis" / "index.md").read_text()
    assert "PrunedAudioMAEForAudioClassification" in index and "pads short clips with the clip's minimum" in index
    assert "Fully padded patches fall in: C1 100%" in index  # minimum padding is the quietest thing in a clip
    assert (tmp_path / "analysis" / "patterns_1.png").is_file()


def test_not_a_pruned_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a pruned audio transformer"):
        check_pruned_model(ASTForAudioClassification(ASTConfig(**tiny_ast_kwargs())))
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match="'bert' model, not a pruned audio transformer"):
        load_pruned_model(tmp_path)


def test_analysis_data_come_through_the_data_loaders(ast_setup):
    data = load_analysis_data(ast_setup.model, ast_setup.extractor, "audiofolder", "validation", data_dir=str(KEYWORDS))
    assert len(data) == 60 and data.labels() == KEYWORD_DATA.eval["labels"]
    batch = next(iter(data.batches(batch_size=3)))
    rows = KEYWORD_DATA.eval.select(range(3))
    expected = ast_setup.extractor([r["audio"]["array"] for r in rows], sampling_rate=16000, return_tensors="pt")
    assert torch.equal(batch["input_values"], expected["input_values"])
    with pytest.raises(ValueError, match="no split 'dev' here: choose --split from test, train, validation"):
        load_analysis_data(ast_setup.model, ast_setup.extractor, "audiofolder", "dev", data_dir=str(KEYWORDS))
    with pytest.raises(ValueError, match="no audio column 'sound'.*--audio_column_name"):
        load_analysis_data(ast_setup.model, ast_setup.extractor, "audiofolder", data_dir=str(KEYWORDS),
                           audio_column_name="sound")


def test_every_test_clip_of_the_shipped_data_goes_through_the_analysis_batches(ast_setup):
    # off_035.flac and on_035.flac fail when torchcodec decodes them a second time: each clip is decoded once.
    data = load_analysis_data(ast_setup.model, ast_setup.extractor, "audiofolder", "test", data_dir=str(KEYWORDS))
    batches = list(data.batches(batch_size=16))
    assert sum(len(batch["index"]) for batch in batches) == len(data) == 300
    assert all(1 <= frames <= 128 for batch in batches for frames in batch["num_frames"].tolist())


def test_unknown_analysis_is_refused(capsys):
    with pytest.raises(ValueError, match=r"unknown analysis 'kendal'.*choose from sweep"):
        parse_analyses("sweep,kendal")
    assert parse_analyses(" sweep , kendall") == ["sweep", "kendall"]
    with pytest.raises(SystemExit):
        analysis_command.parse_args(["--model_name_or_path", "m", "--dataset_name", "d", "--analyses", "sweeps"])
    assert "unknown analysis 'sweeps'" in capsys.readouterr().err
    assert set(ANALYSES) == {"sweep", "patterns", "clusters", "kendall", "cluster_drop", "histograms"}

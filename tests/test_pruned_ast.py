import json
import math
import re
import warnings

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import save_file
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, AutoModelForAudioClassification
from transformers import pipeline
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from conftest import run_with_package_blocked, tiny_ast_kwargs
from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification, PrunedASTModel, kept_token_counts
from hf_token_prune.modeling_pruned_ast import PrunedASTAttention
from hf_token_prune.checks import parse_keep_rates
from hf_token_prune.patch_layout import PatchLayout
from hf_token_prune.selection import num_kept_tokens
from hf_token_prune.visualization import kept_patch_mask


def stock_and_pruned(attn_implementation="sdpa", **overrides):
    """transformers' own AST and ours with the same random weights."""
    kwargs = tiny_ast_kwargs(**overrides)
    stock = ASTForAudioClassification(ASTConfig(**kwargs)).eval()
    pruned = PrunedASTForAudioClassification(PrunedASTConfig(**kwargs)).eval()
    pruned.load_state_dict(stock.state_dict())
    stock.set_attn_implementation(attn_implementation)
    pruned.set_attn_implementation(attn_implementation)
    return stock, pruned


def random_input(config, batch_size=2):
    return torch.randn(batch_size, config.max_length, config.num_mel_bins)


# 1. keep rate 1.0 is transformers' AST ------------------------------------------------------------------------------

GEOMETRIES = {
    "patch16-stride16": {},
    "overlap-stride10": dict(frequency_stride=10, time_stride=10),
    "mixed-strides": dict(frequency_stride=12, time_stride=8, max_length=96),
}


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_keep_rate_one_matches_transformers_ast(attn_implementation, batch_size, geometry):
    stock, pruned = stock_and_pruned(attn_implementation, **GEOMETRIES[geometry])
    inputs = random_input(stock.config, batch_size)
    with torch.no_grad():
        expected = stock(inputs, output_hidden_states=True)
        actual = pruned(inputs, output_hidden_states=True)
    assert (actual.logits - expected.logits).abs().max() <= 1e-5
    assert len(actual.hidden_states) == len(expected.hidden_states)
    assert (actual.hidden_states[-1] - expected.hidden_states[-1]).abs().max() <= 1e-5


def reference_pruned_logits(stock, inputs, keep_rate, pruning_layers):
    """The paper's pruned forward written out on transformers' own (eager) AST modules, one sample at a time."""
    ast = stock.audio_spectrogram_transformer
    logits = []
    for sample in inputs:
        hidden = ast.embeddings(sample[None])
        for index, layer in enumerate(ast.layers):
            attention_output, weights = layer.attention(layer.layernorm_before(hidden))
            hidden = hidden + attention_output
            if index in pruning_layers:
                cls_score = weights[0, :, 0, 2:].mean(0)
                keep = cls_score.argsort(descending=True)[: math.ceil(len(cls_score) * keep_rate)]
                hidden = torch.cat([hidden[:, :2], hidden[:, 2 + keep]], dim=1)
            hidden = hidden + layer.mlp(layer.layernorm_after(hidden))
        sequence = ast.layernorm(hidden)
        logits.append(stock.classifier((sequence[:, 0] + sequence[:, 1]) / 2)[0])
    return torch.stack(logits)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_pruned_forward_matches_a_reference_written_on_transformers_modules(attn_implementation, geometry):
    stock, pruned = stock_and_pruned(attn_implementation, **GEOMETRIES[geometry])
    stock.set_attn_implementation("eager")
    pruned.set_keep_rate(0.55)
    inputs = random_input(stock.config, 3)
    with torch.no_grad():
        expected = reference_pruned_logits(stock, inputs, 0.55, [3, 6, 9])
        assert (pruned(inputs).logits - expected).abs().max() <= 1e-5


def test_pruning_changes_the_output_and_costs_less_tokens():
    _, pruned = stock_and_pruned()
    inputs = random_input(pruned.config)
    with torch.no_grad():
        full = pruned(inputs).logits
        pruned.set_keep_rate(0.5)
        reduced = pruned(inputs, output_hidden_states=True)
    assert not torch.allclose(full, reduced.logits)
    assert [h.shape[1] for h in reduced.hidden_states][-1] == 2 + kept_token_counts(32, 0.5, 3)[-1]


# 2. attention score under SDPA equals the eager attention matrix --------------------------------------------------


def test_sdpa_cls_score_equals_eager_attention_matrix():
    config = PrunedASTConfig(**tiny_ast_kwargs())
    attention = PrunedASTAttention(config).eval()
    hidden = torch.randn(3, 34, config.hidden_size)
    config._attn_implementation = "eager"
    _, weights, eager_score = attention(hidden, token_signal="score")
    assert weights is not None
    config._attn_implementation = "sdpa"
    _, no_weights, sdpa_score = attention(hidden, token_signal="score")
    assert no_weights is None  # the score did not come from a materialised matrix
    independent = weights[:, :, 0, 2:].mean(dim=1)
    assert sdpa_score.shape == (3, 32)
    assert (sdpa_score - independent).abs().max() <= 1e-6
    assert (eager_score - independent).abs().max() <= 1e-6


def test_eager_and_sdpa_prune_the_same_patches():
    _, eager = stock_and_pruned("eager")
    _, sdpa = stock_and_pruned("sdpa")
    sdpa.load_state_dict(eager.state_dict())
    inputs = random_input(eager.config, 4)
    for model in (eager, sdpa):
        model.set_keep_rate(0.6)
    with torch.no_grad():
        a, b = eager(inputs, output_kept_patches=True), sdpa(inputs, output_kept_patches=True)
    assert (a.logits - b.logits).abs().max() <= 1e-5
    for kept_a, kept_b in zip(a.kept_patches, b.kept_patches):
        assert torch.equal(kept_a, kept_b)


# 3. pruning ---------------------------------------------------------------------------------------------------------


def test_ceil_rule():
    assert kept_token_counts(512, 0.7, 3) == [359, 252, 177]
    assert kept_token_counts(512, 0.5, 3) == [256, 128, 64]
    assert kept_token_counts(64, 0.4, 3) == [26, 11, 5]
    assert num_kept_tokens(100, 0.7) == 70  # 100 * 0.7 == 70.00000000000001 in floating point
    assert num_kept_tokens(3, 0.01) == 1


def test_kept_counts_follow_the_ceil_rule_on_512_patches():
    config = PrunedASTConfig(**tiny_ast_kwargs(num_mel_bins=128, max_length=1024, keep_rate=0.7))
    model = PrunedASTModel(config).eval()
    with torch.no_grad():
        output = model(random_input(config, 2), output_kept_patches=True, output_hidden_states=True)
    assert [patches.shape for patches in output.kept_patches] == [(2, 359), (2, 252), (2, 177)]
    lengths = [hidden.shape[1] - 2 for hidden in output.hidden_states[1:]]
    assert lengths == [512] * 3 + [359] * 3 + [252] * 3 + [177] * 3
    for patches in output.kept_patches:
        assert all(len(set(row.tolist())) == patches.shape[1] for row in patches)
        assert patches.min() >= 0 and patches.max() < 512


@pytest.mark.parametrize("token_score", ["attention", "intensity", "variation", "random"])
def test_sample_in_batch_equals_sample_alone(token_score):
    _, model = stock_and_pruned()
    model.config.token_score = token_score
    model.set_keep_rate(0.5)
    inputs = random_input(model.config, 4)
    with torch.no_grad():
        torch.manual_seed(1)
        batched = model(inputs, output_kept_patches=True)
        for i in range(4):
            alone = model(inputs[i : i + 1], output_kept_patches=True)
            if token_score == "random":
                continue  # random scores differ per call; counts are checked elsewhere
            assert (alone.logits[0] - batched.logits[i]).abs().max() <= 1e-5
            for kept_alone, kept_batched in zip(alone.kept_patches, batched.kept_patches):
                assert torch.equal(kept_alone[0], kept_batched[i])


def spectrogram_with_known_patches(config, means, stds):
    """(1, frames, mel) input whose patch p (AST order: frequency-major) has exactly mean means[p] and std stds[p]."""
    frequency_patches = config.num_mel_bins // config.patch_size
    time_patches = config.max_length // config.patch_size
    noise = torch.randn(config.patch_size, config.patch_size)
    noise = (noise - noise.mean()) / noise.std()
    image = torch.empty(config.num_mel_bins, config.max_length)  # (frequency, time) as the patch embedding sees it
    for patch in range(frequency_patches * time_patches):
        f, t = divmod(patch, time_patches)
        rows, cols = slice(f * 16, f * 16 + 16), slice(t * 16, t * 16 + 16)
        image[rows, cols] = means[patch] + stds[patch] * noise
    return image.T.unsqueeze(0)


@pytest.mark.parametrize("token_score", ["intensity", "variation"])
def test_patch_statistics_follow_survivors_through_every_pruning_layer(token_score):
    config = PrunedASTConfig(**tiny_ast_kwargs(keep_rate=0.6, token_score=token_score))
    model = PrunedASTModel(config).eval()
    num_patches = 32
    means, stds = torch.randperm(num_patches).float() / 8, torch.randperm(num_patches).float() / 10 + 0.1
    inputs = spectrogram_with_known_patches(config, means, stds)
    ranking = (means if token_score == "intensity" else stds).argsort(descending=True)
    with torch.no_grad():
        kept = model(inputs, output_kept_patches=True).kept_patches
    counts = kept_token_counts(num_patches, 0.6, 3)
    assert [patches.shape[1] for patches in kept] == counts == [20, 12, 8]
    # The top of the top: each layer must keep the globally loudest (or most varied) patches, best first. Indices
    # that drifted by the two extra tokens, or statistics not gathered with the survivors, break this.
    for patches, count in zip(kept, counts):
        assert patches[0].tolist() == ranking[:count].tolist()


@pytest.mark.parametrize("time_major", [False, True])
def test_patch_statistics_and_masks_match_the_patch_embedding_windows_with_overlap(time_major):
    frequency_patches, time_patches = (64 - 16) // 10 + 1, (128 - 16) // 6 + 1
    layout = PatchLayout(16, 10, 6, frequency_patches, time_patches, time_major=time_major)
    input_values = torch.randn(2, 128, 64)  # (batch, frames, mel bins)
    means, stds = layout.patch_statistics(input_values)
    assert means.shape == (2, frequency_patches * time_patches)
    for f, t in [(0, 0), (0, 1), (1, 0), (frequency_patches - 1, time_patches - 1), (2, 9)]:
        token = t * frequency_patches + f if time_major else f * time_patches + t
        window = input_values[:, t * 6 : t * 6 + 16, f * 10 : f * 10 + 16].reshape(2, -1)
        assert torch.allclose(means[:, token], window.mean(1), atol=1e-6)
        assert torch.allclose(stds[:, token], window.std(1, unbiased=True), atol=1e-6)
        mask = kept_patch_mask(torch.tensor([token]), layout)
        expected = torch.zeros(mask.shape, dtype=torch.bool)
        expected[f * 10 : f * 10 + 16, t * 6 : t * 6 + 16] = True
        assert torch.equal(mask, expected)


def test_loud_patches_are_kept_through_kept_patches():
    config = PrunedASTConfig(**tiny_ast_kwargs(keep_rate=0.25, token_score="intensity", pruning_layers=[2]))
    model = PrunedASTModel(config).eval()
    loud = [3, 9, 20, 31, 14, 0, 27, 18]  # 8 = ceil(32 * 0.25) patches of the 4 x 8 grid
    means = torch.full((32,), -1.0)
    means[loud] = torch.linspace(3, 1, len(loud))
    inputs = spectrogram_with_known_patches(config, means, torch.full((32,), 0.1))
    with torch.no_grad():
        (kept,) = model(inputs, output_kept_patches=True).kept_patches
    assert kept[0].tolist() == loud


def test_keep_rate_one_reports_every_patch_and_random_score_keeps_valid_patches():
    _, model = stock_and_pruned(token_score="random")
    inputs = random_input(model.config, 3)
    with torch.no_grad():
        full = model(inputs, output_kept_patches=True).kept_patches
        model.set_keep_rate(0.7)
        random_kept = model(inputs, output_kept_patches=True).kept_patches
    assert all(torch.equal(patches, torch.arange(32).expand(3, -1)) for patches in full)
    assert [patches.shape[1] for patches in random_kept] == kept_token_counts(32, 0.7, 3)
    previous = torch.arange(32).expand(3, -1)
    for patches in random_kept:  # survivors of a later layer are a subset of the earlier survivors
        assert all(set(now.tolist()) <= set(before.tolist()) for now, before in zip(patches, previous))
        previous = patches


def test_training_backward_and_loss():
    _, model = stock_and_pruned()
    model.train()
    model.set_keep_rate(0.7)
    output = model(random_input(model.config, 3), labels=torch.tensor([0, 1, 4]))
    output.loss.backward()
    assert model.classifier.dense.weight.grad is not None
    assert model.audio_spectrogram_transformer.layers[0].attention.q_proj.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients():
    _, model = stock_and_pruned(token_score="random")
    model.train()
    model.set_keep_rate(0.6)
    inputs, labels = random_input(model.config, 2), torch.tensor([1, 2])

    def gradients():
        model.zero_grad()
        torch.manual_seed(5)
        model(inputs, labels=labels).loss.backward()
        return model.audio_spectrogram_transformer.layers[1].mlp.fc1.weight.grad.clone()

    plain = gradients()
    model.activation_checkpointing_enable()
    assert torch.allclose(plain, gradients(), atol=1e-6)


# 4. round trips -----------------------------------------------------------------------------------------------------


def load_quietly(*args, **kwargs):
    """Load and return (model, loading_info, everything transformers logged or warned)."""
    logger = logging.get_logger("transformers")
    with CaptureLogger(logger) as captured, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        model, info = PrunedASTForAudioClassification.from_pretrained(*args, output_loading_info=True, **kwargs)
    return model, info, captured.out + "".join(str(w.message) for w in warned)


def assert_clean(info):
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info


def test_stock_checkpoint_in_old_key_layout_loads_without_warnings(tmp_path):
    stock, _ = stock_and_pruned()
    stock.save_pretrained(tmp_path)  # transformers 5 writes the 4.x key names every Hub AST checkpoint uses
    with open(tmp_path / "model.safetensors", "rb"):
        from safetensors import safe_open

        with safe_open(tmp_path / "model.safetensors", "pt") as checkpoint:
            assert any("encoder.layer.0.attention.attention.query" in key for key in checkpoint.keys())
    model, info, log = load_quietly(tmp_path, keep_rate=0.7)
    assert_clean(info)
    assert log.strip() == "", log
    assert isinstance(model.config, PrunedASTConfig) and model.config.keep_rate == 0.7
    inputs = random_input(stock.config)
    model.set_keep_rate(1.0)
    with torch.no_grad():
        assert (model(inputs).logits - stock(inputs).logits).abs().max() <= 1e-5


def test_stock_checkpoint_in_current_key_layout_loads(tmp_path):
    stock, _ = stock_and_pruned()
    stock.config.save_pretrained(tmp_path)
    save_file({k: v.contiguous() for k, v in stock.state_dict().items()}, tmp_path / "model.safetensors")
    model, info, _ = load_quietly(tmp_path)
    assert_clean(info)
    inputs = random_input(stock.config)
    with torch.no_grad():
        assert (model(inputs).logits - stock(inputs).logits).abs().max() <= 1e-5


def test_base_model_loads_from_classification_checkpoint(tmp_path):
    stock, _ = stock_and_pruned()
    stock.save_pretrained(tmp_path)
    model, info = PrunedASTModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    expected = stock.audio_spectrogram_transformer.embeddings.position_embeddings
    assert torch.equal(model.embeddings.position_embeddings, expected)


@pytest.mark.parametrize("max_length", [512, 128])
def test_position_embeddings_are_centre_cropped_for_shorter_clips(tmp_path, max_length):
    stock = ASTForAudioClassification(ASTConfig(**tiny_ast_kwargs(max_length=1024))).eval()
    stock.save_pretrained(tmp_path)
    model, info, log = load_quietly(tmp_path, max_length=max_length)
    assert_clean(info)
    assert "newly initialized" not in log and "MISMATCH" not in log
    # The original AST code: t_dim / 2 - new_t_dim / 2 onwards, on the (frequency, time) grid.
    full = stock.audio_spectrogram_transformer.embeddings.position_embeddings.detach().numpy()
    grid = full[0, 2:].reshape(4, 64, -1)
    new_time = max_length // 16
    start = int(64 / 2) - int(new_time / 2)
    expected = np.concatenate([full[0, :2], grid[:, start : start + new_time].reshape(4 * new_time, -1)])
    np.testing.assert_array_equal(model.audio_spectrogram_transformer.embeddings.position_embeddings[0].detach(), expected)
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, max_length, 64))


def test_new_num_labels_reinitialises_only_the_head(tmp_path):
    stock, _ = stock_and_pruned()
    stock.save_pretrained(tmp_path)
    model, info, log = load_quietly(tmp_path, num_labels=3, ignore_mismatched_sizes=True)
    assert {key for key, *_ in info["mismatched_keys"]} == {"classifier.dense.weight", "classifier.dense.bias"}
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert "MISMATCH" in log  # transformers' usual report
    assert model.classifier.dense.out_features == 3
    assert torch.equal(model.classifier.layernorm.weight, stock.classifier.layernorm.weight)


def save_with_feature_extractor(model, path):
    model.save_pretrained(path)
    ASTFeatureExtractor(num_mel_bins=model.config.num_mel_bins, max_length=model.config.max_length).save_pretrained(path)


def test_save_and_load_round_trip(tmp_path):
    _, model = stock_and_pruned(token_score="variation", keep_rate=0.6, pruning_layers=[1, 5])
    model.config.id2label = {i: f"class_{i}" for i in range(5)}
    model.config.label2id = {f"class_{i}": i for i in range(5)}
    save_with_feature_extractor(model, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_pruned_ast.PrunedASTConfig",
        "AutoModel": "modeling_pruned_ast.PrunedASTModel",
        "AutoModelForAudioClassification": "modeling_pruned_ast.PrunedASTForAudioClassification",
    }
    assert {"pruning.py", "modeling_pruned_ast.py", "configuration_pruned_ast.py", "preprocessor_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    loaded, info, log = load_quietly(tmp_path)
    assert_clean(info)
    assert (loaded.config.keep_rate, loaded.config.pruning_layers, loaded.config.token_score) == (0.6, [1, 5], "variation")
    assert loaded.config.id2label[3] == "class_3"
    auto = AutoModelForAudioClassification.from_pretrained(tmp_path)  # registered: no trust_remote_code needed
    assert type(auto) is PrunedASTForAudioClassification
    inputs = random_input(model.config)
    with torch.no_grad():
        assert torch.equal(loaded(inputs).logits, model(inputs).logits)


@pytest.mark.full
def test_remote_code_with_package_blocked_and_pipeline_on_fixture(tmp_path, keyword_clip):
    _, model = stock_and_pruned(keep_rate=0.7)
    save_with_feature_extractor(model, tmp_path / "model")
    wave, rate = soundfile.read(keyword_clip, dtype="float32")
    extractor = ASTFeatureExtractor.from_pretrained(tmp_path / "model")
    features = extractor(wave, sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        expected = model(**features).logits
    torch.save({"features": features["input_values"], "logits": expected}, tmp_path / "expected.pt")

    result = run_with_package_blocked(
        f"""
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification, pipeline
        folder = {str(tmp_path / "model")!r}
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        assert type(config).__module__.startswith("transformers_modules"), type(config)
        model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model)
        with torch.no_grad():
            diff = (model(expected["features"]).logits - expected["logits"]).abs().max().item()
        assert diff <= 1e-6, diff
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        assert type(base).__name__ == "PrunedASTModel"
        classifier = pipeline("audio-classification", model=folder, trust_remote_code=True)
        print("RESULT", classifier({str(keyword_clip)!r}, top_k=2))
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    top = expected[0].softmax(-1).topk(2)
    printed = result.stdout.split("RESULT", 1)[1]
    assert f"LABEL_{top.indices[0].item()}" in printed.split("}")[0]
    assert f"{top.values[0].item():.4f}"[:5] in printed


def test_pipeline_in_process_matches_the_model(tmp_path, keyword_clip):
    _, model = stock_and_pruned(keep_rate=0.5)
    save_with_feature_extractor(model, tmp_path)
    classifier = pipeline("audio-classification", model=str(tmp_path))
    assert isinstance(classifier.model, PrunedASTForAudioClassification)
    wave, rate = soundfile.read(keyword_clip, dtype="float32")
    predictions = classifier(wave, top_k=5)
    features = ASTFeatureExtractor.from_pretrained(tmp_path)(wave, sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**features).logits[0].softmax(-1)
    for prediction in predictions:
        index = int(prediction["label"].split("_")[1])
        assert math.isclose(prediction["score"], probabilities[index].item(), abs_tol=1e-5)


# 5. bad input -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("keep_rate", 0.0, "(0, 1]"),
        ("keep_rate", -0.2, "(0, 1]"),
        ("keep_rate", 1.01, "(0, 1]"),
        ("keep_rate", float("nan"), "(0, 1]"),
        ("keep_rate", "0.5", "(0, 1]"),
        ("pruning_layers", [12], "[0, 11]"),
        ("pruning_layers", [-1, 3], "[0, 11]"),
        ("pruning_layers", [6, 3], "sorted and unique"),
        ("pruning_layers", [3, 3], "sorted and unique"),
        ("pruning_layers", "3,6", "list of 0-based layer indices"),
        ("token_score", "cls", "attention, intensity, variation, random"),
    ],
)
def test_invalid_config_values_raise_value_error(field, value, message):
    with pytest.raises(ValueError) as error:
        PrunedASTConfig(**tiny_ast_kwargs(**{field: value}))
    assert field in str(error.value) and message in str(error.value)
    config = PrunedASTConfig(**tiny_ast_kwargs())
    with pytest.raises(ValueError, match=field):
        setattr(config, field, value)
    assert getattr(config, field) == getattr(PrunedASTConfig(**tiny_ast_kwargs()), field)


def test_bad_keep_rate_at_run_time_and_load_time(tmp_path):
    _, model = stock_and_pruned(keep_rate=0.7)
    with pytest.raises(ValueError, match=r"keep_rate=1.5 .*\(0, 1\]"):
        model.set_keep_rate(1.5)
    assert model.config.keep_rate == 0.7
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="keep_rate=0"):
        PrunedASTForAudioClassification.from_pretrained(tmp_path, keep_rate=0)
    with pytest.raises(ValueError, match="num_hidden_layers=4"):
        PrunedASTConfig(**tiny_ast_kwargs(num_hidden_layers=4, pruning_layers=[3, 6, 9]))


@pytest.mark.parametrize("shape", [(2, 100, 64), (2, 128, 128), (128, 64), (2, 1, 128, 64)])
def test_wrong_input_shape_raises(shape):
    _, model = stock_and_pruned()
    with pytest.raises(ValueError, match=r"max_length=128, num_mel_bins=64"):
        model(torch.randn(shape))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_raises(bad):
    _, model = stock_and_pruned(keep_rate=0.5)
    inputs = random_input(model.config)
    inputs[1, 7, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(inputs)


def test_keep_rate_lists_from_the_command_line():
    assert parse_keep_rates("1.0,0.7,0.5") == [1.0, 0.7, 0.5]
    for bad, message in (("1.0,x", "comma-separated"), ("0.5,1.5", "[1.5]"), ("0", "(0, 1]"), ("nan", "[nan]")):
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_keep_rates(bad)

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

from conftest import run_with_package_blocked
from hf_token_prune import (
    AudioMAEFeatureExtractor,
    PrunedAudioMAEConfig,
    PrunedAudioMAEForAudioClassification,
    PrunedAudioMAEModel,
    kept_token_counts,
)
from hf_token_prune.convert_audiomae import CheckpointMismatchError, convert
from hf_token_prune.modeling_pruned_audiomae import AudioMAEAttention, sincos_position_embeddings
from hf_token_prune.scores import attention_with_received_score


TINY = dict(hidden_size=64, depth=12, heads=4, mlp=128, frames=128, mel=64, labels=5)


# An independent reference: the published timm / AudioMAE fine-tuning ViT, in the official key layout ---------------


def official_sincos(embed_dim, grid_rows, grid_columns):
    """AudioMAE's util/pos_embed.get_2d_sincos_pos_embed_flexible, in numpy, with the CLS row."""
    grid_h = np.arange(grid_rows, dtype=np.float32)
    grid_w = np.arange(grid_columns, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_rows, grid_columns])

    def one_d(dim, positions):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", positions.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    embedding = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, embed_dim]), embedding], axis=0)


class ReferenceBlock(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, mlp)
        self.mlp.fc2 = nn.Linear(mlp, dim)

    def attention(self, x):
        batch, tokens, dim = x.shape
        qkv = self.attn.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = ((q @ k.transpose(-2, -1)) * (dim // self.heads) ** -0.5).softmax(dim=-1)
        return self.attn.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim)), weights

    def forward(self, x, keep_rate=None):
        attended, weights = self.attention(self.norm1(x))
        x = x + attended
        if keep_rate is not None:  # the paper's eq. 2a and TopK, one sample at a time
            received = weights[0, :, 1:, 1:].mean(dim=(0, 1))
            keep = received.argsort(descending=True)[: math.ceil(len(received) * keep_rate)]
            x = torch.cat([x[:, :1], x[:, 1 + keep]], dim=1)
        return x + self.mlp.fc2(nn.functional.gelu(self.mlp.fc1(self.norm2(x))))


class ReferenceViT(nn.Module):
    def __init__(self, dim, depth, heads, mlp, frames, mel, labels):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, dim, 16, 16)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.tensor(official_sincos(dim, mel // 16, frames // 16)).float()[None])
        self.blocks = nn.ModuleList([ReferenceBlock(dim, heads, mlp) for _ in range(depth)])
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, labels)
        for parameter in self.parameters():  # LayerNorms and biases too, so every tensor is checked
            if parameter is not self.pos_embed:
                nn.init.normal_(parameter, std=0.05 if parameter.dim() > 1 else 0.2)

    def forward(self, spectrogram, keep_rate=None, pruning_layers=(3, 6, 9)):
        logits = []
        for sample in spectrogram:
            x = self.patch_embed.proj(sample[None, None]).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
            x = torch.cat([self.cls_token + self.pos_embed[:, :1], x], dim=1)
            for index, block in enumerate(self.blocks):
                x = block(x, keep_rate if index in pruning_layers else None)
            logits.append(self.head(self.fc_norm(x[:, 1:].mean(dim=1)))[0])
        return torch.stack(logits)


def official_checkpoint(tmp_path, frames=TINY["frames"], **extra):
    torch.manual_seed(0)
    reference = ReferenceViT(TINY["hidden_size"], TINY["depth"], TINY["heads"], TINY["mlp"], frames, TINY["mel"],
                             TINY["labels"]).eval()
    path = tmp_path / "finetuned.pth"
    torch.save({"model": {**reference.state_dict(), **extra}, "epoch": 3}, path)
    return reference, path


def converted(tmp_path, attn_implementation="sdpa", **kwargs):
    reference, path = official_checkpoint(tmp_path)
    convert(path, tmp_path / "converted", num_attention_heads=4, num_mel_bins=64, **kwargs)
    model = PrunedAudioMAEForAudioClassification.from_pretrained(tmp_path / "converted")
    model.set_attn_implementation(attn_implementation)
    return reference, model.eval()


def spectrogram(batch=3):
    return torch.randn(batch, TINY["frames"], TINY["mel"])


# 1. equivalence with the reference ViT --------------------------------------------------------------------------------


def test_position_embeddings_follow_the_official_construction_and_shortening():
    for rows, columns in [(8, 64), (8, 32), (8, 8), (4, 8)]:
        ours = sincos_position_embeddings(64, rows, columns)[0].double().numpy()
        np.testing.assert_allclose(ours, official_sincos(64, rows, columns), atol=1e-5)
    # The official fine-tuning shortens 1024-frame embeddings by keeping the first columns of its (8, 64) grid.
    full = torch.tensor(official_sincos(64, 8, 64))
    shortened = torch.cat([full[:1], full[1:].reshape(8, 64, 64)[:, :32].reshape(-1, 64)])
    np.testing.assert_allclose(sincos_position_embeddings(64, 8, 32)[0].double().numpy(), shortened.numpy(), atol=1e-5)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_converted_model_matches_reference_vit(tmp_path, attn_implementation):
    reference, model = converted(tmp_path, attn_implementation)
    inputs = spectrogram()
    with torch.no_grad():
        assert (model(inputs).logits - reference(inputs)).abs().max() <= 1e-5
        model.set_keep_rate(0.6)
        assert (model(inputs).logits - reference(inputs, keep_rate=0.6)).abs().max() <= 1e-5


def test_timm_safetensors_checkpoint_converts_the_same(tmp_path):
    reference, _ = official_checkpoint(tmp_path)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "timm.safetensors")
    model = convert(tmp_path / "timm.safetensors", tmp_path / "out", num_attention_heads=4, num_mel_bins=64).eval()
    inputs = spectrogram(2)
    with torch.no_grad():
        assert (model(inputs).logits - reference(inputs)).abs().max() <= 1e-5


def test_pretraining_checkpoint_drops_decoder_and_starts_a_fresh_head(tmp_path):
    reference, path = official_checkpoint(
        tmp_path, **{"decoder_embed.weight": torch.randn(32, 64), "mask_token": torch.zeros(1, 1, 32),
                     "norm.weight": torch.ones(64), "norm.bias": torch.zeros(64)}
    )
    checkpoint = torch.load(path, weights_only=True)
    for key in ["head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"]:
        del checkpoint["model"][key]
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointMismatchError, match="--num_labels"):
        convert(path, tmp_path / "no_labels", num_attention_heads=4, num_mel_bins=64)
    assert not (tmp_path / "no_labels").exists()
    model = convert(path, tmp_path / "out", num_labels=7, num_attention_heads=4, num_mel_bins=64)
    assert model.classifier.out_features == 7
    assert torch.equal(model.audiomae.layers[5].mlp.fc1.weight, reference.blocks[5].mlp.fc1.weight)
    assert model.classifier.weight.abs().max() < 1e-3  # the official fine-tuning's near-zero head


def test_shorter_input_shortens_position_embeddings_like_the_official_code(tmp_path):
    _, path = official_checkpoint(tmp_path, frames=256)
    model = convert(path, tmp_path / "out", max_length=128, num_attention_heads=4, num_mel_bins=64)
    checkpoint = torch.load(path, weights_only=True)["model"]["pos_embed"]
    grid = checkpoint[0, 1:].reshape(4, 16, -1)  # the official (mel/16, frames/16) reshape of time-major tokens
    expected = torch.cat([checkpoint[0, :1], grid[:, :8].reshape(-1, 64)])
    assert torch.equal(model.audiomae.embeddings.position_embeddings[0], expected)
    assert model.config.max_length == 128


# 2. received-attention score -----------------------------------------------------------------------------------------


def test_chunked_received_attention_equals_eager_attention_matrix():
    config = PrunedAudioMAEConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128, max_length=128,
                                  num_mel_bins=64)
    attention = AudioMAEAttention(config).eval()
    hidden = torch.randn(2, 33, 64)
    config._attn_implementation = "eager"
    _, weights, eager_score = attention(hidden, token_signal="score")
    independent = weights[:, :, 1:, 1:].mean(dim=(1, 2))
    config._attn_implementation = "sdpa"
    _, no_weights, sdpa_score = attention(hidden, token_signal="score")
    assert no_weights is None
    assert (sdpa_score - independent).abs().max() <= 1e-6
    assert (eager_score - independent).abs().max() <= 1e-6
    q, k, v = attention.qkv(hidden).reshape(2, 33, 3, 4, 16).permute(2, 0, 3, 1, 4).unbind(0)
    expected_output = (weights @ v).transpose(1, 2)
    for chunk in (1, 5, 32, 500):  # chunks that divide, do not divide, and exceed the 33 queries
        output, score = attention_with_received_score(q, k, v, attention.scaling, 1, chunk)
        assert (score - independent).abs().max() <= 1e-6
        assert (output - expected_output).abs().max() <= 1e-6


# 3. pruning ---------------------------------------------------------------------------------------------------------


def tiny_config(**overrides):
    kwargs = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, max_length=128, num_mel_bins=64,
                  num_labels=5)
    return PrunedAudioMAEConfig(**{**kwargs, **overrides})


def test_kept_counts_on_512_patches_and_batch_independence():
    model = PrunedAudioMAEModel(tiny_config(max_length=1024, num_mel_bins=128, keep_rate=0.7)).eval()
    with torch.no_grad():
        output = model(torch.randn(2, 1024, 128), output_kept_patches=True)
    assert [patches.shape for patches in output.kept_patches] == [(2, 359), (2, 252), (2, 177)]
    classifier = PrunedAudioMAEForAudioClassification(tiny_config(keep_rate=0.5)).eval()
    inputs = spectrogram(4)
    with torch.no_grad():
        batched = classifier(inputs, output_kept_patches=True)
        for i in range(4):
            alone = classifier(inputs[i : i + 1], output_kept_patches=True)
            assert (alone.logits[0] - batched.logits[i]).abs().max() <= 1e-5
            assert all(torch.equal(a[0], b[i]) for a, b in zip(alone.kept_patches, batched.kept_patches))


@pytest.mark.parametrize("token_score", ["intensity", "variation"])
def test_statistics_pruning_keeps_known_time_major_patches(token_score):
    model = PrunedAudioMAEModel(tiny_config(keep_rate=0.6, token_score=token_score)).eval()
    time_patches, frequency_patches = 8, 4
    means, stds = torch.randperm(32).float() / 8, torch.randperm(32).float() / 10 + 0.1
    noise = torch.randn(16, 16)
    noise = (noise - noise.mean()) / noise.std()
    inputs = torch.empty(1, 128, 64)  # (frames, mel): AudioMAE's patch grid is time-major, token t * 4 + f
    for token in range(32):
        t, f = divmod(token, frequency_patches)
        inputs[0, t * 16 : t * 16 + 16, f * 16 : f * 16 + 16] = means[token] + stds[token] * noise
    ranking = (means if token_score == "intensity" else stds).argsort(descending=True)
    with torch.no_grad():
        kept = model(inputs, output_kept_patches=True).kept_patches
    counts = kept_token_counts(time_patches * frequency_patches, 0.6, 3)
    for patches, count in zip(kept, counts):
        assert patches[0].tolist() == ranking[:count].tolist()


def test_drop_path_and_training_step():
    model = PrunedAudioMAEForAudioClassification(tiny_config(drop_path_rate=0.1, keep_rate=0.7))
    rates = [layer.drop_path.drop_prob for layer in model.audiomae.layers]
    assert rates[0] == 0.0 and math.isclose(rates[-1], 0.1, rel_tol=1e-6) and rates == sorted(rates)
    model.train()
    model(spectrogram(2), labels=torch.tensor([1, 3])).loss.backward()
    assert model.audiomae.layers[0].attention.qkv.weight.grad.abs().sum() > 0
    assert model.audiomae.embeddings.position_embeddings.grad is None  # fixed, as in the official model


# feature extractor ----------------------------------------------------------------------------------------------------


def test_feature_extractor_pads_with_the_clip_minimum_or_zero(keyword_clip):
    wave, rate = soundfile.read(keyword_clip, dtype="float32")
    minimum = AudioMAEFeatureExtractor(max_length=128, num_mel_bins=64)(wave, sampling_rate=rate)["input_values"][0]
    zero = AudioMAEFeatureExtractor(max_length=128, num_mel_bins=64, fbank_padding="zero")(
        wave, sampling_rate=rate)["input_values"][0]
    frames = 1 + (len(wave) - 400) // 160
    assert frames < 128
    np.testing.assert_array_equal(minimum[:frames], zero[:frames])
    assert np.all(minimum[frames:] == minimum[:frames].min())  # padding reads as the quietest value of the clip
    assert np.all(zero[frames:] == (0 + 4.2677393) / (2 * 4.5689974))  # a raw 0 fbank, loud after normalising
    with pytest.raises(ValueError, match="fbank_padding"):
        AudioMAEFeatureExtractor(fbank_padding="mean")


@pytest.mark.parametrize("wave, message", [(np.zeros(0, np.float32), "empty or too short"),
                                           (np.zeros(100, np.float32), "empty or too short"),
                                           (np.full(16000, np.nan, np.float32), "NaN or infinite")])
def test_feature_extractor_rejects_bad_audio(wave, message):
    with pytest.raises(ValueError, match=message):
        AudioMAEFeatureExtractor()(wave, sampling_rate=16000)
    with pytest.raises(ValueError, match="sampling rate"):
        AudioMAEFeatureExtractor()(np.zeros(16000, np.float32), sampling_rate=8000)


# 4. saved folders: remote code, AutoModel, pipeline ------------------------------------------------------------------


@pytest.mark.full
def test_saved_folder_loads_with_auto_classes_and_pipeline(tmp_path, keyword_clip):
    _, model = converted(tmp_path, keep_rate=0.7, id2label=dict(enumerate("abcde")))
    folder = tmp_path / "converted"
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_pruned_audiomae.PrunedAudioMAEModel"
    assert config["id2label"]["2"] == "c" and config["keep_rate"] == 0.7
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"]["AutoFeatureExtractor"] == "feature_extraction_audiomae.AudioMAEFeatureExtractor"
    assert type(AutoModelForAudioClassification.from_pretrained(folder)) is PrunedAudioMAEForAudioClassification
    assert type(AutoFeatureExtractor.from_pretrained(folder)) is AudioMAEFeatureExtractor
    wave, rate = soundfile.read(keyword_clip, dtype="float32")
    features = AudioMAEFeatureExtractor.from_pretrained(folder)(wave, sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        expected = model(**features).logits
    torch.save({"features": features["input_values"], "logits": expected}, tmp_path / "expected.pt")
    result = run_with_package_blocked(
        f"""
        import torch
        from transformers import AutoModel, AutoModelForAudioClassification, pipeline
        folder = {str(folder)!r}
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model)
        with torch.no_grad():
            diff = (model(expected["features"]).logits - expected["logits"]).abs().max().item()
        assert diff <= 1e-6, diff
        assert type(AutoModel.from_pretrained(folder, trust_remote_code=True)).__name__ == "PrunedAudioMAEModel"
        classifier = pipeline("audio-classification", model=folder, trust_remote_code=True)
        assert type(classifier.feature_extractor).__name__ == "AudioMAEFeatureExtractor"
        print("RESULT", classifier({str(keyword_clip)!r}, top_k=1))
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    top = expected[0].softmax(-1).topk(1)
    assert f"'label': '{'abcde'[top.indices[0]]}'" in result.stdout
    assert f"{top.values[0].item():.4f}"[:5] in result.stdout.split("RESULT", 1)[1]


# 5. converter refuses checkpoints that do not fit ----------------------------------------------------------------------


def refused(tmp_path, path, match, **kwargs):
    output = tmp_path / "refused"
    with pytest.raises(CheckpointMismatchError, match=match):
        convert(path, output, num_attention_heads=4, num_mel_bins=64, **kwargs)
    assert not output.exists()


def test_converter_refuses_truncated_file(tmp_path):
    _, path = official_checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    refused(tmp_path, path, "Could not read")


def test_converter_refuses_missing_extra_and_misshapen_keys(tmp_path):
    reference, path = official_checkpoint(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    state = checkpoint["model"]
    del state["blocks.4.attn.proj.weight"]
    state["blocks.2.attn.q_norm.weight"] = torch.ones(16)
    state["blocks.7.mlp.fc2.bias"] = torch.zeros(32)
    torch.save(checkpoint, path)
    output = tmp_path / "refused"
    with pytest.raises(CheckpointMismatchError) as error:
        convert(path, output, num_attention_heads=4, num_mel_bins=64)
    message = str(error.value)
    assert "blocks.2.attn.q_norm.weight" in message
    assert "audiomae.layers.4.attention.proj.weight" in message
    assert "audiomae.layers.7.mlp.fc2.bias: checkpoint (32,) vs model (64,)" in message
    assert not output.exists()


def test_converter_refuses_foreign_checkpoints(tmp_path):
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    refused(tmp_path, tmp_path / "other.pth", "Not an AudioMAE")
    reference, path = official_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)["model"]
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].repeat(1, 3, 1, 1)
    torch.save(state, tmp_path / "rgb.pth")
    refused(tmp_path, tmp_path / "rgb.pth", "3 input channels")
    refused(tmp_path, path, "can be shortened, not extended", max_length=256)
    refused(tmp_path, path, "head has 5 classes but 9", num_labels=9)


@pytest.mark.full
def test_converter_command_line(tmp_path):
    _, path = official_checkpoint(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps(list("vwxyz")))
    command = [sys.executable, "-m", "hf_token_prune.convert_audiomae", "--checkpoint", str(path), "--num_attention_heads",
               "4", "--num_mel_bins", "64", "--id2label", str(tmp_path / "labels.json"), "--keep_rate", "0.5"]
    done = subprocess.run(command + ["--output_dir", str(tmp_path / "ok")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "12 layers x 64, 128 frames x 64 mel (32 patches), 5 labels, keep rate 0.5" in done.stdout
    path.write_bytes(path.read_bytes()[:1000])
    failed = subprocess.run(command + ["--output_dir", str(tmp_path / "bad")], capture_output=True, text=True)
    assert failed.returncode != 0 and "Could not read" in failed.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(keep_rate=0.0), r"keep_rate=0.0 .*\(0, 1\]"),
        (dict(pruning_layers=[3, 12]), r"\[0, 11\]"),
        (dict(token_score="cls"), "attention, intensity, variation, random"),
        (dict(max_length=100), "max_length=100 must be a multiple of patch_size=16"),
        (dict(hidden_size=66), "hidden_size=66 must be divisible"),
    ],
)
def test_invalid_config_values_raise_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_wrong_input_shape_and_non_finite_input_raise():
    model = PrunedAudioMAEForAudioClassification(tiny_config(keep_rate=0.5)).eval()
    with pytest.raises(ValueError, match=r"max_length=128, num_mel_bins=64"):
        model(torch.randn(1, 64, 128))
    inputs = spectrogram(1)
    inputs[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(inputs)

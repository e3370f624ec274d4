"""A new token reduction method and a new model family, each added in this file alone through the registries, run
end to end through the same core as the built-in ones."""

import math

import pytest
import torch
from torch import nn
from transformers import ASTFeatureExtractor, PreTrainedConfig, PreTrainedModel

from conftest import tiny_ast_kwargs
from hf_token_prune import ModelFamily, PrunedASTConfig, PrunedASTForAudioClassification, TokenReduction
from hf_token_prune.families import MODEL_FAMILIES, model_family, register_model_family
from hf_token_prune.commands.macs import main as macs_main
from hf_token_prune.macs import count_forward_macs, count_macs
from hf_token_prune.patch_layout import PatchLayout
from hf_token_prune.pruning import (
    PrunedAudioClassificationMixin,
    PrunedBlockMixin,
    PrunedModelMixin,
    PrunedModelOutput,
)
from hf_token_prune.pruning_config import PruningConfigMixin
from hf_token_prune.scores import received_attention_score_from_weights
from hf_token_prune.selection import num_kept_tokens
from hf_token_prune.token_reductions import TOKEN_REDUCTIONS, register_token_reduction, token_reduction_names
from hf_token_prune.training import keep_rate_sweep


# 1. a toy method: keep the first ceil(n * keep_rate) patch tokens ----------------------------------------------------


class KeepFirst(TokenReduction):
    """Keeps the first patch tokens in sequence order and drops the rest: no signal from the attention, no MACs."""

    name = "keep-first"
    summary = "keep-first keeps the first patches"
    signal = None
    attention_only = "it keeps the first patches and ranks nothing: leave token_score='attention'."

    def reduce(self, layer, hidden_states, signal):
        num_kept = num_kept_tokens(hidden_states.shape[1] - layer.num_extra_tokens, layer.keep_rate)
        kept = torch.arange(num_kept, device=hidden_states.device).expand(hidden_states.shape[0], -1)
        return hidden_states[:, : layer.num_extra_tokens + num_kept], kept

    def record(self, tracker, plan):
        if plan is not None:
            tracker.patch_indices = tracker.patch_indices.gather(1, plan)
        tracker.kept_patches += (tracker.patch_indices,)


@pytest.fixture
def keep_first(monkeypatch):
    method = register_token_reduction(KeepFirst())
    monkeypatch.setitem(TOKEN_REDUCTIONS, method.name, method)  # unregistered again after the test
    return method


def keep_first_reference(model, input_values, keep_rate):
    """The AST forward written out on the model's own modules: layers, truncation before the MLP, CLS/dist pooling."""
    ast = model.audio_spectrogram_transformer
    hidden = ast.embeddings(input_values)
    for index, layer in enumerate(ast.layers):
        attention, _, _ = layer.attention(layer.layernorm_before(hidden))
        hidden = hidden + attention
        if index in model.config.pruning_layers:
            hidden = hidden[:, : 2 + math.ceil((hidden.shape[1] - 2) * keep_rate - 1e-6)]
        hidden = hidden + layer.mlp(layer.layernorm_after(hidden))
    hidden = ast.layernorm(hidden)
    return model.classifier((hidden[:, 0] + hidden[:, 1]) / 2)


def test_a_method_registered_in_a_test_runs_end_to_end(keep_first, tmp_path):
    assert "keep-first" in token_reduction_names()
    config = PrunedASTConfig(**tiny_ast_kwargs(), token_reduction="keep-first", keep_rate=0.5)
    model = PrunedASTForAudioClassification(config).eval()
    model.set_attn_implementation("eager")
    inputs = torch.randn(3, config.max_length, config.num_mel_bins)

    with torch.no_grad():
        outputs = model(inputs, output_kept_patches=True)
        expected = keep_first_reference(model, inputs, 0.5)
        unreduced = model(inputs, keep_rate=1.0).logits
    torch.testing.assert_close(outputs.logits, expected, rtol=0, atol=1e-5)
    assert (outputs.logits - unreduced).abs().max() > 1e-4  # it did reduce
    assert [kept[0].tolist() for kept in outputs.kept_patches] == [list(range(16)), list(range(8)), list(range(4))]

    # MACs: the analytic count asks the method (no scoring, no reduction cost) and equals the real forward's
    analytic = count_macs(config, batch_size=3, attn_implementation="eager")
    assert analytic.token_scoring == analytic.token_reduction == 0
    assert count_forward_macs(model, inputs) == analytic.total
    assert count_macs(config, attn_implementation="sdpa").token_scoring == 0  # the method needs no attention score
    assert macs_main(["--model_name_or_path", "vit-b", "--token_reductions", "keep-first", "--keep_rates", "0.5"]) == 0

    # the sweep: the method is one more column, evaluated under its own settings, and the settings come back
    seen = []

    def evaluate():
        seen.append((model.config.token_reduction, model.config.keep_rate))
        with torch.no_grad():
            return float(model(inputs).logits.sum())

    model.config.update_reduction(token_reduction="prune", keep_rate=0.7)
    rows = keep_rate_sweep(model, evaluate, [1.0, 0.5], token_reductions=("prune", "keep-first"),
                           token_scores=("attention", "random"))
    assert [(row["token_reduction"], row["token_score"], row["keep_rate"]) for row in rows] == [
        ("prune", "attention", 1.0), ("prune", "random", 1.0), ("keep-first", "attention", 1.0),
        ("prune", "attention", 0.5), ("prune", "random", 0.5), ("keep-first", "attention", 0.5),
    ]
    assert ("keep-first", 0.5) in seen and rows[-1]["metric"] == pytest.approx(float(expected.sum()), abs=1e-3)
    assert rows[-1]["gmacs"] == count_macs(config, 0.5, token_reduction="keep-first").total / 1e9
    assert (model.config.token_reduction, model.config.keep_rate) == ("prune", 0.7)

    # torch.export: static shapes, the same logits
    with model.reduction_settings(token_reduction="keep-first", keep_rate=0.5):
        program = torch.export.export(model, (inputs,), kwargs={"return_dict": False})
        with torch.no_grad():
            torch.testing.assert_close(program.module()(inputs, return_dict=False)[0], outputs.logits)


def test_settings_change_together_and_come_back(keep_first):
    model = PrunedASTForAudioClassification(PrunedASTConfig(**tiny_ast_kwargs(), token_score="random")).eval()
    with pytest.raises(ValueError, match="cannot use token_score='random'"):
        model.config.token_reduction = "keep-first"  # one field at a time cannot make the switch
    with model.reduction_settings(token_reduction="keep-first", token_score="attention", keep_rate=0.5):
        assert (model.config.token_reduction, model.config.token_score, model.config.keep_rate) == (
            "keep-first", "attention", 0.5)
    assert (model.config.token_reduction, model.config.token_score, model.config.keep_rate) == ("prune", "random", 1.0)
    with pytest.raises(ValueError, match="drop_padding=True is not supported with token_reduction='keep-first'"):
        model.config.update_reduction(token_reduction="keep-first", token_score="attention", drop_padding=True)
    assert (model.config.token_reduction, model.config.drop_padding) == ("prune", False)  # nothing landed
    with pytest.raises(ValueError, match="unknown reduction settings"):
        model.config.update_reduction(hidden_size=8)


# 2. a toy family: a plain ViT over spectrograms, no CLS token, mean pooling -----------------------------------------


class SpectrogramViTConfig(PruningConfigMixin, PreTrainedConfig):
    model_type = "test-spectrogram-vit"
    num_extra_tokens = 0

    hidden_size: int = 32
    num_hidden_layers: int = 4
    num_attention_heads: int = 2
    intermediate_size: int = 64
    patch_size: int = 16
    num_mel_bins: int = 32
    max_length: int = 64
    layer_norm_eps: float = 1e-6
    keep_rate: float | int = 1.0
    pruning_layers: list[int] | None = None
    token_score: str = "attention"
    token_reduction: str = "prune"
    drop_padding: bool = False

    def patch_layout(self, max_length=None):
        max_length = self.max_length if max_length is None else max_length
        size = self.patch_size
        return PatchLayout(size, size, size, self.num_mel_bins // size, max_length // size, time_major=True)


class SpectrogramViTAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states, attention_mask=None, token_signal=None, num_extra_tokens=0, token_mask=None,
                **kwargs):
        batch, tokens, _ = hidden_states.shape
        query, key, value = self.qkv(hidden_states).reshape(batch, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        logits = query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5
        weights = (logits if attention_mask is None else logits + attention_mask).softmax(dim=-1)
        output = self.proj((weights @ value).transpose(1, 2).reshape(batch, tokens, -1))
        signal = None
        if token_signal == "score":
            signal = received_attention_score_from_weights(weights, num_extra_tokens, token_mask)
        elif token_signal == "keys":
            signal = key.mean(dim=1)
        return output, weights, signal


class SpectrogramViTLayer(PrunedBlockMixin, nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SpectrogramViTAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, config.intermediate_size), nn.GELU(),
                                 nn.Linear(config.intermediate_size, config.hidden_size))
        self.residual_dropout = nn.Identity()


class SpectrogramViTPreTrainedModel(PrunedModelMixin, PreTrainedModel):
    config_class = SpectrogramViTConfig
    base_model_prefix = "vit"
    main_input_name = "input_values"
    remote_code_auto_map = {}

    @staticmethod
    def attention_token_scores(attention_weights):
        return received_attention_score_from_weights(attention_weights, 0)


class SpectrogramViTModel(SpectrogramViTPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.patch_embeddings = nn.Conv2d(1, config.hidden_size, config.patch_size, config.patch_size)
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.patch_layout().num_patches, config.hidden_size))
        self.layers = nn.ModuleList([SpectrogramViTLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def forward(self, input_values, attention_mask=None, output_kept_patches=None, keep_rate=None, **kwargs):
        self.check_input_values(input_values)
        hidden = self.patch_embeddings(input_values.unsqueeze(1)).flatten(2).transpose(1, 2)
        hidden, tracker = self.run_layers(hidden + self.position_embeddings, input_values, attention_mask, keep_rate)
        return PrunedModelOutput(
            last_hidden_state=hidden,
            pooler_output=self.norm(tracker.mean_patch_token(hidden)),
            kept_patches=(tracker.kept_patches or None) if output_kept_patches else None,
        )


class SpectrogramViTForAudioClassification(PrunedAudioClassificationMixin, SpectrogramViTPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.vit = SpectrogramViTModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


@pytest.fixture
def spectrogram_vit(monkeypatch):
    family = ModelFamily("test-spectrogram-vit", SpectrogramViTConfig, SpectrogramViTModel,
                         SpectrogramViTForAudioClassification, ASTFeatureExtractor)
    monkeypatch.setitem(MODEL_FAMILIES, family.name, register_model_family(family))
    return family


class ReferenceSpectrogramViT(nn.Module):
    """The same architecture from the published ViT recipe, one sample at a time, with received-attention TopK
    pruning before the MLP of the pruning layers (paper eq. 2a)."""

    def __init__(self, dim=32, depth=4, heads=2, mlp=64, labels=3):
        super().__init__()
        self.heads = heads
        self.embed = nn.Conv2d(1, dim, 16, 16)
        self.pos = nn.Parameter(torch.randn(1, 8, dim) * 0.1)
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(
            norm1=nn.LayerNorm(dim, eps=1e-6), qkv=nn.Linear(dim, 3 * dim), proj=nn.Linear(dim, dim),
            norm2=nn.LayerNorm(dim, eps=1e-6), fc1=nn.Linear(dim, mlp), fc2=nn.Linear(mlp, dim),
        )) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, labels)

    def forward(self, spectrogram, keep_rate=1.0, pruning_layers=(1, 2, 3)):
        logits = []
        for sample in spectrogram:
            x = self.embed(sample[None, None]).flatten(2).transpose(1, 2)[0] + self.pos[0]
            for index, block in enumerate(self.blocks):
                q, k, v = block["qkv"](block["norm1"](x)).reshape(len(x), 3, self.heads, -1).permute(1, 2, 0, 3)
                attention = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
                x = x + block["proj"]((attention @ v).transpose(0, 1).reshape(len(x), -1))
                if keep_rate < 1.0 and index in pruning_layers:
                    received = attention.mean(dim=0).mean(dim=0)
                    x = x[received.topk(math.ceil(len(x) * keep_rate - 1e-6)).indices]
                x = x + block["fc2"](nn.functional.gelu(block["fc1"](block["norm2"](x))))
            logits.append(self.head(self.norm(x.mean(dim=0))))
        return torch.stack(logits)


def load_reference(model, reference):
    vit = model.vit
    vit.patch_embeddings.load_state_dict(reference.embed.state_dict())
    vit.position_embeddings.data.copy_(reference.pos.data)
    for layer, block in zip(vit.layers, reference.blocks):
        layer.layernorm_before.load_state_dict(block["norm1"].state_dict())
        layer.attention.qkv.load_state_dict(block["qkv"].state_dict())
        layer.attention.proj.load_state_dict(block["proj"].state_dict())
        layer.layernorm_after.load_state_dict(block["norm2"].state_dict())
        layer.mlp[0].load_state_dict(block["fc1"].state_dict())
        layer.mlp[2].load_state_dict(block["fc2"].state_dict())
    vit.norm.load_state_dict(reference.norm.state_dict())
    model.classifier.load_state_dict(reference.head.state_dict())


def test_a_family_registered_in_a_test_matches_its_reference_and_prunes_through_the_core(spectrogram_vit):
    torch.manual_seed(0)
    reference = ReferenceSpectrogramViT().eval()
    config = SpectrogramViTConfig(num_labels=3, pruning_layers=[1, 2, 3])
    model = SpectrogramViTForAudioClassification(config).eval()
    load_reference(model, reference)
    inputs = torch.randn(2, 64, 32)
    assert model_family(config) is spectrogram_vit and model.patch_layout.num_patches == 8
    assert model.num_extra_tokens == 0

    with torch.no_grad():
        torch.testing.assert_close(model(inputs).logits, reference(inputs), rtol=0, atol=1e-5)
        pruned = model(inputs, keep_rate=0.5, output_kept_patches=True)
        torch.testing.assert_close(pruned.logits, reference(inputs, keep_rate=0.5), rtol=0, atol=1e-5)
    assert [kept.shape[1] for kept in pruned.kept_patches] == [4, 2, 1]

    # the MAC counter reads the family's geometry from its config and agrees with the real forward
    for keep_rate in (1.0, 0.5):
        model.set_keep_rate(keep_rate)
        assert count_forward_macs(model, inputs) == count_macs(config, batch_size=2).total
    model.set_keep_rate(1.0)
    with model.reduction_settings(token_reduction="merge", keep_rate=0.5), torch.no_grad():
        merged = model(inputs, output_kept_patches=True)
    assert merged.logits.isfinite().all() and model.config.token_reduction == "prune"

"""Fuse (EViT) and merge (ToMe): the pure functions against per-sample references written from the papers."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from transformers import ASTConfig, ASTForAudioClassification

from conftest import REPO, run_with_package_blocked, tiny_ast_kwargs, tiny_pruned_classifier
from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification
from hf_token_prune.method_fuse import fused_token
from hf_token_prune.method_merge import merge_plan, merge_weighted, proportional_attention_bias
from test_pruned_audiomae import converted, spectrogram


# References, one sample at a time, in plain Python over token lists ------------------------------------------------


def reference_fused_token(tokens, scores, kept):
    """EViT: the inattentive token is sum_i a_i x_i over the tokens that were not kept."""
    dropped = [i for i in range(len(tokens)) if i not in set(kept.tolist())]
    return sum((scores[i] * tokens[i] for i in dropped), torch.zeros_like(tokens[0]))


def reference_merge(tokens, sizes, metric, num_merged):
    """ToMe's bipartite soft matching, repeated while more than half must go; returns (groups, means, sizes).

    A = even positions, B = odd; every A token's edge goes to its most cosine-similar B token; the num_merged most
    similar edges merge their A token into its B partner; a group's token is the size-weighted mean of its members.
    """
    groups = [[i] for i in range(len(tokens))]
    features = [metric[i] for i in range(len(tokens))]
    weights = [float(s) for s in sizes]
    while num_merged > 0:
        step = min(num_merged, math.ceil(len(groups) / 2))
        edges = []
        for a in range(0, len(groups), 2):
            similarities = [torch.cosine_similarity(features[a], features[b], dim=0).item()
                            for b in range(1, len(groups), 2)]
            best = max(range(len(similarities)), key=lambda j: similarities[j])
            edges.append((similarities[best], a, 2 * best + 1))
        edges.sort(key=lambda edge: -edge[0])  # stable: ties keep A's order
        into = {a: b for _, a, b in edges[:step]}
        new_groups, new_features, new_weights = [], [], []
        for position in range(len(groups)):
            if position in into:
                continue
            members = [position] + [a for a, b in into.items() if b == position]
            total = sum(weights[m] for m in members)
            new_groups.append(sorted(sum((groups[m] for m in members), [])))
            new_features.append(sum(weights[m] * features[m] for m in members) / total)
            new_weights.append(total)
        groups, features, weights = new_groups, new_features, new_weights
        num_merged -= step
    means = [sum(float(sizes[i]) * tokens[i] for i in group) / sum(float(sizes[i]) for i in group) for group in groups]
    return groups, torch.stack(means), torch.tensor(weights)


# Tests --------------------------------------------------------------------------------------------------------------


def test_fused_token_is_the_score_weighted_sum_of_the_dropped_tokens():
    tokens, scores = torch.randn(3, 10, 8), torch.rand(3, 10)
    kept = scores.topk(6, dim=1).indices
    fused = fused_token(tokens, scores, kept)
    assert fused.shape == (3, 1, 8)
    for b in range(3):
        assert (fused[b, 0] - reference_fused_token(tokens[b], scores[b], kept[b])).abs().max() <= 1e-6


@pytest.mark.parametrize("num_tokens, num_merged", [(10, 1), (10, 5), (11, 6), (32, 22), (33, 32), (7, 0)])
def test_merge_matches_the_per_sample_bipartite_reference(num_tokens, num_merged):
    batch = 4
    tokens, metric = torch.randn(batch, num_tokens, 6), torch.randn(batch, num_tokens, 5)
    sizes = torch.randint(1, 4, (batch, num_tokens)).float()  # tokens merged by earlier layers weigh more
    destination = merge_plan(metric, sizes, num_merged)
    merged, merged_sizes = merge_weighted(tokens, sizes, destination, num_tokens - num_merged)
    for b in range(batch):
        groups, means, weights = reference_merge(tokens[b], sizes[b], metric[b], num_merged)
        assert [sorted((destination[b] == g).nonzero()[:, 0].tolist()) for g in range(len(groups))] == groups
        assert (merged[b] - means).abs().max() <= 1e-5
        assert torch.equal(merged_sizes[b], weights)


def test_merge_keeps_the_size_weighted_sum():
    tokens, metric, sizes = torch.randn(2, 16, 4), torch.randn(2, 16, 3), torch.rand(2, 16) + 0.5
    destination = merge_plan(metric, sizes, 9)
    merged, merged_sizes = merge_weighted(tokens, sizes, destination, 7)
    assert torch.allclose((merged * merged_sizes[..., None]).sum(1), (tokens * sizes[..., None]).sum(1), atol=1e-5)
    assert torch.allclose(merged_sizes.sum(1), sizes.sum(1))


def test_identical_tokens_merge_first():
    metric = torch.randn(1, 8, 4)
    metric[0, 4] = 3 * metric[0, 1]  # token 4 (set A) has a B twin (token 1) up to scale: cosine similarity 1
    destination = merge_plan(metric, torch.ones(1, 8), 1)
    assert destination[0, 4] == destination[0, 1] == 1
    assert destination[0].unique().numel() == 7


def test_proportional_attention_bias_is_log_size_and_zero_for_extra_tokens():
    sizes = torch.tensor([[1.0, 2.0, 5.0]])
    bias = proportional_attention_bias(sizes, 2, torch.float32)
    assert bias.shape == (1, 1, 1, 5)
    assert torch.equal(bias[0, 0, 0], torch.tensor([0.0, 0.0, 0.0, math.log(2.0), math.log(5.0)]))


# The whole models against a per-sample reference forward ------------------------------------------------------------
#
# Both families are written out from their published architectures, one sample at a time, with the attention formed
# explicitly (softmax(q k^T * scale + log size) v), EViT's fusion and ToMe's merging done by the references above.
# AST runs on transformers' own ASTForAudioClassification modules; AudioMAE on the independent timm-layout ViT of
# test_pruned_audiomae, converted by the package's converter.

REFERENCE_METHODS = ("fuse", "merge")
REFERENCE_KEEP_RATES = (0.55, 0.3)  # 0.3 needs two bipartite rounds per merging layer


class Family:
    """What the reference needs from one model family: its blocks' pieces, how it scores, embeds and pools."""

    def __init__(self, name, embed, blocks, heads, classify, num_extra_tokens):
        self.name, self.embed, self.blocks, self.heads = name, embed, blocks, heads
        self.classify, self.num_extra_tokens = classify, num_extra_tokens

    def score(self, attention, extra):
        if self.name == "ast":  # CLS row over the patch keys, mean over heads (paper eq. 2b)
            return attention[:, 0, extra:].mean(0)
        return attention[:, extra:, extra:].mean(dim=(0, 1))  # attention received from patch queries (eq. 2a)


def ast_family(stock):
    ast = stock.audio_spectrogram_transformer

    def pieces(layer):
        attention = layer.attention
        return (layer.layernorm_before, (attention.q_proj, attention.k_proj, attention.v_proj), attention.o_proj,
                layer.layernorm_after, layer.mlp)

    def classify(x, extra, sizes):
        sequence = ast.layernorm(x)
        return stock.classifier(((sequence[0] + sequence[1]) / 2)[None])[0]

    return Family("ast", lambda sample: ast.embeddings(sample[None])[0], [pieces(layer) for layer in ast.layers],
                  stock.config.num_attention_heads, classify, 2)


def audiomae_family(reference):
    def pieces(block):
        dim = block.attn.qkv.out_features // 3
        q, k, v = (lambda h, i=i: block.attn.qkv(h)[:, i * dim : (i + 1) * dim] for i in range(3))
        mlp = lambda h: block.mlp.fc2(torch.nn.functional.gelu(block.mlp.fc1(h)))  # noqa: E731
        return block.norm1, (q, k, v), block.attn.proj, block.norm2, mlp

    def embed(sample):
        x = reference.patch_embed.proj(sample[None, None]).flatten(2).transpose(1, 2)[0] + reference.pos_embed[0, 1:]
        return torch.cat([reference.cls_token[0] + reference.pos_embed[0, :1], x])

    def classify(x, extra, sizes):  # mean over input patches: a merged token counts once per patch it holds
        pooled = sum(size * token for size, token in zip(sizes, x[extra:])) / sum(sizes)
        return reference.head(reference.fc_norm(pooled))

    return Family("audiomae", embed, [pieces(block) for block in reference.blocks], reference.blocks[0].heads,
                  classify, 1)


def reference_forward(family, sample, method, keep_rate, pruning_layers=(3, 6, 9)):
    """Logits and, per reducing layer, kept patches (fuse: global indices, best first) or merged groups (merge)."""
    x, extra = family.embed(sample), family.num_extra_tokens
    num_patches = len(x) - extra
    sizes, groups, kept = [1.0] * num_patches, [[p] for p in range(num_patches)], list(range(num_patches))
    records = []
    for index, (norm1, projections, output, norm2, mlp) in enumerate(family.blocks):
        h = norm1(x)
        q, k, v = (projection(h).reshape(len(h), family.heads, -1).transpose(0, 1) for projection in projections)
        logits = q @ k.transpose(1, 2) * q.shape[-1] ** -0.5 + torch.tensor([1.0] * extra + sizes).log()
        attention = logits.softmax(dim=-1)
        x = x + output((attention @ v).transpose(0, 1).reshape(len(h), -1))
        n = len(x) - extra
        if index in pruning_layers and math.ceil(n * keep_rate - 1e-6) < n:
            num_kept = math.ceil(n * keep_rate - 1e-6)
            if method == "merge":
                local_groups, means, merged_sizes = reference_merge(x[extra:], sizes, k.mean(0)[extra:], n - num_kept)
                groups = [sorted(sum((groups[t] for t in group), [])) for group in local_groups]
                x, sizes = torch.cat([x[:extra], means]), merged_sizes.tolist()
                records.append(groups)
            else:
                score = family.score(attention, extra)
                order = sorted(range(n), key=lambda j: -score[j].item())
                keep, drop = order[:num_kept], order[num_kept:]
                front, patches = x[:extra], x[extra:]
                fused = sum((score[j] * patches[j] for j in drop), torch.zeros_like(x[0]))
                if extra > family.num_extra_tokens:  # the fused token exists: it absorbs these too
                    front = torch.cat([front[:-1], front[-1:] + fused])
                else:
                    front, extra = torch.cat([front, fused[None]]), extra + 1
                x, sizes = torch.cat([front, patches[keep]]), [1.0] * num_kept
                kept = [kept[j] for j in keep]
                records.append(kept)
        x = x + mlp(norm2(x))
    return family.classify(x, extra, sizes), records


def models(family, tmp_path, attn_implementation):
    """(reference family, our model) with the same random weights."""
    if family == "ast":
        stock = ASTForAudioClassification(ASTConfig(**tiny_ast_kwargs())).eval()
        ours = PrunedASTForAudioClassification(PrunedASTConfig(**tiny_ast_kwargs())).eval()
        ours.load_state_dict(stock.state_dict())
        ours.set_attn_implementation(attn_implementation)
        return ast_family(stock), ours
    reference, ours = converted(tmp_path, attn_implementation)
    return audiomae_family(reference), ours


def groups_of(source_map):
    """Merged groups of one sample's source map, in the order of the tokens that carry them."""
    return [sorted((source_map == token).nonzero()[:, 0].tolist()) for token in range(int(source_map.max()) + 1)]


@pytest.mark.parametrize("keep_rate", REFERENCE_KEEP_RATES)
@pytest.mark.parametrize("method", REFERENCE_METHODS)
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("family", ["ast", "audiomae"])
def test_batched_model_equals_the_per_sample_reference(family, attn_implementation, method, keep_rate, tmp_path):
    reference, model = models(family, tmp_path, attn_implementation)
    model.config.token_reduction = method
    model.set_keep_rate(keep_rate)
    inputs = torch.randn(3, model.config.max_length, model.config.num_mel_bins)
    with torch.no_grad():
        outputs = model(inputs, output_kept_patches=True)
        for row, sample in enumerate(inputs):
            logits, records = reference_forward(reference, sample, method, keep_rate)
            assert (outputs.logits[row] - logits).abs().max() <= 1e-5
            if method == "merge":
                assert outputs.kept_patches is None
                assert [groups_of(source[row]) for source in outputs.source_maps] == records
            else:
                assert outputs.source_maps is None
                assert [kept[row].tolist() for kept in outputs.kept_patches] == records


@pytest.mark.parametrize("method", ["prune", "fuse", "merge"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_keep_rate_one_is_stock_ast_bit_for_bit_with_every_method(attn_implementation, method):
    stock = ASTForAudioClassification(ASTConfig(**tiny_ast_kwargs())).eval()
    ours = PrunedASTForAudioClassification(PrunedASTConfig(**tiny_ast_kwargs(), token_reduction=method)).eval()
    ours.load_state_dict(stock.state_dict())
    stock.set_attn_implementation(attn_implementation)
    ours.set_attn_implementation(attn_implementation)
    inputs = torch.randn(2, 128, 64)
    with torch.no_grad():
        assert torch.equal(ours(inputs).logits, stock(inputs).logits)


@pytest.mark.parametrize("method", ["fuse", "merge"])
def test_keep_rate_one_is_the_audiomae_reference_with_every_method(method, tmp_path):
    reference, model = converted(tmp_path)
    model.config.token_reduction = method
    inputs = spectrogram()
    with torch.no_grad():
        assert (model(inputs).logits - reference(inputs)).abs().max() <= 1e-5


@pytest.mark.parametrize("method", REFERENCE_METHODS)
@pytest.mark.parametrize("family", ["ast", "audiomae"])
def test_a_sample_in_a_batch_equals_the_sample_alone(family, method, tmp_path):
    _, model = models(family, tmp_path, "sdpa")
    model.config.token_reduction = method
    model.set_keep_rate(0.4)
    inputs = torch.randn(4, model.config.max_length, model.config.num_mel_bins)
    with torch.no_grad():
        batched = model(inputs, output_kept_patches=True)
        for row in range(4):
            alone = model(inputs[row : row + 1], output_kept_patches=True)
            assert (alone.logits[0] - batched.logits[row]).abs().max() <= 1e-5
            records = alone.source_maps if method == "merge" else alone.kept_patches
            batched_records = batched.source_maps if method == "merge" else batched.kept_patches
            assert all(torch.equal(a[0], b[row]) for a, b in zip(records, batched_records))


@pytest.mark.parametrize("family", ["ast", "audiomae"])
def test_proportional_attention_under_sdpa_equals_eager(family, tmp_path):
    _, model = models(family, tmp_path, "eager")
    attention = model.base_model.layers[0].attention
    hidden = torch.randn(3, 20, model.config.hidden_size)
    sizes = torch.randint(1, 6, (3, 20 - model.num_extra_tokens)).float()
    bias = proportional_attention_bias(sizes, model.num_extra_tokens, hidden.dtype)
    with torch.no_grad():
        eager, weights, _ = attention(hidden, bias)
        _, unbiased, _ = attention(hidden)
        model.set_attn_implementation("sdpa")
        sdpa, no_weights, _ = attention(hidden, bias)
    assert no_weights is None
    assert (sdpa - eager).abs().max() <= 1e-6
    # ToMe: a key of size s weighs as s copies of itself, softmax renormalised
    full_sizes = torch.cat([torch.ones(3, model.num_extra_tokens), sizes], dim=1)[:, None, None]
    expected = unbiased * full_sizes / (unbiased * full_sizes).sum(dim=-1, keepdim=True)
    assert (weights - expected).abs().max() <= 1e-6
    assert (weights - unbiased).abs().max() > 1e-3


@pytest.mark.parametrize("field, value, message", [
    ("token_reduction", "drop", "choose one of prune, fuse, merge"),
    ("token_score", "intensity", "cannot use token_score='intensity'"),
])
@pytest.mark.parametrize("method", ["fuse", "merge"])
def test_nonsensical_method_and_score_combinations_are_refused(method, field, value, message):
    config = PrunedASTConfig(**tiny_ast_kwargs(), token_reduction=method)
    with pytest.raises(ValueError, match=message):
        setattr(config, field, value)
    assert (config.token_reduction, config.token_score) == (method, "attention")  # unchanged after the refusal
    with pytest.raises(ValueError, match="token_score='attention'"):
        PrunedASTConfig(**tiny_ast_kwargs(), token_reduction=method, token_score="random")


@pytest.mark.full
def test_saved_folders_with_fuse_and_merge_load_as_remote_code_without_the_package(tmp_path):
    """One subprocess loads an AST and an AudioMAE folder per method with only torch and transformers importable."""
    cases = []
    for family in ("ast", "audiomae"):
        for method in REFERENCE_METHODS:
            (tmp_path / f"{family}-{method}-reference").mkdir()
            _, model = models(family, tmp_path / f"{family}-{method}-reference", "sdpa")
            model.config.token_reduction = method
            model.set_keep_rate(0.5)
            inputs = torch.randn(2, model.config.max_length, model.config.num_mel_bins)
            with torch.no_grad():
                outputs = model(inputs, output_kept_patches=True)
            folder = tmp_path / f"{family}-{method}"
            model.save_pretrained(folder)
            assert (folder / "reduction.py").exists()  # copied with the pruning core it is imported by
            maps = outputs.source_maps if method == "merge" else outputs.kept_patches
            torch.save({"inputs": inputs, "logits": outputs.logits, "maps": list(maps)}, folder / "expected.pt")
            cases.append(str(folder))
    result = run_with_package_blocked(
        f"""
        import torch
        from transformers import AutoModelForAudioClassification
        for folder in {cases!r}:
            expected = torch.load(folder + "/expected.pt", weights_only=True)
            model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules"), type(model)
            with torch.no_grad():
                outputs = model(expected["inputs"], output_kept_patches=True)
            maps = outputs.source_maps if model.config.token_reduction == "merge" else outputs.kept_patches
            assert (outputs.logits - expected["logits"]).abs().max() <= 1e-6, folder
            assert all(torch.equal(a, b) for a, b in zip(maps, expected["maps"])), folder
            print("LOADED", folder.rsplit("/", 1)[1], model.config.token_reduction)
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("LOADED") == 4


def reduction_maps(outputs):
    return outputs.source_maps if outputs.source_maps is not None else outputs.kept_patches


@pytest.mark.parametrize("method, keep_rate", [("fuse", 0.5), ("merge", 0.5), ("merge", 0.3)])
@pytest.mark.parametrize("family", ["ast", "audiomae"])
@pytest.mark.full
def test_compile_fullgraph_and_export_equal_eager(family, method, keep_rate):
    model = tiny_pruned_classifier(family, num_hidden_layers=4, pruning_layers=[1, 2], keep_rate=keep_rate,
                                   token_reduction=method)
    inputs = torch.randn(3, 128, 64)
    with torch.no_grad():
        expected = model(inputs, output_kept_patches=True)
        compiled = torch.compile(model, fullgraph=True, backend="eager")(inputs, output_kept_patches=True)
        batch = torch.export.Dim("batch", min=1, max=64)
        exported = torch.export.export(
            model, (torch.randn(2, 128, 64),), {"output_kept_patches": True}, dynamic_shapes=({0: batch}, None)
        ).module()(inputs, output_kept_patches=True)
    torch._dynamo.reset()
    for actual in (compiled, exported):
        assert (actual.logits - expected.logits).abs().max() <= 1e-5
        assert all(torch.equal(a, b) for a, b in zip(reduction_maps(actual), reduction_maps(expected)))


@pytest.mark.full
def test_quick_reduction_benchmark_runs_and_reports_every_method(tmp_path):
    result = subprocess.run(
        [sys.executable, "benchmarks/benchmark_reduction.py", "--quick", "--output_dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (scenario,) = json.loads((tmp_path / "reduction_quick.json").read_text())
    assert {(row["method"], row["keep_rate"]) for row in scenario["rows"]} == {
        ("none", 1.0), ("prune", 0.5), ("fuse", 0.5), ("merge", 0.5)
    }
    assert all(row["mac_ratio"] > 1 and row["speedup"] > 0 for row in scenario["rows"] if row["method"] != "none")
    report = (tmp_path / "reduction_quick.md").read_text()
    assert "load average" in report and "Command: `python benchmarks/benchmark_reduction.py --quick" in report
    assert "USDT" not in result.stderr  # kineto's profiler start / stop lines are silenced


def test_reduction_benchmark_models_keep_their_own_method_and_keep_rate():
    # A shared config once made every model run the last one's method and keep rate: all "speedups" were 1.0.
    sys.path.insert(0, str(REPO / "benchmarks"))
    from benchmark_reduction import build_models

    models = build_models(PrunedASTConfig(**tiny_ast_kwargs()), (0.7, 0.5))
    assert {key: (model.config.token_reduction, model.config.keep_rate) for key, model in models.items()} == {
        key: ("prune" if key[0] == "none" else key[0], key[1]) for key in models
    }

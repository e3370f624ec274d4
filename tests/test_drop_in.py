"""Drop-in wherever stock AST works: any depth, padding masks, one test body over both families where it applies."""

import os

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
from hf_token_prune.pruning_config import default_pruning_layers
from hf_token_prune.selection import num_kept_tokens
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
        # a frame mask with padding (an all-ones one means no padding, and is accepted as stock AST accepts it)
        model(torch.randn(2, 128, 64), attention_mask=torch.ones(2, 128).index_fill(1, torch.arange(100, 128), 0))


# 3. every mask stock AST takes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_all_ones_frame_mask_is_accepted_as_stock_ast_accepts_it(attn_implementation):
    # DataCollatorWithPadding adds the feature extractor's (batch, max_length) mask, all ones, to every batch of
    # transformers' audio-classification example; stock AST's mask helper skips a mask without padding.
    stock, pruned = stock_and_pruned(attn_implementation)
    inputs, frame_mask = torch.randn(3, 128, 64), torch.ones(3, 128, dtype=torch.long)
    with torch.no_grad():
        expected = stock(inputs, attention_mask=frame_mask).logits
        assert torch.equal(expected, stock(inputs).logits)
        assert torch.equal(pruned(inputs, attention_mask=frame_mask).logits, expected)
        pruned.set_keep_rate(0.5)
        assert torch.equal(pruned(inputs, attention_mask=frame_mask).logits, pruned(inputs).logits)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("token_reduction", ["prune", "fuse", "merge"])
def test_all_ones_mask_of_any_layout_means_no_padding_under_every_reduction(family, token_reduction):
    model = tiny_pruned_classifier(family, keep_rate=0.5, token_reduction=token_reduction)
    inputs = torch.randn(2, 128, 64)
    with torch.no_grad():
        plain = model(inputs).logits
        for mask in (torch.ones(2, 128), torch.ones(2, 32 + model.num_extra_tokens, dtype=torch.bool)):
            assert torch.equal(model(inputs, attention_mask=mask).logits, plain)


@pytest.mark.parametrize("family", FAMILIES)
def test_drop_padding_frame_mask_still_drops_the_padding(family):
    model = tiny_pruned_classifier(family, drop_padding=True, keep_rate=0.5)
    inputs = torch.randn(2, 128, 64)
    short = torch.ones(2, 128, dtype=torch.long).index_fill(1, torch.arange(64, 128), 0)
    with torch.no_grad():
        kept = model(inputs, attention_mask=short, output_kept_patches=True).kept_patches
        assert kept[0].shape[1] == num_kept_tokens(16, 0.5)  # half the grid is padding: 16 real patches
        everything = model(inputs, attention_mask=torch.ones(2, 128), output_kept_patches=True).kept_patches
        assert torch.equal(everything[-1], model(inputs, output_kept_patches=True).kept_patches[-1])
        # an all-ones mask of another layout is no padding either, and needs no frame mask
        assert torch.equal(model(inputs, attention_mask=torch.ones(2, 7)).logits, model(inputs).logits)
    with pytest.raises(ValueError, match=r"frame mask of shape \(batch_size, max_length\) = \(2, 128\)"):
        model(inputs, attention_mask=torch.ones(2, 7).index_fill(1, torch.tensor([6]), 0))


# 4. a keep rate per call ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_rate_per_call_equals_the_config_keep_rate_and_changes_nothing(family):
    model = tiny_pruned_classifier(family)
    inputs = torch.randn(2, 128, 64)
    before = model.config.to_dict()
    with torch.no_grad():
        per_call = model(inputs, keep_rate=0.5, output_kept_patches=True)
        assert model.config.to_dict() == before
        full = model(inputs).logits
        model.set_keep_rate(0.5)
        configured = model(inputs, output_kept_patches=True)
        assert torch.equal(model(inputs, keep_rate=1.0).logits, full)
    assert torch.equal(per_call.logits, configured.logits)
    assert all(torch.equal(a, b) for a, b in zip(per_call.kept_patches, configured.kept_patches))
    with pytest.raises(ValueError, match=r"keep_rate=1.5 is invalid"):
        model(inputs, keep_rate=1.5)


def test_classify_from_many_threads_with_their_own_keep_rates_equals_serial_calls():
    from concurrent.futures import ThreadPoolExecutor

    from transformers import ASTFeatureExtractor

    from hf_token_prune.classify import classify

    model = tiny_pruned_classifier("ast", num_mel_bins=64, max_length=128)
    extractor = ASTFeatureExtractor(num_mel_bins=64, max_length=128)
    waves = [torch.randn(16000, generator=torch.Generator().manual_seed(i)).numpy() * 0.1 for i in range(5)]
    rates = [1.0, 0.7, 0.4, 0.1]
    jobs = [(rate, wave) for _ in range(4) for rate in rates for wave in waves]  # 80 calls
    serial = {rate: classify(model, extractor, waves, keep_rate=rate) for rate in rates}
    assert serial[1.0] != serial[0.1]  # the keep rates give different answers, so a mix-up would show
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda job: classify(model, extractor, [job[1]], keep_rate=job[0])[0], jobs))
    wrong = [i for i, ((rate, _), result) in enumerate(zip(jobs, results)) if result != serial[rate][i % 5]]
    assert wrong == [] and model.config.keep_rate == 1.0


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_rate_per_call_compiles_as_a_full_graph(family):
    model = tiny_pruned_classifier(family)
    inputs = torch.randn(2, 128, 64)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert (compiled(inputs, keep_rate=0.5).logits - model(inputs, keep_rate=0.5).logits).abs().max() <= 1e-5
        assert (compiled(inputs).logits - model(inputs).logits).abs().max() <= 1e-5


# 5. apply_token_reduction to a loaded stock model --------------------------------------------------------------------


def test_apply_token_reduction_keeps_the_stock_model_and_its_tensors():
    from hf_token_prune import apply_token_reduction, remove_token_reduction

    stock, _ = stock_and_pruned("eager")
    stock_config = stock.config
    inputs = torch.randn(2, 128, 64)
    with torch.no_grad():
        before = stock(inputs).logits
    tensors = {name: parameter.data_ptr() for name, parameter in stock.named_parameters()}
    model = apply_token_reduction(stock, keep_rate=0.5)
    assert model is stock and isinstance(model, ASTForAudioClassification)
    assert isinstance(model, PrunedASTForAudioClassification) and model.config.keep_rate == 0.5
    assert model.config._attn_implementation == "eager" and model.config.id2label == stock_config.id2label
    assert {name: parameter.data_ptr() for name, parameter in model.named_parameters()} == tensors
    loaded = PrunedASTForAudioClassification(PrunedASTConfig(**tiny_ast_kwargs(keep_rate=0.5))).eval()
    loaded.load_state_dict(model.state_dict())
    loaded.set_attn_implementation("eager")
    with torch.no_grad():
        assert torch.equal(model(inputs).logits, loaded(inputs).logits)
        assert torch.equal(model(inputs, keep_rate=1.0).logits, before)
        assert len(model(inputs, output_hidden_states=True).hidden_states) == 13
    assert remove_token_reduction(model) is stock
    assert type(stock) is ASTForAudioClassification and stock.config is stock_config and type(stock_config) is ASTConfig
    assert not any(type(module).__module__.startswith("hf_token_prune") for module in stock.modules())
    with torch.no_grad():
        assert torch.equal(stock(inputs).logits, before)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_apply_token_reduction_at_keep_rate_one_is_stock_ast_also_for_the_bare_encoder(attn_implementation):
    from transformers import ASTModel

    from hf_token_prune import apply_token_reduction

    encoder = ASTModel(ASTConfig(**tiny_ast_kwargs())).eval()
    encoder.set_attn_implementation(attn_implementation)
    inputs = torch.randn(2, 128, 64)
    with torch.no_grad():
        expected = encoder(inputs, attention_mask=torch.ones(2, 128)).last_hidden_state
        apply_token_reduction(encoder)
        assert isinstance(encoder, ASTModel) and type(encoder).__name__ == "PrunedASTModel"
        assert torch.equal(encoder(inputs, attention_mask=torch.ones(2, 128)).last_hidden_state, expected)
        assert encoder(inputs, keep_rate=0.5).last_hidden_state.shape[1] == 2 + 4


def test_apply_token_reduction_in_a_pipeline_then_saved_loads_without_the_package(tmp_path, keyword_clip):
    from transformers import ASTFeatureExtractor, pipeline

    from conftest import run_with_package_blocked
    from hf_token_prune import apply_token_reduction

    stock, _ = stock_and_pruned()
    extractor = ASTFeatureExtractor(num_mel_bins=64, max_length=128)
    classifier = pipeline("audio-classification", model=stock, feature_extractor=extractor)
    apply_token_reduction(classifier, keep_rate=0.5, pruning_layers=[2, 5])
    assert classifier.model is stock and stock.config.pruning_layers == [2, 5]
    features = extractor(torch.randn(16000).numpy() * 0.1, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = stock(**features).logits
    pipeline_top = classifier(str(keyword_clip), top_k=1)[0]["label"]
    stock.save_pretrained(tmp_path / "model")
    extractor.save_pretrained(tmp_path / "model")
    torch.save({"features": features["input_values"], "logits": expected}, tmp_path / "expected.pt")
    result = run_with_package_blocked(
        f"""
        import torch
        from transformers import AutoModelForAudioClassification, pipeline
        folder = {str(tmp_path / "model")!r}
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__name__ == "PrunedASTForAudioClassification", type(model)
        assert (model.config.keep_rate, model.config.pruning_layers) == (0.5, [2, 5])
        with torch.no_grad():
            diff = (model(expected["features"]).logits - expected["logits"]).abs().max().item()
        assert diff <= 1e-6, diff
        top = pipeline("audio-classification", model=folder, trust_remote_code=True)({str(keyword_clip)!r}, top_k=1)
        print("TOP", top[0]["label"])
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"TOP {pipeline_top}" in result.stdout


def test_apply_token_reduction_trains_with_trainer(tmp_path):
    from transformers import Trainer, TrainingArguments

    from hf_token_prune import apply_token_reduction

    stock, _ = stock_and_pruned()
    model = apply_token_reduction(stock, keep_rate=0.5)
    rows = [{"input_values": torch.randn(128, 64), "labels": i % 5} for i in range(8)]
    args = TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to="none",
                             use_cpu=True, disable_tqdm=True, save_strategy="no")  # fmt: skip
    before = model.classifier.dense.weight.detach().clone()
    Trainer(model=model, args=args, train_dataset=rows).train()
    assert not torch.equal(model.classifier.dense.weight, before)
    assert isinstance(model, PrunedASTForAudioClassification) and model.config.keep_rate == 0.5


def test_apply_token_reduction_refuses_what_it_cannot_patch():
    from hf_token_prune import apply_token_reduction, remove_token_reduction

    with pytest.raises(TypeError, match="supports ASTForAudioClassification or ASTModel .* not PrunedAudioMAE"):
        apply_token_reduction(tiny_pruned_classifier("audiomae").audiomae.layers[0])
    with pytest.raises(ValueError, match="already reduces tokens"):
        apply_token_reduction(tiny_pruned_classifier("ast"))
    with pytest.raises(ValueError, match="was not made by apply_token_reduction"):
        remove_token_reduction(tiny_pruned_classifier("ast"))
    stock, _ = stock_and_pruned()
    with pytest.raises(ValueError, match=r"keep_rate=0 is invalid"):
        apply_token_reduction(stock, keep_rate=0)
    assert type(stock) is ASTForAudioClassification  # a refused setting leaves the model as it was


@pytest.mark.parametrize("family", ["ast", "audiomae"])
def test_trainer_with_the_example_scripts_data_path_trains_and_keeps_the_keep_rate(family, tmp_path):
    """transformers' run_audio_classification.py, at its defaults (--attention_mask True), loads the extractor with
    return_attention_mask=True, featurises clips to `input_values` alone and gives its Trainer the extractor as
    processing_class: the Trainer's DataCollatorWithPadding then pads every batch through `extractor.pad`, which adds an
    all-ones (batch, frames) attention_mask. The same path here, on shipped clips (the script itself is not in the
    transformers sdist, and GitHub is out of reach here)."""
    import datasets
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, Trainer, TrainingArguments
    from transformers.data.data_collator import DataCollatorWithPadding

    from conftest import KEYWORDS
    from hf_token_prune import AudioMAEFeatureExtractor

    folder = tmp_path / "model"
    model = tiny_pruned_classifier(family, keep_rate=0.5)
    model.save_pretrained(folder)
    frames, mel = model.config.max_length, model.config.num_mel_bins
    AudioMAEFeatureExtractor(num_mel_bins=mel, max_length=frames).save_pretrained(folder)
    extractor = AutoFeatureExtractor.from_pretrained(folder, return_attention_mask=True, trust_remote_code=True)
    model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True)
    clips = datasets.load_dataset("audiofolder", data_dir=str(KEYWORDS / "validation"), split="train").select(range(8))
    clips = clips.cast_column("audio", datasets.Audio(sampling_rate=extractor.sampling_rate))

    def transforms(batch):
        waves = [audio["array"] for audio in batch["audio"]]
        inputs = extractor(waves, sampling_rate=extractor.sampling_rate)
        labels = [label % model.config.num_labels for label in batch["label"]]
        return {"input_values": inputs["input_values"], "labels": labels}

    clips.set_transform(transforms)
    args = TrainingArguments(str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, report_to="none",
                             use_cpu=True, disable_tqdm=True, save_strategy="no", remove_unused_columns=False)  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=clips, eval_dataset=clips, processing_class=extractor)
    assert isinstance(trainer.data_collator, DataCollatorWithPadding)
    batch = trainer.data_collator([clips[i] for i in range(4)])
    assert batch["attention_mask"].shape == (4, frames) and bool(batch["attention_mask"].all())
    trainer.train()
    assert trainer.state.global_step == 2 and "eval_loss" in trainer.evaluate()
    trainer.save_model(tmp_path / "saved")
    saved = AutoModelForAudioClassification.from_pretrained(tmp_path / "saved", trust_remote_code=True)
    assert saved.config.keep_rate == 0.5


# 5. the package loads lazily, and the Auto classes still know the pruned types -----------------------------------


def test_the_package_imports_lazily_and_registers_the_families_before_any_load(tmp_path):
    """`import hf_token_prune` registers both families, as it always did. Under the command line it loads no torch,
    and then taking any public name, importing the classify helpers or calling the loader registers them; either way a
    saved folder loads through the Auto classes and pipeline() without trust_remote_code (no remote code is allowed
    here: a missing registration fails)."""
    import subprocess
    import sys

    from conftest import REPO

    folder = tmp_path / "model"
    tiny_pruned_classifier("audiomae", keep_rate=0.5).save_pretrained(folder)
    under_cli = "import hf_token_prune_cli, hf_token_prune\n" + (
        "assert 'torch' not in sys.modules and 'hf_token_prune.families' not in sys.modules\n"
    )
    steps = {
        "the package alone": "import hf_token_prune",
        "a public name": under_cli + "from hf_token_prune import num_kept_tokens",
        "the classify helpers": under_cli + "from hf_token_prune.classify import read_audio",
        "the loader": under_cli + "from hf_token_prune.loading import load_config; load_config(FOLDER)",
    }
    for what, step in steps.items():
        code = (
            f"import sys\nFOLDER = {str(folder)!r}\n{step}\n"
            "from transformers import AutoConfig, AutoModelForAudioClassification\n"
            "assert type(AutoModelForAudioClassification.from_pretrained(FOLDER)).__name__ == "
            "'PrunedAudioMAEForAudioClassification'\n"
            "assert AutoConfig.from_pretrained(FOLDER).model_type == 'pruned-audiomae'\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"{what}: {result.stderr[-2000:]}"


def test_every_public_name_resolves_and_is_listed():
    import ast
    import inspect

    import hf_token_prune

    # the imports type checkers and the API reference read name the modules __getattr__ loads at run time
    typed = {alias.name: node.module for node in ast.walk(ast.parse(inspect.getsource(hf_token_prune)))
             if isinstance(node, ast.ImportFrom) and node.level == 1 for alias in node.names}  # fmt: skip
    assert typed == hf_token_prune._PUBLIC and set(typed) == set(hf_token_prune.__all__)
    assert set(hf_token_prune.__all__) <= set(dir(hf_token_prune))
    for name in hf_token_prune.__all__:
        assert getattr(hf_token_prune, name).__name__ == name
    with pytest.raises(AttributeError, match="has no attribute 'PrunedViT'"):
        hf_token_prune.PrunedViT

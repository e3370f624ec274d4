"""recipes/finetune.py end to end: the model folder and its card, remote code, bad input, two processes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile
import torch
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers import AutoFeatureExtractor, pipeline

from conftest import KEYWORDS, REPO, TINY_SCHEDULE, load_recipe, tiny_ast_kwargs
from hf_token_prune.data import load_audio_classification
from hf_token_prune.macs import count_forward_macs
from hf_token_prune.training import keep_rate_at


TINY = [
    "--recipe", "demo",
    "--config_overrides", "hidden_size=32,num_attention_heads=2,intermediate_size=64,frequency_stride=16,time_stride=16",
    "--num_mel_bins", "32", "--num_frames", "64", "--max_train_samples", "32", "--max_eval_samples", "20",
    "--per_device_train_batch_size", "8", "--eval_keep_rates", "1.0,0.7,0.4", *TINY_SCHEDULE,
    "--time_shift", "true",  # not in the demo recipe: on here so the tests cover it
]  # fmt: skip
# A run of a step or two is shorter than any schedule: prune at the target keep rate from the first step.
AT_TARGET = ["--shrink_start_epoch", "0", "--shrink_epochs", "0"]


@pytest.fixture(scope="module")
def finetune():
    from hf_token_prune.commands import finetune as finetuning  # what recipes/finetune.py runs

    return finetuning


@pytest.fixture(scope="module")
def demo_run(finetune, tmp_path_factory):
    output = tmp_path_factory.mktemp("demo") / "tiny-demo"
    trainer = finetune.main(TINY + ["--output_dir", str(output)])
    return output, trainer


def test_recipes_cover_the_paper_and_parse(finetune):
    assert finetune.available_recipes() == [
        "ast-audioset",
        "ast-esc50",
        "ast-speechcommands",
        "audiomae-audioset",
        "audiomae-esc50",
        "audiomae-speechcommands",
        "audiomae-voxceleb1",
        "demo",
    ]
    _, model_args, data_args, pruning_args, training_args = finetune.parse_arguments(
        ["--recipe", "ast-esc50", "--learning_rate", "3e-5", "--fold", "4"]
    )
    assert (data_args.dataset_name, data_args.fold, training_args.learning_rate) == ("esc50", 4, 3e-5)
    # the paper's code counts epochs from 1: "shrink from epoch 5" is 4 finished epochs at keep rate 1.0
    assert (pruning_args.shrink_start_epoch, pruning_args.shrink_epochs, pruning_args.optimizer) == (4, 15, "adam")
    assert (data_args.fbank_padding, training_args.max_grad_norm) == ("minimum", 0.0)
    assert (training_args.per_device_train_batch_size, training_args.num_train_epochs) == (48, 30)
    assert (training_args.adam_beta1, training_args.adam_beta2, training_args.weight_decay) == (0.95, 0.999, 5e-7)
    _, _, data_args, pruning_args, training_args = finetune.parse_arguments(
        ["--recipe", "audiomae-audioset", "--model_name_or_path", "x"]
    )
    assert (pruning_args.layer_decay, pruning_args.shrink_start_epoch, pruning_args.shrink_epochs) == (0.75, 30, 20)
    assert (data_args.mixup, data_args.mixup_alpha, data_args.patch_mask_ratio, data_args.loss) == (
        0.5,
        10.0,
        0.3,
        "bce",
    )
    assert (pruning_args.base_learning_rate, training_args.max_grad_norm) == (1e-3, 0.0)
    assert training_args.lr_scheduler_kwargs == {"min_lr": 1e-5}
    with pytest.raises(SystemExit, match="needs --model_name_or_path"):
        finetune.parse_arguments(["--recipe", "audiomae-esc50"])


def test_help_lists_every_flag_and_the_recipes():
    result = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "finetune.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in (
        "--recipe",
        "--keep_rate",
        "--shrink_start_epoch",
        "--dataset_name",
        "--fold",
        "--mixup",
        "--layer_decay",
        "--push_to_hub",
        "--learning_rate",
        "ast-esc50",
        "audiomae-voxceleb1",
    ):
        assert flag in result.stdout


def test_demo_folder_card_and_table(demo_run, capsys):
    output, trainer = demo_run
    results = json.loads((output / "keep_rate_sweep.json").read_text())
    assert [row["keep_rate"] for row in results] == [1.0, 0.7, 0.4]
    assert results[0]["gmacs"] > results[1]["gmacs"] > results[2]["gmacs"]

    card = ModelCard.load(output / "README.md")
    data = card.data
    assert isinstance(data, ModelCardData)
    assert (data.keep_rate, data.pruning_layers, data.token_score) == (0.7, [3, 6, 9], "attention")
    assert data.pipeline_tag == "audio-classification" and data.library_name == "transformers"
    assert data.gmacs == round(results[1]["gmacs"], 3) and data.gmacs_unpruned == round(results[0]["gmacs"], 3)
    # model-index: parsed back into evaluation results, one at the trained keep rate and one without pruning
    model_name, eval_results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert model_name == "tiny-demo"
    values = {result.metric_name: result.metric_value for result in eval_results}
    assert values == {
        "accuracy at keep rate 0.7": round(results[1]["metric"], 4),
        "accuracy at keep rate 1.0": round(results[0]["metric"], 4),
    }
    assert all(result.task_type == "audio-classification" and result.dataset_split == "test" for result in eval_results)
    assert ModelCardData(**data.to_dict()).to_dict() == data.to_dict()  # the metadata round-trips
    assert "trust_remote_code=True" in card.text and "keep_rate_schedule.png" in card.text
    for row in results:
        assert f"| {row['keep_rate']:.2f} | {row['metric']:.4f} |" in card.text

    image = (output / "keep_rate_schedule.png").read_bytes()
    assert image.startswith(b"\x89PNG")
    files = {path.name for path in output.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "modeling_pruned_ast.py",
        "configuration_pruned_ast.py",
        "pruning.py",
    } <= files
    history = [entry for entry in trainer.state.log_history if "keep_rate" in entry]
    assert history[0]["keep_rate"] == 1.0 and history[-1]["keep_rate"] == 0.7


def test_trainer_push_writes_the_pruned_card(demo_run):
    output, trainer = demo_run
    (output / "README.md").unlink()
    trainer.create_model_card()  # what push_to_hub calls before uploading the folder
    assert "TopK token pruning" in (output / "README.md").read_text()


def test_model_folder_loads_with_remote_code_without_the_package(demo_run, tmp_path):
    output, trainer = demo_run
    clip = sorted((KEYWORDS / "test" / "go").glob("*.flac"))[0]
    wave, rate = soundfile.read(clip, dtype="float32")
    features = trainer.processing_class(wave, sampling_rate=rate, return_tensors="pt")
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**features).logits
    torch.save({"features": features["input_values"], "logits": expected}, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "hf_token_prune" or name.startswith("hf_token_prune."):
                    raise ImportError("hf_token_prune is blocked for this test")
        sys.meta_path.insert(0, Block())
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline
        folder = {str(output)!r}
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model)
        assert model.config.keep_rate == 0.7
        extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
        import soundfile
        wave, rate = soundfile.read({str(clip)!r}, dtype="float32")
        features = extractor(wave, sampling_rate=rate, return_tensors="pt")["input_values"]
        assert torch.equal(features, expected["features"])
        with torch.no_grad():
            diff = (model(features).logits - expected["logits"]).abs().max().item()
        assert diff <= 1e-5, diff
        print("RESULT", pipeline("audio-classification", model=folder, trust_remote_code=True)({str(clip)!r}, top_k=1))
        """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RESULT [{'score'" in result.stdout


def test_reported_accuracy_is_what_a_pipeline_gets_from_the_saved_folder(demo_run):
    # Training moves clips in time (--time_shift); evaluation must still be exactly the saved feature extractor's
    # features, or the card reports an accuracy that users of the folder do not get.
    output, trainer = demo_run
    reported = json.loads((output / "keep_rate_sweep.json").read_text())[1]
    assert reported["keep_rate"] == 0.7
    data = load_audio_classification("audiofolder", data_dir=str(KEYWORDS))
    extractor = AutoFeatureExtractor.from_pretrained(output)
    batch = next(iter(trainer.get_eval_dataloader()))
    waves = [row["audio"]["array"] for row in data.eval.select(range(len(batch["input_values"])))]
    saved = extractor(waves, sampling_rate=16000, return_tensors="pt")["input_values"]
    assert torch.equal(batch["input_values"], saved)  # evaluation saw exactly what the saved extractor makes
    test = data.test.select(range(20))
    classifier = pipeline("audio-classification", model=str(output), trust_remote_code=True)
    labels = test.features["labels"].names
    clips = [{"raw": row["audio"]["array"].astype(np.float32), "sampling_rate": 16000} for row in test]
    predicted = [classifier(clip, top_k=1)[0]["label"] for clip in clips]
    accuracy = np.mean([guess == labels[row["labels"]] for guess, row in zip(predicted, test)])
    assert accuracy == pytest.approx(reported["metric"], abs=1e-9)



# bad input: each refused with a clear message before any training --------------------------------------------------


def run_expecting_exit(finetune, argv, tmp_path):
    output = tmp_path / "never-written"
    with pytest.raises(SystemExit) as error:
        finetune.main(argv + ["--output_dir", str(output)])
    assert not output.exists()  # nothing trained, nothing saved
    return str(error.value)


@pytest.mark.full
def test_demo_recipe_streams_the_shipped_audio_folder(tmp_path, caplog):
    """The demo recipe with --streaming reads data/keywords (an audiofolder) as a stream: its 700 training files count
    the epoch's steps, and the recipe's data-loader worker yields to the stream's main-process reading."""
    output = tmp_path / "streamed"
    argv = ["--recipe", "demo", "--streaming", "--max_steps", "3", "--output_dir", str(output), "--max_eval_samples",
            "16", "--eval_keep_rates", "0.7", "--eval_token_reductions", "prune", *AT_TARGET]  # fmt: skip
    with caplog.at_level("INFO"):
        trainer = load_recipe("finetune").main(argv)
    assert trainer.state.global_step == 3 and trainer.args.dataloader_num_workers == 0
    assert "streaming: 700 rows / (8 per device x 1 processes x 1 accumulation) = 88 optimizer steps" in caplog.text
    assert (output / "model.safetensors").is_file() and (output / "preprocessor_config.json").is_file()


def test_unknown_recipe_and_dataset(finetune, tmp_path):
    assert "unknown recipe 'ast-mnist'" in run_expecting_exit(finetune, ["--recipe", "ast-mnist"], tmp_path)
    message = run_expecting_exit(finetune, ["--recipe", "demo", "--dataset_name", "mnist"], tmp_path)
    assert "unknown dataset 'mnist'" in message and "esc50" in message


def test_missing_label_column(finetune, tmp_path):
    message = run_expecting_exit(finetune, ["--recipe", "demo", "--label_column_name", "word"], tmp_path)
    assert "no column 'word'" in message and "--label_column_name" in message


@pytest.mark.parametrize("rate", ["0", "-8000", "8000"])
def test_sampling_rate_zero(finetune, tmp_path, rate):
    assert "--sampling_rate" in run_expecting_exit(finetune, ["--recipe", "demo", "--sampling_rate", rate], tmp_path)


@pytest.mark.parametrize("keep_rate", ["0", "1.5", "-0.3", "nan"])
def test_keep_rate_outside_zero_one(finetune, tmp_path, keep_rate):
    message = run_expecting_exit(finetune, ["--recipe", "demo", "--keep_rate", keep_rate], tmp_path)
    assert "--keep_rate" in message and "(0, 1]" in message


def test_a_token_score_the_method_cannot_use(finetune, tmp_path):
    argv = ["--recipe", "demo", "--token_reduction", "fuse", "--token_score", "intensity"]
    message = run_expecting_exit(finetune, argv, tmp_path)
    assert "token_reduction='fuse' cannot use token_score='intensity'" in message
    message = run_expecting_exit(finetune, ["--recipe", "demo", "--eval_token_reductions", "prune,drop"], tmp_path)
    assert "--eval_token_reductions" in message and "'drop'" in message


@pytest.mark.full
def test_merge_fine_tuning_saves_merge_and_compares_every_method(finetune, tmp_path, capsys):
    output = tmp_path / "merge"
    finetune.main(TINY + ["--token_reduction", "merge", "--eval_keep_rates", "0.4", "--output_dir", str(output)])
    assert json.loads((output / "config.json").read_text())["token_reduction"] == "merge"
    rows = json.loads((output / "keep_rate_sweep.json").read_text())
    assert {row["token_reduction"] for row in rows} == {"merge"} and [r["keep_rate"] for r in rows] == [1.0, 0.7, 0.4]
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("keep rate |"))
    assert [name.strip() for name in header.split("|")[1:4]] == ["prune", "fuse", "merge"]


@pytest.mark.full
def test_drop_padding_fine_tuning_feeds_the_frame_mask_and_saves_a_folder_that_drops_padding(finetune, tmp_path):
    output = tmp_path / "drop-padding"
    seen = []
    trainer = finetune.main(TINY + ["--drop_padding", "true", "--eval_keep_rates", "0.7", "--output_dir", str(output)])
    assert json.loads((output / "config.json").read_text())["drop_padding"] is True
    rows = json.loads((output / "keep_rate_sweep.json").read_text())
    assert {row["token_reduction"] for row in rows} == {"prune"} and [r["keep_rate"] for r in rows] == [1.0, 0.7]
    # Training batches carry the extractor's frame mask, rolled with the features (--time_shift) ...
    batch = next(iter(trainer.get_train_dataloader()))
    mask = batch["attention_mask"]
    assert mask.shape == batch["input_values"].shape[:2] and 0 < mask.sum() < mask.numel()
    real_rows = (batch["input_values"] != batch["input_values"][:, :, :1]).any(dim=-1)
    assert not (real_rows & ~mask.bool()).any()  # no frame with a signal is marked padding
    # ... and the first layer of the saved model sees only real tokens when a pipeline feeds it.
    model = trainer.model
    hook = model.base_model.layers[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    extractor = AutoFeatureExtractor.from_pretrained(output)
    data = load_audio_classification("audiofolder", data_dir=str(KEYWORDS))
    clip = data.test[0]["audio"]["array"].astype(np.float32)
    features = extractor(clip, sampling_rate=16000, return_tensors="pt")
    assert "attention_mask" in features  # saved to return it by default
    model.eval()(**{key: value.to(model.device) for key, value in features.items()})
    hook.remove()
    assert seen[-1] < model.config.max_length // 16 * model.config.num_mel_bins // 16 + 2
    reported = rows[0]["metric"]
    classifier = pipeline("audio-classification", model=str(output), trust_remote_code=True)
    test = data.test.select(range(20))  # the tiny run's test clips
    labels = test.features["labels"].names
    clips = [{"raw": row["audio"]["array"].astype(np.float32), "sampling_rate": 16000} for row in test]
    predicted = [classifier(clip, top_k=1)[0]["label"] for clip in clips]
    assert np.mean([guess == labels[row["labels"]] for guess, row in zip(predicted, test)]) == pytest.approx(reported)


def test_keep_mass_fine_tuning_shrinks_keep_mass_and_saves_its_row(finetune, tmp_path, capsys):
    # TINY: 4 optimizer steps per epoch; keep_mass shrinks from step 0 for 6 steps (1.5 epochs) of 8
    output = tmp_path / "keep-mass"
    argv = TINY + ["--keep_rate", "1.0", "--keep_mass", "0.6", "--min_keep_rate", "0.1", "--shrink_start_epoch", "0",
                   "--shrink_epochs", "1.5", "--eval_keep_rates", "0.7", "--eval_token_reductions", "prune",
                   "--output_dir", str(output)]  # fmt: skip
    trainer = finetune.main(argv)
    saved = json.loads((output / "config.json").read_text())
    assert (saved["keep_rate"], saved["keep_mass"], saved["min_keep_rate"]) == (1.0, 0.6, 0.1)
    logged = {entry["step"]: entry["keep_mass"] for entry in trainer.state.log_history if "keep_mass" in entry}
    assert logged == {step: round(keep_rate_at(step - 1, 0.6, 0, 6), 6) for step in range(1, 9)}
    assert logged[1] == 1.0 and logged[4] == pytest.approx(0.8) and logged[7] == 0.6  # start, mid, end
    assert not any("keep_rate" in entry for entry in trainer.state.log_history)

    # the fixed rates of the table, then the trained policy's row: its MACs are the clips' own, run alone
    rows = json.loads((output / "keep_rate_sweep.json").read_text())
    assert [(row["keep_rate"], row.get("keep_mass")) for row in rows] == [(1.0, None), (0.7, None), (1.0, 0.6)]
    trained = rows[-1]
    model = trainer.model.eval()
    data = load_audio_classification("audiofolder", data_dir=str(KEYWORDS))
    test = data.test.select(range(20))  # the tiny run's test clips
    inputs = trainer.processing_class([row["audio"]["array"] for row in test], sampling_rate=16000,
                                      return_tensors="pt")["input_values"]  # fmt: skip
    macs, kept = [], []
    for clip in inputs:
        with torch.no_grad():
            outputs = model(clip[None], output_kept_patches=True)
        kept.append([patches.shape[1] for patches in outputs.kept_patches])
        macs.append(count_forward_macs(model, clip[None]))  # FlopCounterMode, CPU SDPA counted too
    assert trained["gmacs"] == pytest.approx(np.mean(macs) / 1e9, rel=1e-12)
    assert trained["kept_tokens"] == pytest.approx(np.mean(kept, axis=0).tolist(), rel=1e-12)
    assert min(min(counts) for counts in kept) < max(max(counts) for counts in kept)  # clips keep counts of their own
    printed = capsys.readouterr().out
    assert f"keep_mass 0.6 (prune, keep rate ceiling 1.0, floor 0.1): {trained['metric']:.4f}" in printed

    card = ModelCard.load(output / "README.md")
    assert (card.data.keep_mass, card.data.keep_rate, card.data.gmacs) == (0.6, 1.0, round(trained["gmacs"], 3))
    names = {result.metric_name for result in model_index_to_eval_results(card.data.to_dict()["model-index"])[1]}
    assert names == {"accuracy at keep_mass 0.6", "accuracy at keep rate 1.0"}
    assert "During fine-tuning keep_mass\nshrank from 1.0 to 0.6" in card.text
    assert "| keep_mass schedule | 1.0 until epoch 0.0, cosine to 0.6 over 1.5 epochs" in card.text


def test_keep_mass_with_a_method_that_cannot_keep_per_sample_counts_is_refused(finetune, tmp_path):
    argv = TINY + ["--keep_rate", "1.0", "--keep_mass", "0.6", "--token_reduction", "merge"]
    message = run_expecting_exit(finetune, argv, tmp_path)
    assert "keep_mass=0.6 is not supported with token_reduction='merge'" in message and "\n" not in message
    message = run_expecting_exit(finetune, ["--recipe", "demo", "--min_keep_rate", "0.2"], tmp_path)
    assert "--min_keep_rate is the floor of the per-sample policy: give --keep_mass too" in message
    argv = ["--recipe", "demo", "--keep_mass", "0.8", "--min_keep_rate", "0.9"]  # the recipe's keep rate 0.7: ceiling
    assert "min_keep_rate=0.9 is above keep_rate=0.7" in run_expecting_exit(finetune, argv, tmp_path)
    assert "(0, 1]" in run_expecting_exit(finetune, ["--recipe", "demo", "--keep_mass", "1.5"], tmp_path)


def test_keep_mass_schedule_longer_than_training(finetune, tmp_path):
    argv = ["--recipe", "demo", "--keep_rate", "1.0", "--keep_mass", "0.8", "--shrink_start_epoch", "20",
            "--shrink_epochs", "8", "--num_train_epochs", "24"]  # fmt: skip
    message = run_expecting_exit(finetune, argv, tmp_path)
    assert "= 28 epochs, but --num_train_epochs is 24: training would stop before keep_mass reaches 0.8" in message
    with pytest.raises(SystemExit) as error:
        finetune.main(TINY + ["--keep_rate", "1.0", "--keep_mass", "0.8", "--max_steps", "5",
                              "--output_dir", str(tmp_path / "short")])  # fmt: skip
    assert "training stops after 5 optimizer steps, but the keep_mass shrinks until step 6" in str(error.value)
    assert not any((tmp_path / "short").rglob("*.safetensors"))


def test_drop_padding_with_fuse_is_refused(finetune, tmp_path):
    message = run_expecting_exit(finetune, TINY + ["--drop_padding", "true", "--token_reduction", "fuse"], tmp_path)
    assert "drop_padding=True is not supported with token_reduction='fuse'" in message


def test_schedule_longer_than_training(finetune, tmp_path):
    argv = ["--recipe", "demo", "--shrink_start_epoch", "20", "--shrink_epochs", "8", "--num_train_epochs", "24"]
    message = run_expecting_exit(finetune, argv, tmp_path)
    assert "= 28 epochs, but --num_train_epochs is 24" in message


def test_persistent_workers_would_freeze_augmentation(finetune, tmp_path):
    argv = ["--recipe", "demo", "--dataloader_persistent_workers", "true"]
    assert "--dataloader_persistent_workers keeps each worker's copy" in run_expecting_exit(finetune, argv, tmp_path)


def test_mixup_with_the_default_single_label_loss(finetune, tmp_path):
    assert "--mixup blends targets, which needs --loss bce" in run_expecting_exit(
        finetune, ["--recipe", "demo", "--mixup", "0.5"], tmp_path
    )


def test_bad_learning_rate_step_decay_and_warmup(finetune, tmp_path):
    message = run_expecting_exit(finetune, ["--recipe", "demo", "--lr_step_decay", "5,0,0.85"], tmp_path)
    assert "every_epochs >= 1" in message
    assert "--warmup_epochs -1.0" in run_expecting_exit(finetune, ["--recipe", "demo", "--warmup_epochs", "-1"], tmp_path)


def test_a_learning_rate_given_outright_wins_over_a_recipes_base_rate(finetune):
    argv = ["--recipe", "audiomae-esc50", "--model_name_or_path", "x"]
    assert finetune.parse_arguments(argv)[3].base_learning_rate == 1e-3
    assert finetune.parse_arguments(argv + ["--learning_rate", "5e-4"])[3].base_learning_rate is None


@pytest.mark.full
def test_base_learning_rate_scales_with_the_global_batch(finetune, tmp_path):
    argv = TINY + ["--max_steps", "1", "--base_learning_rate", "2e-3", "--gradient_accumulation_steps", "2", *AT_TARGET]
    trainer = finetune.main(argv + ["--eval_strategy", "no", "--output_dir", str(tmp_path / "out")])
    assert trainer.args.learning_rate == pytest.approx(2e-3 * 8 * 1 * 2 / 256)


def test_bad_pruning_layers(finetune, tmp_path):
    message = run_expecting_exit(finetune, ["--recipe", "demo", "--pruning_layers", "6,3"], tmp_path)
    assert "indices must be sorted and unique" in message
    message = run_expecting_exit(finetune, ["--recipe", "demo", "--pruning_layers", "3,6,12"], tmp_path)
    assert "contains [12], outside the model's layers" in message and "[0, 11]" in message


def test_empty_audio(finetune, tmp_path):
    folder = tmp_path / "clips"
    for split in ("train", "test"):
        for word in ("yes", "no"):
            (folder / split / word).mkdir(parents=True)
            soundfile.write(folder / split / word / "a.wav", np.full(4000, 0.1, np.float32), 16000)
    soundfile.write(folder / "train" / "yes" / "silent.wav", np.zeros(0, np.float32), 16000)
    message = run_expecting_exit(finetune, ["--recipe", "demo", "--data_dir", str(folder)], tmp_path)
    assert "1 of 3 rows of the train split cannot be used: train/yes/silent.wav: empty audio" in message


# two processes ------------------------------------------------------------------------------------------------------


@pytest.mark.full
def test_two_process_accelerate_run_ends_with_identical_weights(tmp_path):
    script = tmp_path / "run_and_save_weights.py"
    script.write_text(
        textwrap.dedent(f"""
        import importlib.util, sys, torch
        spec = importlib.util.spec_from_file_location("finetune", {str(REPO / "recipes" / "finetune.py")!r})
        finetune = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(finetune)
        trainer = finetune.main(sys.argv[1:])
        loss = trainer.evaluate()["eval_loss"]  # the returned trainer still works across the processes
        torch.save({{"world_size": trainer.args.world_size, "weights": trainer.model.state_dict(), "loss": loss}},
                   {str(tmp_path)!r} + f"/rank{{trainer.args.process_index}}.pt")
        """)
    )
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(script),
        *TINY,
        "--max_steps",
        "3",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["loss"] == ranks[1]["loss"]  # gathered over both processes' halves of the validation split
    assert ranks[0]["weights"].keys() == ranks[1]["weights"].keys()
    for name, weight in ranks[0]["weights"].items():
        assert torch.equal(weight, ranks[1]["weights"][name]), name
    assert (tmp_path / "out" / "README.md").is_file()


@pytest.mark.full
def test_audiomae_recipe_path_trains_a_tiny_model(finetune, tmp_path):
    output = tmp_path / "tiny-audiomae"
    trainer = finetune.main(
        [
            "--recipe",
            "demo",
            "--model_type",
            "pruned-audiomae",
            "--config_overrides",
            "hidden_size=32,num_attention_heads=2,intermediate_size=64",
            "--num_mel_bins",
            "32",
            "--num_frames",
            "64",
            "--max_train_samples",
            "16",
            "--max_eval_samples",
            "8",
            "--per_device_train_batch_size",
            "8",
            "--max_steps",
            "2",
            *AT_TARGET,
            "--layer_decay",
            "0.75",
            "--patch_mask_ratio",
            "0.3",
            "--eval_keep_rates",
            "1.0,0.5",
            "--disable_tqdm",
            "true",
            "--output_dir",
            str(output),
        ]
    )
    assert type(trainer.model).__name__ == "PrunedAudioMAEForAudioClassification"
    assert type(trainer.processing_class).__name__ == "AudioMAEFeatureExtractor"
    assert ModelCard.load(output / "README.md").data.keep_rate == 0.7


def stock_ast_checkpoint(folder, names):
    """A tiny transformers AST for 64 frames x 32 mel bins with its feature extractor, saved to `folder`."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    tiny = tiny_ast_kwargs(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_mel_bins=32, max_length=64)
    config = ASTConfig(
        **{**tiny, "num_labels": len(names)},
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    checkpoint = ASTForAudioClassification(config)
    checkpoint.save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(folder)
    return checkpoint


def test_any_audio_folder_fine_tunes_a_checkpoint_at_its_own_input_length(finetune, tmp_path):
    stock_ast_checkpoint(tmp_path / "checkpoint", [f"class {i}" for i in range(10)])
    trainer = finetune.main(
        ["--dataset_name", "audiofolder", "--data_dir", str(KEYWORDS), "--model_name_or_path",
         str(tmp_path / "checkpoint"), "--max_steps", "1", "--max_train_samples", "8", "--max_eval_samples", "8",
         "--eval_keep_rates", "1.0", "--disable_tqdm", "true", "--output_dir", str(tmp_path / "out")]
    )  # fmt: skip
    assert trainer.model.config.max_length == 64 and trainer.processing_class.max_length == 64


@pytest.mark.parametrize("same_classes, reset_classifier", [(True, False), (False, False), (True, True)])
@pytest.mark.full
def test_pretrained_head_is_kept_for_its_classes_and_replaced_for_others(
    finetune, tmp_path, same_classes, reset_classifier
):
    words = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]
    names = list(reversed(words)) if same_classes else [f"class {i}" for i in range(10)]
    checkpoint = stock_ast_checkpoint(tmp_path / "checkpoint", names)
    trainer = finetune.main(
        [
            "--recipe",
            "demo",
            "--model_name_or_path",
            str(tmp_path / "checkpoint"),
            "--num_frames",
            "64",
            "--learning_rate",
            "0",
            "--max_steps",
            "1",
            *AT_TARGET,
            "--max_train_samples",
            "8",
            "--max_eval_samples",
            "8",
            "--eval_keep_rates",
            "1.0",
            "--disable_tqdm",
            "true",
            "--reset_classifier",
            str(reset_classifier),
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    model = trainer.model
    assert [model.config.id2label[i] for i in range(10)] == (names if same_classes else words)
    kept = torch.equal(model.classifier.dense.weight, checkpoint.classifier.dense.weight)
    assert kept is (same_classes and not reset_classifier)
    encoder = model.audio_spectrogram_transformer.layers[5].mlp.fc1.weight
    assert torch.equal(encoder, checkpoint.audio_spectrogram_transformer.layers[5].mlp.fc1.weight)
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.base_model is None  # a local folder is no Hub id: named in the text only
    assert f"fine-tuned from `{tmp_path / 'checkpoint'}`" in card.text


def test_fbank_padding_minimum_turns_a_checkpoints_ast_extractor_into_one_that_pads_with_the_minimum():
    from transformers import ASTFeatureExtractor

    from hf_token_prune.finetuning import with_fbank_padding

    stock = ASTFeatureExtractor(num_mel_bins=32, max_length=100, mean=-3.0, std=2.5)
    minimum = with_fbank_padding(stock, "minimum")
    assert (minimum.num_mel_bins, minimum.max_length, minimum.mean, minimum.std) == (32, 100, -3.0, 2.5)
    wave = np.random.default_rng(0).normal(0, 0.1, 4800).astype(np.float32)  # 28 frames of 100
    ours = minimum(wave, sampling_rate=16000, return_tensors="pt")["input_values"][0]
    theirs = stock(wave, sampling_rate=16000, return_tensors="pt")["input_values"][0]
    assert torch.equal(ours[:28], theirs[:28])
    assert (ours[28:] == ours[:28].min()).all() and (theirs[28:] == (0 + 3.0) / 5.0).all()


@pytest.mark.full
@pytest.mark.parametrize("setting", ["keep_rate", "keep_mass"])
def test_recipe_run_interrupted_and_resumed_ends_where_the_uninterrupted_one_does(finetune, tmp_path, setting):
    # Augmentation (time shift, SpecAugment) and the keep-rate schedule all have to pick up exactly where they were.
    run = TINY + ["--max_steps", "8", "--save_strategy", "steps", "--save_steps", "3", "--freq_mask", "8",
                  "--time_mask", "16", "--eval_strategy", "no", "--eval_keep_rates", "0.7"]  # fmt: skip
    if setting == "keep_mass":
        run += ["--keep_rate", "1.0", "--keep_mass", "0.7"]
    full = finetune.main(run + ["--output_dir", str(tmp_path / "full")])
    checkpoint = str(tmp_path / "full" / "checkpoint-3")
    resumed = finetune.main(run + ["--output_dir", str(tmp_path / "resumed"), "--resume_from_checkpoint", checkpoint])
    trajectory = [(e["step"], e[setting]) for e in full.state.log_history if setting in e]
    # steps 1-3 come back from the checkpoint's trainer state, 4-8 are logged anew
    assert [(e["step"], e[setting]) for e in resumed.state.log_history if setting in e] == trajectory
    assert trajectory[0][1] == 1.0 and trajectory[-1][1] == 0.7
    for (name, weight), (_, other) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert (weight - other).abs().max().item() <= 1e-6, name
        if setting == "keep_mass":
            assert torch.equal(weight, other), name  # bit-identical


def test_max_steps_shorter_than_the_keep_rate_schedule_is_refused(finetune, tmp_path):
    # TINY: 32 clips / 8 = 4 steps per epoch, shrinking from step 2 for 4 steps: the keep rate reaches 0.7 at step 6
    with pytest.raises(SystemExit) as error:  # refused as training begins: Trainer has made the folder, nothing more
        finetune.main(TINY + ["--max_steps", "5", "--output_dir", str(tmp_path / "short")])
    message = str(error.value)
    assert "training stops after 5 optimizer steps, but the keep rate shrinks until step 6" in message
    assert "--shrink_start_epoch" in message and not any((tmp_path / "short").rglob("*.safetensors"))
    trainer = finetune.main(TINY + ["--max_steps", "6", "--eval_strategy", "no", "--output_dir", str(tmp_path / "fits")])
    assert trainer.state.global_step == 6 and trainer.model.config.keep_rate == 0.7

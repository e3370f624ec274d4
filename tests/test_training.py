"""The keep-rate schedule (formula, callback, resume) and the Trainer's optimiser details."""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import ASTFeatureExtractor, TrainerState, TrainingArguments

from conftest import KEYWORDS, tiny_ast_kwargs
from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification
from hf_token_prune.data import (
    AudioFeatureTransform,
    Mixup,
    SpecAugment,
    load_audio_classification,
)
from hf_token_prune.training import (
    AugmentationEpochCallback,
    KeepRateScheduleCallback,
    PrunedModelTrainer,
    keep_rate_at,
    layer_decay_parameter_groups,
    step_decay_lambda,
)


def evit_formula(iteration, base, total):
    """NOTES.md: base + (1 - base) * (cos(pi * it / total) + 1) / 2 during the shrinking phase."""
    return base + (1 - base) * (math.cos(math.pi * iteration / total) + 1) / 2


# 1. the formula ------------------------------------------------------------------------------------------------------


def test_keep_rate_follows_the_evit_formula():
    start, total, target = 30, 40, 0.7
    assert [keep_rate_at(step, target, start, total) for step in (0, 15, 29)] == [1.0, 1.0, 1.0]
    assert keep_rate_at(30, target, start, total) == 1.0  # cos(0): the first shrinking step still keeps everything
    assert keep_rate_at(50, target, start, total) == pytest.approx(0.85, abs=1e-12)  # halfway: cos(pi/2) = 0
    assert keep_rate_at(40, target, start, total) == pytest.approx(0.7 + 0.3 * (math.sqrt(2) / 2 + 1) / 2, abs=1e-12)
    for step in range(30, 70):
        assert keep_rate_at(step, target, start, total) == pytest.approx(evit_formula(step - 30, 0.7, 40), abs=1e-12)
    assert [keep_rate_at(step, target, start, total) for step in (70, 71, 10_000)] == [0.7, 0.7, 0.7]
    rates = [keep_rate_at(step, target, start, total) for step in range(100)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # never grows back
    assert keep_rate_at(5, 0.5, 5, 0) == 0.5  # no shrinking phase: straight to the target


# 2. the callback with a fake Trainer state ---------------------------------------------------------------------------


class RecordingModel:
    def __init__(self):
        self.keep_rates = []

    def set_keep_rate(self, keep_rate):
        self.keep_rates.append(keep_rate)


def test_callback_sets_the_formula_at_each_optimizer_step_and_the_target_between_steps():
    # 10 batches with gradient accumulation 2 -> 5 optimizer steps per epoch; shrink from epoch 2 for 3 epochs.
    args = SimpleNamespace(gradient_accumulation_steps=2)
    augmentation = SimpleNamespace(enabled=True)
    callback = KeepRateScheduleCallback(target=0.6, start_epoch=2, num_epochs=3, augmentations=[augmentation])
    callback.on_train_begin(args, TrainerState(), None, train_dataloader=list(range(10)))
    assert callback.steps_per_epoch == 5
    model = RecordingModel()
    for step in (0, 9, 10, 11, 17, 24, 25, 40):
        state = TrainerState(global_step=step)
        callback.on_step_begin(args, state, None, model=model)
        assert model.keep_rates[-1] == pytest.approx(
            1.0 if step < 10 else 0.6 if step >= 25 else evit_formula(step - 10, 0.6, 15), abs=1e-12
        )
        callback.on_step_end(args, TrainerState(global_step=step + 1), None, model=model)
        assert model.keep_rates[-1] == 0.6  # what evaluation and checkpoints see

    for step, enabled in ((0, True), (5, True), (10, False), (13, False), (20, False)):
        callback.on_epoch_begin(args, TrainerState(global_step=step), None)
        assert augmentation.enabled is enabled, step


def test_callback_logs_the_keep_rate_of_the_step_just_taken():
    args = SimpleNamespace(gradient_accumulation_steps=1)
    callback = KeepRateScheduleCallback(target=0.5, start_epoch=1, num_epochs=1)
    callback.on_train_begin(args, TrainerState(), None, train_dataloader=list(range(4)))
    state = TrainerState(global_step=6, log_history=[{"loss": 1.0, "step": 6}])
    logs = {"loss": 1.0}
    callback.on_log(args, state, None, logs=logs)
    assert logs["keep_rate"] == round(evit_formula(1, 0.5, 4), 6) == state.log_history[-1]["keep_rate"]
    evaluation = {"eval_loss": 1.0}
    callback.on_log(args, state, None, logs=evaluation)
    assert "keep_rate" not in evaluation


def test_callback_shrinks_keep_mass_with_the_same_cosine_under_a_fixed_keep_rate():
    # 10 batches, accumulation 2 -> 5 steps per epoch; keep_mass shrinks from step 10 (epoch 2) for 10 steps.
    model = PrunedASTForAudioClassification(PrunedASTConfig(**tiny_ast_kwargs(keep_rate=0.9, min_keep_rate=0.2)))
    args = SimpleNamespace(gradient_accumulation_steps=2)
    callback = KeepRateScheduleCallback(target=0.6, start_epoch=2, num_epochs=2, setting="keep_mass")
    callback.on_train_begin(args, TrainerState(), None, train_dataloader=list(range(10)), model=model)
    assert model.config.keep_mass == 0.6  # what an evaluation before the first step sees
    for step, expected in ((0, 1.0), (10, 1.0), (15, 0.8), (13, evit_formula(3, 0.6, 10)), (20, 0.6), (40, 0.6)):
        callback.on_step_begin(args, TrainerState(global_step=step), None, model=model)
        assert model.config.keep_mass == pytest.approx(expected, abs=1e-12), step
        assert (model.config.keep_rate, model.config.min_keep_rate) == (0.9, 0.2)  # the fixed ceiling and floor
        callback.on_step_end(args, TrainerState(global_step=step + 1), None, model=model)
        assert model.config.keep_mass == 0.6

    state = TrainerState(global_step=16, log_history=[{"loss": 1.0, "step": 16}])
    logs = {"loss": 1.0}
    callback.on_log(args, state, None, logs=logs)
    keep_mass = round(evit_formula(5, 0.6, 10), 6)
    assert logs == {"loss": 1.0, "keep_mass": keep_mass}
    assert state.log_history[-1] == {"loss": 1.0, "step": 16, "keep_mass": keep_mass}


def test_callback_refuses_to_schedule_another_setting():
    with pytest.raises(ValueError, match="keep_rate, keep_mass"):
        KeepRateScheduleCallback(target=0.5, start_epoch=0, num_epochs=1, setting="token_score")
    with pytest.raises(ValueError, match=r"target keep_mass.*\(0, 1\]"):
        KeepRateScheduleCallback(target=1.5, start_epoch=0, num_epochs=1, setting="keep_mass")


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5, float("nan"), True])
def test_callback_refuses_a_keep_rate_outside_zero_one(target):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        KeepRateScheduleCallback(target=target, start_epoch=0, num_epochs=1)


# 3. a real run, interrupted and resumed ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyword_subset():
    return load_audio_classification("audiofolder", data_dir=str(KEYWORDS)).train.shuffle(seed=0).select(range(24))


def train_tiny(output_dir, dataset, max_steps, resume_from_checkpoint=None, setting="keep_rate"):
    torch.manual_seed(0)
    config = PrunedASTConfig(
        **tiny_ast_kwargs(
            hidden_size=32, num_attention_heads=2, intermediate_size=64, num_mel_bins=32, max_length=64, num_labels=10
        )
    )
    config.problem_type = "multi_label_classification"
    model = PrunedASTForAudioClassification(config)
    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=64, mean=-2.0, std=4.0)
    augmentations = [SpecAugment(freq_mask=8, time_mask=16, fill_value=0.25)]
    transform = AudioFeatureTransform(
        extractor, 10, multi_label=False, one_hot=True, augmentations=augmentations, mixup=Mixup(0.5, 10.0)
    )
    dataset.set_transform(transform)
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="steps",
        save_steps=5,
        report_to="none",
        seed=0,
        remove_unused_columns=False,
        disable_tqdm=True,
        use_cpu=True,
    )
    # 6 steps per epoch: shrinking starts at step 3 and ends at step 9, the checkpoint at step 5 is mid-epoch.
    # (keep_mass shrinks under keep rate 1.0, no ceiling.)
    schedule = KeepRateScheduleCallback(0.5, start_epoch=0.5, num_epochs=1, augmentations=augmentations,
                                        setting=setting)  # fmt: skip
    trainer = PrunedModelTrainer(
        model=model, args=args, train_dataset=dataset, callbacks=[schedule, AugmentationEpochCallback(transform)]
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trajectory = {entry["step"]: entry[setting] for entry in trainer.state.log_history if setting in entry}
    return trainer.model, trajectory


@pytest.mark.parametrize("setting", ["keep_rate", "keep_mass"])
def test_interrupted_and_resumed_run_continues_exactly(tmp_path, keyword_subset, setting):
    full_model, full_trajectory = train_tiny(tmp_path / "full", keyword_subset, max_steps=12, setting=setting)
    assert (tmp_path / "full" / "checkpoint-5").is_dir()
    expected = {step: round(keep_rate_at(step - 1, 0.5, 3, 6), 6) for step in range(1, 13)}
    assert full_trajectory == expected

    resumed_model, resumed_trajectory = train_tiny(
        tmp_path / "resumed",
        keyword_subset,
        max_steps=12,
        resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-5"),
        setting=setting,
    )
    assert resumed_trajectory == full_trajectory
    assert getattr(resumed_model.config, setting) == 0.5
    for (name, full), (_, resumed) in zip(full_model.state_dict().items(), resumed_model.state_dict().items()):
        assert (full - resumed).abs().max().item() <= 1e-6, name
        if setting == "keep_mass":
            assert torch.equal(full, resumed), name  # bit-identical


# 4. optimiser details -------------------------------------------------------------------------------------------------


def test_layer_decay_scales_each_layer_by_its_depth():
    model = PrunedASTForAudioClassification(PrunedASTConfig(**tiny_ast_kwargs()))
    decay_names = {name for name, p in model.named_parameters() if p.dim() > 1}
    groups = layer_decay_parameter_groups(model, 1e-3, 0.05, 0.75, decay_names)
    lr_of = {id(p): group["lr"] for group in groups for p in group["params"]}
    wd_of = {id(p): group["weight_decay"] for group in groups for p in group["params"]}
    parameters = dict(model.named_parameters())
    assert len(lr_of) == len(parameters)
    assert lr_of[id(parameters["audio_spectrogram_transformer.embeddings.cls_token"])] == pytest.approx(1e-3 * 0.75**13)
    assert lr_of[id(parameters["audio_spectrogram_transformer.layers.0.mlp.fc1.weight"])] == pytest.approx(
        1e-3 * 0.75**12
    )
    assert lr_of[id(parameters["audio_spectrogram_transformer.layers.11.mlp.fc1.weight"])] == pytest.approx(1e-3 * 0.75)
    assert lr_of[id(parameters["classifier.dense.weight"])] == pytest.approx(1e-3)
    assert wd_of[id(parameters["classifier.dense.weight"])] == 0.05
    assert wd_of[id(parameters["classifier.dense.bias"])] == 0.0


def test_step_decay_matches_ast_multistep_schedule():
    # AST: MultiStepLR(milestones=range(5, 1000, 1), gamma=0.85) stepped once per epoch.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(range(5, 1000, 2)), gamma=0.85)
    multiplier = step_decay_lambda(steps_per_epoch=7, start_epoch=5, every_epochs=2, factor=0.85)
    for epoch in range(12):
        for step in range(epoch * 7, epoch * 7 + 7):
            assert multiplier(step) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)
        optimizer.step()
        reference.step()


def test_step_decay_warms_up_linearly_first():
    multiplier = step_decay_lambda(steps_per_epoch=10, start_epoch=2, every_epochs=1, factor=0.5, warmup_steps=4)
    assert [multiplier(step) for step in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert multiplier(20) == 0.5 and multiplier(35) == 0.25  # the decay is untouched after the warm-up


class RandomFeatures(torch.utils.data.Dataset):
    def __init__(self, config, size):
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(size, config.max_length, config.num_mel_bins, generator=generator)
        self.labels = torch.randint(0, config.num_labels, (size,), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"input_values": self.inputs[index], "labels": self.labels[index]}


def three_epoch_run(output_dir):
    """A tiny AST config and the arguments of a 3-epoch run of 3 steps each over `RandomFeatures(config, 12)`."""
    config = PrunedASTConfig(**tiny_ast_kwargs(hidden_size=32, num_attention_heads=2, intermediate_size=64))
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    return config, args


def test_trainer_applies_layer_decay_and_ast_step_decay(tmp_path):
    config, args = three_epoch_run(tmp_path)
    model = PrunedASTForAudioClassification(config)
    trainer = PrunedModelTrainer(
        model=model,
        args=args,
        train_dataset=RandomFeatures(config, 12),
        layer_decay=0.5,
        lr_step_decay=(1, 1, 0.1),
        optimizer_cls_and_kwargs=(torch.optim.Adam, {"lr": 1e-3}),
    )
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer, torch.optim.Adam)  # inside accelerate's wrapper
    head = id(model.classifier.dense.weight)
    first_layer = id(model.audio_spectrogram_transformer.layers[0].mlp.fc1.weight)
    initial = {id(p): group["initial_lr"] for group in trainer.optimizer.param_groups for p in group["params"]}
    assert initial[head] == pytest.approx(1e-3) and initial[first_layer] == pytest.approx(1e-3 * 0.5**12)
    logged = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    # 3 steps per epoch; the first group (depth 0 here: embeddings) is what Trainer reports
    assert logged == pytest.approx([1e-3 * 0.5**13] * 3 + [1e-4 * 0.5**13] * 3 + [1e-5 * 0.5**13] * 3)


def test_warmup_in_epochs_becomes_steps_once_the_epoch_length_is_known(tmp_path):
    config, args = three_epoch_run(tmp_path)
    trainer = PrunedModelTrainer(
        model=PrunedASTForAudioClassification(config),
        args=args,
        train_dataset=RandomFeatures(config, 12),
        lr_step_decay=(2, 1, 0.1),
        warmup_epochs=1.5,  # 3 steps per epoch: 4.5 -> 4 warm-up steps (AudioMAE counts warm-up in epochs)
    )
    trainer.train()
    assert trainer.args.warmup_steps == 4
    logged = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    # the learning rate each step ran with: warm-up 0..3/4 (from 0, as transformers' linear warm-up), then full,
    # then AST's decay from epoch 2
    assert logged == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4])


def test_extra_tokens_and_position_embeddings_get_no_weight_decay(tmp_path):
    model = PrunedASTForAudioClassification(PrunedASTConfig(**tiny_ast_kwargs()))
    trainer = PrunedModelTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    decayed = set(trainer.get_decay_parameter_names(model))
    embeddings = "audio_spectrogram_transformer.embeddings."
    exempt = {embeddings + name for name in ("cls_token", "distillation_token", "position_embeddings")}
    assert exempt <= dict(model.named_parameters()).keys() and not exempt & decayed
    assert "audio_spectrogram_transformer.layers.0.mlp.fc1.weight" in decayed

"""Calibration to an accuracy budget (hf_token_prune.calibration, `hf-token-prune calibrate`) on a tiny random AST and
ten keyword clips per split.

The choice is checked against the table by a plain scan over its rows, and the chosen row's numbers against an
independent measurement: every clip run alone, top-1 counted by hand, MACs by torch's FlopCounterMode.
"""

import json

import pytest
import torch
from transformers import ASTFeatureExtractor, AutoModelForAudioClassification

from conftest import KEYWORDS, REPO, one_thread, tiny_ast_kwargs, tiny_pruned_classifier
from hf_token_prune import AudioMAEFeatureExtractor, PrunedASTConfig, PrunedASTForAudioClassification
from hf_token_prune.analysis import evaluate_model, load_analysis_data, load_pruned_model, prepare_analysis_data
from hf_token_prune.calibration import Setting, calibrate, evaluate_settings, pareto_front, save_calibrated
from hf_token_prune.commands import calibrate as calibrate_command
from hf_token_prune.data import load_audio_classification
from hf_token_prune.macs import count_forward_macs
from hf_token_prune.pruning_config import REDUCTION_SETTINGS


NORM = {"mean": -6.845978, "std": 5.5654526}
NUM_CLIPS = 10
# With these weights the low end of each grid loses clips and the high end does not, so the refinement runs.
GRID = dict(keep_rates=(0.7, 0.3), keep_masses=(0.9, 0.3), refine_rounds=1, refine_points=1)
KEYWORD_DATA = load_audio_classification("audiofolder", data_dir=str(KEYWORDS))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():  # for the module's shared fixtures too
        yield


def tiny_model(**overrides):
    """Random weights whose predictions vary between clips and settings (the default init predicts one class)."""
    torch.manual_seed(1)
    config = PrunedASTConfig(**tiny_ast_kwargs(num_labels=10, initializer_range=0.2, **overrides))
    return PrunedASTForAudioClassification(config).eval()


def extractor():
    return ASTFeatureExtractor(num_mel_bins=64, max_length=128, **NORM)


def clips(split, model):
    """One clip of each word, spread over the split, as AnalysisData."""
    step = len(split) // NUM_CLIPS
    return prepare_analysis_data(split.select(range(0, step * NUM_CLIPS, step)), KEYWORD_DATA.label_names, False,
                                 extractor(), model, batch_size=4)


@pytest.fixture(scope="module")
def calibrated():
    model = tiny_model()
    validation, held_out = clips(KEYWORD_DATA.eval, model), clips(KEYWORD_DATA.test, model)
    return model, validation, calibrate(model, validation, held_out, max_loss=0.0, **GRID)


def measured_alone(model, data, setting):
    """Top-1 accuracy (%) and mean MACs per clip of ``setting``, each clip run alone, MACs by FlopCounterMode."""
    correct, macs = 0, []
    with model.reduction_settings(**setting.as_config()), torch.no_grad():
        for batch in data.batches(batch_size=1):
            correct += int(model(batch["input_values"]).logits.argmax(dim=1).item() == batch["labels"].item())
            macs.append(count_forward_macs(model, batch["input_values"]))
    return 100 * correct / len(data), sum(macs) / len(macs)


def test_the_choice_is_the_cheapest_setting_within_a_budget_of_zero(calibrated):
    model, validation, result = calibrated
    table = result.validation
    metric = "accuracy (%)"
    reference = table[table["policy"] == "reference"].iloc[0]
    rows = table.to_dict("records")
    within = [row for row in rows if row["policy"] != "reference" and row[metric] >= reference[metric] - 1e-9]
    cheapest = min(within, key=lambda row: row["MMACs per clip"])
    assert result.chosen.label == cheapest["setting"]
    assert set(table["policy"]) == {"reference", "fixed", "adaptive"}
    assert (table["round"] == 1).any()  # the refinement ran
    assert list(table["meets budget"]) == [row[metric] >= reference[metric] - 1e-9 for row in rows]

    chosen = table[table["setting"] == result.chosen.label].iloc[0]
    accuracy, macs = measured_alone(model, validation, result.chosen)
    assert chosen[metric] == pytest.approx(accuracy, abs=1e-9)
    assert chosen["MMACs per clip"] * 1e6 == pytest.approx(macs, rel=1e-12)
    assert chosen[metric] >= reference[metric] and chosen["MMACs per clip"] < reference["MMACs per clip"]
    assert not table["meets budget"].all()


def test_the_held_out_check_measures_the_reference_the_choice_and_its_counterpart(calibrated):
    model, _, result = calibrated
    held_out = result.held_out
    assert sorted(held_out["setting"]) == sorted([Setting().label, result.chosen.label, result.counterpart.label])
    assert result.counterpart.policy != result.chosen.policy
    validation = result.validation.set_index("setting")["MMACs per clip"]
    others = validation[[policy != result.chosen.policy for policy in result.validation["policy"]]]
    others = others.drop(Setting().label)
    nearest = (others - validation[result.chosen.label]).abs().idxmin()
    assert result.counterpart.label == nearest
    loss = held_out.set_index("setting")["loss (points)"][result.chosen.label]
    verdict = "within the budget" if loss <= 0 else "beyond the budget"
    assert f"{result.chosen.label} loses {loss:.2f} points against keep rate 1.0, {verdict} of 0 points" in (
        result.held_out_verdict()
    )


def test_drop_padding_clips_are_measured_with_their_frame_mask_and_cost_their_real_patches():
    torch.manual_seed(1)
    model = tiny_pruned_classifier("audiomae", num_labels=10, drop_padding=True, initializer_range=0.2)
    audiomae_extractor = AudioMAEFeatureExtractor(num_mel_bins=64, max_length=128, return_attention_mask=True, **NORM)
    split = KEYWORD_DATA.eval.select(range(0, 60, 12))
    data = prepare_analysis_data(split, KEYWORD_DATA.label_names, False, audiomae_extractor, model, batch_size=5)
    settings = [Setting(keep_rate=0.5), Setting(keep_mass=0.7)]
    measured = evaluate_settings(model, data, settings)
    for setting in settings:
        correct, macs = 0, []
        with model.reduction_settings(**setting.as_config()), torch.no_grad():
            for batch in data.batches(batch_size=1):
                mask = batch["attention_mask"]
                assert not mask.all()  # every clip is shorter than the window: its padding is dropped
                logits = model(batch["input_values"], attention_mask=mask).logits
                correct += int(logits.argmax(dim=1).item() == batch["labels"].item())
                macs.append(count_forward_macs(model, batch["input_values"], attention_mask=mask))
        assert measured[setting].metric == pytest.approx(100 * correct / len(data), abs=1e-9)
        assert measured[setting].mean_macs == pytest.approx(sum(macs) / len(macs), rel=1e-12)


def test_pareto_front_keeps_the_points_nothing_beats():
    assert pareto_front([1, 2, 3, 2], [50, 60, 55, 60]) == [True, True, False, True]


def test_saved_folder_loads_and_runs_at_the_chosen_setting(calibrated, tmp_path):
    model, validation, result = calibrated
    def settings():
        return {name: getattr(model.config, name) for name in REDUCTION_SETTINGS}

    before = settings()
    save_calibrated(model, extractor(), result, tmp_path / "out", facts={"model": "tiny"})
    assert settings() == before  # the model itself is left as it was
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path / "out").eval()
    for name, value in result.chosen.as_config().items():
        assert getattr(loaded.config, name) == value
    batch = next(iter(validation.batches()))
    with torch.no_grad(), model.reduction_settings(**result.chosen.as_config()):
        assert torch.equal(loaded(batch["input_values"]).logits, model(batch["input_values"]).logits)
    saved = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert saved["chosen"] == result.chosen.as_config() and saved["model"] == "tiny" and saved["max_loss"] == 0.0
    assert len(saved["validation"]) == len(result.validation) and len(saved["held_out"]) == 3
    assert {"torch", "transformers", "hf-token-prune"} <= set(saved["versions"])
    assert "| keep_rate=1 |" in (tmp_path / "out" / "calibration.md").read_text()
    assert (tmp_path / "out" / "calibration.png").stat().st_size > 0


def save_tiny(path, **overrides):
    tiny_model(**overrides).save_pretrained(path)
    extractor().save_pretrained(path)
    return path


def command_args(model_dir, output_dir, *extra):
    return ["--model_name_or_path", str(model_dir), "--dataset_name", "audiofolder", "--data_dir", str(KEYWORDS),
            "--max_samples", "6", "--keep_rates", "0.5", "--keep_masses", "0.9", "--refine_rounds", "0",
            "--output_dir", str(output_dir), *extra]  # fmt: skip


def test_command_writes_the_calibrated_model_and_prints_both_splits(tmp_path, capsys):
    model_dir = save_tiny(tmp_path / "model")
    assert calibrate_command.main(command_args(model_dir, tmp_path / "out", "--max_loss", "100")) == 0
    printed = capsys.readouterr().out
    assert "held-out check:" in printed and f"wrote {tmp_path / 'out'}" in printed
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "calibration.json", "calibration.md",
            "calibration.png"} <= {path.name for path in (tmp_path / "out").iterdir()}  # fmt: skip
    saved = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert saved["held-out split"] == "test (6 clips)" and saved["command"].startswith("hf-token-prune calibrate")
    with pytest.raises(SystemExit, match="is not empty"):
        calibrate_command.main(command_args(model_dir, tmp_path / "out"))


@pytest.mark.parametrize("extra, message", [
    (["--held_out_split", "dev"], "no split 'dev' here: choose --held_out_split from test, train, validation"),
    (["--held_out_split", "validation"], "--held_out_split validation is the validation split"),
    (["--max_loss", "100", "--keep_rates", "1.0"], "keep rate 1.0 is the reference"),
])
def test_command_refusals_are_one_line(tmp_path, extra, message):
    model_dir = save_tiny(tmp_path / "model")
    with pytest.raises(SystemExit) as raised:
        calibrate_command.main(command_args(model_dir, tmp_path / "out", *extra))
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_negative_budget_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        calibrate_command.main(command_args(tmp_path, tmp_path / "out", "--max_loss", "-1"))
    assert raised.value.code == 2 and "max_loss=-1.0 is invalid" in capsys.readouterr().err


def test_a_model_without_pruning_layers_is_refused():
    model = tiny_model(pruning_layers=[], keep_rate=1.0)
    with pytest.raises(ValueError, match="has no pruning layers"):
        calibrate(model, clips(KEYWORD_DATA.eval, model))


def test_an_unlabelled_split_is_refused():
    model = tiny_model()
    data = clips(KEYWORD_DATA.eval, model)
    unlabelled = data.select(range(len(data)))
    unlabelled.dataset = unlabelled.dataset.map(lambda row: {"labels": -1})
    with pytest.raises(ValueError, match="the held-out split has clips without a label"):
        calibrate(model, data, unlabelled)


def test_a_split_whose_classes_the_model_does_not_name_is_refused():
    # matched by index instead, "cat" would be scored as the model's first word: a metric of nothing
    model = tiny_model(id2label=dict(enumerate(KEYWORD_DATA.label_names)))
    strangers = [f"animal_{i}" for i in range(len(KEYWORD_DATA.label_names))]
    with pytest.raises(ValueError, match=r"the dataset's classes \['animal_0', .* are not among the model's labels"):
        prepare_analysis_data(KEYWORD_DATA.eval.select(range(2)), strangers, False, extractor(), model)


def test_a_multi_label_model_on_single_label_clips_is_calibrated_on_map():
    model = tiny_model(problem_type="multi_label_classification")
    validation, held_out = clips(KEYWORD_DATA.eval, model), clips(KEYWORD_DATA.test, model)
    result = calibrate(model, validation, held_out, max_loss=100.0, keep_rates=(0.5,), keep_masses=(0.9,),
                       refine_rounds=0)
    # the reference row against sklearn's macro mAP over the classes present, each clip's one class as its target
    from sklearn.metrics import average_precision_score

    targets = torch.tensor(validation.dataset["labels"])
    with torch.no_grad(), model.reduction_settings(keep_rate=1.0):
        scores = torch.cat([model(batch["input_values"]).logits for batch in validation.batches()])
    present = torch.unique(targets)
    expected = 100 * average_precision_score(
        torch.nn.functional.one_hot(targets, model.config.num_labels)[:, present], scores[:, present], average="macro"
    )
    reference = result.validation[result.validation["policy"] == "reference"].iloc[0]["mAP (%)"]
    assert result.metric_name == "mAP" and reference == pytest.approx(expected, abs=1e-4)
    one_unlabelled = validation.select(range(len(validation)))
    one_unlabelled.dataset = validation.dataset.map(lambda row, index: {"labels": -1 if index == 3 else row["labels"]},
                                                    with_indices=True)  # fmt: skip
    assert one_unlabelled.labels()[3] == []  # not the last class, as numpy's index -1 would read it
    with pytest.raises(ValueError, match="the held-out split has clips without a label"):
        calibrate(model, validation, one_unlabelled, max_loss=100.0, keep_rates=(0.5,), keep_masses=(0.9,),
                  refine_rounds=0)


def test_no_setting_within_the_budget_names_the_best_and_its_loss():
    model = tiny_model()
    message = r"no setting keeps accuracy within 0 points .* the best, .* loses [0-9.]+ points"
    with pytest.raises(ValueError, match=message):
        calibrate(model, clips(KEYWORD_DATA.eval, model), max_loss=0.0, keep_rates=(0.3, 0.1), keep_masses=(0.3,),
                  refine_rounds=0)


DEMO = REPO / "outputs" / "demo"


@pytest.mark.full
@pytest.mark.skipif(not (DEMO / "model.safetensors").is_file(), reason="needs the demo model: run `make demo` first")
def test_the_demo_model_calibrated_to_one_point_is_checked_on_the_test_clips(tmp_path):
    output_dir = tmp_path / "calibrated"
    assert calibrate_command.main([
        "--model_name_or_path", str(DEMO), "--dataset_name", "audiofolder", "--data_dir", str(KEYWORDS),
        "--max_loss", "1.0", "--output_dir", str(output_dir), "--torch_threads", "1",
    ]) == 0
    saved = json.loads((output_dir / "calibration.json").read_text())
    rows = {row["setting"]: row for row in saved["validation"]}
    reference = rows[Setting().label]["accuracy (%)"]
    chosen = Setting(**saved["chosen"])
    assert rows[chosen.label]["accuracy (%)"] >= reference - 1.0
    assert rows[chosen.label]["MMACs per clip"] == min(
        row["MMACs per clip"] for row in rows.values() if row["policy"] != "reference" and row["meets budget"]
    )
    model, extractor = load_pruned_model(output_dir)
    assert {name: getattr(model.config, name) for name in saved["chosen"]} == saved["chosen"]
    test = load_analysis_data(model, extractor, "audiofolder", "test", data_dir=str(KEYWORDS))
    held_out = {row["setting"]: row["accuracy (%)"] for row in saved["held_out"]}
    assert 100 * evaluate_model(model, test) == pytest.approx(held_out[chosen.label], abs=1e-9)

"""A newcomer's mistakes, through every script's `main`: one line naming the problem and the fix, a non-zero exit, no
traceback. Then the `hf-token-prune` command line: classify a file, dispatch, a `--help` that imports no torch."""

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from transformers import ASTFeatureExtractor

from conftest import KEYWORDS, REPO, load_recipe, tiny_ast_kwargs
from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification, tag_recording
from hf_token_prune import convert_audiomae
from hf_token_prune.classify import classify, read_audio
from hf_token_prune.commands import analyze, calibrate, classify as classify_command, convert as convert_command
from hf_token_prune.commands import finetune as finetuning
import hf_token_prune_cli


WORDS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny pruned AST folder for 32 mel bins x 64 frames, as save_pretrained writes it, feature extractor included."""
    folder = tmp_path_factory.mktemp("model")
    tiny = tiny_ast_kwargs(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_mel_bins=32, max_length=64)
    config = PrunedASTConfig(
        **{**tiny, "num_labels": 10}, keep_rate=0.7, id2label=dict(enumerate(WORDS)),
        label2id={word: i for i, word in enumerate(WORDS)},
    )  # fmt: skip
    PrunedASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(folder)
    return folder


def exit_message(main, argv):
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert error.value.code != 0
    return str(error.value.code)


def finetune_with_model(model):
    return ["--dataset_name", "audiofolder", "--data_dir", str(KEYWORDS), "--model_name_or_path", model]


def analyze_with_model(model):
    return ["--model_name_or_path", model, "--dataset_name", "audiofolder", "--data_dir", str(KEYWORDS)]


def inference_demo(argv):
    return load_recipe("inference_demo").main(argv)


# Every script that reads a model, with the flags that name one.
MODEL_SCRIPTS = {
    "finetune": (finetuning.main, finetune_with_model),
    "analyze": (analyze.main, analyze_with_model),
    "calibrate": (calibrate.main, lambda model: analyze_with_model(model) + ["--output_dir", "calibrated"]),
    "classify": (classify_command.main, lambda model: [str(KEYWORDS / "test" / "yes" / "yes_034.flac"), "--model_name_or_path", model]),
    "inference_demo": (inference_demo, lambda model: ["--model_name_or_path", model]),
}  # fmt: skip


@pytest.mark.parametrize("script", MODEL_SCRIPTS)
def test_a_mistyped_model_folder_is_no_such_folder_not_a_network_error(script, tmp_path):
    main, flags = MODEL_SCRIPTS[script]
    for missing in (f"{tmp_path}/outputs/demoo", "outputs/demoo"):  # the second could be a Hub id
        message = exit_message(main, flags(missing))
        assert f"{missing}: no such folder" in message and "connect" not in message and "\n" not in message


@pytest.mark.parametrize("script", MODEL_SCRIPTS)
def test_a_folder_that_is_not_a_model_says_what_it_lacks(script, tmp_path, model_dir):
    main, flags = MODEL_SCRIPTS[script]
    assert "lacks config.json" in exit_message(main, flags(str(tmp_path)))
    (tmp_path / "config.json").write_text((model_dir / "config.json").read_text())
    message = exit_message(main, flags(str(tmp_path)))
    assert "lacks weights (model.safetensors) and a feature extractor (preprocessor_config.json)" in message


@pytest.mark.parametrize("script", MODEL_SCRIPTS)
def test_a_hub_id_while_offline_says_so(script):
    main, flags = MODEL_SCRIPTS[script]
    message = exit_message(main, flags("MIT/ast-finetuned-audioset-16-16-0.442"))
    assert "not in the cache while offline (HF_HUB_OFFLINE=1)" in message


def no_audio_folder(tmp_path):
    (tmp_path / "train" / "yes").mkdir(parents=True, exist_ok=True)
    (tmp_path / "train" / "yes" / "notes.txt").write_text("no audio here")
    return tmp_path


def test_a_data_folder_without_audio_or_mistyped_says_so(tmp_path, model_dir):
    for main, argv in (
        (finetuning.main, ["--recipe", "demo", "--output_dir", str(tmp_path / "out")]),
        (analyze.main, analyze_with_model(str(model_dir))),
    ):
        assert "--data_dir data/keyword: no such folder" in exit_message(main, argv + ["--data_dir", "data/keyword"])
        message = exit_message(main, argv + ["--data_dir", str(no_audio_folder(tmp_path))])
        assert "the folder holds no audio files" in message and "<split>/<label>/<clip>.wav" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "main, argv",
    [
        (finetuning.main, ["--recipe", "demo", "--keep_rte", "0.5"]),
        (analyze.main, ["--model_name_or_path", "m", "--dataset_name", "d", "--keep_rte", "0.5"]),
        (calibrate.main, ["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", "o", "--keep_rte", "0.5"]),
        (classify_command.main, ["clip.wav", "--model_name_or_path", "m", "--keep_rte", "0.5"]),
        (convert_command.main, ["--checkpoint", "x.pth", "--output_dir", "y", "--keep_rte", "0.5"]),
        (lambda argv: load_recipe("inference_demo").main(argv), ["--keep_rte", "0.5"]),
    ],
    ids=["finetune", "analyze", "calibrate", "classify", "convert", "inference_demo"],
)
def test_a_misspelled_flag_is_a_usage_error(main, argv, capsys):
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and "error: unrecognized arguments: --keep_rte 0.5" in err
    assert "Traceback" not in err


def test_finetunes_usage_error_is_short_and_suggests_the_flag(capsys):
    with pytest.raises(SystemExit):
        finetuning.main(["--recipe", "demo", "--keep_rte", "0.5"])
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 2 and "(did you mean: --keep_rte -> --keep_rate?)" in err


def test_finetune_help_is_short_and_help_all_lists_every_training_flag():
    def help_lines(flag):
        result = subprocess.run(
            [sys.executable, str(REPO / "recipes" / "finetune.py"), flag], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    short, full = help_lines("--help"), help_lines("--help_all")
    assert len(short.splitlines()) < 200 < len(full.splitlines())
    assert "--learning_rate" in short and "--keep_rate" in short and "--fsdp" not in short and "--fsdp" in full


def test_best_model_flags_work_with_the_demo_recipe(tmp_path):
    best = ["--load_best_model_at_end", "true", "--metric_for_best_model", "accuracy"]
    *_, training_args = finetuning.parse_arguments(["--recipe", "demo"] + best)
    assert (training_args.save_strategy, training_args.eval_strategy, training_args.save_total_limit) == (
        "epoch",
        "epoch",
        1,
    )
    tiny = ["--config_overrides", "hidden_size=32,num_attention_heads=2,intermediate_size=64,frequency_stride=16,"
            "time_stride=16", "--num_mel_bins", "32", "--num_frames", "64", "--max_train_samples", "16",
            "--max_eval_samples", "8", "--num_train_epochs", "2", "--shrink_start_epoch", "0", "--shrink_epochs", "1",
            "--eval_keep_rates", "1.0", "--disable_tqdm", "true"]  # fmt: skip
    trainer = finetuning.main(["--recipe", "demo"] + tiny + best + ["--output_dir", str(tmp_path / "out")])
    assert trainer.state.best_model_checkpoint is not None and trainer.state.best_metric is not None
    assert (tmp_path / "out" / "README.md").is_file()


# the converter never passes on torch's weights_only=False advice ---------------------------------------------------


def test_converter_refuses_a_checkpoint_that_needs_pickle_and_says_why(tmp_path, capsys):
    path = tmp_path / "needs_pickle.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 8)}, "hook": print}, path)  # a global no state dict needs
    message = exit_message(convert_command.main, ["--checkpoint", str(path), "--output_dir", str(tmp_path / "o")])
    assert "is not loaded" in message and "(print)" in message and "arbitrary code" in message
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint" * 20)
    message = exit_message(convert_command.main, ["--checkpoint", str(garbage), "--output_dir", str(tmp_path / "o")])
    assert "it is not a file torch.save wrote" in message
    for text in (message, capsys.readouterr().err):
        assert "weights_only" not in text
    assert not (tmp_path / "o").exists()


def test_converter_reads_the_argparse_namespace_training_scripts_store(tmp_path):
    # MAE-style scripts save {"model": ..., "args": Namespace}: plain data, read without pickle's arbitrary globals
    from test_pruned_audiomae import official_checkpoint

    _, path = official_checkpoint(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["args"] = argparse.Namespace(lr=1e-3)
    torch.save(checkpoint, path)
    assert set(convert_audiomae.read_checkpoint(path)) == set(checkpoint["model"])


# classify and the command line ---------------------------------------------------------------------------------------


def test_classify_reads_any_format_through_ffmpeg_and_scores_like_the_model(model_dir, tmp_path, capsys):
    flac = KEYWORDS / "test" / "yes" / "yes_034.flac"
    m4a = tmp_path / "yes.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(flac), str(m4a)], check=True)
    wave_44k = tmp_path / "yes_44k.wav"
    samples, rate = soundfile.read(flac, dtype="float32")
    from scipy.signal import resample_poly

    soundfile.write(wave_44k, resample_poly(samples, 441, 160).astype(np.float32), 44100)
    assert classify_command.main([str(flac), str(m4a), str(wave_44k), "--model_name_or_path", str(model_dir), "--keep_rate", "0.5",
                                  "--top_k", "3"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.count("keep rate 0.5") == 3

    model = PrunedASTForAudioClassification.from_pretrained(model_dir).eval()
    extractor = ASTFeatureExtractor.from_pretrained(model_dir)
    model.set_keep_rate(0.5)
    with torch.no_grad():
        probabilities = model(**extractor(samples, sampling_rate=16000, return_tensors="pt")).logits.softmax(-1)[0]
    top = probabilities.topk(3)
    expected = [f"  {p:.3f}  {WORDS[i]}" for p, i in zip(top.values.tolist(), top.indices.tolist())]
    first_file = printed.split(f"{m4a}")[0].splitlines()[1:]
    assert first_file == expected
    model.set_keep_rate(0.7)
    assert classify(model, extractor, [samples], 0.5)[0][0]["label"] == WORDS[top.indices[0]]
    assert model.config.keep_rate == 0.7  # restored


def test_classify_decodes_only_the_window_it_scores_and_says_a_file_is_longer(model_dir, tmp_path, capsys):
    clips = [soundfile.read(clip, dtype="float32")[0] for clip in sorted((KEYWORDS / "test" / "yes").glob("*.flac"))[:6]]
    samples = np.concatenate(clips)  # ~3 s: longer than the model's 0.655 s window (64 frames)
    soundfile.write(tmp_path / "long.flac", samples, 16000, subtype="PCM_16")
    samples = soundfile.read(tmp_path / "long.flac", dtype="float32")[0]
    window = 400 + 63 * 160
    assert read_audio(tmp_path / "long.flac", 16000, window + 1).size == window + 1
    flac = KEYWORDS / "test" / "no" / "no_034.flac"
    assert classify_command.main([str(tmp_path / "long.flac"), str(flac), "--model_name_or_path", str(model_dir)]) == 0
    captured = capsys.readouterr()
    assert f"long.flac (first {window / 16000:.2f} s, keep rate 0.7):" in captured.out
    assert f"no_034.flac ({soundfile.info(flac).frames / 16000:.2f} s, keep rate 0.7):" in captured.out
    notes = [line for line in captured.err.splitlines() if "longer than the model's" in line]
    assert len(notes) == 1 and "long.flac" in notes[0] and "no_034" not in notes[0] and "hf-token-prune tag" in notes[0]

    # the scores of the whole file given to the model, which the extractor cuts to its window
    model = PrunedASTForAudioClassification.from_pretrained(model_dir).eval()
    extractor = ASTFeatureExtractor.from_pretrained(model_dir)
    with torch.no_grad():
        probabilities = model(**extractor(samples, sampling_rate=16000, return_tensors="pt")).logits.softmax(-1)[0]
    top = probabilities.topk(5)
    expected = [f"  {p:.3f}  {WORDS[i]}" for p, i in zip(top.values.tolist(), top.indices.tolist())]
    assert captured.out.split("no_034.flac")[0].splitlines()[1:6] == expected


def test_classify_refuses_missing_and_undecodable_files(model_dir, tmp_path):
    assert "no such file: nothere.wav" in exit_message(classify_command.main, ["nothere.wav", "--model_name_or_path", str(model_dir)])
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    message = exit_message(classify_command.main, [str(text), "--model_name_or_path", str(model_dir)])
    assert "not audio that ffmpeg can decode" in message


WRONG_RATE = (
    r"sampling rate 44100 Hz: this model's feature extractor takes 16000 Hz audio; resample it first, e\.g\. "
    r"scipy\.signal\.resample_poly\(wave, 160, 441\) or librosa\.resample\(wave, orig_sr=44100, target_sr=16000\)"
)


def test_a_stated_wrong_rate_names_the_fix_with_a_stock_ast_folder(tmp_path, capsys):
    """A Hub AST folder holds transformers' own ASTFeatureExtractor, whose error does not say how to resample."""
    from transformers import ASTConfig, ASTForAudioClassification

    from hf_token_prune.analysis.inputs import load_pruned_model
    from hf_token_prune.commands.tag import main as tag_main

    folder = tmp_path / "stock-ast"
    tiny = tiny_ast_kwargs(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_mel_bins=32, max_length=64)
    config = ASTConfig(**{**tiny, "num_labels": 10}, id2label=dict(enumerate(WORDS)))
    ASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(folder)
    model, extractor = load_pruned_model(folder)
    assert type(extractor) is ASTFeatureExtractor

    samples, _ = soundfile.read(KEYWORDS / "test" / "yes" / "yes_034.flac", dtype="float32")
    from scipy.signal import resample_poly

    wave_44k = resample_poly(samples, 441, 160).astype(np.float32)
    with pytest.raises(ValueError, match=WRONG_RATE):
        classify(model, extractor, [wave_44k], sampling_rate=44100)
    assert classify(model, extractor, [samples], sampling_rate=16000)[0]
    with pytest.raises(ValueError, match=WRONG_RATE):
        tag_recording({"array": wave_44k, "sampling_rate": 44100}, model, extractor, progress=False)

    # The commands read files: ffmpeg / FFmpeg resample them to the extractor's rate, so a 44.1 kHz file just works.
    soundfile.write(tmp_path / "yes_44k.wav", wave_44k, 44100)
    assert classify_command.main([str(tmp_path / "yes_44k.wav"), "--model_name_or_path", str(folder), "--top_k", "1"]) == 0
    assert tag_main([str(tmp_path / "yes_44k.wav"), "--model_name_or_path", str(folder), "--no_progress",
                     "--output", str(tmp_path / "tags.png")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    seconds = f"{len(samples) / 16000:.2f} s"  # the duration at 16 kHz: resampled on reading
    assert f"yes_44k.wav ({seconds}" in printed and f"yes_44k.wav: {seconds}" in printed


def test_command_line_dispatches_and_refuses_unknown_commands(model_dir, capsys):
    clip = str(KEYWORDS / "test" / "no" / "no_034.flac")
    assert hf_token_prune_cli.main(["classify", clip, "--model_name_or_path", str(model_dir)]) == 0
    assert "keep rate 0.7" in capsys.readouterr().out
    assert hf_token_prune_cli.main(["clasify", clip]) == 2
    assert "unknown command 'clasify' (did you mean classify?)" in capsys.readouterr().err
    assert hf_token_prune_cli.main(["macs", "--model_name_or_path", "vit-b", "--keep_rates", "1.0"]) == 0


def test_the_old_flag_spellings_still_work_and_say_they_are_deprecated(model_dir, capsys):
    clip = str(KEYWORDS / "test" / "no" / "no_034.flac")
    canonical_flags = ["--model_name_or_path", str(model_dir), "--torch_threads", "1"]
    assert hf_token_prune_cli.main(["classify", clip, *canonical_flags]) == 0
    canonical = capsys.readouterr()
    assert canonical.err == ""
    assert hf_token_prune_cli.main(["classify", clip, "--model", str(model_dir), "--num_threads", "1"]) == 0
    old = capsys.readouterr()
    assert old.out == canonical.out
    assert old.err.splitlines() == [
        "classify: --model is deprecated, use --model_name_or_path (removed in hf-token-prune 0.3)",
        "classify: --num_threads is deprecated, use --torch_threads (removed in hf-token-prune 0.3)",
    ]


# Per command: its required flags, then one misspelled flag and the flag it means.
MISSPELLED_FLAGS = {
    "classify": (["clip.wav", "--model_name_or_path", "m", "--top_kk", "3"], "--top_kk -> --top_k"),
    "finetune": (["--recipe", "demo", "--keep_rte", "0.5"], "--keep_rte -> --keep_rate"),
    "tag": (["a.wav", "--model_name_or_path", "m", "--hopp", "1"], "--hopp -> --hop"),
    "analyze": (["--model_name_or_path", "m", "--dataset_name", "d", "--splitt", "x"], "--splitt -> --split"),
    "calibrate": (["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", "o", "--max_lost", "1"],
                  "--max_lost -> --max_loss"),
    "macs": (["--keep_ratess", "1.0"], "--keep_ratess -> --keep_rates"),
    "export": (["--model_name_or_path", "m", "--output_dir", "o", "--opsett", "1"], "--opsett -> --opset"),
    "convert": (["--checkpoint", "c", "--output_dir", "o", "--num_labelss", "3"], "--num_labelss -> --num_labels"),
    "explore": (["--model_name_or_path", "m", "--portt", "1"], "--portt -> --port"),
}


@pytest.mark.parametrize("command", hf_token_prune_cli.COMMANDS)
def test_every_command_suggests_the_flag_a_misspelled_one_means(command, capsys):
    argv, hint = MISSPELLED_FLAGS[command]
    with pytest.raises(SystemExit) as error:
        hf_token_prune_cli.main([command, *argv])
    assert error.value.code == 2
    assert f"(did you mean: {hint}?)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["macs", "--attn_implementation", "sdpaa"],
         "invalid choice: 'sdpaa' (choose from 'sdpa', 'eager') (did you mean sdpa?)"),
        (["export", "--model_name_or_path", "m", "--output_dir", "o", "--layout", "onx"], "(did you mean onnx?)"),
        (["convert", "--checkpoint", "c", "--output_dir", "o", "--token_score", "atention"], "(did you mean attention?)"),
    ],
)
def test_a_mistyped_choice_is_a_usage_error_with_the_closest_choice(argv, hint, capsys):
    with pytest.raises(SystemExit) as error:
        hf_token_prune_cli.main(argv)
    assert error.value.code == 2
    assert hint in capsys.readouterr().err


def test_classify_answers_a_mistyped_folder_without_importing_torch(tmp_path):
    """Files, folder and keep rate are checked before torch and transformers load (seconds), and importing the
    package loads neither."""
    clip = str(KEYWORDS / "test" / "yes" / "yes_034.flac")
    (tmp_path / "outputs").mkdir()  # so outputs/demoo is a local path, not a Hub id
    code = (
        "import sys, hf_token_prune_cli\n"
        f"code = hf_token_prune_cli.main(['classify', {clip!r}, '--model_name_or_path', 'outputs/demoo', "
        "'--keep_rate', '0.7'])\n"
        "loaded = [name for name in ('torch', 'transformers') if name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == "classify: --model_name_or_path outputs/demoo: no such folder."


def test_help_imports_neither_torch_nor_the_package():
    code = (
        "import sys, hf_token_prune_cli; hf_token_prune_cli.main(['--help']); "
        "assert 'torch' not in sys.modules and 'hf_token_prune' not in sys.modules, sorted(sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    for command in hf_token_prune_cli.COMMANDS:
        assert command in result.stdout


def load_help_renderer():
    spec = importlib.util.spec_from_file_location("render_cli_help", REPO / "scripts" / "render_cli_help.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_help_is_what_every_parser_prints_now():
    shipped = json.loads(hf_token_prune_cli.help_file().read_text())
    live = load_help_renderer().render_all()
    stale = "hf_token_prune/cli_help.json is stale: run python scripts/render_cli_help.py"
    assert set(shipped["help"]) == set(hf_token_prune_cli.COMMANDS), stale
    same_python = shipped["environment"] == live["environment"]
    for command, texts in live["help"].items():
        for prog, text in texts.items():
            if same_python:
                assert shipped["help"][command].get(prog) == text, f"{stale} ({prog} --help differs)"
            else:  # argparse lays the same parser out a little differently in another Python: compare the flags
                flags = set(re.findall(r"--\w+", text))
                assert set(re.findall(r"--\w+", shipped["help"][command][prog])) == flags, f"{stale} ({prog})"


def test_finetune_help_reads_the_same_under_any_transformers(monkeypatch):
    """A newer transformers rewords TrainingArguments' help and changes its defaults and choices: finetune's --help
    (and so the shipped text, served without importing transformers) must not change."""
    from transformers import TrainingArguments

    def reworded(field):
        metadata = {**field.metadata, "help": "a newer transformers' wording"}
        if "choices" in metadata:
            metadata["choices"] = [*metadata["choices"], "a_new_choice"]
        default = 1.0 if field.name == "learning_rate" else field.default
        return field.name, field.type, dataclasses.field(default=default, metadata=metadata)

    newer = dataclasses.make_dataclass(
        "NewerTrainingArguments",
        [reworded(f) for f in dataclasses.fields(TrainingArguments) if f.name in finetuning.TRAINING_FLAGS_SHOWN],
        bases=(TrainingArguments,),
    )
    expected = finetuning.build_parser().format_help()
    classes = tuple(newer if c is TrainingArguments else c for c in finetuning.ARGUMENT_CLASSES)
    monkeypatch.setattr(finetuning, "ARGUMENT_CLASSES", classes)
    assert "a newer transformers' wording" in finetuning.build_parser(show_all=True).format_help()
    assert finetuning.build_parser().format_help() == expected


@pytest.mark.parametrize(
    "launcher, prog",
    [
        ("hf_token_prune_cli.main(['finetune', '--help'])", "hf-token-prune finetune"),
        (
            f"sys.argv = ['finetune.py', '--help']; runpy.run_path({str(REPO / 'recipes' / 'finetune.py')!r}, "
            "run_name='__main__')",
            "finetune.py",
        ),
    ],
)
def test_finetune_help_imports_neither_torch_nor_the_package(launcher, prog):
    code = (
        f"import runpy, sys, hf_token_prune_cli; {launcher}; "
        "assert 'torch' not in sys.modules and 'hf_token_prune' not in sys.modules, sorted(sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout == hf_token_prune_cli.shipped_help("finetune", prog)
    assert result.stdout.startswith(f"usage: {prog} [--recipe NAME]") and "--keep_rate" in result.stdout


def test_analyze_writes_into_the_model_folder_by_default(model_dir):
    analyze.main(analyze_with_model(str(model_dir)) + ["--max_samples", "4", "--analyses", "clusters"])
    assert (model_dir / "analysis" / "index.md").is_file()


def test_benchmark_writes_to_a_fresh_folder_unless_asked_to_update_the_results(capsys):
    benchmark = load_benchmark()
    assert benchmark.parse_args([]).output_dir == REPO / "outputs" / "benchmark"
    assert benchmark.parse_args(["--update_results"]).output_dir == REPO / "docs" / "reports" / "results"
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--output_dir", str(REPO / "docs" / "reports" / "results")])
    assert "add --update_results" in capsys.readouterr().err
    for report in ("benchmark.md", "benchmark_2threads.md"):
        text = (REPO / "docs" / "reports" / "results" / report).read_text()
        assert "Command: `python benchmarks/benchmark_pruning.py" in text


def load_benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_pruning", REPO / "benchmarks" / "benchmark_pruning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_mistyped_local_folder_is_no_such_folder_online_too(tmp_path, model_dir):
    """Online (no HF_HUB_OFFLINE), `outputs/demoo` beside an `outputs/demo` is a typo, not a Hub id: one line at once,
    with the folder meant. Any Hub request would go to a closed port and fail with a connection error."""
    (tmp_path / "outputs").mkdir()
    os.symlink(model_dir, tmp_path / "outputs" / "demo")
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(REPO))
    clip = str(KEYWORDS / "test" / "yes" / "yes_034.flac")
    command = [sys.executable, "-m", "hf_token_prune_cli", "classify", clip, "--model_name_or_path", "outputs/demoo"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "classify: --model_name_or_path outputs/demoo: no such folder. Did you mean outputs/demo?"

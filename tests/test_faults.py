"""Issue 24 as tests: broken files, hostile flags, a full disk, a read-only target, a kill during a save, Ctrl-C.
Each ends in one line and a non-zero exit; nothing is lost (the old folder byte for byte, or the new one complete);
nothing is silently wrong. Property-based tests (Hypothesis) throw random bad values at the parsers, the config and
the loader: a usage error or one ValueError, never another exception."""

import errno
import gc
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from transformers import ASTFeatureExtractor

from conftest import KEYWORDS, REPO, tiny_ast_kwargs
from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification
from hf_token_prune import classify as classify_library, errors, export
from hf_token_prune.classify import classify
from hf_token_prune.commands import classify as classify_command, convert as convert_command, macs
from hf_token_prune.commands import export as export_command
from hf_token_prune.commands.tag import main as tag_main
from hf_token_prune.commands import finetune as finetuning
from hf_token_prune.finetuning import output as finetuning_output, run as finetuning_run
from hf_token_prune.loading import load_pruned_model
from test_pruned_audiomae import official_checkpoint


CLIP = str(KEYWORDS / "test" / "yes" / "yes_034.flac")
WORDS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]
PROPERTIES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def save_tiny_model(folder, keep_rate=0.7, intermediate_size=64):
    tiny = tiny_ast_kwargs(hidden_size=32, num_attention_heads=2, intermediate_size=intermediate_size, num_mel_bins=32,
                           max_length=64)
    config = PrunedASTConfig(**{**tiny, "num_labels": 10}, keep_rate=keep_rate, id2label=dict(enumerate(WORDS)),
                             label2id={word: i for i, word in enumerate(WORDS)})  # fmt: skip
    torch.manual_seed(0)
    PrunedASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"))


def snapshot(folder):
    """Every file under `folder` with its bytes: equal snapshots mean nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def siblings(folder):
    return sorted(p.name for p in Path(folder).parent.iterdir())


def one_line_exit(main, argv, capsys=None):
    """The message of the SystemExit `main(argv)` ends in: non-zero, one line, no traceback."""
    with pytest.raises(SystemExit) as error:
        main(argv)
    code = error.value.code
    assert code not in (0, None)
    message = code if isinstance(code, str) else capsys.readouterr().err.strip()
    assert "\n" not in message and "Traceback" not in message, message
    return message


# -- weights and configs that do not fit: one error naming them, every entry point ----------------------------------


def edit_weights(edit):
    def apply(folder):
        weights = load_file(folder / "model.safetensors")
        edit(weights)
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})

    return apply


def edit_config(**fields):
    def apply(folder):
        config = json.loads((folder / "config.json").read_text())
        config.update(fields)
        (folder / "config.json").write_text(json.dumps(config))

    return apply


def drop(fragment):
    return edit_weights(lambda w: [w.pop(key) for key in [key for key in w if fragment in key]])


def truncate(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def head_key(weights):
    return next(key for key in weights if key.startswith("classifier.") and key.endswith("weight") and weights[key].dim() == 2)


BROKEN = {
    "missing layer 5 attention": (drop("layer.5.attention"), "layers.5.attention"),
    "missing classifier head": (drop("classifier."), "missing weights classifier."),
    "config with fewer layers": (edit_config(num_hidden_layers=10, pruning_layers=[3, 6, 9]), "unexpected weights"),
    "mis-shaped head": (edit_weights(lambda w: w.update({head_key(w): torch.zeros(5, 32)})), "do not fit"),
    "truncated safetensors": (truncate, "truncated or damaged"),
    "zero-byte safetensors": (lambda f: (f / "model.safetensors").write_bytes(b""), "truncated or damaged"),
    "integer weights": (edit_weights(lambda w: w.update({head_key(w): w[head_key(w)].to(torch.int32)})), "non-float"),
    "NaN head weights": (edit_weights(lambda w: w[head_key(w)].fill_(float("nan"))), "NaN or infinite"),
    "string hidden_size": (edit_config(hidden_size="32"), "hidden_size"),
    "null heads": (edit_config(num_attention_heads=None), "num_attention_heads"),
    "string keep_rate": (edit_config(keep_rate="0.5"), "keep_rate"),
    "invalid JSON config": (lambda f: (f / "config.json").write_text("{oops"), "config"),
}


@pytest.fixture
def broken(request, model_dir, tmp_path):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(model_dir, folder)
    BROKEN[request.param][0](folder)
    return folder, BROKEN[request.param][1]


@pytest.mark.parametrize("broken", BROKEN, indirect=True)
def test_a_model_folder_that_does_not_fit_is_one_error_naming_it(broken):
    folder, expected = broken
    with pytest.raises(ValueError, match=expected.replace(".", r"\.")):
        load_pruned_model(folder)
    message = one_line_exit(classify_command.main, [CLIP, "--model_name_or_path", str(folder)])
    assert message.startswith("classify: ") and expected in message


def inference_demo(argv):
    from conftest import load_recipe

    return load_recipe("inference_demo").main(argv)


ENTRY_POINTS = {
    "tag": lambda folder, tmp: tag_main([CLIP, "--model_name_or_path", str(folder), "--output", str(tmp / "t.png")]),
    "export": lambda folder, tmp: export_command.main(["--model_name_or_path", str(folder), "--output_dir", str(tmp / "onnx")]),
    "inference_demo": lambda folder, tmp: inference_demo(["--model_name_or_path", str(folder)]),
    "macs": lambda folder, tmp: macs.main(["--model_name_or_path", str(folder), "--keep_rates", "1.0"]),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_refuses_a_model_that_does_not_fit(entry, model_dir, tmp_path, capsys):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(model_dir, folder)
    (edit_config(hidden_size="32") if entry == "macs" else drop("layer.5.attention"))(folder)
    try:
        status = ENTRY_POINTS[entry](folder, tmp_path)
    except SystemExit as error:
        status = error.code
    err = capsys.readouterr().err
    assert status not in (0, None) and "Traceback" not in err
    message = status if isinstance(status, str) else err
    assert "layers.5.attention" in message or "hidden_size" in message, message
    assert not (tmp_path / "onnx").exists() and not (tmp_path / "t.png").exists()


# -- hostile flags ----------------------------------------------------------------------------------------------------


USAGE_ERRORS = {
    "classify --top_k -1": (classify_command.main, [CLIP, "--model_name_or_path", "m", "--top_k", "-1"]),
    "classify --top_k 0": (classify_command.main, [CLIP, "--model_name_or_path", "m", "--top_k", "0"]),
    "classify --torch_threads -1": (classify_command.main, [CLIP, "--model_name_or_path", "m", "--torch_threads", "-1"]),
    "tag --window inf": (tag_main, [CLIP, "--model_name_or_path", "m", "--window", "inf"]),
    "tag --hop inf": (tag_main, [CLIP, "--model_name_or_path", "m", "--hop", "inf"]),
    "tag --hop nan": (tag_main, [CLIP, "--model_name_or_path", "m", "--hop", "nan"]),
    "export --opset 0": (export_command.main, ["--model_name_or_path", "m", "--output_dir", "o", "--opset", "0"]),
    "convert --num_attention_heads 0": (convert_command.main, ["--checkpoint", "c", "--output_dir", "o",
                                                                "--num_attention_heads", "0"]),
    "convert --num_mel_bins 0": (convert_command.main, ["--checkpoint", "c", "--output_dir", "o", "--num_mel_bins", "0"]),
    "convert --max_length -16": (convert_command.main, ["--checkpoint", "c", "--output_dir", "o", "--max_length", "-16"]),
}  # fmt: skip


@pytest.mark.parametrize("case", USAGE_ERRORS)
def test_out_of_range_flags_are_usage_errors(case, capsys):
    main, argv = USAGE_ERRORS[case]
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert error.value.code == errors.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and len(err.splitlines()) >= 2 and "Traceback" not in err


def test_library_calls_refuse_a_top_k_below_one(model_dir, tmp_path):
    model, extractor = load_pruned_model(model_dir)
    with pytest.raises(ValueError, match="top_k=0"):
        classify(model, extractor, [torch.zeros(16000).numpy()], top_k=0)
    export.export_pretrained(model_dir, tmp_path / "onnx")
    with pytest.raises(ValueError, match="top_k=-1"):
        export.OnnxAudioClassifier(tmp_path / "onnx")(torch.zeros(16000).numpy(), top_k=-1)


def test_export_refuses_an_opset_it_cannot_write_and_writes_nothing(model_dir, tmp_path, capsys):
    assert export_command.main(["--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "o"), "--opset", "1"]) == 1
    err = capsys.readouterr().err
    assert "--opset 1" in err and err.count("\n") == 1
    assert siblings(tmp_path / "o") == []


def test_export_never_writes_into_its_source_and_replaces_only_when_asked(model_dir, tmp_path, capsys):
    before = snapshot(model_dir)
    for output in (model_dir, model_dir / "onnx"):
        assert export_command.main(["--model_name_or_path", str(model_dir), "--output_dir", str(output),
                            "--overwrite_output_dir"]) == 1  # fmt: skip
        assert "source model folder" in capsys.readouterr().err
    assert snapshot(model_dir) == before
    target = tmp_path / "onnx"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    assert export_command.main(["--model_name_or_path", str(model_dir), "--output_dir", str(target)]) == 1
    assert "not empty" in capsys.readouterr().err and snapshot(target) == {"stale.txt": b"old"}
    assert export_command.main(["--model_name_or_path", str(model_dir), "--output_dir", str(target), "--overwrite_output_dir",
                        "--no_check"]) == 0  # fmt: skip
    written = snapshot(target)
    assert "stale.txt" not in written and {"config.json", "model.onnx", "preprocessor_config.json"} <= set(written)
    assert siblings(target) == ["onnx"]


def test_tag_writes_and_reports_the_same_png(model_dir, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "pictures"
    folder.mkdir()
    assert tag_main([CLIP, "--model_name_or_path", str(model_dir), "--no_progress", "--output", str(folder)]) == 0
    assert f"wrote {folder / 'yes_034.png'}" in capsys.readouterr().out and (folder / "yes_034.png").is_file()
    assert tag_main([CLIP, "--model_name_or_path", str(model_dir), "--no_progress", "--output", str(tmp_path / "t")]) == 0
    assert f"wrote {tmp_path / 't.png'}" in capsys.readouterr().out and (tmp_path / "t.png").is_file()
    # a read-only target (chmod does not stop root: report the filesystem as read-only), refused before tagging
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert tag_main([CLIP, "--model_name_or_path", str(model_dir), "--output", str(tmp_path / "ro" / "t.png")]) == 1  # an expected error, not a usage error
    err = capsys.readouterr().err
    assert "read-only" in err and err.count("\n") == 1


# -- the converter --------------------------------------------------------------------------------------------------


def converter_case(tmp_path, edit=None, extra=(), labels=None):
    _, path = official_checkpoint(tmp_path)
    if edit:
        checkpoint = torch.load(path, weights_only=True)
        edit(checkpoint["model"])
        torch.save(checkpoint, path)
    argv = ["--checkpoint", str(path), "--output_dir", str(tmp_path / "out"), "--num_attention_heads", "4",
            "--num_mel_bins", "64", *extra]  # fmt: skip
    if labels is not None:
        (tmp_path / "labels.json").write_text(labels)
        argv += ["--id2label", str(tmp_path / "labels.json")]
    return argv


CONVERTER_REFUSALS = {
    "position embedding of the CLS token only": (dict(edit=lambda m: m.update(pos_embed=m["pos_embed"][:, :1])), "pos_embed"),
    "1-D position embedding": (dict(edit=lambda m: m.update(pos_embed=m["pos_embed"].flatten())), "pos_embed"),
    "NaN weights": (dict(edit=lambda m: m["blocks.3.mlp.fc1.weight"].fill_(float("nan"))), "NaN"),
    "heads not dividing the width": (dict(extra=["--num_attention_heads", "5"]), "divisor"),
    "id2label not JSON": (dict(labels="{oops"), "not JSON"),
    "id2label with non-integer keys": (dict(labels='{"a": "x", "b": "y"}'), "class indices"),
    "id2label with a gap": (dict(labels='{"0": "x", "2": "y"}'), "each index"),
    "id2label neither list nor object": (dict(labels='"x"'), "JSON list"),
    "missing id2label file": (dict(extra=["--id2label", "/nonexistent/labels.json"]), "no such file"),
}  # fmt: skip


@pytest.mark.parametrize("case", CONVERTER_REFUSALS)
def test_converter_refuses_degenerate_checkpoints_and_bad_flags(case, tmp_path):
    kwargs, expected = CONVERTER_REFUSALS[case]
    message = one_line_exit(convert_command.main, converter_case(tmp_path, **kwargs))
    assert message.startswith("convert: ") and expected in message
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_converter_refuses_an_output_dir_that_is_a_file(tmp_path):
    argv = converter_case(tmp_path)
    (tmp_path / "out").write_text("a file")
    assert "a file, not a folder" in one_line_exit(convert_command.main, argv)


# -- full disk, read-only target, a kill during the save ------------------------------------------------------------


class WriterFault:
    """Make the Nth file write (Python's open for writing, or safetensors' writer) raise `errno`."""

    def __init__(self, monkeypatch, nth, code):
        import builtins

        import transformers.modeling_utils

        self.count, self.nth, self.code = 0, nth, code
        real_open, real_save = builtins.open, transformers.modeling_utils.safe_save_file

        def counted_open(file, mode="r", *args, **kwargs):
            if any(flag in mode for flag in "wax"):
                self.tick(file)
            return real_open(file, mode, *args, **kwargs)

        def counted_save(tensors, filename, *args, **kwargs):
            self.tick(filename)
            return real_save(tensors, filename, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", counted_open)
        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", counted_save)

    def tick(self, file):
        self.count += 1
        if self.count == self.nth:
            raise OSError(self.code, os.strerror(self.code), str(file))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["full disk", "read-only"])
@pytest.mark.parametrize("nth", [1, 2, 3])
def test_a_failed_write_leaves_the_old_converted_folder_byte_for_byte(code, nth, tmp_path, monkeypatch):
    argv = converter_case(tmp_path)
    assert convert_command.main(argv) == 0
    before = snapshot(tmp_path / "out")
    WriterFault(monkeypatch, nth, code)
    message = one_line_exit(convert_command.main, argv + ["--overwrite_output_dir", "--keep_rate", "0.5"])
    assert os.strerror(code) in message
    monkeypatch.undo()
    assert snapshot(tmp_path / "out") == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out."))] == []


KILL_AT = {
    "while writing the new folder": "hf_token_prune.feature_extraction_audiomae.AudioMAEFeatureExtractor.save_pretrained",
    "between moving the old folder aside and the new one in": "os.replace#2",
}


@pytest.mark.parametrize("moment", KILL_AT)
def test_sigkill_during_a_save_loses_nothing(moment, tmp_path):
    argv = converter_case(tmp_path)
    assert convert_command.main(argv) == 0
    before = snapshot(tmp_path / "out")
    point = KILL_AT[moment]
    kill = "os.kill(os.getpid(), signal.SIGKILL)"
    if point.startswith("os.replace"):
        patch = f"""
calls = []
real = os.replace
def replace(a, b):
    calls.append(a)
    if len(calls) == 2:
        {kill}
    return real(a, b)
os.replace = replace
"""
    else:
        module, cls, method = point.rsplit(".", 2)
        patch = f"import {module} as m\nm.{cls}.{method} = lambda *a, **k: {kill}\n"
    code = f"import os, signal, sys\n{patch}\nfrom hf_token_prune.commands.convert import main\nmain(sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, *argv, "--overwrite_output_dir", "--keep_rate", "0.5"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    old = tmp_path / "out.old"
    if old.exists():  # killed between the renames: the old model whole beside, and the next run says so
        assert snapshot(old) == before and not (tmp_path / "out").exists()
        message = one_line_exit(convert_command.main, argv + ["--overwrite_output_dir"])
        assert "out.old holds the previous model" in message
        old.rename(tmp_path / "out")
    assert snapshot(tmp_path / "out") == before


def test_commit_replaces_a_folder_whole(tmp_path):
    from hf_token_prune.files import written_whole

    target = tmp_path / "target"
    target.mkdir()
    (target / "old-only.txt").write_text("old")
    with pytest.raises(ValueError, match="not empty"):
        with written_whole(target, overwrite=False):
            pass
    with written_whole(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert snapshot(target) == {"new.txt": b"new"} and siblings(target) == ["target"]


# -- fine-tuning: refused at start, interrupted checkpoints, the final save -----------------------------------------


@pytest.fixture
def tiny_argv():
    """The demo recipe at a tiny model for a few seconds' training (as tests/test_cli.py runs it)."""
    return ["--recipe", "demo", "--config_overrides", "hidden_size=32,num_attention_heads=2,intermediate_size=64,"
            "frequency_stride=16,time_stride=16", "--num_mel_bins", "32", "--num_frames", "64", "--max_train_samples",
            "8", "--max_eval_samples", "8", "--max_steps", "1", "--eval_keep_rates", "1.0", "--disable_tqdm", "true",
            "--keep_rate", "1.0", "--eval_strategy", "no", "--save_strategy", "no"]  # fmt: skip


def test_finetune_refuses_a_model_folder_before_training(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(finetuning_run, "load_data", lambda *a, **k: pytest.fail("read data before refusing"))
    before = snapshot(model_dir)
    message = one_line_exit(finetuning.main, ["--recipe", "demo", "--output_dir", str(model_dir)])
    assert "is not empty" in message and "--overwrite_output_dir" in message
    (tmp_path / "run.partial").mkdir()
    (tmp_path / "run.partial" / "checkpoint-1").mkdir()
    message = one_line_exit(finetuning.main, ["--recipe", "demo", "--output_dir", str(tmp_path / "run")])
    assert "holds an interrupted run" in message and "--resume_from_checkpoint true" in message
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert "cannot write" in one_line_exit(finetuning.main, ["--recipe", "demo", "--output_dir", str(tmp_path / "x")])
    assert snapshot(model_dir) == before


def resume_cases(tmp_path, model_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    other = tmp_path / "other"
    save_tiny_model(other, intermediate_size=48)
    (other / "trainer_state.json").write_text("{}")
    return {
        "empty folder": (str(empty), "not a complete checkpoint"),
        "no trainer_state.json": (str(killed), "not a complete checkpoint"),
        "missing path": (str(tmp_path / "nowhere"), "no such checkpoint folder"),
        "true without checkpoints": ("true", "holds no checkpoint"),
        "another architecture": (str(other), "another architecture"),
    }


@pytest.mark.parametrize(
    "case", ["empty folder", "no trainer_state.json", "missing path", "true without checkpoints", "another architecture"]
)
def test_finetune_refuses_a_checkpoint_it_cannot_resume(case, tiny_argv, model_dir, tmp_path, monkeypatch):
    value, expected = resume_cases(tmp_path, model_dir)[case]
    monkeypatch.setattr(finetuning_run.PrunedModelTrainer, "train", lambda *a, **k: pytest.fail("trained"))
    message = one_line_exit(finetuning.main, [*tiny_argv, "--output_dir", str(tmp_path / "run"),
                                              "--resume_from_checkpoint", value])  # fmt: skip
    assert message.startswith("finetune: --resume_from_checkpoint") and expected in message


def test_finetune_on_a_full_disk_keeps_the_trained_weights_and_says_where(tiny_argv, tmp_path, monkeypatch):
    real_commit = finetuning_output.commit

    def full(staging, target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(finetuning_output, "commit", full)
    message = one_line_exit(finetuning.main, [*tiny_argv, "--output_dir", str(tmp_path / "run")])
    assert "No space left on device" in message and "the trained model is saved in" in message
    rescued = Path(message.split("the trained model is saved in ")[1].split(":")[0])
    try:
        model, _ = load_pruned_model(rescued)  # complete and strict-loadable
        assert not (tmp_path / "run").exists()
        assert not (tmp_path / "run.partial").exists()  # the weights are safe elsewhere: the full disk is freed
    finally:
        import shutil

        shutil.rmtree(rescued, ignore_errors=True)
    monkeypatch.setattr(finetuning_output, "commit", real_commit)


# -- the boundary ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raised", [KeyboardInterrupt, ValueError("a bad input")], ids=["ctrl-c", "error"])
def test_the_error_line_is_the_last_line_though_a_progress_bar_was_open(model_dir, monkeypatch, capsys, raised):
    from tqdm.auto import tqdm

    def interrupted_mid_bar(*args, **kwargs):
        bar = tqdm(total=10, desc="decoding")
        bar.update(3)
        raise raised

    monkeypatch.setattr(classify_library, "read_audio", interrupted_mid_bar)
    with pytest.raises(SystemExit) as error:
        classify_command.main([CLIP, "--model_name_or_path", str(model_dir)])
    message = "classify: interrupted (Ctrl-C)" if raised is KeyboardInterrupt else "classify: a bad input"
    del error  # its traceback holds the bar; collected without the boundary's close, it redraws after the line
    gc.collect()
    err = capsys.readouterr().err
    if raised is not KeyboardInterrupt:  # argparse-style: the line travels in SystemExit, printed last by Python
        err += message + "\n"
    assert err.replace("\r", "\n").splitlines()[-1] == message


def test_ctrl_c_and_bugs_end_in_one_line_with_their_exit_codes(model_dir, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(classify_library, "read_audio", interrupted)  # the command imports it when it runs
    with pytest.raises(SystemExit) as error:
        classify_command.main([CLIP, "--model_name_or_path", str(model_dir)])
    assert error.value.code == errors.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "classify: interrupted (Ctrl-C)\n"

    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(classify_library, "read_audio", bug)
    with pytest.raises(SystemExit) as error:
        classify_command.main([CLIP, "--model_name_or_path", str(model_dir)])
    assert error.value.code == errors.EXIT_BUG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (a bug" in err and "ZeroDivisionError" in err
    log = Path(err.split("Full traceback: ")[1].split(";")[0])
    assert "Traceback" in log.read_text() and "in bug" in log.read_text()
    log.unlink()
    with pytest.raises(SystemExit):
        classify_command.main([CLIP, "--model_name_or_path", str(model_dir), "--debug"])
    assert "Traceback (most recent call last)" in capsys.readouterr().err


# -- properties -----------------------------------------------------------------------------------------------------


TEXT = st.one_of(st.text(max_size=12), st.integers(-10**6, 10**6).map(str),
                 st.floats(allow_nan=True, allow_infinity=True).map(str))  # fmt: skip


@PROPERTIES
@given(top_k=TEXT, threads=TEXT, keep_rate=TEXT)
def test_classify_flags_parse_or_are_a_usage_error(top_k, threads, keep_rate):
    for flag, value in (("--top_k", top_k), ("--torch_threads", threads), ("--keep_rate", keep_rate)):
        try:
            args = classify_command.parse_args([CLIP, "--model_name_or_path", "m", f"{flag}={value}"])
        except SystemExit as error:
            assert error.code == errors.EXIT_USAGE
            continue
        parsed = getattr(args, flag[2:])
        assert (0 < parsed <= 1) if flag == "--keep_rate" else parsed >= 1


@PROPERTIES
@given(window=TEXT, hop=TEXT)
def test_tag_flags_parse_or_are_a_usage_error(window, hop):
    from hf_token_prune.commands.tag import parse_args

    try:
        args = parse_args([CLIP, "--model_name_or_path", "m", f"--window={window}", f"--hop={hop}"])
    except SystemExit as error:
        assert error.code == errors.EXIT_USAGE
        return
    assert math.isfinite(args.window) and args.window > 0 and math.isfinite(args.hop) and args.hop > 0


@PROPERTIES
@given(keep_rate=st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.none(), st.integers(-3, 3)),
       layers=st.one_of(st.lists(st.integers(-20, 20), max_size=4), st.text(max_size=4)))  # fmt: skip
def test_config_accepts_or_refuses_with_a_value_error(keep_rate, layers):
    try:
        config = PrunedASTConfig(keep_rate=keep_rate, pruning_layers=layers)
    except ValueError:
        return
    assert 0 < config.keep_rate <= 1 and all(0 <= layer < config.num_hidden_layers for layer in config.pruning_layers)


@PROPERTIES
@given(data=st.binary(max_size=300), field=st.sampled_from(["hidden_size", "num_hidden_layers", "patch_size"]),
       value=st.one_of(st.text(max_size=3), st.floats(), st.none(), st.lists(st.integers(), max_size=2)))  # fmt: skip
def test_the_loader_refuses_random_weights_and_config_fields_with_a_value_error(data, field, value, model_dir, tmp_path):
    import shutil

    folder = tmp_path / "random"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(model_dir, folder)
    (folder / "model.safetensors").write_bytes(data)
    with pytest.raises(ValueError):
        load_pruned_model(folder)
    shutil.copy(model_dir / "model.safetensors", folder / "model.safetensors")
    edit_config(**{field: value})(folder)
    with pytest.raises(ValueError):
        load_pruned_model(folder)


# -- audio the decoder or the extractor could get silently wrong ----------------------------------------------------


def test_more_than_two_channels_are_averaged_and_stereo_decodes_as_datasets_does(tmp_path, caplog):
    from torchcodec.decoders import AudioDecoder

    from hf_token_prune.classify import read_audio

    mono = read_audio(CLIP, 16000)
    for channels in (2, 6, 8):
        path = tmp_path / f"{channels}.wav"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", CLIP, "-filter_complex",
                        f"pan={channels}c|" + "|".join(f"c{i}=c0" for i in range(channels)), "-c:a", "pcm_f32le",
                        str(path)], check=True)  # fmt: skip
        wave = read_audio(path, 16000)
        if channels == 2:  # -ac 1, the down-mix training data went through: torchcodec's (and so datasets') samples
            expected = AudioDecoder(path, sample_rate=16000, num_channels=1).get_all_samples().data[0].numpy()
            assert abs(wave - expected).max() < 1e-6 and abs(wave).max() > 1.4 * abs(mono).max()
        else:  # identical channels average to the clip itself (`-ac 1` gave 3.4x / 4.4x its amplitude)
            assert abs(wave - mono).max() < 1e-6, (channels, abs(wave).max() / abs(mono).max())


def test_an_extractor_set_to_another_rate_than_16k_is_refused_in_one_line(model_dir, tmp_path):
    import shutil

    from hf_token_prune import AudioMAEFeatureExtractor

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    edit = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**edit, "sampling_rate": 44100}))
    # at 44.1 kHz transformers' fbank frames 9 ms: this 0.42 s clip made 112 frames and was "cut" to the model's 64
    message = one_line_exit(classify_command.main, [CLIP, "--model_name_or_path", str(folder)])
    assert message.startswith("classify: ") and "sampling_rate=44100" in message and '"sampling_rate": 16000' in message
    with pytest.raises(ValueError, match="sampling_rate=44100"):
        AudioMAEFeatureExtractor(sampling_rate=44100)(torch.zeros(44100).numpy(), sampling_rate=44100)

"""Issue 24's acceptance run: every bad input and fault the issue lists, against the real commands, classified.

    python scripts/hostile_cases.py [--repo PATH] [--subprocess]      # a few minutes on 2 cores

It builds a tiny model folder, a converter checkpoint and bad inputs in a temp folder, runs each case and prints a
table (case, kind, outcome, the line printed) and the counts. Outcomes:
    ok          the expected result: one line and a non-zero exit for a bad input, the right answer otherwise
    traceback   a traceback, or an internal error (exit 70)
    wrong       exit 0 with a wrong result (weights not the file's, another keep rate, a gain, a false warning, ...)
    lost        a folder changed, half-written or gone when it should not have
    noisy       a non-zero exit, but not one line
    skipped     the case cannot run here (said why)
Commands run as `python -m hf_token_prune_cli ...` (PYTHONPATH at --repo, HF_HUB_OFFLINE=1); to save the ~6 s import
per case they run in a forked child of a process that imported the package, calling the same `main(argv)`, unless
`--subprocess` is given. Kills, Ctrl-C and the full-disk cases always run as real subprocesses.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
RESULTS = []


def snapshot(folder):
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def last_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class Run:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def failure(self):
        """The outcome of a run that should end in one line and a non-zero exit."""
        if "Traceback" in self.err or self.code == 70:
            return "traceback"
        if self.code in (0, None):
            return "wrong"
        # a progress bar or transformers' notes may come before the error line; the error itself is one line
        errors = [line for line in self.err.splitlines() if line.startswith(("usage:", "hf-token-prune", "classify",
                  "tag", "finetune", "export", "convert", "macs", "analyze", "calibrate", "explore", "error"))]  # fmt: skip
        return "ok" if len(errors) <= 2 and last_line(self.err) else "noisy"


def run_cli(argv, timeout=300, env=None):
    env = {**os.environ, "PYTHONPATH": str(ARGS.repo), "HF_HUB_OFFLINE": "1", **(env or {})}
    if ARGS.subprocess:
        done = subprocess.run([sys.executable, "-m", "hf_token_prune_cli", *argv], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=WORK)  # fmt: skip
        return Run(done.returncode, done.stdout, done.stderr)
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            os.environ.update(env)
            os.chdir(WORK)
            import hf_token_prune_cli

            sys.argv = ["hf-token-prune", *argv]
            code = hf_token_prune_cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code or 0)
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = -1
            break
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status) if status != -1 else "timeout"
    out.seek(0)
    err.seek(0)
    return Run(code, out.read(), err.read())


def python_child(code, *argv, env=None):
    """A real subprocess running `code` (the package imported from --repo)."""
    env = {**os.environ, "PYTHONPATH": str(ARGS.repo), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=WORK)  # fmt: skip


def record(case, kind, outcome, line):
    RESULTS.append((case, kind, outcome, " ".join(str(line).split())[:150]))
    print(f"  [{outcome}] {case}: {RESULTS[-1][3]}", file=sys.stderr, flush=True)


def expect_error(case, kind, argv, keep=(), absent=()):
    """A bad input: one line, non-zero exit, the folders in `keep` byte for byte, nothing at the paths in `absent`."""
    before = [snapshot(folder) for folder in keep]
    run = run_cli(argv)
    outcome = run.failure()
    if outcome == "ok" and ([snapshot(folder) for folder in keep] != before or any(Path(p).exists() for p in absent)):
        outcome = "lost"
    record(case, kind, outcome, last_line(run.err) or last_line(run.out))
    return run


# -- fixtures (built in a child: the parent forks, and torch's thread pools do not survive a fork) -----------------

WORDS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]

BUILD = """
import json, sys, torch
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[1]) / "tests"))
from safetensors.torch import load_file, save_file
from transformers import ASTFeatureExtractor
from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification
from test_pruned_audiomae import official_checkpoint
work = Path(sys.argv[2])
words = json.loads(sys.argv[3])
config = PrunedASTConfig(hidden_size=32, num_hidden_layers=12, num_attention_heads=2, intermediate_size=64,
                         num_mel_bins=32, max_length=64, patch_size=16, frequency_stride=16, time_stride=16,
                         num_labels=10, keep_rate=0.7, id2label=dict(enumerate(words)),
                         label2id={w: i for i, w in enumerate(words)})
torch.manual_seed(0)
PrunedASTForAudioClassification(config).save_pretrained(work / "model")
ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(work / "model")
official_checkpoint(work)  # work / finetuned.pth, a tiny official AudioMAE fine-tuned checkpoint
"""


def variant(name, edit):
    folder = WORK / name
    shutil.copytree(WORK / "model", folder)
    edit(folder)
    return folder


def edit_json(file, **fields):
    def apply(folder):
        data = json.loads((folder / file).read_text())
        (folder / file).write_text(json.dumps({**data, **fields}))

    return apply


def edit_weights(edit):
    def apply(folder):
        from safetensors.torch import load_file, save_file

        weights = load_file(folder / "model.safetensors")
        edit(weights)
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})

    return apply


def head(weights):
    return next(k for k in weights if k.startswith("classifier.") and k.endswith("weight") and weights[k].dim() == 2)


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True)


# -- the cases, by kind ---------------------------------------------------------------------------------------------


def misfit_weights():
    clip = str(CLIP)
    cases = {
        "missing layer 5 attention": edit_weights(lambda w: [w.pop(k) for k in list(w) if "layer.5.attention" in k]),
        "missing classifier head": edit_weights(lambda w: [w.pop(k) for k in list(w) if k.startswith("classifier.")]),
        "config edited to 6 layers": edit_json("config.json", num_hidden_layers=6, pruning_layers=[1, 3, 5]),
        "NaN classifier weights": edit_weights(lambda w: w[head(w)].fill_(float("nan"))),
        "wrong-shape head": edit_weights(lambda w: w.update({head(w): w[head(w)][:5].clone()})),
        "truncated model.safetensors": lambda f: (f / "model.safetensors").write_bytes(
            (f / "model.safetensors").read_bytes()[:5000]),
        "zero-byte model.safetensors": lambda f: (f / "model.safetensors").write_bytes(b""),
        "config hidden_size as a string": edit_json("config.json", hidden_size="32"),
        "config keep_rate as a string": edit_json("config.json", keep_rate="0.5"),
    }
    for index, (case, edit) in enumerate(cases.items()):
        folder = variant(f"misfit{index}", edit)
        expect_error(f"classify: {case}", "weights that do not fit", ["classify", clip, "--model_name_or_path", str(folder)])
    folder = WORK / "misfit0"
    expect_error("tag: missing layer 5 attention", "weights that do not fit",
                 ["tag", clip, "--model_name_or_path", str(folder), "--output", str(WORK / "m.png")],
                 absent=[WORK / "m.png"])  # fmt: skip
    expect_error("export: missing layer 5 attention", "weights that do not fit",
                 ["export", "--model_name_or_path", str(folder), "--output_dir", str(WORK / "m-onnx")],
                 absent=[WORK / "m-onnx"])  # fmt: skip
    # macs reads only the config (MACs do not depend on the weights)
    expect_error("macs --model_name_or_path: config hidden_size as a string", "weights that do not fit",
                 ["macs", "--model_name_or_path", str(WORK / "misfit7"), "--keep_rates", "1.0"])  # fmt: skip


def converter():
    import torch

    base = ["convert", "--checkpoint", str(CHECKPOINT), "--num_attention_heads", "4", "--num_mel_bins", "64"]

    def checkpoint(name, edit):
        data = torch.load(CHECKPOINT, weights_only=True)
        edit(data["model"])
        path = WORK / f"{name}.pth"
        torch.save(data, path)
        return ["convert", "--checkpoint", str(path), *base[3:]]

    labels = WORK / "labels"
    labels.mkdir()
    (labels / "bad.json").write_text("{oops")
    (labels / "keys.json").write_text('{"a": "x", "b": "y"}')
    cases = {
        "position embedding of the CLS token only": checkpoint("cls", lambda m: m.update(pos_embed=m["pos_embed"][:, :1])),
        "1-D position embedding": checkpoint("flat", lambda m: m.update(pos_embed=m["pos_embed"].flatten())),
        "NaN weights": checkpoint("nan", lambda m: m["blocks.3.mlp.fc1.weight"].fill_(float("nan"))),
        "--num_attention_heads 0": [*base, "--num_attention_heads", "0"],
        "--num_mel_bins 0": [*base, "--num_mel_bins", "0"],
        "--max_length -16": [*base, "--max_length", "-16"],
        "bad --id2label": [*base, "--id2label", str(labels / "bad.json")],
        "missing --id2label": [*base, "--id2label", str(labels / "none.json")],
        "non-integer-keyed --id2label": [*base, "--id2label", str(labels / "keys.json")],
    }  # fmt: skip
    for case, argv in cases.items():
        out = WORK / "conv-out"
        expect_error(f"convert: {case}", "converter", [*argv, "--output_dir", str(out)], absent=[out])
    (WORK / "a-file").write_text("a file")
    expect_error("convert --output_dir a file", "converter", [*base, "--output_dir", str(WORK / "a-file")])
    good = run_cli([*base, "--output_dir", str(WORK / "converted")])
    record("convert: a good checkpoint", "converter", "ok" if good.code == 0 else "wrong", last_line(good.out + good.err))


def flags():
    clip, model = str(CLIP), str(WORK / "model")
    cases = {
        "classify --top_k -1": ["classify", clip, "--model_name_or_path", model, "--top_k", "-1"],
        "classify --top_k 0": ["classify", clip, "--model_name_or_path", model, "--top_k", "0"],
        "classify --torch_threads -1": ["classify", clip, "--model_name_or_path", model, "--torch_threads", "-1"],
        "tag --window inf": ["tag", clip, "--model_name_or_path", model, "--window", "inf"],
        "tag --hop inf": ["tag", clip, "--model_name_or_path", model, "--hop", "inf"],
        "tag a video-only mp4": ["tag", str(VIDEO), "--model_name_or_path", model, "--no_progress"],
        "export --opset 1": ["export", "--model_name_or_path", model, "--output_dir", str(WORK / "op1"), "--opset", "1"],
    }  # fmt: skip
    for case, argv in cases.items():
        expect_error(case, "hostile flags", argv, keep=[WORK / "model"], absent=[WORK / "op1"])


def outputs():
    clip, model = str(CLIP), str(WORK / "model")
    expect_error("export --output_dir <its source folder>", "saving",
                 ["export", "--model_name_or_path", model, "--output_dir", model, "--overwrite_output_dir"],
                 keep=[WORK / "model"])  # fmt: skip
    pictures = WORK / "pictures"
    pictures.mkdir()
    run = run_cli(["tag", clip, "--model_name_or_path", model, "--no_progress", "--output", str(pictures)])
    png = pictures / (Path(clip).stem + ".png")
    right = run.code == 0 and png.is_file() and f"wrote {png}" in run.out and not Path(f"{pictures}.png").exists()
    record("tag --output <a folder>", "smaller", "ok" if right else run.failure() if run.code else "wrong",
           last_line(run.out))
    if READ_ONLY:
        expect_error("tag --output on a read-only filesystem", "saving",
                     ["tag", clip, "--model_name_or_path", model, "--output", str(READ_ONLY / "t.png")])
        expect_error("convert --output_dir read-only", "saving",
                     ["convert", "--checkpoint", str(CHECKPOINT), "--num_attention_heads", "4", "--num_mel_bins", "64",
                      "--output_dir", str(READ_ONLY / "out")])  # fmt: skip
        expect_error("finetune --output_dir read-only", "saving", [*FINETUNE, "--output_dir", str(READ_ONLY / "run")])
    else:
        record("read-only filesystem cases", "saving", "skipped", "mount -o ro of a tmpfs failed here")


def audio():
    """The decoder and extractor cases: a multichannel file's gain, a 44.1 kHz extractor, the library's top_k."""
    clip = str(CLIP)
    reference = run_cli(["classify", clip, "--model_name_or_path", str(WORK / "model"), "--top_k", "10"])
    for channels in (6, 8):
        path = WORK / f"{channels}ch.wav"
        pan = f"pan={channels}c|" + "|".join(f"c{i}=c0" for i in range(channels))
        ffmpeg("-i", clip, "-filter_complex", pan, "-c:a", "pcm_s16le", path)
        run = run_cli(["classify", str(path), "--model_name_or_path", str(WORK / "model"), "--top_k", "10"])
        # identical channels: the file is the clip, so the scores must be the clip's, with no warning about PCM
        right = run.code == 0 and run.out.replace(str(path), clip) == reference.out and "PCM" not in run.err
        record(f"classify a {channels}-channel file (identical channels)", "smaller",
               "ok" if right else run.failure() if run.code else "wrong",
               last_line(run.err) if "PCM" in run.err else last_line(run.out))  # fmt: skip
    rate = variant("rate44k", edit_json("preprocessor_config.json", sampling_rate=44100))
    run = run_cli(["classify", clip, "--model_name_or_path", str(rate)])
    outcome = "wrong" if run.code == 0 else run.failure()
    record("classify: extractor config edited to 44.1 kHz (0.42 s clip)", "smaller", outcome, last_line(run.err))


LIBRARY = """
import json, sys, threading, numpy as np, torch
from hf_token_prune.classify import classify
from hf_token_prune.export import OnnxAudioClassifier, export_pretrained
from hf_token_prune.loading import load_pruned_model
model, extractor = load_pruned_model(sys.argv[1])
rng = np.random.default_rng(0)
waves = [rng.uniform(-0.5, 0.5, 8000).astype(np.float32) for _ in range(20)]
rates = [0.3, 0.5, 0.7, 1.0]
alone = {k: classify(model, extractor, waves, keep_rate=k, top_k=None) for k in rates}
together = {}
threads = [threading.Thread(target=lambda k=k: together.update({k: classify(model, extractor, waves, keep_rate=k, top_k=None)})) for k in rates]
[t.start() for t in threads]; [t.join() for t in threads]
wrong = sum(a != b for k in rates for a, b in zip(alone[k], together[k]))
distinct = len({json.dumps(alone[k][0]) for k in rates})
print(json.dumps({"wrong": wrong, "distinct": distinct, "model_keep_rate": model.config.keep_rate}))
export_pretrained(sys.argv[1], sys.argv[2])
try:
    OnnxAudioClassifier(sys.argv[2])(waves[0], top_k=-1)
    print(json.dumps({"onnx_top_k": "accepted"}))
except ValueError as error:
    print(json.dumps({"onnx_top_k": str(error)}))
"""


def library():
    child = python_child(LIBRARY, str(WORK / "model"), str(WORK / "lib-onnx"))
    out, err = child.communicate()
    if child.returncode:
        record("library: threads / OnnxAudioClassifier", "library", "traceback", last_line(err))
        return
    threads, onnx = (json.loads(line) for line in out.splitlines()[-2:])
    right = threads["wrong"] == 0 and threads["distinct"] > 1 and threads["model_keep_rate"] == 0.7
    record("classify(keep_rate=k) from 4 threads, 80 results", "keep rate per call", "ok" if right else "wrong",
           f"{threads['wrong']} of 80 at another keep rate; {threads['distinct']} distinct keep-rate results")
    record("OnnxAudioClassifier(top_k=-1)", "smaller", "wrong" if onnx["onnx_top_k"] == "accepted" else "ok",
           onnx["onnx_top_k"])


FINETUNE = ["finetune", "--recipe", "demo", "--config_overrides", "hidden_size=32,num_attention_heads=2,"
            "intermediate_size=64,frequency_stride=16,time_stride=16", "--num_mel_bins", "32", "--num_frames", "64",
            "--max_train_samples", "8", "--max_eval_samples", "8", "--max_steps", "1", "--shrink_start_epoch", "0",
            "--shrink_epochs", "0", "--eval_keep_rates", "1.0", "--disable_tqdm", "true", "--keep_rate", "0.5",
            "--eval_strategy", "no", "--save_strategy", "no"]  # fmt: skip


def finetune():
    model = WORK / "model"
    expect_error("finetune --output_dir <an existing model folder>", "saving", [*FINETUNE, "--output_dir", str(model)],
                 keep=[model])  # fmt: skip
    expect_error("finetune --output_dir a file", "saving", [*FINETUNE, "--output_dir", str(WORK / "a-file")])
    old = variant("old-model", lambda f: (f / "notes.txt").write_text("the old folder's own file"))
    run = run_cli([*FINETUNE, "--output_dir", str(old), "--overwrite_output_dir"])
    new = snapshot(old) if old.is_dir() else {}
    config = json.loads(new.get("config.json", b"{}"))
    right = run.code == 0 and "notes.txt" not in new and "model.safetensors" in new and config.get("keep_rate") == 0.5
    record("finetune --overwrite_output_dir <an existing model>", "saving",
           "ok" if right else run.failure() if run.code else "lost", last_line(run.err))  # fmt: skip
    # resuming from checkpoints it cannot resume
    empty, killed = WORK / "ckpt-empty", WORK / "ckpt-killed"
    empty.mkdir()
    killed.mkdir()
    shutil.copy(model / "model.safetensors", killed)
    for case, value in {"an empty (killed) checkpoint": empty, "a checkpoint without trainer_state.json": killed,
                        "a missing path": WORK / "nowhere", "true (nothing to resume)": "true",
                        "another architecture": WORK / "converted"}.items():  # fmt: skip
        if case == "another architecture":
            (WORK / "converted" / "trainer_state.json").write_text("{}")
        expect_error(f"finetune --resume_from_checkpoint {case}", "interrupted checkpoints",
                     [*FINETUNE, "--output_dir", str(WORK / "resume-run"), "--resume_from_checkpoint", str(value)])


def streaming():
    run = run_cli([*FINETUNE, "--streaming", "--max_steps", "2", "--output_dir", str(WORK / "streamed")])
    right = run.code == 0 and (WORK / "streamed" / "model.safetensors").is_file()
    record("finetune --streaming on the shipped audiofolder", "streaming", "ok" if right else run.failure(),
           last_line(run.err))


# -- the newest surfaces: calibrate and the per-sample keep policy (keep_mass / min_keep_rate) ---------------------


def audio_folder(name, splits):
    """An audiofolder under WORK: `splits` maps a split to {label folder: number of the shipped keyword clips}."""
    root = WORK / name
    for split, labels in splits.items():
        (root / split).mkdir(parents=True)
        for label, count in labels.items():
            (root / split / label).mkdir()
            for clip in sorted((REPO / "data" / "keywords" / "validation" / "yes").iterdir())[:count]:
                shutil.copy(clip, root / split / label / clip.name)
    return root


def calibration():
    model = WORK / "model"
    fast = ["--keep_rates", "0.5", "--keep_masses", "0.9", "--refine_rounds", "0", "--max_samples", "4"]
    data = ["--dataset_name", "audiofolder", "--data_dir", str(REPO / "data" / "keywords")]
    base = ["calibrate", "--model_name_or_path", str(model), *data, *fast]
    out = WORK / "cal-out"
    cases = {
        "--max_loss -1": ["--max_loss", "-1"],
        "--max_loss nan": ["--max_loss", "nan"],
        "--max_loss inf": ["--max_loss", "inf"],
        "--max_loss 1e400": ["--max_loss", "1e400"],
        "--max_loss abc": ["--max_loss", "abc"],
        "--keep_rates 1.0 (the reference)": ["--keep_rates", "1.0"],
        "--keep_masses 0": ["--keep_masses", "0"],
        "--keep_masses nan": ["--keep_masses", "nan"],
        "--min_keep_rate above --max_keep_rate": ["--max_keep_rate", "0.3", "--min_keep_rate", "0.6"],
        "--held_out_split = --validation_split": ["--held_out_split", "validation"],
        "--held_out_split no such split": ["--held_out_split", "nowhere"],
        "--refine_points 0": ["--refine_points", "0"],
        "--batch_size 0": ["--batch_size", "0"],
        "--dataloader_num_workers -1": ["--dataloader_num_workers", "-1"],
        "--data_dir missing": ["--data_dir", str(WORK / "no-data")],
    }  # fmt: skip
    for case, extra in cases.items():
        expect_error(f"calibrate {case}", "calibrate", [*base, *extra, "--output_dir", str(out)], keep=[model],
                     absent=[out])  # fmt: skip
    strangers = audio_folder("cal-strangers", {"train": {"cat": 2}, "validation": {"cat": 2, "dog": 2},
                                               "test": {"cat": 2, "dog": 2}})  # fmt: skip
    empty = audio_folder("cal-empty", {"train": {"yes": 1, "no": 1}, "validation": {}, "test": {"yes": 1, "no": 1}})
    expect_error("calibrate a split with labels the model does not know", "calibrate",
                 [*base, "--data_dir", str(strangers), "--output_dir", str(out)], absent=[out])  # fmt: skip
    expect_error("calibrate an empty validation split", "calibrate",
                 [*base, "--data_dir", str(empty), "--output_dir", str(out)], absent=[out])  # fmt: skip
    one = audio_folder("cal-one", {"train": {"yes": 1, "no": 1}, "validation": {"yes": 1}, "test": {"no": 1}})
    run = run_cli([*base, "--data_dir", str(one), "--max_loss", "100", "--output_dir", str(WORK / "cal-one-out")])
    right = run.code == 0 and (WORK / "cal-one-out" / "calibration.json").is_file()
    record("calibrate one-clip splits, --max_loss 100", "calibrate", "ok" if right else run.failure(),
           last_line(run.err if run.code else run.out))
    expect_error("calibrate --output_dir <the model>", "calibrate",
                 [*base, "--output_dir", str(model), "--overwrite_output_dir"], keep=[model])
    full = WORK / "cal-full"
    full.mkdir()
    (full / "notes.txt").write_text("the folder's own file")
    expect_error("calibrate --output_dir <a non-empty folder>", "calibrate", [*base, "--output_dir", str(full)],
                 keep=[full])
    (WORK / "a-file").write_text("a file")
    expect_error("calibrate --output_dir a file", "calibrate", [*base, "--output_dir", str(WORK / "a-file")],
                 keep=[model])
    unnamed = variant("cal-unnamed", edit_json("config.json", id2label={str(i): f"LABEL_{i}" for i in range(10)},
                                               label2id={f"LABEL_{i}": i for i in range(10)}))  # fmt: skip
    run = run_cli(["calibrate", "--model_name_or_path", str(unnamed), *data, *fast, "--max_loss", "100",
                   "--output_dir", str(WORK / "cal-unnamed-out")])  # fmt: skip
    record("calibrate a model saved without label names", "calibrate",
           "ok" if run.code == 0 else run.failure(), last_line(run.err if run.code else run.out))
    adaptive = variant("cal-adaptive", edit_json("config.json", keep_mass=0.8, min_keep_rate=0.3))
    run = run_cli(["calibrate", "--model_name_or_path", str(adaptive), *data, *fast, "--max_loss", "100",
                   "--output_dir", str(WORK / "cal-adaptive-out")])  # fmt: skip
    right = run.code == 0 and (WORK / "cal-adaptive-out" / "config.json").is_file()
    record("calibrate a keep_mass model", "calibrate", "ok" if right else run.failure(),
           last_line(run.err if run.code else run.out))
    multi = variant("cal-multi", edit_json("config.json", problem_type="multi_label_classification"))
    run = run_cli(["calibrate", "--model_name_or_path", str(multi), *data, *fast, "--max_loss", "100",
                   "--output_dir", str(WORK / "cal-multi-out")])  # fmt: skip
    metric = json.loads((WORK / "cal-multi-out" / "calibration.json").read_text())["metric"] if run.code == 0 else ""
    record("calibrate a multi-label (mAP) model", "calibrate", "ok" if metric == "mAP" else run.failure()
           if run.code else "wrong", metric or last_line(run.err))  # fmt: skip
    if READ_ONLY:
        expect_error("calibrate --output_dir read-only", "calibrate", [*base, "--output_dir", str(READ_ONLY / "c")])
    process, err, pressed = interrupt_once_under_way([*base, "--refine_rounds", "3", "--max_samples", "1000",
                                                      "--keep_rates", "0.9,0.7,0.5,0.3", "--keep_masses",
                                                      "0.95,0.9,0.8,0.6", "--output_dir", str(WORK / "cal-c")],
                                                     "batch")  # fmt: skip
    outcome = Run(process.returncode, "", err).failure() if process.returncode else "wrong"
    leftovers = [p.name for p in WORK.iterdir() if p.name.startswith((".cal-c.", "cal-c"))]
    record("Ctrl-C calibrate while measuring", "calibrate", "lost" if outcome == "ok" and leftovers else outcome,
           f"[Ctrl-C x{pressed}] " + last_line(err) + (f" (left {leftovers})" if leftovers else ""))
    disk = WORK / "cal-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], capture_output=True).returncode:
        record("calibrate on a full disk", "calibrate", "skipped", "mount -t tmpfs failed here (not root?)")
        return
    try:
        expect_error("calibrate on a full disk", "calibrate", [*base, "--max_loss", "100", "--output_dir",
                     str(disk / "c")], absent=[disk / "c"])  # fmt: skip
        leftovers = [p.name for p in disk.iterdir()]
        record("calibrate leaves nothing on the full disk", "calibrate", "lost" if leftovers else "ok",
               ", ".join(leftovers) or "nothing")
    finally:
        subprocess.run(["umount", str(disk)])


def keep_mass():
    clip = str(CLIP)
    bad = {
        "keep_mass NaN": dict(keep_mass=float("nan")),
        "keep_mass 0": dict(keep_mass=0),
        "keep_mass -0.5": dict(keep_mass=-0.5),
        "keep_mass 1.5": dict(keep_mass=1.5),
        "keep_mass true": dict(keep_mass=True),
        "keep_mass \"0.5\"": dict(keep_mass="0.5"),
        "min_keep_rate NaN": dict(keep_mass=0.8, min_keep_rate=float("nan")),
        "min_keep_rate 0": dict(keep_mass=0.8, min_keep_rate=0),
        "min_keep_rate above keep_rate": dict(keep_mass=0.8, min_keep_rate=0.9),
        "min_keep_rate \"0.2\"": dict(keep_mass=0.8, min_keep_rate="0.2"),
        "keep_mass with fuse": dict(keep_mass=0.8, token_reduction="fuse"),
        "keep_mass with merge": dict(keep_mass=0.8, token_reduction="merge", token_score="cosine"),
        "keep_rate NaN": dict(keep_rate=float("nan")),
    }
    for index, (case, fields) in enumerate(bad.items()):
        folder = variant(f"km{index}", edit_json("config.json", **fields))
        expect_error(f"classify: config.json {case}", "keep_mass config", ["classify", clip, "--model_name_or_path",
                     str(folder)], keep=[folder])  # fmt: skip
    adaptive = variant("km-good", edit_json("config.json", keep_mass=0.8, min_keep_rate=0.3))
    for case, argv in {
        "classify a keep_mass model": ["classify", clip, "--model_name_or_path", str(adaptive)],
        "classify a keep_mass model --keep_rate 0.2 (below its floor)": ["classify", clip, "--model_name_or_path",
                                                                         str(adaptive), "--keep_rate", "0.2"],
        "tag --bucket_by_count a keep_mass model": ["tag", clip, "--model_name_or_path", str(adaptive),
                                                    "--bucket_by_count", "--no_progress"],
        "tag --bucket_by_count a fixed-rate model": ["tag", clip, "--model_name_or_path", str(WORK / "model"),
                                                     "--bucket_by_count", "--no_progress"],
        "macs a keep_mass model": ["macs", "--model_name_or_path", str(adaptive), "--keep_rates", "1.0,0.5"],
    }.items():  # fmt: skip
        run = run_cli(argv)
        record(case, "keep_mass model", "ok" if run.code == 0 else run.failure(), last_line(run.err or run.out))
    finetune_cases = {
        "--keep_mass nan": ["--keep_mass", "nan"],
        "--keep_mass 0": ["--keep_mass", "0"],
        "--keep_mass -1": ["--keep_mass", "-1"],
        "--keep_mass 2": ["--keep_mass", "2"],
        "--keep_mass abc": ["--keep_mass", "abc"],
        "--keep_mass true": ["--keep_mass", "true"],
        "--min_keep_rate without --keep_mass": ["--min_keep_rate", "0.3"],
        "--min_keep_rate above --keep_rate": ["--keep_mass", "0.8", "--min_keep_rate", "0.9"],
        "--min_keep_rate nan": ["--keep_mass", "0.8", "--min_keep_rate", "nan"],
        "--keep_mass with --token_reduction fuse": ["--keep_mass", "0.8", "--token_reduction", "fuse"],
    }
    for case, extra in finetune_cases.items():
        out = WORK / "km-run"
        expect_error(f"finetune {case}", "keep_mass flags", [*FINETUNE, *extra, "--output_dir", str(out)],
                     absent=[out])
    process = cli_process(["explore", "--model_name_or_path", str(adaptive), "--port", "7931"])
    time.sleep(25)
    alive = process.poll() is None
    if alive:
        process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    record("explore a keep_mass model (start-up)", "keep_mass model", "ok" if alive else "traceback"
           if "Traceback" in err else "noisy", "still serving after 25 s" if alive else last_line(err))  # fmt: skip


LIBRARY_KEEP_MASS = """
import json, math, sys, torch
from hf_token_prune.loading import load_pruned_model
model, extractor = load_pruned_model(sys.argv[1])
inputs = torch.randn(2, 64, 32)
answers = {}
for name, value in [("nan", float("nan")), ("0", 0.0), ("-0.5", -0.5), ("1.5", 1.5), ("True", True), ("'0.5'", "0.5"),
                    ("inf", math.inf), ("tensor(0.5)", torch.tensor(0.5))]:
    try:
        model(inputs, keep_mass=value)
        answers[f"forward(keep_mass={name})"] = "accepted"
    except (ValueError, TypeError) as error:
        answers[f"forward(keep_mass={name})"] = "refused: " + " ".join(str(error).split())[:100]
for name, settings in [("min_keep_rate above keep_rate", dict(keep_mass=0.8, keep_rate=0.3, min_keep_rate=0.5)),
                       ("keep_mass with fuse", dict(keep_mass=0.8, token_reduction="fuse")),
                       ("min_keep_rate NaN", dict(keep_mass=0.8, min_keep_rate=float("nan")))]:
    try:
        with model.reduction_settings(**settings):
            pass
        answers[f"reduction_settings({name})"] = "accepted"
    except (ValueError, TypeError) as error:
        answers[f"reduction_settings({name})"] = "refused: " + " ".join(str(error).split())[:100]
try:
    model.config.min_keep_rate = 0.9
    answers["config.min_keep_rate = 0.9 (above keep_rate 0.7)"] = "accepted"
except ValueError as error:
    answers["config.min_keep_rate = 0.9 (above keep_rate 0.7)"] = "refused: " + " ".join(str(error).split())[:100]
print(json.dumps(answers))
"""


def keep_mass_library():
    child = python_child(LIBRARY_KEEP_MASS, str(WORK / "model"))
    out, err = child.communicate()
    if child.returncode:
        record("library: keep_mass per call", "keep_mass library", "traceback", last_line(err))
        return
    for case, answer in json.loads(out.splitlines()[-1]).items():
        record(case, "keep_mass library", "ok" if answer.startswith("refused") else "wrong", answer)


# -- kills, Ctrl-C, full disks: real subprocesses -----------------------------------------------------------------


def staging_of(target):
    parent, name = target.parent, target.name
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".partial")]


CLI_MAIN = "import sys, hf_token_prune_cli; sys.exit(hf_token_prune_cli.main(sys.argv[1:]))"


def cli_process(argv):
    return python_child(CLI_MAIN, *argv)


def interrupt_once_under_way(argv, marker, presses=3):
    """Ctrl-C (SIGINT) the command `argv` once its stderr shows `marker` (its progress bar: the work under way,
    however fast the machine), again after 15 s while it runs on, at most `presses` times; the finished process, its
    stderr, and the presses it took. CPython drops a SIGINT that lands in its at-fork hooks ("Exception ignored in
    _releaseLock"), i.e. while a DataLoader worker starts, as a user then presses Ctrl-C again."""
    log = WORK / f"interrupted-{time.monotonic_ns()}.stderr"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-c", CLI_MAIN, *argv], stdout=subprocess.DEVNULL, stderr=stderr,
                                   text=True, cwd=WORK, env={**os.environ, "PYTHONPATH": str(ARGS.repo),
                                                             "HF_HUB_OFFLINE": "1"})  # fmt: skip
        deadline = time.time() + 120
        while process.poll() is None and marker not in log.read_text() and time.time() < deadline:
            time.sleep(0.05)
        for pressed in range(1, presses + 1):
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            process.kill()
            process.wait()
    err = log.read_text()
    log.unlink()
    return process, err, pressed


def kill_during_save(case, argv, target, marker):
    """SIGKILL `argv` as soon as its staging folder holds `marker` (the final write under way): `target` must be
    the old folder byte for byte, or the new one complete (or the old one whole in `<target>.old`)."""
    before = snapshot(target)
    process = cli_process([*argv, "--output_dir", str(target), "--overwrite_output_dir"])
    deadline = time.time() + 240
    while process.poll() is None and time.time() < deadline:
        staged = [s for s in staging_of(target) if (s / marker).exists()]
        if staged:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    _, err = process.communicate()
    killed = process.returncode == -signal.SIGKILL
    old = target.with_name(target.name + ".old")
    after = snapshot(target) if target.is_dir() else None
    intact = after == before or (after is None and old.is_dir() and snapshot(old) == before)
    complete = after is not None and after != before and {"config.json", marker} <= set(after)
    outcome = "ok" if killed and (intact or complete) else ("lost" if killed else "skipped")
    line = ("old folder intact" if intact else "new folder complete" if complete else "folder damaged") if killed \
        else f"not killed in time (exit {process.returncode}): {last_line(err)}"
    record(case, "kill during save", outcome, line)


def kills():
    convert = ["convert", "--checkpoint", str(CHECKPOINT), "--num_attention_heads", "4", "--num_mel_bins", "64",
               "--keep_rate", "0.5"]  # fmt: skip
    kill_during_save("SIGKILL convert during its final write", convert, WORK / "converted", "model.safetensors")
    export = ["export", "--model_name_or_path", str(WORK / "model"), "--no_check"]
    run_cli([*export, "--output_dir", str(WORK / "kill-onnx")])
    kill_during_save("SIGKILL export during its final write", export, WORK / "kill-onnx", "model.onnx")
    old = variant("kill-old", lambda f: None)
    before = snapshot(old)
    process = cli_process([*FINETUNE, "--output_dir", str(old), "--overwrite_output_dir"])
    staging = old.with_name(old.name + ".partial")
    while process.poll() is None and not (staging / "model.safetensors").exists():
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    after = snapshot(old) if old.is_dir() else None
    spare = old.with_name(old.name + ".old")
    intact = after == before or (after is None and spare.is_dir() and snapshot(spare) == before)
    complete = after is not None and after != before and {"config.json", "model.safetensors"} <= set(after)
    record("SIGKILL finetune during its final save (over an older model)", "kill during save",
           "ok" if intact or complete else "lost", "old folder intact" if intact else "new folder complete"
           if complete else "folder damaged")  # fmt: skip


def ctrl_c():
    for case, argv, delay in [
        ("Ctrl-C classify while importing", ["classify", str(CLIP), "--model_name_or_path", str(WORK / "model")], 0.3),
        ("Ctrl-C classify while loading", ["classify", str(CLIP), "--model_name_or_path", str(WORK / "model")], 2.5),
    ]:
        process = cli_process(argv)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        record(case, "Ctrl-C", Run(process.returncode, "", err).failure() if process.returncode else "wrong",
               last_line(err))
    # once its progress bar shows it training: a fixed delay let a fast machine finish the run first
    # no data-loading worker: with 8 clips an epoch is one step, so a worker would be forked at every step and the
    # first Ctrl-C often dropped by CPython (see interrupt_once_under_way), which is not what this case measures
    process, err, pressed = interrupt_once_under_way([*FINETUNE, "--max_steps", "2000", "--disable_tqdm", "false",
                                                      "--dataloader_num_workers", "0", "--output_dir",
                                                      str(WORK / "ctrl-c")], "/2000 [")  # fmt: skip
    record("Ctrl-C finetune while training", "Ctrl-C",
           Run(process.returncode, "", err).failure() if process.returncode else "wrong",
           f"[Ctrl-C x{pressed}] " + last_line(err))


def full_disk():
    disk = WORK / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)], capture_output=True).returncode:
        record("full disk (a small tmpfs)", "full disk", "skipped", "mount -t tmpfs failed here (not root?)")
        return
    try:
        shutil.copytree(WORK / "model", disk / "model")  # ~400 kB: the new one does not fit beside it
        before = snapshot(disk / "model")
        run = run_cli([*FINETUNE, "--output_dir", str(disk / "model"), "--overwrite_output_dir"])
        rescued = run.err.split("the trained model is saved in ")[-1].split(":")[0] if "saved in" in run.err else None
        outcome = run.failure()
        if snapshot(disk / "model") != before or not (rescued and Path(rescued, "model.safetensors").is_file()):
            outcome = "lost" if outcome == "ok" else outcome
        record("finetune on a full disk over an older model", "full disk", outcome, last_line(run.err))
        shutil.rmtree(disk / "model")
        (disk / "filler").write_bytes(b"\0" * 500_000)
        run = run_cli([*FINETUNE, "--output_dir", str(disk / "run")])
        rescued = run.err.split("the trained model is saved in ")[-1].split(":")[0] if "saved in" in run.err else None
        outcome = run.failure()
        if not (rescued and Path(rescued, "model.safetensors").is_file()):
            outcome = "lost" if outcome == "ok" else outcome
        record("finetune on a full disk, new folder", "full disk", outcome, last_line(run.err))
        argv = ["convert", "--checkpoint", str(CHECKPOINT), "--num_attention_heads", "4", "--num_mel_bins", "64"]
        expect_error("convert on a full disk", "full disk", [*argv, "--output_dir", str(disk / "conv")],
                     absent=[disk / "conv"])
        leftovers = [p.name for p in disk.iterdir() if p.name not in ("filler",)]
        record("nothing half-written left on the full disk", "full disk", "lost" if leftovers else "ok",
               ", ".join(leftovers) or "only the filler")
    finally:
        subprocess.run(["umount", str(disk)])


def memory():
    """classify's peak memory on a 1-minute and a 2-hour file (it must decode only its window)."""
    figures = {}
    for name, seconds in (("1 min", 60), ("2 h", 7200)):
        path = WORK / f"long-{seconds}.flac"
        ffmpeg("-f", "lavfi", "-i", f"anoisesrc=a=0.1:r=16000:d={seconds}", "-ac", "1", "-compression_level", "0", path)
        code = ("import resource, sys, hf_token_prune_cli\ncode = hf_token_prune_cli.main(sys.argv[1:])\n"
                "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)")
        child = python_child(code, "classify", str(path), "--model_name_or_path", str(WORK / "model"))
        _, err = child.communicate()
        figures[name] = int(err.split("PEAK ")[-1].split()[0]) if "PEAK" in err else None
        path.unlink()
    flat = None not in figures.values() and figures["2 h"] < figures["1 min"] + 100
    record("classify peak memory, 1 min vs 2 h file", "memory", "ok" if flat else "wrong",
           f"{figures['1 min']} MB vs {figures['2 h']} MB")


def main():
    global ARGS, WORK, CLIP, CHECKPOINT, VIDEO, READ_ONLY
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout to test (default: this one)")
    parser.add_argument("--subprocess", action="store_true", help="run every command as `python -m hf_token_prune_cli`")
    parser.add_argument("--skip", default="", help="comma-separated groups to leave out (e.g. memory,kills)")
    ARGS = parser.parse_args()
    ARGS.repo = ARGS.repo.resolve()
    sys.path.insert(0, str(ARGS.repo))
    os.environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="hostile-") as work:
        WORK = Path(work)
        CLIP = REPO / "data" / "keywords" / "test" / "yes" / "yes_034.flac"
        CHECKPOINT = WORK / "finetuned.pth"
        build = python_child(BUILD, str(ARGS.repo), str(WORK), json.dumps(WORDS))
        if build.wait():
            raise SystemExit(f"building the fixtures failed: {build.stderr.read()}")
        VIDEO = WORK / "video.mp4"
        ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=10", "-pix_fmt", "yuv420p", VIDEO)
        READ_ONLY = WORK / "read-only"
        READ_ONLY.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(READ_ONLY)],
                          capture_output=True).returncode:  # fmt: skip
            READ_ONLY = None
        if not ARGS.subprocess:  # imported once here, forked per case
            import hf_token_prune_cli

            for module, _ in hf_token_prune_cli.COMMANDS.values():
                try:
                    __import__(module)
                except ImportError:
                    pass
        groups = [misfit_weights, converter, flags, outputs, audio, library, finetune, streaming, kills, ctrl_c,
                  full_disk, memory, calibration, keep_mass, keep_mass_library]  # fmt: skip
        try:
            for group in groups:
                if group.__name__ not in ARGS.skip.split(","):
                    print(f"{group.__name__} ...", file=sys.stderr, flush=True)
                    try:
                        group()
                    except Exception as error:  # the script's own failure, not a case's: say so and go on
                        record(f"(group {group.__name__} could not run)", group.__name__, "skipped",
                               f"{type(error).__name__}: {error}")
        finally:
            if READ_ONLY:
                subprocess.run(["umount", str(READ_ONLY)])
    width = max(len(case) for case, *_ in RESULTS)
    print(f"{'case':<{width}}  {'kind':<26} {'outcome':<9} line printed")
    for case, kind, outcome, line in RESULTS:
        print(f"{case:<{width}}  {kind:<26} {outcome:<9} {line}")
    counts = {o: sum(r[2] == o for r in RESULTS) for o in ("ok", "traceback", "wrong", "lost", "noisy", "skipped")}
    print(f"\n{len(RESULTS)} cases: " + ", ".join(f"{n} {o}" for o, n in counts.items()) +
          f" ({time.time() - start:.0f} s, repo {ARGS.repo})")  # fmt: skip
    return 0 if counts["traceback"] + counts["wrong"] + counts["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

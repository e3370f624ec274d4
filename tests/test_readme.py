"""README.md as written: its python snippets and its command-line block run.

Nothing downloads here, so the Hub checkpoints the snippets name are tiny local models laid out exactly like them
(config.json, model.safetensors, preprocessor_config.json) in a folder of the same name in the working directory,
which transformers reads before the Hub, as it would a downloaded snapshot. `audiomae-as20k` is what the README's
convert command makes from a checkpoint in the official layout. Two substitutions, stated: in the command-line
block, `finetune --recipe demo` (5 minutes) runs with a suffix that trains 2 steps on 16 clips, and `analyze` (a
minute or more on a busy 2-core machine) with one that analyses 6 clips.
"""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

from conftest import KEYWORDS, REPO, tiny_ast_kwargs
from test_pruned_audiomae import ReferenceViT


README = (REPO / "README.md").read_text()
SHORT_RUNS = {
    "hf-token-prune finetune": " --max_steps 2 --max_train_samples 16 --max_eval_samples 8 --eval_keep_rates 1.0,0.7"
    " --disable_tqdm true --shrink_start_epoch 0 --shrink_epochs 0",  # two steps: at the target keep rate throughout
    "hf-token-prune analyze": " --max_samples 6 --keep_rates 1.0,0.5 --num_examples 1",
}


def code_blocks(language, section=None):
    text = README if section is None else README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    hub_ast = work / "MIT" / "ast-finetuned-audioset-16-16-0.442"
    ASTForAudioClassification(ASTConfig(**tiny_ast_kwargs())).save_pretrained(hub_ast)
    ASTFeatureExtractor(num_mel_bins=64, max_length=128).save_pretrained(hub_ast)
    wave, rate = soundfile.read(KEYWORDS / "test" / "yes" / "yes_034.flac", dtype="float32")
    soundfile.write(work / "clip.wav", wave, rate)
    words = [soundfile.read(clip, dtype="float32")[0] for clip in sorted((KEYWORDS / "test" / "no").glob("*.flac"))[:3]]
    soundfile.write(work / "recording.wav", np.concatenate([wave, np.zeros(rate // 2, np.float32), *words]), rate)
    (work / "data").mkdir()
    (work / "data" / "keywords").symlink_to(KEYWORDS)
    # An official fine-tuning checkpoint's layout (timm keys under "model"), small: 64 wide, 128 mel bins.
    reference = ReferenceViT(dim=64, depth=12, heads=1, mlp=128, frames=128, mel=128, labels=5)
    torch.save({"model": reference.state_dict(), "epoch": 3}, work / "finetuned.pth")
    return work


def run(command, cwd):
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_command_line_block_runs_as_written(workdir):
    (block,) = code_blocks("bash", "Command line")
    lines = [line for line in block.splitlines() if line.strip()]
    assert lines[0].startswith("hf-token-prune --help") and any("classify clip.wav" in line for line in lines)
    for line in lines:
        command = line.split("#")[0].strip()
        command += next((suffix for start, suffix in SHORT_RUNS.items() if command.startswith(start)), "")
        result = run(["bash", "-c", command], workdir)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, command
    assert (workdir / "outputs" / "demo" / "README.md").is_file()
    assert (workdir / "outputs" / "demo" / "analysis" / "index.md").is_file()
    assert (workdir / "audiomae-as20k" / "config.json").is_file()


def test_python_snippets_run_as_written(workdir):
    if not (workdir / "audiomae-as20k").is_dir():  # the command-line block makes it; run alone, make it here
        assert run([sys.executable, "-m", "hf_token_prune.convert_audiomae", "--checkpoint", "finetuned.pth",
                    "--output_dir", "audiomae-as20k"], workdir).returncode == 0  # fmt: skip
    if not (workdir / "outputs" / "demo").is_dir():  # the command-line block trains it; run alone, train it here
        command = "hf-token-prune finetune --recipe demo" + SHORT_RUNS["hf-token-prune finetune"]
        assert run(["bash", "-c", command], workdir).returncode == 0
    (export,) = code_blocks("bash", "Deploy: ONNX Runtime")  # the Deploy snippets read the folder it writes
    assert run(["bash", "-c", export.split("#")[0].strip()], workdir).returncode == 0, export
    snippets = code_blocks("python")
    assert len(snippets) >= 2
    for snippet in snippets:
        result = run([sys.executable, "-c", snippet], workdir)
        assert result.returncode == 0, f"{snippet}\n{result.stderr[-3000:]}"


def test_finetune_help_as_the_readme_shows_it(workdir):
    result = run([sys.executable, str(REPO / "recipes" / "finetune.py"), "--help"], workdir)
    assert result.returncode == 0 and "--help_all" in result.stdout


@pytest.fixture(autouse=True, scope="module")
def _ffmpeg():
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is needed (make setup installs it): the README reads audio files with it")

"""The README's and the docs pages' code blocks, and the folder they run in (tests/test_readme.py, tests/test_docs.py).

The folder holds what the pages name: `outputs/demo` as `make demo` writes it (the demo recipe, trained for two
steps), the shipped `data/keywords`, a clip `clip.wav`, a longer `recording.wav`, an official AudioMAE fine-tuning
checkpoint `finetuned.pth` (tiny, in the official layout) and the Hub checkpoint the pages name as a tiny local model in
a folder of the same name, which transformers reads before the Hub, as it would a downloaded snapshot. Two
substitutions, stated: a fine-tuning command (minutes) runs with a suffix that trains 2 steps on 16 clips,
`analyze` (a minute or more on a busy 2-core machine) with one that analyses 6 clips, and `calibrate` with one that
measures two settings on 6 clips per split within any loss (the two-step model's accuracy is noise).
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import soundfile
import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

from conftest import KEYWORDS, REPO, tiny_ast_kwargs
from test_pruned_audiomae import ReferenceViT


HUB_CHECKPOINT = "MIT/ast-finetuned-audioset-10-10-0.4593"
# Two steps, at the target keep rate throughout (a schedule longer than the run is refused).
FINETUNE_SHORT = (" --max_steps 2 --max_train_samples 16 --max_eval_samples 8 --eval_keep_rates 1.0,0.7"
                  " --disable_tqdm true --shrink_start_epoch 0 --shrink_epochs 0")  # fmt: skip
SHORT_RUNS = {
    "hf-token-prune finetune": FINETUNE_SHORT,
    "hf-token-prune analyze": " --max_samples 6 --keep_rates 1.0,0.5 --num_examples 1",
    "hf-token-prune calibrate": " --max_samples 6 --keep_rates 0.5 --keep_masses 0.9 --refine_rounds 0 --max_loss 100",
}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def code_blocks(markdown: str, language: str) -> list[str]:
    return [body for fence, body in FENCE.findall(markdown) if fence == language]


def shell_commands(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped, each command with
    its short-run suffix."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        command = re.split(r"\s#", " " + line, maxsplit=1)[0].strip()
        if command:
            commands.append(command + next((tail for head, tail in SHORT_RUNS.items() if command.startswith(head)), ""))
    return commands


def run(command: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def run_bash(command: str, cwd) -> None:
    result = run(["bash", "-c", command], cwd)
    assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, f"{command}\n{result.stderr[-3000:]}"


# Each snippet runs with fresh globals, as a reader pastes it (a missing import fails), in one interpreter per page:
# a fresh one per snippet would cost its imports again (5-20 s each on a busy 2-core machine).
SNIPPET_RUNNER = """
import json, sys
for number, snippet in enumerate(json.load(sys.stdin), 1):
    print(f"--- snippet {number}:\\n{snippet}", file=sys.stderr, flush=True)
    exec(compile(snippet, f"<snippet {number}>", "exec"), {"__name__": "__main__"})
"""


def run_python(snippets: list[str], cwd) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", SNIPPET_RUNNER], input=json.dumps(snippets), cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]


def make_workdir(work):
    hub_ast = work / HUB_CHECKPOINT
    ASTForAudioClassification(ASTConfig(**tiny_ast_kwargs())).save_pretrained(hub_ast)
    ASTFeatureExtractor(num_mel_bins=64, max_length=128).save_pretrained(hub_ast)
    wave, rate = soundfile.read(KEYWORDS / "test" / "yes" / "yes_034.flac", dtype="float32")
    soundfile.write(work / "clip.wav", wave, rate)
    words = [soundfile.read(clip, dtype="float32")[0] for clip in sorted((KEYWORDS / "test" / "no").glob("*.flac"))[:3]]
    soundfile.write(work / "recording.wav", np.concatenate([wave, np.zeros(rate // 2, np.float32), *words]), rate)
    (work / "data").mkdir()
    (work / "data" / "keywords").symlink_to(KEYWORDS)
    (work / "recipes").symlink_to(REPO / "recipes")  # the scripts a clone has
    # An official fine-tuning checkpoint's layout (timm keys under "model"), small: 64 wide, 128 mel bins.
    reference = ReferenceViT(dim=64, depth=12, heads=1, mlp=128, frames=128, mel=128, labels=5)
    torch.save({"model": reference.state_dict(), "epoch": 3}, work / "finetuned.pth")
    run_bash("hf-token-prune finetune --recipe demo" + FINETUNE_SHORT, work)
    return work

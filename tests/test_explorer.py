"""The explorer (hf_token_prune.explorer): what it computes equals the library's own calls, its API answers through
gradio_client, a written Space builds, and (full tier) a headless Chromium sees on the page what the model computes."""

import json
import re
import runpy
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ASTFeatureExtractor, ASTForAudioClassification

from conftest import KEYWORDS, REPO, tiny_ast_kwargs
from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification
from hf_token_prune.analysis.inputs import model_settings
from hf_token_prune.classify import read_audio
from hf_token_prune.loading import load_pruned_model
from hf_token_prune.macs import count_macs
from hf_token_prune.patch_layout import PatchLayout
from hf_token_prune.visualization import patch_label_image


WORDS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]
CHROMIUM = "/usr/bin/chromium"
# The flags that run Debian's Chromium here (STACK.md): no sandbox as root, no GPU, no calls home on a closed network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SHOTS = Path("/tmp/explorer-shots")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny pruned AST folder over the keyword labels. Its head is scaled up so that the top label is decided by a
    clear margin, not by float rounding between the app's process and the test's."""
    folder = tmp_path_factory.mktemp("explorer_model")
    config = PrunedASTConfig(**{**tiny_ast_kwargs(), "num_labels": 10}, keep_rate=0.7, id2label=dict(enumerate(WORDS)),
                             label2id={word: i for i, word in enumerate(WORDS)})  # fmt: skip
    model = PrunedASTForAudioClassification(config)
    with torch.no_grad():
        model.classifier.dense.weight.mul_(40.0)
    model.save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=64, max_length=128).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_pruned_model(model_dir)


def clip(word="yes"):
    return sorted((KEYWORDS / "test" / word).glob("*.flac"))[0]


def direct_call(model, extractor, path, keep_rate, keep_mass=None):
    """The library call the page must agree with: the model at `keep_rate` (and `keep_mass`), its kept patches and
    top label."""
    inputs = extractor(read_audio(path, 16000), sampling_rate=16000, return_tensors="pt")
    with model_settings(model, keep_rate=keep_rate, keep_mass=keep_mass):
        outputs = model(**inputs, output_kept_patches=True)
    kept = [indices[0].tolist() for indices in outputs.kept_patches] if outputs.kept_patches is not None else []
    return kept, model.config.id2label[int(outputs.logits[0].argmax())]


def test_patch_label_image_matches_a_patch_by_patch_drawing():
    for layout in (PatchLayout(16, 10, 10, 12, 101, False), PatchLayout(16, 16, 16, 8, 4, True),
                   PatchLayout(4, 6, 3, 5, 7, False)):  # AST's overlap, AudioMAE's time-major grid, gaps
        labels = torch.randperm(layout.num_patches)
        height = (layout.num_frequency_patches - 1) * layout.frequency_stride + layout.patch_size
        width = (layout.num_time_patches - 1) * layout.time_stride + layout.patch_size
        expected = torch.full((height, width), -1, dtype=torch.long)
        grid = torch.empty(layout.num_patches, dtype=torch.long)
        grid[layout.frequency_major_index(torch.arange(layout.num_patches))] = labels
        for index, label in enumerate(grid.tolist()):  # later patches paint over earlier ones
            top = index // layout.num_time_patches * layout.frequency_stride
            left = index % layout.num_time_patches * layout.time_stride
            expected[top : top + layout.patch_size, left : left + layout.patch_size] = label
        assert torch.equal(patch_label_image(labels, layout), expected)


def test_model_settings_passes_any_valid_combination_and_restores_the_model(loaded):
    model, _ = loaded
    model.config.token_reduction = "merge"
    before = model.config.to_dict()
    try:
        with model_settings(model, keep_rate=0.5, token_score="intensity", token_reduction="prune", drop_padding=True,
                            pruning_layers=[2, 5]):  # fmt: skip
            assert (model.config.token_score, model.config.pruning_layers, model.config.drop_padding) == (
                "intensity", [2, 5], True)
        with pytest.raises(ValueError, match="cannot use token_score='intensity'"):
            with model_settings(model, token_score="intensity"):  # merge ranks by key similarity, not intensity
                pass
        assert model.config.to_dict() == before
    finally:
        model.config.token_reduction = "prune"


def test_explore_shows_what_the_library_computes(loaded, model_dir):
    from hf_token_prune.explorer import draw, explore

    model, extractor = loaded
    wave = read_audio(clip(), 16000)
    saved = model.config.to_dict()
    exploration = explore(model, extractor, wave, 0.5, "prune", "attention", [3, 6, 9], repeats=1)
    assert model.config.to_dict() == saved
    kept, top = direct_call(model, extractor, clip(), 0.5)
    assert exploration.kept_patches == kept
    assert exploration.tokens == [32] + [len(indices) for indices in kept]
    assert next(iter(exploration.pruned)) == top
    # Unpruned is transformers' own AST, probabilities and all.
    stock = ASTForAudioClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        reference = stock(**extractor(wave, sampling_rate=16000, return_tensors="pt")).logits[0].softmax(-1)
    for label, probability in exploration.unpruned.items():
        assert probability == pytest.approx(float(reference[model.config.label2id[label]]), abs=1e-6)
    assert exploration.gmacs == {"unpruned": count_macs(model.config, keep_rate=1.0).total / 1e9,
                                 "pruned": count_macs(model.config, keep_rate=0.5).total / 1e9}  # fmt: skip
    figure = draw(exploration)
    assert figure.dtype == np.uint8 and figure.shape[0] > 4 * 64  # four panels: the input, three pruning stages

    merged = explore(model, extractor, wave, 0.5, "merge", "attention", [3, 6, 9], repeats=1)
    with model_settings(model, keep_rate=0.5, token_reduction="merge"):
        inputs = extractor(wave, sampling_rate=16000, return_tensors="pt")
        source_maps = [source[0].tolist() for source in model(**inputs, output_kept_patches=True).source_maps]
    assert merged.source_maps == source_maps and merged.kept_patches is None

    # A model calibrated to a per-clip keep mass is explored at the fixed rates the app offers, and keeps its policy.
    with model.reduction_settings(keep_mass=0.5):
        assert explore(model, extractor, wave, 0.5, "prune", "attention", [3, 6, 9], repeats=1).kept_patches == kept
        assert model.config.keep_mass == 0.5


def test_explore_runs_the_per_clip_keep_mass_as_the_model_does(loaded):
    from hf_token_prune.explorer import explore
    from hf_token_prune.macs import count_forward_macs

    model, extractor = loaded
    saved = model.config.to_dict()
    fixed_tokens, policy_tokens = [], []
    for word in ("yes", "no", "stop"):
        wave = read_audio(clip(word), 16000)
        exploration = explore(model, extractor, wave, 0.7, "prune", "attention", [3, 6, 9], repeats=1, keep_mass=0.6)
        inputs = extractor(wave, sampling_rate=16000, return_tensors="pt")
        with model_settings(model, keep_rate=0.7, keep_mass=0.6):
            outputs = model(**inputs, output_kept_patches=True)
            macs = count_forward_macs(model, inputs["input_values"])  # FlopCounterMode on this clip's forward
        kept = [[index for index in indices[0].tolist() if index >= 0] for indices in outputs.kept_patches]
        assert exploration.kept_patches == kept
        assert exploration.tokens == [32] + [len(indices) for indices in kept]
        assert exploration.gmacs["pruned"] == pytest.approx(macs / 1e9, rel=1e-9)
        assert next(iter(exploration.pruned)) == model.config.id2label[int(outputs.logits[0].argmax())]
        assert "(keep rate 0.7, keep mass 0.6 per clip, prune," in exploration.summary()
        policy_tokens.append(exploration.tokens)
        fixed_tokens.append(explore(model, extractor, wave, 0.7, "prune", "attention", [3, 6, 9], repeats=1).tokens)
    assert model.config.to_dict() == saved
    assert policy_tokens != fixed_tokens  # the policy, not the fixed rate, decided what was kept
    with pytest.raises(ValueError, match="keep_mass=0.6 is not supported with token_reduction='fuse'"):
        explore(model, extractor, wave, 0.7, "fuse", "attention", [3, 6, 9], repeats=1, keep_mass=0.6)


def test_clicking_a_patch_names_its_time_band_score_and_fate(loaded):
    from hf_token_prune.explorer import Geometry, describe_patch, explore

    model, extractor = loaded
    exploration = explore(model, extractor, read_audio(clip(), 16000), 0.5, "prune", "intensity", [3, 6, 9],
                          repeats=1)  # fmt: skip
    geometry = Geometry.of(exploration.spectrogram)
    # Last panel, top mel bin, frame 20: AST's patch at frequency row 3, time column 1 (token 3 * 8 + 1).
    x, y = 20 * geometry.x_scale, 3 * geometry.panel_height + 18 + 1
    text = describe_patch(exploration, model, 16000, x, y)
    assert "**Patch 25**" in text and "frames 16-31" in text and "bins 48-63" in text
    kept = 25 in exploration.kept_patches[-1]
    assert f"after layer 9: {'kept' if kept else 'dropped'}" in text
    assert f"intensity score at the first reducing layer: {exploration.intensity[25]:.4g}" in text


def test_inverted_audio_keeps_the_energy_of_the_kept_frames_only(loaded):
    from hf_token_prune.explorer import invert_to_audio

    _, extractor = loaded
    raw = ASTFeatureExtractor(num_mel_bins=64, max_length=128, do_normalize=False)
    wave = read_audio(clip(), 16000)
    features = extractor(wave, sampling_rate=16000, return_tensors="np")["input_values"][0].T
    frames = 40
    spectrogram = features[:, :frames]
    keep = np.zeros(spectrogram.shape, bool)
    keep[:, :20] = True
    every, kept = invert_to_audio(spectrogram, extractor), invert_to_audio(spectrogram, extractor, keep)
    original = raw(wave, sampling_rate=16000, return_tensors="np")["input_values"][0][:frames].T
    again = raw(every, sampling_rate=16000, return_tensors="np")["input_values"][0][:frames].T
    assert np.corrcoef(original.ravel(), again.ravel())[0, 1] > 0.95  # the same log-mel picture, phase estimated
    masked = raw(kept, sampling_rate=16000, return_tensors="np")["input_values"][0][:frames].T
    # Frame 25 on is 5 frames past the kept ones (a window spans 2.5 frames): quieter by orders of magnitude.
    assert masked[:, 25:].mean() < original[:, 25:].mean() - 5.0
    assert abs(masked[:, :15].mean() - again[:, :15].mean()) < 0.5


def test_gradio_client_predict_returns_the_model_s_kept_patches(loaded):
    gradio_client = pytest.importorskip("gradio_client", reason='the explorer extra: pip install ".[explorer]"')
    from hf_token_prune.explorer import build_app

    model, extractor = loaded
    app = build_app(model, extractor)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(app.local_url, verbose=False)
        result = client.predict(gradio_client.handle_file(str(clip())), 0.5, "prune", "attention", "3, 6, 9", False,
                                api_name="/predict")  # fmt: skip
        adaptive = client.predict(gradio_client.handle_file(str(clip())), 0.7, "prune", "attention", "3, 6, 9", False,
                                  0.6, api_name="/predict")  # fmt: skip
    finally:
        app.close()
    inputs = extractor(read_audio(clip(), 16000), sampling_rate=16000, return_tensors="pt")
    with model_settings(model, keep_rate=0.7, keep_mass=0.6):
        kept_patches = model(**inputs, output_kept_patches=True).kept_patches
    adaptive_json = json.loads(Path(adaptive[7]).read_text())
    assert adaptive_json["kept_patches"] == [indices[0].tolist() for indices in kept_patches]
    assert adaptive_json["settings"]["keep_mass"] == 0.6
    downloaded = json.loads(Path(result[7]).read_text())
    kept, top = direct_call(model, extractor, clip(), 0.5)
    assert downloaded["kept_patches"] == kept
    assert next(iter(downloaded["pruned"])) == top
    assert result[3]["label"] == top


def test_a_written_space_builds_the_app(model_dir, tmp_path):
    pytest.importorskip("gradio", reason='the explorer extra: pip install ".[explorer]"')
    import gradio as gr

    from hf_token_prune.commands import explore

    assert explore.main(["--model_name_or_path", str(model_dir), "--write_space", str(tmp_path / "space")]) == 0
    space = tmp_path / "space"
    assert (space / "requirements.txt").read_text().startswith("hf-token-prune[explorer]==")
    assert "sdk: gradio" in (space / "README.md").read_text()
    assert len(list((space / "examples").glob("*.flac"))) == 2 * len(WORDS)
    app = runpy.run_path(str(space / "app.py"), run_name="space")["demo"]
    assert isinstance(app, gr.Blocks)
    message = exit_message(explore.main, ["--model_name_or_path", str(model_dir), "--write_space", str(space)])
    assert message == f"explore: --write_space {space}: the folder is not empty; give a new or empty one."


def test_without_gradio_the_command_names_the_extra(model_dir, monkeypatch):
    from hf_token_prune.commands import explore

    monkeypatch.setitem(sys.modules, "gradio", None)  # what `import gradio` meets when it is not installed
    message = exit_message(explore.main, ["--model_name_or_path", str(model_dir)])
    assert message == 'explore: the explorer needs gradio: pip install "hf-token-prune[explorer]"'


def exit_message(main, argv):
    with pytest.raises(SystemExit) as error:
        main(argv)
    return str(error.value.code)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url, process, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the explorer exited: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the explorer did not answer at {url} within {timeout} s")


@pytest.mark.full
def test_the_page_in_chromium_shows_what_the_model_computes(loaded, model_dir, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium: apt-get install -y --no-install-recommends chromium")
    playwright = pytest.importorskip("playwright.sync_api", reason='needs playwright: pip install ".[dev]"')
    model, extractor = loaded
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, str(REPO / "hf_token_prune_cli.py"), "explore", "--model_name_or_path", str(model_dir),
               "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(url, server)
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            page.goto(url)
            page.set_input_files("#clip input[type=file]", str(clip()))
            shown = page_state(page, "keep rate 0.7,")

            drag(page, "keep_rate", 0.68, 0.45)
            keep_rate = float(page.locator("#keep_rate input[type=number]").input_value())
            assert keep_rate < 0.7
            moved = page_state(page, f"keep rate {keep_rate:g},")
            drag(page, "keep_mass", 0.99, 0.15)  # from 1 (off) to a policy below the ceiling on this clip
            keep_mass = float(page.locator("#keep_mass input[type=number]").input_value())
            assert keep_mass < 1.0
            adaptive = page_state(page, f"keep rate {keep_rate:g}, keep mass {keep_mass:g} per clip,")
            page.locator("#figure img").click(position={"x": 100, "y": 100})
            page.wait_for_function("document.querySelector('#patch').innerText.includes('Patch ')")
            page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    SHOTS.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "explorer.png", SHOTS / "explorer.png")
    for state, rate, mass in ((shown, 0.7, None), (moved, keep_rate, None), (adaptive, keep_rate, keep_mass)):
        kept, top = direct_call(model, extractor, clip(), rate, mass)
        assert state["counts"] == [32] + [sum(index >= 0 for index in indices) for indices in kept]
        assert state["top"] == top
    assert adaptive["counts"] != moved["counts"]  # the policy, not the fixed rate, decided


def drag(page, slider_id, start, end):
    """Drag a gr.Slider's handle from `start` to `end` (fractions of its width), as a user does."""
    box = page.locator(f"#{slider_id} input[type=range]").bounding_box()
    middle = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, middle)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * end, middle, steps=5)
    page.mouse.up()


def page_state(page, settings):
    """The kept patches per stage and the pruned top label, once the page shows the result for `settings`."""
    page.wait_for_function(f"document.querySelector('#summary').innerText.includes({settings!r})", timeout=120_000)
    summary = page.inner_text("#summary")
    counts = [int(count) for count in re.findall(r"(\d+) of 32\n", summary + "\n")]
    # gr.Label: its caption, then the top label in large type, then the top classes
    return {"counts": counts, "top": page.inner_text("#pruned").split("\n")[1]}

"""The explorer: a local web app showing which spectrogram patches a pruned model keeps, on your own audio.

    hf-token-prune explore --model_name_or_path outputs/demo [--port 7860] [--share false]
    hf-token-prune explore --model_name_or_path outputs/demo --write_space space/   # a Hugging Face Space folder

Upload or record a clip (or pick a shipped example), then move the keep rate, method, token score, pruning layers or
drop padding: the model runs again and the page shows the log-mel spectrogram once per pruning stage (paper Fig. 3:
dropped patches greyed, merged groups outlined, padding hatched; click a patch for its time, mel band, score and
intensity cluster), the top labels unpruned vs pruned with GMACs and measured latency, the clip beside what the model
kept turned back into audio, and downloads of the kept indices / source maps (JSON) and the figure (PNG).
Runs offline on any folder this package writes and on any stock AST checkpoint folder. Needs the `explorer` extra:
pip install "hf-token-prune[explorer]".
"""

import json
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .feature_extraction_audiomae import KALDI_FRAME_LENGTH, KALDI_FRAME_SHIFT, num_fbank_frames


EXTRA = 'pip install "hf-token-prune[explorer]"'
SHIPPED_EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "keywords" / "test"
EXAMPLES_PER_CLASS = 2
# Both feature extractors compute Kaldi fbanks (transformers' numpy path): a 512-point FFT of pre-emphasised frames.
FFT_SIZE, PREEMPHASIS, MEL_FLOOR = 512, 0.97, 1.192092955078125e-07
GRIFFIN_LIM_ITERATIONS = 32
LATENCY_REPEATS = 3
TOP_LABELS = 5
# Drawing: each stage is a panel of the spectrogram scaled to about this size, under a title strip.
PANEL_WIDTH, PANEL_HEIGHT, TITLE_HEIGHT, HATCH_PERIOD = 960, 144, 18, 6
INTENSITY_CLUSTERS = 5


def import_gradio():
    try:
        import gradio as gr
    except ImportError:
        raise ImportError(f"the explorer needs gradio: {EXTRA}") from None
    # gradio's request queue still uses pandas options that pandas 3 deprecates: its warnings, not the user's concern
    warnings.filterwarnings("ignore", message="'future.no_silent_downcasting' is deprecated", module="gradio")
    warnings.filterwarnings("ignore", message="The copy keyword is deprecated", module="gradio")
    return gr


@dataclass
class Exploration:
    """One clip through one model at one setting: what the page shows, and what its downloads hold."""

    settings: dict
    spectrogram: np.ndarray  # (mel bins, frames), the model's normalised input
    real_frames: int
    stage_titles: list
    kept: list  # per stage, (patches,) bool in token order: kept (pruned / fused away: False; merged: True)
    tokens: list  # per stage, the patch tokens left
    groups: list  # per stage, (patches,) merged-group number per patch (-1: a token of its own) or None
    token_image: np.ndarray  # (mel bins, frames): the patch token drawn at each pixel, -1 where none reaches
    kept_patches: list | None  # per pruning layer, the kept token indices (prune, fuse)
    source_maps: list | None  # per merging layer, each patch's token (merge)
    unpruned: dict  # label -> probability
    pruned: dict
    gmacs: dict  # "unpruned" / "pruned" -> GMACs
    latency_ms: dict
    intensity: np.ndarray  # (patches,) token order
    clusters: np.ndarray | None  # (patches,) 0-based intensity cluster of each patch in this clip
    score_name: str
    scores: np.ndarray | None  # (patches,) what the first reducing layer ranks by, when it is a per-patch score

    def summary(self) -> str:
        """Markdown: the kept patches per stage, GMACs and latency (the browser test reads the counts from it)."""
        total = self.tokens[0]
        rows = [f"| {title} | {tokens} of {total} |" for title, tokens in zip(self.stage_titles, self.tokens)]
        method = self.settings["token_reduction"]
        policy = f" keep mass {self.settings['keep_mass']:g} per clip," if "keep_mass" in self.settings else ""
        return "\n".join([
            f"**{self.tokens[-1]} of {total} patch tokens left** after the last stage (keep rate "
            f"{self.settings['keep_rate']:g},{policy} {method}, token score {self.settings['token_score']}).",
            "",
            "| stage | patch tokens |",
            "|---|---|",
            *rows,
            "",
            "| | unpruned | pruned |",
            "|---|---|---|",
            f"| GMACs of this clip | {self.gmacs['unpruned']:.3f} | {self.gmacs['pruned']:.3f} |",
            f"| latency (median of {LATENCY_REPEATS}, ms) | {self.latency_ms['unpruned']:.1f} | "
            f"{self.latency_ms['pruned']:.1f} |",
        ])

    def to_json(self) -> dict:
        return {
            "settings": self.settings,
            "real_frames": self.real_frames,
            "stages": self.stage_titles,
            "kept_patches": self.kept_patches,
            "source_maps": self.source_maps,
            "unpruned": self.unpruned,
            "pruned": self.pruned,
            "gmacs": self.gmacs,
            "latency_ms": self.latency_ms,
        }


def _probabilities(logits, config, top_k=TOP_LABELS) -> dict:
    import torch

    multi_label = config.problem_type == "multi_label_classification"
    probabilities = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
    values, indices = probabilities.topk(min(top_k, probabilities.numel()))
    return {config.id2label[int(index)]: float(value) for value, index in zip(values, indices)}


def _median_ms(run, repeats=LATENCY_REPEATS):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = run()
        times.append(time.perf_counter() - start)
    return outputs, 1000.0 * float(np.median(times))


def explore(model, feature_extractor, wave, keep_rate, token_reduction, token_score, pruning_layers,
            drop_padding=False, repeats=LATENCY_REPEATS, keep_mass=None) -> Exploration:
    """Run ``wave`` (1-D, at the extractor's rate) unpruned and at the given settings; the model is restored after.

    ``keep_mass`` runs the per-clip keep policy, ``keep_rate`` being its ceiling and the model's ``min_keep_rate``
    (capped at ``keep_rate``) its floor; without it every layer keeps the fixed rate, whatever the model's config
    says. Not thread-safe on a shared model: :func:`build_app` holds a lock around it.
    """
    floor = model.config.min_keep_rate
    floor = None if keep_mass is None or floor is None else min(floor, float(keep_rate))
    with model.reduction_settings(keep_mass=None, min_keep_rate=None):
        return _explore(model, feature_extractor, wave, keep_rate, token_reduction, token_score, pruning_layers,
                        drop_padding, repeats, keep_mass, floor)


def _explore(model, feature_extractor, wave, keep_rate, token_reduction, token_score, pruning_layers, drop_padding,
             repeats, keep_mass, min_keep_rate):
    import torch

    from .analysis.clusters import fit_value_clusters
    from .analysis.inputs import model_settings
    from .macs import clip_macs, count_macs
    from .selection import kept_counts_per_clip
    from .token_reductions import get_token_reduction
    from .visualization import merged_groups, patch_label_image

    settings = dict(keep_rate=float(keep_rate), token_reduction=token_reduction, token_score=token_score,
                    pruning_layers=list(pruning_layers), drop_padding=bool(drop_padding))
    if keep_mass is not None:
        settings.update(keep_mass=float(keep_mass), min_keep_rate=min_keep_rate)
    input_values = feature_extractor(wave, sampling_rate=feature_extractor.sampling_rate,
                                     return_tensors="pt")["input_values"]
    # transformers' AST extractor returns no frame mask; drop_padding takes the one AudioMAE's extractor computes.
    real_frames = max(1, min(num_fbank_frames(len(wave)), input_values.shape[1]))
    frame_mask = (torch.arange(input_values.shape[1]) < real_frames)[None].long()
    layout = model.patch_layout
    config = model.config
    method = get_token_reduction(token_reduction)
    ranks_patches = method.signal == "score"  # merge pairs tokens by key similarity: no per-patch score

    with model_settings(model, keep_rate=1.0, token_reduction="prune", drop_padding=False):
        unpruned_logits, unpruned_ms = _median_ms(lambda: model(input_values).logits[0], repeats)
        unpruned_gmacs = count_macs(config).total / 1e9
    with model_settings(model, **settings):
        run = lambda: model(input_values, attention_mask=frame_mask if drop_padding else None,  # noqa: E731
                            output_kept_patches=True)
        outputs, pruned_ms = _median_ms(run, repeats)
        reduces = (config.keep_rate < 1.0 or keep_mass is not None) and bool(config.pruning_layers)
        if keep_mass is None:
            pruned_gmacs = count_macs(config, real_frames=real_frames).total / 1e9
        else:  # this clip's own counts
            real_patches = layout.real_patches(frame_mask).sum(dim=1) if drop_padding else None
            pruned_gmacs = clip_macs(model, kept_counts_per_clip(outputs.kept_patches), real_patches).item() / 1e9
    scores = None
    if reduces and token_score == "attention" and ranks_patches:
        # The first reducing layer's score, read off eager attention weights of the unpruned pass (identical up to it).
        with model_settings(model, keep_rate=1.0, token_reduction="prune", drop_padding=False,
                            attn_implementation="eager"):
            attentions = model(input_values, output_attentions=True).attentions
        scores = model.attention_token_scores(attentions[settings["pruning_layers"][0]])[0].float().numpy()

    intensity, variation = (values[0].numpy() for values in layout.patch_statistics(input_values))
    if token_score in ("intensity", "variation") and ranks_patches:
        scores = intensity if token_score == "intensity" else variation
    real = layout.real_patches(frame_mask)[0].numpy()
    try:
        clusters = fit_value_clusters(intensity[real], "intensity", INTENSITY_CLUSTERS).assign(intensity)
    except ValueError:  # a clip too short for five distinct patch intensities
        clusters = None

    num_patches = layout.num_patches
    real_patches = int(real.sum())
    dropped = f", {real_patches} without padding" if drop_padding and real_patches < num_patches else ""
    titles, kept, groups = [f"input: {num_patches} patches{dropped}"], [np.ones(num_patches, bool)], [None]
    tokens = [real_patches if dropped else num_patches]
    kept_patches = source_maps = None
    if reduces and method.records_source_maps:
        source_maps = [source[0].tolist() for source in outputs.source_maps]
        for layer, source in zip(settings["pruning_layers"], outputs.source_maps):
            group = merged_groups(source[0]).numpy()
            tokens.append(int(source[0].max()) + 1)
            titles.append(f"after layer {layer}: {tokens[-1]} tokens, {int(group.max()) + 1} merged groups")
            kept.append(np.ones(num_patches, bool))
            groups.append(group)
    elif reduces:
        kept_patches = [indices[0].tolist() for indices in outputs.kept_patches]
        for layer, indices in zip(settings["pruning_layers"], kept_patches):
            mask = np.zeros(num_patches, bool)
            mask[[index for index in indices if index >= 0]] = True
            fused = ", the fused token holds the rest" if method.added_tokens else ""
            tokens.append(int(mask.sum()))
            titles.append(f"after layer {layer}: {tokens[-1]} patches kept{fused}")
            kept.append(mask)
            groups.append(None)

    spectrogram = input_values[0].T.numpy()  # (mel bins, frames), as both models' patch layouts draw it
    token_image = np.full(spectrogram.shape, -1)
    grid = patch_label_image(torch.arange(num_patches), layout).numpy()
    token_image[: grid.shape[0], : grid.shape[1]] = grid
    return Exploration(
        settings=settings, spectrogram=spectrogram, real_frames=real_frames, stage_titles=titles, kept=kept,
        tokens=tokens, groups=groups, token_image=token_image, kept_patches=kept_patches, source_maps=source_maps,
        unpruned=_probabilities(unpruned_logits, config), pruned=_probabilities(outputs.logits[0], config),
        gmacs={"unpruned": unpruned_gmacs, "pruned": pruned_gmacs},
        latency_ms={"unpruned": unpruned_ms, "pruned": pruned_ms}, intensity=intensity, clusters=clusters,
        score_name=token_score if scores is not None else token_reduction, scores=scores,
    )


@dataclass(frozen=True)
class Geometry:
    """Where the figure draws each spectrogram pixel: panel ``p`` starts at ``p * panel_height`` (title first)."""

    mel_bins: int
    frames: int
    x_scale: int
    y_scale: int

    @property
    def panel_height(self) -> int:
        return TITLE_HEIGHT + self.mel_bins * self.y_scale

    @classmethod
    def of(cls, spectrogram):
        mel_bins, frames = spectrogram.shape
        return cls(mel_bins, frames, max(1, PANEL_WIDTH // frames), max(1, PANEL_HEIGHT // mel_bins))

    def pixel(self, x, y):
        """``(stage, mel bin, frame)`` under figure pixel ``(x, y)``, or ``None`` off the spectrograms."""
        stage, row = divmod(int(y), self.panel_height)
        row -= TITLE_HEIGHT
        frame = int(x) // self.x_scale
        if row < 0 or not 0 <= frame < self.frames:
            return None
        return stage, self.mel_bins - 1 - row // self.y_scale, frame


def draw(exploration: Exploration) -> np.ndarray:
    """The figure as an ``(height, width, 3)`` uint8 image: one panel per stage, frequency up."""
    import matplotlib
    from PIL import Image, ImageDraw

    spectrogram = exploration.spectrogram
    geometry = Geometry.of(spectrogram)
    padding = np.arange(geometry.frames) >= exploration.real_frames
    real = spectrogram[:, ~padding]
    low, high = real.min(), real.max()
    colours = matplotlib.colormaps["magma"]((spectrogram - low) / max(high - low, 1e-6))[..., :3]
    grey = colours.mean(axis=-1, keepdims=True) * 0.35 + 0.55  # dropped: desaturated and light, still readable
    tokens = exploration.token_image
    # Hatching in figure pixels, so the stripes are diagonal whatever the scales.
    height, width = geometry.mel_bins * geometry.y_scale, geometry.frames * geometry.x_scale
    stripes = (np.add.outer(np.arange(height), np.arange(width)) // (HATCH_PERIOD // 2)) % 2 == 0
    tab20 = matplotlib.colormaps["tab20"](np.arange(20))[:, :3]
    panels = []
    for title, kept, groups in zip(exploration.stage_titles, exploration.kept, exploration.groups):
        shown = np.where(((tokens >= 0) & kept[tokens] & ~padding)[..., None], colours, grey)
        pixels = _upscale(shown, geometry)
        hatch = stripes & _upscale(np.broadcast_to(padding, tokens.shape), geometry)
        pixels[hatch] = 0.45
        if groups is not None:
            labels = _upscale(np.where(tokens >= 0, groups[tokens], -1), geometry)
            merged = labels >= 0
            pixels[merged] = 0.7 * pixels[merged] + 0.3 * tab20[labels[merged] % 20]
            edge = _edges(labels) & merged
            pixels[edge] = tab20[labels[edge] % 20]
        panel = np.ones((geometry.panel_height, width, 3))
        panel[TITLE_HEIGHT:] = pixels[::-1]  # frequency up
        image = Image.fromarray((panel * 255).astype(np.uint8))
        ImageDraw.Draw(image).text((4, 3), title, fill=(0, 0, 0))
        panels.append(np.asarray(image))
    return np.concatenate(panels)


def _upscale(image, geometry):
    return np.repeat(np.repeat(image, geometry.y_scale, axis=0), geometry.x_scale, axis=1)


def _edges(labels):
    """Pixels whose label differs from a neighbour's: the outline of every region, drawn on both sides."""
    edge = np.zeros(labels.shape, bool)
    vertical, horizontal = labels[1:] != labels[:-1], labels[:, 1:] != labels[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def _mel_band_hz(first_bin, last_bin, num_mel_bins, sampling_rate):
    """Lower and upper edge frequencies of Kaldi mel bins ``first_bin..last_bin`` (20 Hz to Nyquist)."""
    def mel(hz):
        return 1127.0 * np.log1p(hz / 700.0)

    edges = np.linspace(mel(20.0), mel(sampling_rate / 2), num_mel_bins + 2)
    return tuple(700.0 * np.expm1(edges[[first_bin, last_bin + 2]] / 1127.0))


def describe_patch(exploration: Exploration, model, sampling_rate, x, y) -> str:
    """Markdown about the patch under figure pixel ``(x, y)``: time, mel band, score, intensity cluster, fate."""
    where = Geometry.of(exploration.spectrogram).pixel(x, y)
    if where is None:
        return "Click a patch of a spectrogram."
    stage, mel_bin, frame = where
    token = int(exploration.token_image[mel_bin, frame])
    if token < 0:
        return f"Frame {frame}, mel bin {mel_bin}: no patch reaches here (the patch grid stops short of the edge)."
    import torch

    layout = model.patch_layout
    index = int(layout.frequency_major_index(torch.tensor([token]))[0])
    row, column = divmod(index, layout.num_time_patches)
    first_frame, first_bin = column * layout.time_stride, row * layout.frequency_stride
    last_frame, last_bin = first_frame + layout.patch_size - 1, first_bin + layout.patch_size - 1
    seconds = np.array([first_frame * KALDI_FRAME_SHIFT, last_frame * KALDI_FRAME_SHIFT + KALDI_FRAME_LENGTH]) / sampling_rate
    low_hz, high_hz = _mel_band_hz(first_bin, last_bin, exploration.spectrogram.shape[0], sampling_rate)
    lines = [
        f"**Patch {token}** (frequency row {row}, time column {column}), clicked in panel "
        f"\"{exploration.stage_titles[stage]}\"",
        f"- time: frames {first_frame}-{last_frame}, {seconds[0]:.3f}-{seconds[1]:.3f} s"
        + (" (padding)" if first_frame >= exploration.real_frames else ""),
        f"- mel band: bins {first_bin}-{last_bin}, about {low_hz:.0f}-{high_hz:.0f} Hz",
        f"- intensity (patch mean of the normalised input): {exploration.intensity[token]:.3f}"
        + ("" if exploration.clusters is None else
           f", cluster C{int(exploration.clusters[token]) + 1} of {INTENSITY_CLUSTERS} (1-D k-means over this clip's "
           "real patches)"),
    ]
    if exploration.scores is not None:
        rank = int((exploration.scores > exploration.scores[token]).sum()) + 1
        lines.append(f"- {exploration.score_name} score at the first reducing layer: {exploration.scores[token]:.4g} "
                     f"(rank {rank} of {len(exploration.scores)})")
    elif exploration.source_maps is not None:
        lines.append(f"- {exploration.score_name} ranks no patch: it groups tokens by key similarity")
    fates = []
    for title, kept, groups in zip(exploration.stage_titles[1:], exploration.kept[1:], exploration.groups[1:]):
        if groups is not None:
            fates.append(f"{title.split(':')[0]}: " + (f"merged group {groups[token]}" if groups[token] >= 0 else "own token"))
        else:
            fates.append(f"{title.split(':')[0]}: " + ("kept" if kept[token] else "dropped"))
    if fates:
        lines.append("- " + "; ".join(fates))
    return "\n".join(lines)


def invert_to_audio(spectrogram, feature_extractor, keep=None, iterations=GRIFFIN_LIM_ITERATIONS, seed=0):
    """Audio from a normalised log-mel ``(mel bins, frames)`` spectrogram, ``keep`` (same shape) masking the rest.

    Undo the normalisation and the log, map mel energies back to the linear spectrum with the pseudo-inverse of the
    extractor's mel filterbank, then estimate the phase with Griffin-Lim (scipy STFT, the extractor's 25 ms Hann
    windows every 10 ms) and undo the pre-emphasis. Fine detail inside a mel band and the true phase are lost, so it
    sounds rough: it lets you hear *where* the kept patches are, not what the model hears.
    """
    from scipy.signal import istft, lfilter, stft
    from transformers.audio_utils import mel_filter_bank

    sampling_rate = feature_extractor.sampling_rate
    log_mel = spectrogram * (2 * feature_extractor.std) + feature_extractor.mean
    energies = np.exp(log_mel)
    if keep is not None:
        energies = np.where(keep, energies, MEL_FLOOR)
    filters = mel_filter_bank(num_frequency_bins=FFT_SIZE // 2 + 1, num_mel_filters=spectrogram.shape[0],
                              min_frequency=20, max_frequency=sampling_rate // 2, sampling_rate=sampling_rate,
                              norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)
    power = np.maximum(np.linalg.pinv(filters.T) @ energies, 0.0)
    window = np.hanning(KALDI_FRAME_LENGTH)
    # scipy's STFT divides by the window's sum; the extractor's spectrum is the raw FFT.
    magnitude = np.sqrt(power) / window.sum()
    # Frames start at sample 0 and no partial frame is added, as in the extractor (Kaldi, center=False).
    options = dict(fs=sampling_rate, window=window, nperseg=KALDI_FRAME_LENGTH,
                   noverlap=KALDI_FRAME_LENGTH - KALDI_FRAME_SHIFT, nfft=FFT_SIZE)
    phase = np.exp(2j * np.pi * np.random.default_rng(seed).random(magnitude.shape))
    with warnings.catch_warnings():
        # Only the very first and last samples meet nothing but a Hann window's zero end: they come out as 0.
        warnings.filterwarnings("ignore", "NOLA condition failed")
        for _ in range(iterations):
            _, wave = istft(magnitude * phase, boundary=False, **options)
            _, _, spectrum = stft(wave, boundary=None, padded=False, **options)
            phase = np.exp(1j * np.angle(spectrum))
        _, wave = istft(magnitude * phase, boundary=False, **options)
    return lfilter([1.0], [1.0, -PREEMPHASIS], wave).astype(np.float32)


def _playback(exploration, feature_extractor):
    """The original-length reconstructions of every patch and of the last stage's kept ones, at one common scale."""
    frames = exploration.real_frames
    spectrogram = exploration.spectrogram[:, :frames]
    tokens = exploration.token_image[:, :frames]
    kept = (tokens >= 0) & exploration.kept[-1][tokens]
    everything = invert_to_audio(spectrogram, feature_extractor)
    kept_audio = invert_to_audio(spectrogram, feature_extractor, kept)
    scale = 0.9 / max(float(np.abs(everything).max()), 1e-9)
    rate = feature_extractor.sampling_rate
    return (rate, _pcm16(everything * scale)), (rate, _pcm16(kept_audio * scale))


def _pcm16(wave):
    # Gradio plays 16-bit PCM; converting here keeps its conversion warning off the happy path.
    return (np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16)


def shipped_examples(folder=SHIPPED_EXAMPLES, per_class=EXAMPLES_PER_CLASS) -> list:
    """A few clips per word of the shipped keyword test split, when this checkout has it."""
    if not folder.is_dir():
        return []
    return [str(path) for word in sorted(folder.iterdir()) if word.is_dir()
            for path in sorted(word.glob("*.flac"))[:per_class]]  # fmt: skip


def _parse_layers(text, num_hidden_layers):
    try:
        return [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"pruning layers {text!r}: give 0-based layer numbers, e.g. 3, 6, 9 "
                         f"(the model has {num_hidden_layers} layers).") from None


def build_app(model, feature_extractor, examples=None, title=None):
    """The explorer for ``model`` (a pruned classifier of this package) and its feature extractor, as a ``gr.Blocks``.

    ``examples`` are audio file paths offered under the input. Every request runs under one lock: the pruning
    settings are set on ``model`` for the call and restored, so sessions never see each other's.
    """
    gr = import_gradio()
    from PIL import Image

    from .classify import read_audio
    from .loading import check_pruned_model
    from .scores import TOKEN_SCORES
    from .token_reductions import token_reduction_names

    check_pruned_model(model)
    model.eval()
    config = model.config
    lock = threading.Lock()
    downloads = tempfile.mkdtemp(prefix="hf-token-prune-explorer-")
    rate = feature_extractor.sampling_rate
    layout = model.patch_layout

    def analyse(audio, keep_rate, method, score, layers, drop_padding, keep_mass=1.0):
        if not audio:
            raise gr.Error("Upload or record a clip, or pick an example.")
        try:
            wave = read_audio(audio, rate)
            with lock:
                exploration = explore(model, feature_extractor, wave, keep_rate, method, score,
                                      _parse_layers(layers, config.num_hidden_layers), drop_padding,
                                      keep_mass=keep_mass if keep_mass < 1.0 else None)
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None
        figure = draw(exploration)
        stem = f"{Path(audio).stem}_keep{keep_rate:g}_{method}_{time.monotonic_ns()}"
        json_path, png_path = Path(downloads, f"{stem}.json"), Path(downloads, f"{stem}.png")
        json_path.write_text(json.dumps({"audio": Path(audio).name, **exploration.to_json()}, indent=1))
        Image.fromarray(figure).save(png_path)
        original, kept = _playback(exploration, feature_extractor)
        return (figure, exploration.summary(), exploration.unpruned, exploration.pruned, (rate, _pcm16(wave)), original, kept,
                str(json_path), str(png_path), exploration, "Click a patch of a spectrogram.")

    def select(exploration, event: gr.SelectData):
        if exploration is None:
            return "Analyse a clip first."
        return describe_patch(exploration, model, rate, *event.index)

    heading = title or getattr(config, "_name_or_path", "") or type(model).__name__
    with gr.Blocks(title="hf-token-prune explorer") as app:
        gr.Markdown(
            f"## Which patches does it keep? `{heading}`\n{type(model).__name__}: {layout.num_patches} patches "
            f"({layout.num_frequency_patches} frequency x {layout.num_time_patches} time), {config.num_hidden_layers} "
            f"layers, {config.num_labels} labels. Change a control and the model runs again."
        )
        exploration = gr.State()
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip", elem_id="clip")
                if examples:
                    gr.Examples([[path] for path in examples], inputs=[audio], examples_per_page=10, label="Examples")
                keep_rate = gr.Slider(0.05, 1.0, value=config.keep_rate if config.keep_rate < 1.0 else 0.5, step=0.05,
                                      label="Keep rate", elem_id="keep_rate")
                # a model calibrated to a per-clip keep mass opens at it
                keep_mass = gr.Slider(0.01, 1.0, value=config.keep_mass or 1.0, step=0.01, elem_id="keep_mass",
                                      label="Keep mass per clip (1: off, every clip at the keep rate; prune only)")
                method = gr.Radio(list(token_reduction_names()), value=config.token_reduction, label="Method")
                score = gr.Dropdown(list(TOKEN_SCORES), value=config.token_score, label="Token score")
                layers = gr.Textbox(", ".join(map(str, config.pruning_layers)), label="Pruning layers (0-based)")
                drop_padding = gr.Checkbox(value=config.drop_padding, label="Drop padding (prune only)")
            with gr.Column(scale=3):
                gr.Markdown("Kept patches per stage: dropped greyed, merged groups outlined, padding hatched. Click a "
                            "patch.")
                figure = gr.Image(show_label=False, type="numpy", interactive=False, elem_id="figure", format="png")
                patch = gr.Markdown("Click a patch of a spectrogram.", elem_id="patch")
                with gr.Row():
                    unpruned = gr.Label(num_top_classes=TOP_LABELS, label="Unpruned", elem_id="unpruned")
                    pruned = gr.Label(num_top_classes=TOP_LABELS, label="Pruned", elem_id="pruned")
                summary = gr.Markdown(elem_id="summary")
                with gr.Row():
                    original = gr.Audio(label="Original", interactive=False)
                    inverted = gr.Audio(label="Every patch, inverted (Griffin-Lim)", interactive=False)
                    kept_audio = gr.Audio(label="Only the kept patches, inverted (Griffin-Lim)", interactive=False)
                with gr.Row():
                    json_file = gr.File(label="Kept indices / source maps (JSON)")
                    png_file = gr.File(label="Figure (PNG)")
        inputs = [audio, keep_rate, method, score, layers, drop_padding, keep_mass]  # appended: older clients still fit
        outputs = [figure, summary, unpruned, pruned, original, inverted, kept_audio, json_file, png_file,
                   exploration, patch]
        gr.on([audio.change, keep_rate.release, keep_mass.release, method.change, score.change, layers.submit,
               drop_padding.change],
              analyse, inputs, outputs, api_name="predict", trigger_mode="always_last")
        figure.select(select, exploration, patch, api_name=False)
    return app


def load_app(model_name_or_path, examples=None):
    """:func:`build_app` on a model folder (strictly loaded, as every command does) and its feature extractor."""
    from .loading import load_pruned_model

    model, feature_extractor = load_pruned_model(model_name_or_path)
    return build_app(model, feature_extractor, examples=examples, title=Path(model_name_or_path).name)


SPACE_APP = '''"""The hf-token-prune explorer on the model in ./model, as a Hugging Face Space (written by
`hf-token-prune explore --write_space`)."""

from pathlib import Path

from hf_token_prune.explorer import load_app


here = Path(__file__).parent
demo = load_app(here / "model", examples=sorted(str(path) for path in (here / "examples").glob("*")))

if __name__ == "__main__":
    demo.launch()
'''


def write_space(model_name_or_path, space_dir, examples=()):
    """A Space folder: the model under ``model/``, ``examples/``, ``app.py``, ``requirements.txt``, ``packages.txt``
    (ffmpeg, which reads the audio) and a ``README.md`` whose front matter declares the Gradio SDK."""
    from importlib.metadata import version

    gr = import_gradio()
    space = Path(space_dir)
    if space.exists() and any(space.iterdir()):
        raise ValueError(f"--write_space {space_dir}: the folder is not empty; give a new or empty one.")
    shutil.copytree(model_name_or_path, space / "model", dirs_exist_ok=True)
    (space / "examples").mkdir()
    for path in examples:
        shutil.copy2(path, space / "examples" / Path(path).name)
    (space / "app.py").write_text(SPACE_APP)
    (space / "requirements.txt").write_text(f"hf-token-prune[explorer]=={version('hf-token-prune')}\n")
    (space / "packages.txt").write_text("ffmpeg\n")
    (space / "README.md").write_text(
        f"---\ntitle: hf-token-prune explorer\nsdk: gradio\nsdk_version: {gr.__version__}\napp_file: app.py\n---\n\n"
        f"Which spectrogram patches `{Path(model_name_or_path).name}` keeps when it prunes, on your own audio.\n"
    )
    return space


__all__ = ["Exploration", "build_app", "describe_patch", "draw", "explore", "import_gradio", "invert_to_audio",
           "load_app", "write_space"]

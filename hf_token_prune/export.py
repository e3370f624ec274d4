"""ONNX export of a pruned audio classifier, checked against PyTorch, and a small ONNX Runtime runner for it.

    hf-token-prune export --model_name_or_path outputs/demo --keep_rate 0.7 --output_dir demo-onnx

Nothing else exports the pruned graphs (optimum's exporter, optimum-onnx, knows only stock AST and needs
transformers < 4.58); stock AST checkpoints export here too (they load as PrunedAST; at keep rate 1.0 that is the
same model). The output folder holds ``model.onnx`` (input ``input_values`` with a dynamic batch axis; output
``logits`` and, with ``--output_kept_patches``, ``kept_patches_0`` ... one per pruning layer), ``config.json`` (with
the exported keep rate) and the feature extractor; ``--int8`` adds ``model.int8.onnx``, ONNX Runtime's dynamic int8
quantisation of it. Pruning is baked in: the keep rate cannot change after export.

Run it on a waveform without PyTorch's model code::

    from hf_token_prune.export import OnnxAudioClassifier
    classifier = OnnxAudioClassifier("demo-onnx")
    classifier(waveform)   # [{"label": "yes", "score": 0.97}, ...], like pipeline("audio-classification")

or by hand, with nothing but transformers' feature extractor and onnxruntime::

    extractor = AutoFeatureExtractor.from_pretrained("demo-onnx", trust_remote_code=True)
    session = onnxruntime.InferenceSession("demo-onnx/model.onnx")
    (logits,) = session.run(["logits"], dict(extractor(waveform, sampling_rate=16000, return_tensors="np")))

``--layout transformers.js`` writes instead the folder transformers.js (npm ``@huggingface/transformers``) loads for
``pipeline("audio-classification", folder)``: ``config.json`` and ``preprocessor_config.json`` under the stock AST
names, ``onnx/model.onnx`` and its int8 ``onnx/model_quantized.onnx``. transformers.js computes the features itself,
with its own port of ``ASTFeatureExtractor``, so the export refuses a model whose extractor it would not reproduce
(the minimum padding of ``AudioMAEFeatureExtractor``, unless ``--pad_in_graph``; another sampling rate; dither;
``drop_padding``'s frame mask).

onnx, onnxruntime and onnxscript come with ``pip install "hf-token-prune[export]"``; they are imported only here, and
only when used. The remote code saved next to a model never imports them.
"""

import contextlib
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checks import check_model, names_local_path
from .errors import one_line
from .feature_extraction_audiomae import check_sampling_rate
from .files import check_output_dir, same_or_nested, written_whole


ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model.int8.onnx"
INPUT_NAME = "input_values"
KEPT_PATCHES_NAME = "kept_patches_{}"  # one output per pruning layer
DEFAULT_ATOL = 1e-4  # max |ONNX Runtime - PyTorch| over the logits that export_onnx accepts
LAYOUTS = ("onnx", "transformers.js")
# The files transformers.js loads for dtype "fp32" (its default in Node) and "q8" (its default in the browser).
WEB_ONNX_FILE, WEB_INT8_ONNX_FILE = "onnx/model.onnx", "onnx/model_quantized.onnx"
# transformers.js's ASTFeatureExtractor frames audio in 400-sample windows every 160 samples: Kaldi's 25 ms / 10 ms
# only at this rate.
WEB_SAMPLING_RATE = 16000
# How far from the normalised value of a zero fbank frame a padding frame may lie: transformers.js pads with the mel
# floor (1.2e-7) where transformers pads with 0, 1e-8 apart after normalisation; real audio is never within this of
# 0 in every mel bin of a frame.
PADDING_ATOL = 1e-5
EXPORT_EXTRA = 'pip install "hf-token-prune[export]"'

logger = logging.getLogger(__name__)


def _require(module_name: str):
    """Import onnx / onnxruntime / onnxscript lazily, with the install command if missing."""
    try:
        return __import__(module_name)
    except ImportError:
        raise ImportError(f"ONNX export needs {module_name}: {EXPORT_EXTRA}") from None


def pad_with_minimum(input_values: torch.Tensor, zero_padding_value: float) -> torch.Tensor:
    """Features padded as ``AudioMAEFeatureExtractor(fbank_padding="minimum")`` pads them, from features padded with
    zero fbank frames (``ASTFeatureExtractor``'s, transformers.js's): the trailing frames that equal
    ``zero_padding_value`` (the normalised 0) in every mel bin are set to the clip's minimum over its other frames.
    Normalisation is monotonic, so that minimum is the normalised minimum fbank value the extractor pads with."""
    is_zero = (input_values - zero_padding_value).abs().amax(-1) <= PADDING_ATOL
    frames = torch.arange(input_values.shape[1], device=input_values.device)
    last_real = torch.where(is_zero, -1, frames).amax(-1, keepdim=True)
    # A clip without one full window (which the Python extractor refuses) stays as it is, not all infinite.
    padding = ((frames > last_real) & (last_real >= 0)).unsqueeze(-1)
    minimum = input_values.masked_fill(padding, torch.inf).amin((1, 2), keepdim=True)
    return torch.where(padding, minimum, input_values)


class _LogitsAndKeptPatches(nn.Module):
    """The exported graph: ``input_values -> logits[, kept_patches_0, ...]`` as a flat tuple of tensors."""

    def __init__(self, model: nn.Module, output_kept_patches: bool, zero_padding_value: float | None = None):
        super().__init__()
        self.model = model
        self.output_kept_patches = output_kept_patches
        self.zero_padding_value = zero_padding_value

    def forward(self, input_values):
        if self.zero_padding_value is not None:
            input_values = pad_with_minimum(input_values, self.zero_padding_value)
        # Only pruned models know output_kept_patches; without it any audio classifier (stock AST too) exports.
        kwargs = {"output_kept_patches": True} if self.output_kept_patches else {}
        outputs = self.model(input_values, **kwargs)
        return (outputs.logits, *(outputs.kept_patches if self.output_kept_patches else ()))


def output_names(model, output_kept_patches: bool) -> list[str]:
    """Names of the exported outputs: ``logits``, then one ``kept_patches_i`` per pruning layer if asked."""
    layers = model.config.pruning_layers if output_kept_patches else ()
    return ["logits"] + [KEPT_PATCHES_NAME.format(i) for i in range(len(layers))]


@dataclass(frozen=True)
class OnnxCheck:
    """How ONNX Runtime's outputs compared with PyTorch's on the check inputs (one entry per batch size)."""

    batch_sizes: tuple[int, ...]
    max_abs_diff: tuple[float, ...]  # over the logits
    kept_patches_equal: tuple[bool, ...]  # every kept_patches output identical (True when none is exported)


@contextlib.contextmanager
def _quiet_exporter():
    # The exporter logs a warning per torchvision op it cannot register (torchvision is not a dependency here), its
    # graph optimiser one per constant output it leaves alone (kept_patches at keep rate 1.0), and torch.export trips
    # a pytree deprecation warning inside torch itself: noise on the happy path. An --opset it cannot convert to is
    # logged with a traceback by the version converter; export_onnx reports it in one line instead.
    quiet = {"torch.onnx._internal.exporter._registration": logging.ERROR, "onnx_ir": logging.ERROR,
             "torch.onnx._internal.exporter._compat": logging.ERROR, "onnxscript.version_converter": logging.CRITICAL}
    loggers = [logging.getLogger(name) for name in quiet]
    levels = [logger.level for logger in loggers]
    for logger, level in zip(loggers, quiet.values()):
        logger.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(
    model: nn.Module,
    path,
    example_input: torch.Tensor | None = None,
    *,
    output_kept_patches: bool = False,
    dynamic_batch: bool = True,
    opset_version: int | None = None,
    check: bool = True,
    atol: float = DEFAULT_ATOL,
    zero_padding_value: float | None = None,
) -> OnnxCheck | None:
    """Export a pruned classifier to ``path`` (one ``.onnx`` file) and check ONNX Runtime against PyTorch.

    Args:
        model: a ``PrunedASTForAudioClassification`` / ``PrunedAudioMAEForAudioClassification``; its current keep
            rate, token score and pruning layers are baked into the graph.
        example_input: ``(batch, max_length, num_mel_bins)`` features to trace and check with; default: standard
            normal features (the models' inputs are normalised) for a batch of 2.
        output_kept_patches: also export ``kept_patches_i``, one ``(batch, num_kept)`` int64 output per pruning
            layer (see the models' ``kept_patches``).
        dynamic_batch: make the batch axis of every input and output dynamic (otherwise it is the example's).
        check: validate the graph (``onnx.checker``), run it in ONNX Runtime on the example and, with a dynamic
            batch, on its first sample alone, and raise ``ValueError`` if any logit differs by more than ``atol``
            from PyTorch's or any kept patch differs.
        zero_padding_value: the normalised value of a zero fbank frame; given, the graph first re-pads the features
            with each clip's minimum (:func:`pad_with_minimum`), so a model trained with minimum padding runs on
            zero-padded features. The default example then ends its first clip with such padding.

    Returns the :class:`OnnxCheck` (``None`` without ``check``).
    """
    _require("onnxscript")  # torch's ONNX exporter needs it; fail with the install command, not deep in torch
    config = model.config
    if example_input is None:
        example_input = torch.randn(2, config.max_length, config.num_mel_bins)
        if zero_padding_value is not None:
            example_input[0, config.max_length // 2 :] = zero_padding_value
    if dynamic_batch and example_input.shape[0] < 2:
        # torch.export specialises a dimension of size 1 to a constant, so the batch axis would not stay dynamic.
        example_input = example_input.expand(2, -1, -1)
    model = model.eval()
    graph = _LogitsAndKeptPatches(model, output_kept_patches, zero_padding_value).eval()
    names = output_names(model, output_kept_patches)
    dynamic_shapes = {INPUT_NAME: {0: torch.export.Dim("batch")}} if dynamic_batch else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            graph,
            (example_input,),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset_version,
            verbose=False,
        )
        if dynamic_batch and isinstance(program.model.graph.inputs[0].shape[0], int):
            # torch.onnx.export silently falls back to a fixed batch size when torch.export cannot keep the axis
            # dynamic; torch.export itself names the code that specialised it.
            torch.export.export(graph, (example_input,), dynamic_shapes=dynamic_shapes)
            raise ValueError(f"the batch axis of {type(model).__name__} could not be exported as dynamic")
    written = program.model.opset_imports.get("")
    if opset_version is not None and written != opset_version:
        # torch's exporter falls back to its own opset when it cannot convert to the one asked for
        raise ValueError(
            f"--opset {opset_version}: torch's ONNX exporter cannot convert this model to it (it produced opset "
            f"{written}); choose {written} or newer, or leave --opset out."
        )
    program.save(path)  # one self-contained file unless the weights pass protobuf's 2 GB (a ViT-B is ~350 MB)
    if not check:
        return None

    onnx = _require("onnx")
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        raise ValueError(
            f"the exported graph is not valid ONNX at opset {written} ({one_line(error)}): choose an older --opset, or "
            "leave it out."
        ) from None
    session = onnx_session(path)
    checks = [example_input] + ([example_input[:1]] if dynamic_batch else [])
    batch_sizes, diffs, equal = [], [], []
    for inputs in checks:
        with torch.no_grad():
            expected = [tensor.numpy() for tensor in graph(inputs)]
        actual = session.run(names, {INPUT_NAME: inputs.numpy()})
        batch_sizes.append(inputs.shape[0])
        diffs.append(float(np.abs(actual[0] - expected[0]).max()))
        equal.append(all(np.array_equal(a, e) for a, e in zip(actual[1:], expected[1:])))
    result = OnnxCheck(tuple(batch_sizes), tuple(diffs), tuple(equal))
    if max(diffs) > atol or not all(equal):
        raise ValueError(
            f"ONNX Runtime disagrees with PyTorch on {path}: max |logits difference| {max(diffs):.2e} "
            f"(allowed {atol:.0e}), kept patches identical per batch size {dict(zip(batch_sizes, equal))}."
        )
    return result


def quantize_int8(path, output_path):
    """ONNX Runtime's dynamic int8 quantisation of ``path`` (weights int8 ahead of time, activations per call)."""
    _require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it advises on the root logger to pre-process first, which dynamic quantisation skips
    try:
        quantize_dynamic(str(path), str(output_path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return Path(output_path)


def onnx_session(path, num_threads: int | None = None):
    """An ONNX Runtime CPU session for ``path``; ``num_threads`` sets its intra-op threads (default: ORT's)."""
    onnxruntime = _require("onnxruntime")
    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxAudioClassifier:
    """An exported folder as a classifier: waveform -> feature extractor -> ONNX Runtime -> labelled scores.

    Mirrors ``pipeline("audio-classification")``: the same features, softmax (sigmoid for a multi-label config) and
    ``top_k`` scores as ``{"label", "score"}`` dicts, best first.
    """

    def __init__(self, folder, num_threads: int | None = None, onnx_file: str = ONNX_FILE):
        from transformers import AutoFeatureExtractor

        folder = Path(folder)
        self.config = json.loads((folder / "config.json").read_text())
        self.feature_extractor = AutoFeatureExtractor.from_pretrained(folder)
        self.session = onnx_session(folder / onnx_file, num_threads)
        self.labels = {int(index): label for index, label in self.config.get("id2label", {}).items()}
        self.multi_label = self.config.get("problem_type") == "multi_label_classification"

    def features(self, audio, sampling_rate: int | None = None) -> np.ndarray:
        """``input_values`` for one waveform (1-D array), a list of them, or an audio file path (decoded by ffmpeg)."""
        rate = self.feature_extractor.sampling_rate
        if isinstance(audio, (str, os.PathLike)):
            from transformers.pipelines.audio_utils import ffmpeg_read

            audio, sampling_rate = ffmpeg_read(Path(audio).read_bytes(), rate), rate
        check_sampling_rate(sampling_rate, rate)  # a stock AST extractor's own error does not name the fix
        return self.feature_extractor(audio, sampling_rate=rate, return_tensors="np")[INPUT_NAME]

    def logits(self, input_values: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {INPUT_NAME: np.asarray(input_values, dtype=np.float32)})[0]

    def __call__(self, audio, sampling_rate: int | None = None, top_k: int | None = 5):
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k={top_k}: give at least 1 (or None for every class).")
        batched = isinstance(audio, (list, tuple))
        logits = self.logits(self.features(audio, sampling_rate))
        if self.multi_label:
            scores = 1 / (1 + np.exp(-logits))
        else:
            scores = np.exp(logits - logits.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
        top_k = scores.shape[-1] if top_k is None else min(top_k, scores.shape[-1])
        results = [
            [{"score": float(row[i]), "label": self.labels.get(int(i), str(i))} for i in np.argsort(-row)[:top_k]]
            for row in scores
        ]
        return results if batched else results[0]


def web_zero_padding_value(model_config, feature_extractor, pad_in_graph: bool = False) -> float | None:
    """Refuse (``ValueError``, one line) a model whose features transformers.js's ``ASTFeatureExtractor`` would compute
    differently; return the normalised zero-padding value for :func:`export_onnx` if the graph must re-pad with the
    minimum (``pad_in_graph`` and a minimum-padding extractor), else ``None``.

    transformers.js reads ``sampling_rate``, ``num_mel_bins``, ``max_length``, ``do_normalize``, ``mean`` and ``std``
    from the config and hard-codes the rest of transformers' numpy Kaldi fbank (400-sample Hann window, 160-sample hop,
    512-point FFT, pre-emphasis 0.97, DC removal, no dither), pads with zero fbank frames and returns no mask.
    """
    from transformers import ASTFeatureExtractor

    name = type(feature_extractor).__name__
    if not isinstance(feature_extractor, ASTFeatureExtractor):
        raise ValueError(
            f"transformers.js computes AST's Kaldi fbank features, not {name}'s: export a model trained with "
            "ASTFeatureExtractor or AudioMAEFeatureExtractor, or use --layout onnx and compute the features yourself."
        )
    if feature_extractor.sampling_rate != WEB_SAMPLING_RATE:
        raise ValueError(
            f"the feature extractor takes {feature_extractor.sampling_rate} Hz audio, but transformers.js's AST "
            f"extractor frames audio as Kaldi does only at {WEB_SAMPLING_RATE} Hz (400-sample windows, 160-sample "
            f"hop): fine-tune at {WEB_SAMPLING_RATE} Hz, or use --layout onnx."
        )
    if getattr(feature_extractor, "dither", 0.0):
        raise ValueError(
            f"the feature extractor dithers (dither={feature_extractor.dither}), transformers.js's AST extractor does "
            "not: fine-tune with dither=0, or use --layout onnx."
        )
    if getattr(model_config, "drop_padding", False):
        raise ValueError(
            "the model drops padding patches by the extractor's frame mask (drop_padding=True), which "
            "transformers.js's AST extractor does not return, so the web model would keep them: fine-tune without "
            "--drop_padding, or use --layout onnx."
        )
    if getattr(feature_extractor, "fbank_padding", "zero") == "zero":
        return None
    if not pad_in_graph:
        raise ValueError(
            "the feature extractor pads short clips with the clip's minimum fbank value (fbank_padding='minimum'), "
            "transformers.js pads with 0, which silently changes predictions (the demo model: accuracy 0.863 -> "
            "0.357): export with --pad_in_graph (the graph re-pads with the minimum), or fine-tune with "
            "--fbank_padding zero."
        )
    return float(feature_extractor.normalize(0.0)) if feature_extractor.do_normalize else 0.0


def _save_web_configs(model_config, feature_extractor, output_dir: Path):
    """``config.json`` and ``preprocessor_config.json`` under the stock AST names transformers.js knows (it picks its
    model class by ``model_type`` and its extractor by ``feature_extractor_type``). The model class only runs the ONNX
    graph, so an exported AudioMAE takes it too; ``exported_model_type`` says what the graph is."""
    from transformers import ASTConfig, ASTFeatureExtractor

    config = model_config.to_dict()
    config.pop("auto_map", None)  # the remote code is not in this folder
    config.update(
        model_type=ASTConfig.model_type,
        architectures=["ASTForAudioClassification"],
        exported_model_type=model_config.model_type,
    )
    (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    settings = ("feature_size", "sampling_rate", "num_mel_bins", "max_length", "padding_value", "do_normalize", "mean",
                "std")  # fmt: skip
    ASTFeatureExtractor(**{key: getattr(feature_extractor, key) for key in settings}).save_pretrained(output_dir)


def export_pretrained(
    model_name_or_path,
    output_dir,
    keep_rate: float | None = None,
    output_kept_patches: bool = False,
    int8: bool = False,
    overwrite: bool = False,
    layout: str = "onnx",
    pad_in_graph: bool = False,
    **kwargs,
) -> OnnxCheck:
    """Load a saved pruned model (or a stock AST checkpoint), export it with :func:`export_onnx`, and write
    ``model.onnx``, ``config.json`` and the feature extractor to ``output_dir``; with ``int8`` also
    ``model.int8.onnx`` (:func:`quantize_int8`). ``kwargs`` go to ``export_onnx``. The folder appears only when
    complete; a non-empty one is refused unless ``overwrite`` (then replaced whole), and so is the source folder.

    ``layout="transformers.js"`` writes the folder transformers.js loads instead: ``onnx/model.onnx``,
    ``onnx/model_quantized.onnx`` (int8, always) and the configs under the stock AST names, after
    :func:`web_zero_padding_value` has checked that transformers.js reproduces the features (``pad_in_graph`` lets a
    minimum-padding model through, re-padding in the graph)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is invalid: choose one of {', '.join(LAYOUTS)}.")
    if pad_in_graph and layout != "transformers.js":
        raise ValueError("pad_in_graph is for layout='transformers.js', whose extractor pads with 0: drop it.")
    from .loading import load_pruned_model

    folder = Path(model_name_or_path).expanduser()
    if names_local_path(str(model_name_or_path)):
        if not folder.is_dir():
            raise ValueError(f"no such folder: {model_name_or_path} (give a folder saved with save_pretrained)")
        if not (folder / "config.json").is_file():
            raise ValueError(f"no config.json in {model_name_or_path}: not a folder saved with save_pretrained")
        if same_or_nested(folder, output_dir):
            raise ValueError(
                f"--output_dir {output_dir}: it is or holds or lies in the source model folder {model_name_or_path}, "
                "which the export must not change; choose a folder outside it."
            )
    else:  # a Hub id: one not in the cache while offline is said so, not a connection error
        check_model(str(model_name_or_path), needs=("config",))
    check_output_dir(output_dir, overwrite)
    model, feature_extractor = load_pruned_model(model_name_or_path)
    if keep_rate is not None:
        model.set_keep_rate(keep_rate)
    zero_padding_value = None
    if layout == "transformers.js":
        zero_padding_value = web_zero_padding_value(model.config, feature_extractor, pad_in_graph)
        if model.config.problem_type == "multi_label_classification":
            logger.warning(
                "transformers.js's audio-classification pipeline scores with a softmax, not this multi-label model's "
                "sigmoid: its ranking is right, its scores are not per-class probabilities (take a sigmoid of the "
                "model's logits for those)."
            )
    with written_whole(output_dir, overwrite) as staging:
        if layout == "transformers.js":
            check = export_onnx(
                model,
                staging / WEB_ONNX_FILE,
                output_kept_patches=output_kept_patches,
                zero_padding_value=zero_padding_value,
                **kwargs,
            )
            quantize_int8(staging / WEB_ONNX_FILE, staging / WEB_INT8_ONNX_FILE)
            _save_web_configs(model.config, feature_extractor, staging)
        else:
            check = export_onnx(model, staging / ONNX_FILE, output_kept_patches=output_kept_patches, **kwargs)
            if int8:
                quantize_int8(staging / ONNX_FILE, staging / INT8_ONNX_FILE)
            model.config.save_pretrained(staging)
            feature_extractor.save_pretrained(staging)
    return check


if __name__ == "__main__":  # `python -m hf_token_prune.export`, as before the command had its own module
    from .commands.export import main

    sys.exit(main())

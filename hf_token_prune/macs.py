"""Multiply-accumulates (MACs) of pruned and unpruned AST / AudioMAE models, counted from the config.

    python -m hf_token_prune.macs --model vit-b --keep_rates 1.0,0.9,0.8,0.7,0.6,0.5,0.4 --max_length 128,512,1024
    python -m hf_token_prune.macs --table2              # the paper's Table II beside ours, with the difference
    python -m hf_token_prune.macs --model path/to/checkpoint --verify   # also count the real forward
    python -m hf_token_prune.macs --clip_seconds 2,5 --max_length 1024  # short clips, padding dropped

Counting convention (the one under which the paper's Table II is reproduced to 0.1 G):

* One MAC is one multiply-add of a matrix product: a linear layer mapping ``n`` tokens from ``d_in`` to ``d_out``
  features costs ``n * d_in * d_out``; biases, LayerNorm, GELU, softmax, residual additions, pooling, top-k and
  gathers cost nothing. This is also what ``torch.utils.flop_counter.FlopCounterMode`` counts (its FLOPs are
  2 x MACs), so the analytic count can be checked against a real forward (:func:`count_forward_macs`).
* Patch embedding: ``patches * patch_size**2 * hidden`` (a one-channel convolution).
* Each transformer layer with ``Na`` tokens in its attention and ``Nm`` in its MLP (``Nm < Na`` only in a pruning
  layer, which drops tokens between the two): ``4 * Na * D**2`` (query, key, value, output projections)
  ``+ 2 * Na**2 * D`` (``QK^T`` and attention x ``V``) ``+ 2 * Nm * D * intermediate`` (the MLP;
  ``8 * Nm * D**2`` for ViT-B). Token counts include the extra tokens (AST: CLS and distillation, AudioMAE: CLS),
  which are never pruned; patch tokens left after each pruning layer follow the models' own ceil rule
  (:func:`hf_token_prune.selection.kept_token_counts`).
* Token scoring: with eager attention the score is read from the attention weights (no MACs). With a fused
  attention (SDPA, the default) the weights never exist: an AST pruning layer recomputes the CLS row of ``QK^T``
  (``Na * D``, counted separately); an AudioMAE pruning layer computes its attention itself, chunked, and reads the
  score off the same probabilities, so its scoring costs no MACs beyond the attention's own.
* Token reduction beyond pruning (``token_reduction``): **fuse** adds one token (EViT's fused token) to every layer
  from the first fusing layer's MLP on, and forms it as one weighted sum over the layer's patch tokens
  (``patches * D``); **merge** compares the keys of set A with set B in every bipartite round (``|A| * |B| *
  head_dim``, the head-mean keys; a keep rate below 0.5 needs a second round) and needs no token score. Merging,
  sizes and source maps are ``scatter_add`` / gathers (no MACs). Counted as ``token_reduction``.
* Classifier: ``hidden * num_labels``. Counted separately.
* A clip shorter than the window (``real_frames``) costs less only when its padding is dropped (``drop_padding``):
  the patch embedding still runs on the whole input, the layers on the real patches alone, every time step whose
  first frame is real (a patch is padding when all its frames are): ``min(time_patches, ceil(real_frames /
  time_stride))`` times the frequency patches.

Table II of the paper counts the patch embedding and the layers of a ViT-B with **one** extra token (the paper gives
one table for both models), without classifier and scoring: :attr:`MacCount.paper_convention` with
``num_extra_tokens=1``. AST really carries two extra tokens, which adds up to 0.1 G (0.05 G at 64 patches).
"""

import argparse
import itertools
import os
import sys
from dataclasses import dataclass, replace

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from .errors import command
from .patch_layout import PatchLayout
from .checks import parse_keep_rates
from .families import model_family
from .pruning_config import check_keep_rate, default_pruning_layers, validate_drop_padding
from .selection import fewest_kept_tokens, kept_token_counts
from .token_reductions import get_token_reduction, token_reduction_names

# Paper Table II: GMACs of ViT-B at 64 / 256 / 512 patches (Speech Commands, ESC-50, AudioSet/VoxCeleb clip lengths).
TABLE_II_KEEP_RATES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
TABLE_II = {
    64: (5.6, 4.9, 4.30, 3.7, 3.3, 2.8, 2.5),
    256: (23.1, 20.0, 17.3, 15.0, 13.1, 11.4, 10.0),
    512: (48.6, 41.8, 36.0, 31.1, 27.1, 23.7, 20.8),
}
TABLE_II_TOLERANCE = 0.1  # GMACs; the paper prints one decimal


@dataclass(frozen=True)
class ModelShape:
    """The numbers a MAC count needs from a config, whichever model family it describes."""

    layout: PatchLayout  # the family's patch geometry at the counted input length
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    num_hidden_layers: int
    num_extra_tokens: int
    num_labels: int
    pruning_layers: tuple[int, ...]
    token_score: str
    token_reduction: str
    scoring_costs_macs: bool  # the family computes its attention score beside a fused kernel (see families.py)

    @property
    def num_patches(self) -> int:
        return self.layout.num_patches


@dataclass(frozen=True)
class MacCount:
    """MACs of one forward pass, split by where they are spent (all integers, for ``batch_size`` inputs)."""

    patch_embedding: int
    attention_projections: int
    attention_matmuls: int
    mlp: int
    token_scoring: int
    token_reduction: int
    classifier: int
    tokens_per_layer: tuple[tuple[int, int], ...]  # (tokens in attention, tokens in MLP) of each layer, per sample
    kept_patches: tuple[int, ...]  # patch tokens left after each pruning layer

    @property
    def layers(self) -> int:
        return self.attention_projections + self.attention_matmuls + self.mlp

    @property
    def paper_convention(self) -> int:
        """Patch embedding and transformer layers only: what the paper's Table II counts."""
        return self.patch_embedding + self.layers

    @property
    def total(self) -> int:
        return self.paper_convention + self.token_scoring + self.token_reduction + self.classifier


def _shape_of(config, max_length=None) -> ModelShape:
    family = model_family(config)
    # The family's pruned config states the geometry; a stock config has the same fields.
    layout = family.config_class.patch_layout(config, max_length)
    if layout.num_time_patches < 1 or layout.num_frequency_patches < 1:
        raise ValueError(
            f"max_length={config.max_length if max_length is None else max_length} frames x num_mel_bins="
            f"{config.num_mel_bins} is smaller than one {config.patch_size}x{config.patch_size} patch: use at least "
            f"{config.patch_size} frames."
        )
    # A stock AST config has no pruning fields: count it as PrunedAST would run it.
    pruning_layers = getattr(config, "pruning_layers", None)
    if pruning_layers is None:
        pruning_layers = default_pruning_layers(config.num_hidden_layers)
    return ModelShape(
        layout=layout,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_extra_tokens=family.config_class.num_extra_tokens,
        num_labels=getattr(config, "num_labels", 0),
        pruning_layers=tuple(pruning_layers),
        token_score=getattr(config, "token_score", "attention"),
        token_reduction=getattr(config, "token_reduction", "prune"),
        scoring_costs_macs=family.scoring_costs_macs,
    )


def count_macs(
    config,
    keep_rate: float | None = None,
    max_length: int | None = None,
    batch_size: int = 1,
    attn_implementation: str | None = None,
    num_extra_tokens: int | None = None,
    token_reduction: str | None = None,
    real_frames: int | None = None,
    drop_padding: bool | None = None,
) -> MacCount:
    """Analytic MACs of a forward pass of the model ``config`` describes (see the module docstring for the rules).

    Args:
        config: an `ASTConfig`, `PrunedASTConfig` or `PrunedAudioMAEConfig` (or a preset from :func:`preset_config`).
        keep_rate: defaults to ``config.keep_rate`` (1.0 for a stock AST config).
        max_length: input frames; defaults to ``config.max_length``.
        batch_size: inputs per forward; every sample keeps the same number of tokens.
        attn_implementation: ``"sdpa"`` / ``"eager"``; decides whether attention scores cost MACs (see above).
            Defaults to the config's, else ``"sdpa"`` (transformers' default).
        num_extra_tokens: override the family's count (the paper's Table II uses 1 for both models).
        token_reduction: ``"prune"``, ``"fuse"`` or ``"merge"``; defaults to the config's (``"prune"``).
        real_frames: frames of the clip itself, the rest of the input being padding (default: all of them); every
            sample of the batch has that many (a mixed batch runs at its longest clip's).
        drop_padding: count the forward that drops the padding patches; defaults to the config's (``False`` for a
            stock AST config). Without it ``real_frames`` changes nothing: padding goes through every layer.
    """
    shape = _shape_of(config, max_length)
    frames = config.max_length if max_length is None else max_length
    if real_frames is not None and not (isinstance(real_frames, int) and 1 <= real_frames <= frames):
        raise ValueError(f"real_frames={real_frames!r} is invalid: give the clip's frames, from 1 to {frames}.")
    drop_padding = getattr(config, "drop_padding", False) if drop_padding is None else drop_padding
    if num_extra_tokens is not None:
        shape = replace(shape, num_extra_tokens=num_extra_tokens)
    if token_reduction is not None:
        shape = replace(shape, token_reduction=token_reduction)
    method = get_token_reduction(shape.token_reduction)
    keep_rate = check_keep_rate(getattr(config, "keep_rate", 1.0) if keep_rate is None else keep_rate)
    keep_mass = getattr(config, "keep_mass", None)
    if keep_mass is not None:
        raise ValueError(
            f"keep_mass={keep_mass!r}: each clip keeps a data-dependent count of tokens, so no count holds for every "
            "clip; count clips with clip_macs(model, kept_counts_per_clip(outputs.kept_patches)), or count the fixed "
            "rate with keep_mass=None."
        )
    attn_implementation = attn_implementation or getattr(config, "_attn_implementation", None) or "sdpa"
    validate_drop_padding(drop_padding, method.name)
    patches = shape.num_patches
    if drop_padding and real_frames is not None:
        patches = shape.layout.num_real_patches(real_frames)
    kept = kept_token_counts(patches, keep_rate, len(shape.pruning_layers))
    return _count_layers(shape, method, attn_implementation, patches, kept, batch_size, keep_rate)


def clip_macs(model, kept_counts: torch.Tensor, num_patches: torch.Tensor | None = None) -> torch.LongTensor:
    """MACs of the forward of each clip run alone, ``(batch,)``, given its kept patch tokens after each pruning layer.

    ``kept_counts`` ``(batch, num_pruning_layers)`` is what :func:`selection.kept_counts_per_clip` reads off a
    forward's ``kept_patches``: under ``keep_mass`` (and ``drop_padding``) every clip keeps its own counts, so one
    :func:`count_macs` cannot hold for a batch. ``num_patches`` ``(batch,)``: each clip's real patch tokens entering
    the first layer when ``drop_padding`` shortened it (default: the model's patch count). Which layers reduce (and so
    pay for scoring) follows ``model.config``'s keep rate and policy, and the attention implementation is the
    model's; the count is what ``FlopCounterMode`` gives (its FLOPs / 2) for that clip run alone.
    """
    config = model.config
    shape = _shape_of(config)
    method = get_token_reduction(shape.token_reduction)
    attn_implementation = getattr(config, "_attn_implementation", None) or "sdpa"
    starts = [shape.num_patches] * kept_counts.shape[0] if num_patches is None else num_patches.tolist()
    totals = [
        _count_layers(shape, method, attn_implementation, start, kept, 1, config.keep_rate,
                      getattr(config, "keep_mass", None), getattr(config, "min_keep_rate", None)).total
        for start, kept in zip(starts, kept_counts.tolist())
    ]
    return torch.tensor(totals, dtype=torch.long)


def _count_layers(shape, method, attn_implementation, patches, kept, batch_size, keep_rate, keep_mass=None,
                  min_keep_rate=None) -> MacCount:
    """The :class:`MacCount` of a forward whose first layer receives ``patches`` patch tokens and whose pruning
    layers leave ``kept``; the keep policy decides which pruning layers reduce at all (and so score)."""
    scores_cost_macs = (attn_implementation != "eager" and shape.token_score == "attention"
                        and method.signal == "score" and shape.scoring_costs_macs)
    hidden, extra = shape.hidden_size, shape.num_extra_tokens
    head_dim = hidden // shape.num_attention_heads
    next_pruning = 0
    projections = matmuls = mlp = scoring = reduction = 0
    tokens_per_layer = []
    for index in range(shape.num_hidden_layers):
        attention_tokens = patches + extra
        if index in shape.pruning_layers:
            if fewest_kept_tokens(patches, keep_rate, keep_mass, min_keep_rate) < patches:
                if scores_cost_macs:
                    scoring += attention_tokens * hidden
                reduction += method.macs(patches, kept[next_pruning], hidden, head_dim)
                extra = shape.num_extra_tokens + method.added_tokens  # e.g. EViT's fused token, from this MLP on
            patches = kept[next_pruning]
            next_pruning += 1
        mlp_tokens = patches + extra
        projections += 4 * attention_tokens * hidden * hidden
        matmuls += 2 * attention_tokens * attention_tokens * hidden
        mlp += 2 * mlp_tokens * hidden * shape.intermediate_size
        tokens_per_layer.append((attention_tokens, mlp_tokens))

    return MacCount(
        patch_embedding=batch_size * shape.num_patches * shape.layout.patch_size**2 * hidden,
        attention_projections=batch_size * projections,
        attention_matmuls=batch_size * matmuls,
        mlp=batch_size * mlp,
        token_scoring=batch_size * scoring,
        token_reduction=batch_size * reduction,
        classifier=batch_size * hidden * shape.num_labels,
        tokens_per_layer=tuple(tokens_per_layer),
        kept_patches=tuple(kept),
    )


# -- presets ------------------------------------------------------------------------------------------------------

PRESETS = {
    "vit-b": "AST ViT-B as in the paper: 128 mel bins, 16x16 patches at stride 16, 1024 frames (512 patches), 527 labels",
    "ast-vit-b": "same as vit-b",
    "audiomae-vit-b": "AudioMAE ViT-B: 128 mel bins, 16x16 patches, 1024 frames (512 patches), one CLS token, 527 labels",
}


def preset_config(name: str, max_length: int = 1024, **overrides):
    """A ViT-B config of the paper's layout (``PRESETS``), ready for :func:`count_macs` or to build a model."""
    if name in ("vit-b", "ast-vit-b"):
        from .configuration_pruned_ast import PrunedASTConfig

        kwargs = dict(max_length=max_length, frequency_stride=16, time_stride=16, num_labels=527)
        return PrunedASTConfig(**{**kwargs, **overrides})
    if name == "audiomae-vit-b":
        kwargs = dict(max_length=max_length, num_labels=527)
        from .configuration_pruned_audiomae import PrunedAudioMAEConfig

        return PrunedAudioMAEConfig(**{**kwargs, **overrides})
    raise ValueError(f"Unknown preset {name!r}: choose one of {', '.join(PRESETS)}, or give a checkpoint folder.")


def table_ii_comparison():
    """Rows ``(patches, keep_rate, paper, ours, ast)`` in GMACs: ours in the paper's convention (one extra token),
    ``ast`` the same count with AST's two extra tokens."""
    rows = []
    for patches, paper_row in TABLE_II.items():
        config = preset_config("vit-b", max_length=patches // 8 * 16)
        for keep_rate, paper in zip(TABLE_II_KEEP_RATES, paper_row):
            ours = count_macs(config, keep_rate, num_extra_tokens=1).paper_convention / 1e9
            ast = count_macs(config, keep_rate).paper_convention / 1e9
            rows.append((patches, keep_rate, paper, ours, ast))
    return rows


# -- cross-check on a real forward ----------------------------------------------------------------------------------


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# torch registers FLOP formulas for the CUDA attention kernels only; CPU SDPA would otherwise count as 0.
CPU_SDPA_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts CPU SDPA (FLOPs = 2 x MACs)."""
    return FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOP_FORMULAS)


def count_forward_macs(model, input_values, **forward_kwargs) -> int:
    """MACs of ``model(input_values)`` as ``FlopCounterMode`` sees them (matrix products and convolutions)."""
    with flop_counter() as counter, torch.no_grad():
        model(input_values, **forward_kwargs)
    return counter.get_total_flops() // 2


def build_model(config):
    """A random-weight model of ``config``'s family (only shapes matter for counting)."""
    family = model_family(config)
    return family.model_class(family.pruned_config(config)).eval()


# -- command line ---------------------------------------------------------------------------------------------------


def _parse_list(text, kind, name):
    try:
        return [kind(value) for value in text.split(",")]
    except ValueError:
        raise SystemExit(f"--{name}={text!r}: give comma-separated {kind.__name__} values, e.g. 1.0,0.7,0.5")


def _load_config(model):
    if model in PRESETS:
        return preset_config(model)
    if not os.path.isdir(model):
        raise SystemExit(
            f"--model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a folder with a config.json."
        )
    from .loading import load_config

    return load_config(model)


def _print_table_ii():
    rows = table_ii_comparison()
    print("Paper Table II vs ours, GMACs (ViT-B, 16x16 patches; patch embedding + 12 layers, one extra token)")
    header = "patches | row         | " + " | ".join(f"{rate:>5}" for rate in TABLE_II_KEEP_RATES)
    print(header)
    print("-" * len(header))
    for patches in TABLE_II:
        cells = [row for row in rows if row[0] == patches]
        for label, column in (("paper", 2), ("ours", 3), ("difference", None), ("AST 2 extra", 4)):
            values = [cell[3] - cell[2] if column is None else cell[column] for cell in cells]
            text = " | ".join(f"{value:+5.2f}" if column is None else f"{value:5.2f}" for value in values)
            print(f"{patches if label == 'paper' else '':>7} | {label:<11} | {text}")
    worst = max(abs(ours - paper) for _, _, paper, ours, _ in rows)
    verdict = "all within" if worst <= TABLE_II_TOLERANCE else "NOT all within"
    print(f"max |ours - paper| = {worst:.3f} G: {verdict} {TABLE_II_TOLERANCE} G over {len(rows)} cells")
    return worst <= TABLE_II_TOLERANCE


@command("macs")
def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="vit-b",
        help="a preset (" + "; ".join(f"{name}: {text}" for name, text in PRESETS.items()) + ") or a folder "
        "holding a config.json of an AST / PrunedAST / PrunedAudioMAE checkpoint (default: %(default)s)",
    )
    parser.add_argument(
        "--keep_rates",
        default="1.0,0.9,0.8,0.7,0.6,0.5,0.4",
        help="comma-separated keep rates in (0, 1] (default: %(default)s)",
    )
    parser.add_argument(
        "--max_length",
        default=None,
        help="comma-separated input lengths in frames (default: the config's; 128, 512, 1024 "
        "frames give the paper's 64, 256, 512 patches)",
    )
    parser.add_argument(
        "--clip_seconds",
        default=None,
        help="comma-separated clip lengths in seconds (16 kHz fbank frames, 10 ms apart): rows counted with the "
        "padding dropped (config drop_padding=True), 'x fewer' against the padded window at keep rate 1.0 "
        "(default: clips filling the window)",
    )
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument(
        "--attn_implementation",
        choices=["sdpa", "eager"],
        default="sdpa",
        help="with sdpa, pruning layers recompute the attention scores they rank by (counted as "
        "'scoring'); with eager they read them from the weights (default: %(default)s)",
    )
    parser.add_argument(
        "--token_reductions",
        default=None,
        help=f"comma-separated methods, any of {', '.join(token_reduction_names())}: a row per method and keep rate "
        "(default: the config's)",
    )
    parser.add_argument(
        "--methods",
        action="store_true",
        help="print GMACs of every token reduction method at every keep rate (rows: patches x method) for --model at "
        "64, 256 and 512 patches, then exit",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also run each forward (random weights) under torch's FlopCounterMode and print its count",
    )
    parser.add_argument(
        "--table2",
        action="store_true",
        help="print the paper's Table II beside ours with the difference, then exit (status 1 if a "
        f"cell differs by more than {TABLE_II_TOLERANCE} G)",
    )
    args = parser.parse_args(argv)

    if args.table2:
        return 0 if _print_table_ii() else 1

    config = _load_config(args.model)
    try:
        keep_rates = parse_keep_rates(args.keep_rates)
    except ValueError as error:
        raise SystemExit(f"--keep_rates {error}") from None
    methods = _parse_list(args.token_reductions, str, "token_reductions") if args.token_reductions else [
        getattr(config, "token_reduction", "prune")
    ]
    unknown = [method for method in methods if method not in token_reduction_names()]
    if unknown:
        raise SystemExit(f"--token_reductions: unknown {unknown}; choose from {', '.join(token_reduction_names())}.")
    if args.methods:
        _print_methods(config, args.model, keep_rates, args.attn_implementation)
        return 0
    lengths = _parse_list(args.max_length, int, "max_length") if args.max_length else [config.max_length]
    clips = [None]
    if args.clip_seconds:
        from .feature_extraction_audiomae import num_fbank_frames

        clips = [num_fbank_frames(round(seconds * 16000)) for seconds in _parse_list(args.clip_seconds, float,
                                                                                      "clip_seconds")]
        if min(clips) < 1:
            raise SystemExit(f"--clip_seconds {args.clip_seconds}: every clip needs at least one 25 ms frame.")
    if args.batch_size < 1:
        raise SystemExit(f"--batch_size={args.batch_size}: must be at least 1.")

    print(f"GMACs per forward, batch {args.batch_size}, {args.attn_implementation} attention, model {args.model}")
    columns = (
        "frames | patches | method | keep rate | kept patches per pruning layer | total  | x fewer | embed  | attn proj "
        "| attn QK,AV | MLP    | scoring | reduce  | head"
    )
    if args.verify:
        columns += " | FlopCounterMode | diff"
    if args.clip_seconds:
        columns = "clip frames | " + columns
    print(columns)
    print("-" * len(columns))
    for max_length, real_frames, keep_rate, method in itertools.product(lengths, clips, keep_rates, methods):
        baseline = count_macs(config, 1.0, max_length, args.batch_size, args.attn_implementation)
        if real_frames is not None:
            real_frames = min(real_frames, max_length)
        try:
            macs = count_macs(config, keep_rate, max_length, args.batch_size, args.attn_implementation,
                              token_reduction=method, real_frames=real_frames, drop_padding=real_frames is not None)
        except ValueError as error:
            raise SystemExit(str(error))
        line = (
            f"{max_length:>6} | {_shape_of(config, max_length).num_patches:>7} | {method:<6} | "
            f"{keep_rate:>9.2f} | {str(list(macs.kept_patches)):<30} | {macs.total / 1e9:6.2f} | "
            f"{baseline.total / macs.total:6.2f}x | {macs.patch_embedding / 1e9:6.3f} | "
            f"{macs.attention_projections / 1e9:9.2f} | {macs.attention_matmuls / 1e9:10.2f} | "
            f"{macs.mlp / 1e9:6.2f} | {macs.token_scoring / 1e9:7.4f} | {macs.token_reduction / 1e9:7.4f} | "
            f"{macs.classifier / 1e9:.4f}"
        )
        if args.verify:
            line += " | " + _verify(config, keep_rate, max_length, args.batch_size, args.attn_implementation,
                                    method, macs, real_frames)
        if real_frames is not None:
            line = f"{real_frames:>11} | " + line
        print(line, flush=True)
    return 0


def _print_methods(config, name, keep_rates, attn_implementation):
    """GMACs per method and keep rate at the paper's three clip lengths, the overhead of fuse / merge beside prune."""
    print(f"GMACs per clip by token reduction, model {name}, {attn_implementation} attention (all counted products)")
    header = "patches | method | " + " | ".join(f"{rate:>6}" for rate in keep_rates)
    print(header)
    print("-" * len(header))
    for max_length in (128, 512, 1024):
        patches = _shape_of(config, max_length).num_patches
        methods = token_reduction_names()
        for method in methods:
            values = [count_macs(config, rate, max_length, attn_implementation=attn_implementation,
                                 token_reduction=method).total / 1e9 for rate in keep_rates]
            print(f"{patches if method == methods[0] else '':>7} | {method:<6} | "
                  + " | ".join(f"{value:6.2f}" for value in values))


def _verify(config, keep_rate, max_length, batch_size, attn_implementation, method, macs, real_frames=None):
    model = build_model(config.__class__.from_dict({**config.to_dict(), "max_length": max_length,
                                                    "token_reduction": method,
                                                    "drop_padding": real_frames is not None}))
    model.set_attn_implementation(attn_implementation)
    model.set_keep_rate(keep_rate)
    mask = None if real_frames is None else (torch.arange(max_length) < real_frames).expand(batch_size, -1).int()
    counted = count_forward_macs(model, torch.randn(batch_size, max_length, config.num_mel_bins), attention_mask=mask)
    return f"{counted / 1e9:15.2f} | {(macs.total - counted) / counted:+.2e}"


if __name__ == "__main__":
    sys.exit(main())

"""`hf-token-prune macs`: multiply-accumulates per keep rate from a preset or a checkpoint's config, and the paper's
Table II beside ours (the counting is hf_token_prune.macs, whose docstring is the help)."""

import argparse
import itertools
import os
import sys

import torch

from .. import macs as mac_counting
from ..checks import CommandParser, parse_keep_rates
from ..errors import command
from ..families import model_family
from ..macs import (
    PRESETS,
    TABLE_II,
    TABLE_II_KEEP_RATES,
    TABLE_II_TOLERANCE,
    build_model,
    count_forward_macs,
    count_macs,
    preset_config,
    table_ii_comparison,
)
from ..token_reductions import token_reduction_names


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
            f"--model_name_or_path {model!r} is neither a preset ({', '.join(PRESETS)}) nor a folder with a config.json."
        )
    from ..loading import load_config

    return load_config(model)


def _num_patches(config, max_length):
    return model_family(config).config_class.patch_layout(config, max_length).num_patches


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


def build_parser():
    parser = CommandParser(
        "macs", description=mac_counting.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_renamed_argument(
        "--model_name_or_path",
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
        help="print GMACs of every token reduction method at every keep rate (rows: patches x method) for --model_name_or_path at "
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
    return parser


@command("macs")
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.table2:
        return 0 if _print_table_ii() else 1

    config = _load_config(args.model_name_or_path)
    if getattr(config, "keep_mass", None) is not None:
        print(
            f"note: this model keeps tokens per clip (keep_mass={config.keep_mass}), so its MACs depend on each clip; "
            "the rows below are fixed keep rates. Per-clip MACs on real clips: hf-token-prune calibrate, or "
            "hf_token_prune.macs.clip_macs.",
            file=sys.stderr,
        )
        config.update_reduction(keep_mass=None, min_keep_rate=None)
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
        _print_methods(config, args.model_name_or_path, keep_rates, args.attn_implementation)
        return 0
    lengths = _parse_list(args.max_length, int, "max_length") if args.max_length else [config.max_length]
    clips = [None]
    if args.clip_seconds:
        from ..feature_extraction_audiomae import num_fbank_frames

        clips = [num_fbank_frames(round(seconds * 16000)) for seconds in _parse_list(args.clip_seconds, float,
                                                                                      "clip_seconds")]
        if min(clips) < 1:
            raise SystemExit(f"--clip_seconds {args.clip_seconds}: every clip needs at least one 25 ms frame.")
    if args.batch_size < 1:
        raise SystemExit(f"--batch_size={args.batch_size}: must be at least 1.")

    print(f"GMACs per forward, batch {args.batch_size}, {args.attn_implementation} attention, model {args.model_name_or_path}")
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
            f"{max_length:>6} | {_num_patches(config, max_length):>7} | {method:<6} | "
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
        patches = _num_patches(config, max_length)
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

"""Cost of a short clip in a long window, padding kept vs dropped (``drop_padding``): MACs and measured latency.

    python benchmarks/benchmark_padding.py --torch_threads 1   # ViT-B, 1024 frames, a 2 s clip (~3 min on a free core)
    python benchmarks/benchmark_padding.py --quick             # seconds, tiny model: a smoke test
    python benchmarks/benchmark_padding.py --update_committed  # also write docs/reports/results/padding.{md,json}

Results go to a fresh folder (``outputs/benchmark_padding-<UTC time>`` unless ``--output_dir``); the committed ones in
``docs/reports/results/`` change only with ``--update_committed``.

Method: ViT-B AST (the paper's 16x16 patches at stride 16, 512 patches) and AudioMAE ViT-B, random weights, 1024
frames x 128 mel bins, batch 1. The clip is ``--clip_seconds`` long (2 s: 198 real fbank frames, the rest of the
window padding). "kept": ``drop_padding=False``, the padded input as today (every patch through every layer);
"dropped": the same weights with ``drop_padding=True`` and the extractor's frame mask. Timed by the shared harness
(``harness.py``: one untimed call each, then ``--repeats`` interleaved rounds in a rotating order). Latency ratio =
median over rounds of (kept / dropped in that round), with its interquartile range (IQR); MAC
ratio from ``hf_token_prune.macs.count_macs`` (equal to FlopCounterMode, tested). Targets: MACs >= 4x, latency >=
3.5x at keep rate 1.0. The load average (``os.getloadavg``) is printed before and after.

Accuracy (``--model_name_or_path DIR``, a ``make demo`` folder; training-free): top-1 on the test clips of
``data/keywords``
with the model as saved (padding kept) and with ``drop_padding=True`` (the extractor's frame mask), at keep rate 1.0
and the model's own, all clips in one mixed-length batch.
"""

import argparse
import os
import sys
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    default_output_dir,
    COMMITTED_RESULTS,
    Run,
    Spread,
    add_model_argument,
    add_torch_threads_argument,
    clip_features,
    keyword_test_clips,
    markdown_table,
    paired_ratio,
    time_interleaved,
    write_outputs,
)

from hf_token_prune import PrunedASTForAudioClassification, PrunedAudioMAEForAudioClassification  # noqa: E402
from hf_token_prune.checks import parse_keep_rates  # noqa: E402
from hf_token_prune.errors import command  # noqa: E402
from hf_token_prune.feature_extraction_audiomae import num_fbank_frames  # noqa: E402
from hf_token_prune.macs import count_macs, preset_config  # noqa: E402


TARGETS = {"mac_ratio": 4.0, "latency_ratio": 3.5}  # at keep rate 1.0, batch 1
FAMILIES = {"AST": ("vit-b", PrunedASTForAudioClassification),
            "AudioMAE": ("audiomae-vit-b", PrunedAudioMAEForAudioClassification)}
TINY = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128)


def build_variants(preset, model_class, max_length, keep_rates, sizes):
    """``{(keep_rate, "kept" | "dropped"): model}`` sharing one set of random weights."""
    base = model_class(preset_config(preset, max_length=max_length, **sizes)).eval()
    variants = {}
    for keep_rate in keep_rates:
        for padding in ("kept", "dropped"):
            model = model_class(base.config.__class__.from_dict(base.config.to_dict())).eval()
            model.load_state_dict(base.state_dict())
            model.config.drop_padding = padding == "dropped"
            model.set_keep_rate(keep_rate)
            variants[(keep_rate, padding)] = model
    return variants


def run_family(name, preset, model_class, args, max_length, sizes, real_frames):
    variants = build_variants(preset, model_class, max_length, args.keep_rates, sizes)
    config = next(iter(variants.values())).config
    inputs = torch.randn(1, max_length, config.num_mel_bins)
    mask = (torch.arange(max_length) < real_frames).to(torch.int32)[None]
    calls = {key: (lambda model=model: model(inputs, attention_mask=mask)) if key[1] == "dropped"
             else (lambda model=model: model(inputs)) for key, model in variants.items()}  # fmt: skip
    load_before = os.getloadavg()
    with torch.inference_mode():
        times = time_interleaved(calls, args.repeats)
    load_after = os.getloadavg()
    rows = []
    for keep_rate in args.keep_rates:
        kept, dropped = times[(keep_rate, "kept")], times[(keep_rate, "dropped")]
        kept_spread, dropped_spread, ratio = Spread.of(kept), Spread.of(dropped), paired_ratio(kept, dropped)
        macs_kept = count_macs(config, keep_rate, real_frames=real_frames, drop_padding=False).total
        macs_dropped = count_macs(config, keep_rate, real_frames=real_frames, drop_padding=True).total
        rows.append(dict(
            keep_rate=keep_rate, kept_ms=1e3 * kept_spread.median, kept_iqr_ms=1e3 * kept_spread.iqr,
            dropped_ms=1e3 * dropped_spread.median, dropped_iqr_ms=1e3 * dropped_spread.iqr,
            latency_ratio=ratio.median, latency_ratio_iqr=ratio.iqr,
            gmacs_kept=macs_kept / 1e9, gmacs_dropped=macs_dropped / 1e9, mac_ratio=macs_kept / macs_dropped,
            times_kept_ms=[1e3 * t for t in kept], times_dropped_ms=[1e3 * t for t in dropped],
        ))
    return dict(model=name, real_frames=real_frames, max_length=max_length, rows=rows,
                load_before=load_before, load_after=load_after)


def report(header, results):
    lines = [f"# {header['title']}", "", f"Command: `{header['command']}`", "",
             f"{header['machine']}; commit {header['commit']}; {header['repeats']} interleaved rounds.", ""]
    columns = ["keep rate", "GMACs kept", "GMACs dropped", "MAC ratio", "ms kept (IQR)", "ms dropped (IQR)",
               "latency ratio (IQR)", "targets"]  # fmt: skip
    for result in results:
        lines += [
            f"## {result['model']}: {result['real_frames']} real of {result['max_length']} frames, batch 1 "
            f"(load average before {result['load_before'][0]:.2f}, after {result['load_after'][0]:.2f})", "",
        ]
        cells = []
        for row in result["rows"]:
            verdict = "-"
            if row["keep_rate"] == 1.0:
                verdict = ", ".join(
                    f"{name.split('_')[0]} >= {goal}: {'met' if row[name] >= goal else 'MISSED'}"
                    for name, goal in TARGETS.items()
                )
            cells.append([
                f"{row['keep_rate']:.2f}", f"{row['gmacs_kept']:.2f}", f"{row['gmacs_dropped']:.2f}",
                f"{row['mac_ratio']:.2f}x", f"{row['kept_ms']:.1f} ({row['kept_iqr_ms']:.1f})",
                f"{row['dropped_ms']:.1f} ({row['dropped_iqr_ms']:.1f})",
                f"{row['latency_ratio']:.2f}x ({row['latency_ratio_iqr']:.2f})", verdict,
            ])  # fmt: skip
        lines += [markdown_table(columns, cells), ""]
    return "\n".join(lines)


def demo_accuracy(demo_model, keep_rates):
    """Top-1 on the keyword test clips, padding kept vs dropped, one batch of every clip (mixed lengths)."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    clips = keyword_test_clips()
    extractor = AutoFeatureExtractor.from_pretrained(demo_model)
    features = clip_features(extractor, clips)
    model = AutoModelForAudioClassification.from_pretrained(demo_model).eval()
    labels = [model.config.label2id[clip.parent.name] for clip in clips]
    own_rate, rows = model.config.keep_rate, []
    for keep_rate in dict.fromkeys([1.0, own_rate, *keep_rates]):
        model.set_keep_rate(keep_rate)
        for padding in ("kept", "dropped"):
            model.config.drop_padding = padding == "dropped"
            inputs = dict(features) if padding == "dropped" else {"input_values": features["input_values"]}
            with torch.inference_mode():
                predictions = model(**inputs).logits.argmax(-1).tolist()
            rows.append(dict(keep_rate=keep_rate, padding=padding, clips=len(clips),
                             accuracy=sum(p == t for p, t in zip(predictions, labels)) / len(clips)))
    real = features["attention_mask"].sum(1).float()
    return dict(model=str(demo_model), max_length=extractor.max_length, real_frames_median=float(real.median()),
                real_frames_min=int(real.min()), rows=rows)


def accuracy_report(accuracy):
    lines = [f"## Accuracy, training-free: {accuracy['model']} ({accuracy['max_length']}-frame window; test clips: "
             f"median {accuracy['real_frames_median']:.0f}, shortest {accuracy['real_frames_min']} real frames)", ""]
    rows = ([f"{row['keep_rate']:.2f}", row["padding"], f"{100 * row['accuracy']:.1f} % ({row['clips']} clips)"]
            for row in accuracy["rows"])  # fmt: skip
    return "\n".join(lines + [markdown_table(["keep rate", "padding", "top-1"], rows), ""])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models, 128 frames, 2 rounds: a smoke test")
    add_torch_threads_argument(parser, 1, "torch intra-op threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default: 10; 2 with --quick)")
    parser.add_argument("--clip_seconds", type=float, default=None,
                        help="length of the clip in the window (default: 2 s; 0.25 s with --quick)")
    parser.add_argument("--keep_rates", default="1.0,0.7", help="comma-separated keep rates (default: %(default)s)")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="where padding.md / .json / .csv go (default: a fresh outputs/benchmark_padding-<time>)")
    add_model_argument(parser, None, "a `make demo` folder: also measure its test accuracy, padding kept vs dropped")
    parser.add_argument("--accuracy_only", action="store_true", help="with --model_name_or_path: no timing")
    parser.add_argument("--update_committed", action="store_true",
                        help="also write the committed results, docs/reports/results/padding.{md,json,csv}")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 10)
    args.clip_seconds = args.clip_seconds or (0.25 if args.quick else 2.0)
    try:
        args.keep_rates = parse_keep_rates(args.keep_rates)
    except ValueError as error:
        parser.error(f"--keep_rates {error}")
    if args.repeats < 1 or args.torch_threads < 1:
        parser.error("--repeats and --torch_threads must be at least 1")
    if args.accuracy_only and args.model_name_or_path is None:
        parser.error("--accuracy_only needs --model_name_or_path DIR (a `make demo` folder)")
    if args.model_name_or_path is not None and not (args.model_name_or_path / "config.json").is_file():
        parser.error(f"--model_name_or_path {args.model_name_or_path}: no config.json there (run `make demo` first)")
    if args.output_dir is None:
        args.output_dir = default_output_dir("benchmark_padding")
    return args


@command("benchmark_padding.py")
def main(argv):
    args = parse_args(argv)
    run = Run("benchmark_padding.py", argv, args.torch_threads)
    torch.manual_seed(0)
    max_length, sizes = (128, TINY) if args.quick else (1024, {})
    real_frames = min(num_fbank_frames(round(args.clip_seconds * 16000)), max_length)
    if real_frames < 1:
        raise SystemExit(f"--clip_seconds {args.clip_seconds}: shorter than one 25 ms fbank frame.")
    title = (f"Padding kept vs dropped: a {args.clip_seconds:g} s clip ({real_frames} frames) in a {max_length}-frame "
             f"{'tiny' if args.quick else 'ViT-B'} model")
    print(f"# {title}\nload average before: {run.load_before}", flush=True)
    results = []
    for name, (preset, model_class) in FAMILIES.items() if not args.accuracy_only else ():
        results.append(run_family(name, preset, model_class, args, max_length, sizes, real_frames))
        print(f"{name}: done, load average {os.getloadavg()[0]:.2f}", flush=True)
    accuracy = demo_accuracy(args.model_name_or_path, args.keep_rates) if args.model_name_or_path else None
    header = dict(run.header(), title=title, repeats=args.repeats, clip_seconds=args.clip_seconds)
    text = report(header, results) + ("\n" + accuracy_report(accuracy) if accuracy else "")
    print(text, flush=True)
    folders = [args.output_dir] + ([COMMITTED_RESULTS] if args.update_committed else [])
    rows = [dict(model=result["model"], **row) for result in results for row in result["rows"]]
    write_outputs(folders, "padding", text, dict(header=header, results=results, accuracy=accuracy), rows)
    print(f"load average after: {header['load_after']}\nwrote "
          + ", ".join(f"{folder}/padding.md, padding.json, padding.csv" for folder in folders))
    return results


if __name__ == "__main__":
    main()

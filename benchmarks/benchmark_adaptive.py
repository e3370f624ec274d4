"""Latency of the per-clip keep policy (``keep_mass``) beside fixed keep rates at equal mean MACs: batch 1, and batches
in dataset order vs bucketed by predicted kept count.

    python benchmarks/benchmark_adaptive.py                     # the demo model on the 300 keyword test clips
    python benchmarks/benchmark_adaptive.py --quick             # seconds, a tiny random model: a smoke test
    python benchmarks/benchmark_adaptive.py --update_committed  # also write docs/reports/results/adaptive.{md,json,csv}

Results go to a fresh folder (``outputs/benchmark_adaptive-<UTC time>`` unless ``--output_dir``).

Method: the test clips of ``data/keywords`` (sorted by path: the dataset's order, word by word) through the model's
saved feature extractor, with its frame mask when ``drop_padding`` is on. For every fixed keep rate, the ``keep_mass``
(no ceiling: ``keep_rate=1.0``, no floor) from ``--keep_masses`` whose mean MACs per clip is nearest the rate's; each
clip's MACs are counted from its own kept counts (``hf_token_prune.macs.clip_macs``, equal to FlopCounterMode on the
clip alone), so fixed rates under ``drop_padding`` are counted per clip too. Both with padding kept and dropped.

Every setting is timed three ways over all clips, one call each: every clip alone (batch 1); batches of
``--batch_size`` in dataset order; and the same batch size after ordering the clips by their predicted kept count
(``hf_token_prune.bucketing.predicted_kept_counts``, its cost included). The shared harness (``harness.py``) times
them: one untimed call each, then ``--repeats`` interleaved rounds in a rotating order; a latency is the median per
clip with its IQR, a ratio the median of the per-round ratios. ``prediction rho``: Spearman's rank correlation of the
predicted count with each clip's MACs, how well the prediction sorts.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr


sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    default_output_dir,
    COMMITTED_RESULTS,
    KEYWORD_TEST_CLIPS,
    REPO,
    Run,
    Spread,
    add_model_argument,
    add_torch_threads_argument,
    clip_features,
    header_lines,
    keyword_test_clips,
    markdown_table,
    paired_ratio,
    time_interleaved,
    write_outputs,
)

from hf_token_prune.bucketing import CountOrderedSampler, predicted_kept_counts  # noqa: E402
from hf_token_prune.checks import parse_keep_rates  # noqa: E402
from hf_token_prune.errors import command  # noqa: E402
from hf_token_prune.macs import clip_macs  # noqa: E402
from hf_token_prune.selection import kept_counts_per_clip  # noqa: E402


DEFAULT_MODEL = REPO / "outputs" / "demo"
MODES = ("batch 1", "in order", "bucketed")


def tiny_model_and_extractor(words):
    """A random 12-layer AST of the demo's input (64 mel bins x 100 frames), narrow enough for a smoke test."""
    from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification
    from hf_token_prune.feature_extraction_audiomae import AudioMAEFeatureExtractor

    torch.manual_seed(0)
    config = PrunedASTConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_mel_bins=64,
                             max_length=100, frequency_stride=16, time_stride=16, initializer_range=0.1,
                             id2label=dict(enumerate(words)), label2id={word: i for i, word in enumerate(words)})
    return PrunedASTForAudioClassification(config).eval(), AudioMAEFeatureExtractor(num_mel_bins=64, max_length=100)


def settings_forward(model, inputs, mask, settings, drop_padding):
    """Logits and each clip's MACs of one forward of every clip (each clip's logits are those of the clip alone)."""
    frame_mask = mask if drop_padding else None
    with model.reduction_settings(drop_padding=drop_padding, **settings), torch.inference_mode():
        outputs = model(inputs, attention_mask=frame_mask, output_kept_patches=True)
        real_patches = model.patch_layout.real_patches(mask).sum(dim=1) if drop_padding else None
        return outputs.logits, clip_macs(model, kept_counts_per_clip(outputs.kept_patches), real_patches)


def matched_settings(model, inputs, mask, keep_rates, keep_masses, drop_padding):
    """Per fixed rate: the rate and the keep_mass of nearest mean MACs per clip."""
    def mean_macs(settings):
        return settings_forward(model, inputs, mask, settings, drop_padding)[1].double().mean().item()

    adaptive = {keep_mass: mean_macs(dict(keep_rate=1.0, keep_mass=keep_mass)) for keep_mass in keep_masses}
    pairs = []
    for keep_rate in keep_rates:
        target = mean_macs(dict(keep_rate=keep_rate, keep_mass=None))
        keep_mass = min(adaptive, key=lambda mass: abs(adaptive[mass] - target))
        pairs += [dict(keep_rate=keep_rate, keep_mass=None), dict(keep_rate=1.0, keep_mass=keep_mass)]
    return pairs


def timed_calls(model, inputs, mask, settings, drop_padding, batch_size):
    """The three ways of running every clip under ``settings``, as calls for the harness."""
    frame_mask = mask if drop_padding else None

    def run(order, size):
        with model.reduction_settings(drop_padding=drop_padding, **settings), torch.inference_mode():
            for batch in order.split(size):
                model(inputs[batch], attention_mask=None if frame_mask is None else frame_mask[batch])

    def bucketed():
        with model.reduction_settings(drop_padding=drop_padding, **settings), torch.inference_mode():
            order = torch.tensor(CountOrderedSampler(predicted_kept_counts(model, inputs, frame_mask)).order)
        run(order, batch_size)

    dataset_order = torch.arange(len(inputs))
    return {"batch 1": lambda: run(dataset_order, 1), "in order": lambda: run(dataset_order, batch_size),
            "bucketed": bucketed}  # fmt: skip


def label(settings):
    if settings["keep_mass"] is None:
        return f"keep_rate={settings['keep_rate']:g}"
    return f"keep_mass={settings['keep_mass']:g}"


def measure(model, inputs, mask, labels, args):
    """Rows of the table: per padding mode and setting, cost, accuracy, latencies and their paired ratios."""
    rows, calls, keys = [], {}, []
    for drop_padding in args.drop_padding:
        for settings in matched_settings(model, inputs, mask, args.keep_rates, args.keep_masses, drop_padding):
            logits, macs = settings_forward(model, inputs, mask, settings, drop_padding)
            with model.reduction_settings(drop_padding=drop_padding, **settings):
                predicted = predicted_kept_counts(model, inputs, mask if drop_padding else None)
            rho = spearmanr(predicted.numpy(), macs.numpy()).statistic if len(set(macs.tolist())) > 1 else None
            key = (drop_padding, label(settings))
            rows.append(dict(
                setting=key[1], padding="dropped" if drop_padding else "kept", keep_rate=settings["keep_rate"],
                keep_mass=settings["keep_mass"], mean_mmacs=macs.double().mean().item() / 1e6,
                accuracy=(logits.argmax(-1) == labels).double().mean().item(),
                prediction_rho=None if rho is None or np.isnan(rho) else float(rho),
            ))  # fmt: skip
            for mode, call in timed_calls(model, inputs, mask, settings, drop_padding, args.batch_size).items():
                calls[(*key, mode)] = call
            keys.append(key)
    times = time_interleaved(calls, args.repeats)
    clips = len(inputs)
    for row, key in zip(rows, keys):
        per_clip = {mode: [seconds / clips for seconds in times[(*key, mode)]] for mode in MODES}
        for mode, name in zip(MODES, ("batch1", "in_order", "bucketed")):
            spread = Spread.of(per_clip[mode])
            row[f"{name}_ms"], row[f"{name}_iqr_ms"] = 1e3 * spread.median, 1e3 * spread.iqr
            row[f"times_{name}_ms"] = [1e3 * t for t in per_clip[mode]]
        row["in_order_over_bucketed"] = paired_ratio(per_clip["in order"], per_clip["bucketed"]).median
        row["batch1_over_bucketed"] = paired_ratio(per_clip["batch 1"], per_clip["bucketed"]).median
    return rows


def report(header, rows):
    lines = [f"# {header['title']}", "", *header_lines(header), "",
             f"{header['clips']} clips, batch size {header['batch_size']}, {header['repeats']} interleaved rounds; "
             "latency: median ms per clip (IQR); ratios: medians of per-round ratios.", ""]  # fmt: skip
    columns = ["setting", "padding", "mean MMACs / clip", "top-1", "batch 1", f"batch {header['batch_size']} in order",
               f"batch {header['batch_size']} bucketed", "in order / bucketed", "batch 1 / bucketed",
               "prediction rho"]  # fmt: skip
    cells = [[
        row["setting"], row["padding"], f"{row['mean_mmacs']:.2f}", f"{100 * row['accuracy']:.1f} %",
        f"{row['batch1_ms']:.2f} ({row['batch1_iqr_ms']:.2f})",
        f"{row['in_order_ms']:.2f} ({row['in_order_iqr_ms']:.2f})",
        f"{row['bucketed_ms']:.2f} ({row['bucketed_iqr_ms']:.2f})", f"{row['in_order_over_bucketed']:.2f}x",
        f"{row['batch1_over_bucketed']:.2f}x", "-" if row["prediction_rho"] is None else f"{row['prediction_rho']:.2f}",
    ] for row in rows]  # fmt: skip
    return "\n".join(lines + [markdown_table(columns, cells), ""])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a tiny random model, 48 clips, keep rate 0.7, 2 rounds: a smoke test")
    add_model_argument(parser, DEFAULT_MODEL, "a `make demo` folder (default: %(default)s)")
    add_torch_threads_argument(parser, 1, "torch intra-op threads (default: %(default)s)")
    parser.add_argument("--keep_rates", default=None, help="fixed keep rates to match (default: 0.9,0.7,0.5)")
    parser.add_argument("--keep_masses", default=None,
                        help="keep_mass values to match them from (default: 0.30 to 0.99 in steps of 0.01)")
    parser.add_argument("--batch_size", type=int, default=16, help="clips per batch (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default: 5; 2 with --quick)")
    parser.add_argument("--max_clips", type=int, default=None, help="test clips used (default: all; 48 with --quick)")
    parser.add_argument("--padding", choices=("kept", "dropped", "both"), default="both",
                        help="drop_padding off, on, or both (default: %(default)s)")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="where adaptive.md / .json / .csv go (default: a fresh outputs/benchmark_adaptive-<time>)")
    parser.add_argument("--update_committed", action="store_true",
                        help="also write the committed results, docs/reports/results/adaptive.{md,json,csv}")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.max_clips = args.max_clips or (48 if args.quick else None)
    try:
        args.keep_rates = parse_keep_rates(args.keep_rates or ("0.7" if args.quick else "0.9,0.7,0.5"))
        args.keep_masses = (parse_keep_rates(args.keep_masses) if args.keep_masses else
                            [round(value, 2) for value in np.arange(0.30, 0.995, 0.05 if args.quick else 0.01)])
    except ValueError as error:
        parser.error(f"--keep_rates / --keep_masses {error}")
    if args.repeats < 1 or args.torch_threads < 1 or args.batch_size < 1:
        parser.error("--repeats, --torch_threads and --batch_size must be at least 1")
    args.drop_padding = {"kept": [False], "dropped": [True], "both": [False, True]}[args.padding]
    if args.output_dir is None:
        args.output_dir = default_output_dir("benchmark_adaptive")
    return args


@command("benchmark_adaptive.py")
def main(argv):
    args = parse_args(argv)
    if not args.quick and not (args.model_name_or_path / "config.json").is_file():
        raise SystemExit(f"--model_name_or_path {args.model_name_or_path}: no config.json there (run `make demo` "
                         "first, or --quick)")
    run = Run("benchmark_adaptive.py", argv, args.torch_threads)
    if args.quick:
        model, extractor = tiny_model_and_extractor(sorted(path.name for path in KEYWORD_TEST_CLIPS.iterdir() if path.is_dir()))
    else:
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        model = AutoModelForAudioClassification.from_pretrained(args.model_name_or_path).eval()
        extractor = AutoFeatureExtractor.from_pretrained(args.model_name_or_path)
    clips = keyword_test_clips(args.max_clips)
    features = clip_features(extractor, clips)
    inputs, mask, words = features["input_values"], features["attention_mask"], [clip.parent.name for clip in clips]
    labels = torch.tensor([model.config.label2id[word] for word in words])
    title = (f"Adaptive keep (keep_mass) vs fixed keep rates at equal mean MACs: "
             f"{'a tiny random model' if args.quick else args.model_name_or_path.name}")
    print(f"# {title}\nload average before: {run.load_before}", flush=True)
    rows = measure(model, inputs, mask, labels, args)
    header = dict(run.header(), title=title, clips=len(inputs), batch_size=args.batch_size, repeats=args.repeats,
                  model=str(args.model_name_or_path) if not args.quick else "tiny random AST")
    text = report(header, rows)
    print(text, flush=True)
    folders = [args.output_dir] + ([COMMITTED_RESULTS] if args.update_committed else [])
    write_outputs(folders, "adaptive", text, dict(header=header, rows=rows), rows)
    print(f"load average after: {header['load_after']}\nwrote "
          + ", ".join(f"{folder}/adaptive.md, adaptive.json, adaptive.csv" for folder in folders))
    return rows


if __name__ == "__main__":
    main()

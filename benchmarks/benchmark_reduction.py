"""Speed of the three token reductions (prune, fuse, merge) against their MAC savings, ViT-B AST at 512 patches.

    python benchmarks/benchmark_reduction.py                 # batch 1 and 8 (~5 min on a free core): outputs/
    python benchmarks/benchmark_reduction.py --quick         # seconds, tiny model: a smoke test

One process, one thread count (``--torch_threads``, default 1: on a shared machine a second thread mostly waits for a
descheduled one), random ViT-B weights shared by every model, timed by the shared harness (``harness.py``: one
untimed call each, then ``--repeats`` interleaved rounds in a rotating order). Speedup of a model = median over rounds
of (keep rate 1.0 in that round / the model in that round), with its range; MAC ratio =
analytic MACs at keep rate 1.0 / the model's (``hf_token_prune.macs``, equal to FlopCounterMode, merge's matching
included); efficiency = speedup / MAC ratio (1.0: every MAC saved is time saved). Targets: fuse >= 0.95, merge >= 0.9.
Where one is missed, a profile of that model's forward lists the operators that take the time and the time in the
library's named regions (``hf_token_prune.profiling``). The load average (``os.getloadavg``) is printed beside every
scenario.
"""

import argparse
import copy
import os
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity


sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    Run,
    Spread,
    add_torch_threads_argument,
    markdown_table,
    paired_ratio,
    quiet_profile,
    region_seconds,
    time_interleaved,
    write_outputs,
)

from hf_token_prune import PrunedASTForAudioClassification  # noqa: E402
from hf_token_prune.errors import command  # noqa: E402
from hf_token_prune.macs import count_macs, preset_config  # noqa: E402
from hf_token_prune.token_reductions import token_reduction_names  # noqa: E402


TARGETS = {"prune": 0.95, "fuse": 0.95, "merge": 0.9}


def build_models(config, keep_rates):
    """``{(method, keep_rate): model}`` sharing one set of weights; keep rate 1.0 once (no method reduces there).

    Each model gets its own copy of the config: a transformers model keeps the config object it was built from, so
    with one shared config the last ``set_keep_rate`` would set every model's keep rate.
    """
    base = PrunedASTForAudioClassification(copy.deepcopy(config)).eval()
    models = {("none", 1.0): base}
    for method in token_reduction_names():
        for keep_rate in keep_rates:
            model = PrunedASTForAudioClassification(copy.deepcopy(config)).eval()
            model.load_state_dict(base.state_dict())
            model.config.update_reduction(token_reduction=method, keep_rate=keep_rate)
            models[(method, keep_rate)] = model
    return models


def operator_profile(model, inputs, top=8):
    """The operators taking most of one forward's CPU time, as ``(name, ms, share)``, and the ms in each of the
    library's named regions."""
    with torch.inference_mode(), quiet_profile(activities=[ProfilerActivity.CPU]) as profiler:
        model(inputs)
    events = [event for event in profiler.key_averages() if event.key.startswith("aten::")]
    total = sum(event.self_cpu_time_total for event in events)
    events.sort(key=lambda event: -event.self_cpu_time_total)
    operators = [(event.key, event.self_cpu_time_total / 1e3, event.self_cpu_time_total / total)
                 for event in events[:top]]
    regions = {name: 1e3 * seconds for name, seconds in region_seconds(profiler).items()}
    return dict(operators=operators, regions_ms=regions)


def run_scenario(config, batch_size, keep_rates, repeats):
    models = build_models(config, keep_rates)
    inputs = torch.randn(batch_size, config.max_length, config.num_mel_bins)
    load_before = os.getloadavg()
    with torch.inference_mode():
        times = time_interleaved({key: lambda model=model: model(inputs) for key, model in models.items()}, repeats)
    load_after = os.getloadavg()
    baseline = times[("none", 1.0)]
    full_macs = count_macs(config, 1.0).total
    rows = []
    for (method, keep_rate), seconds in times.items():
        latency, speedup = Spread.of(seconds), paired_ratio(baseline, seconds)
        macs = count_macs(config, keep_rate, token_reduction=None if method == "none" else method).total
        mac_ratio = full_macs / macs
        rows.append({
            "method": method, "keep_rate": keep_rate, "median_ms": 1e3 * latency.median, "iqr_ms": 1e3 * latency.iqr,
            "speedup": speedup.median, "speedup_min": speedup.low, "speedup_max": speedup.high,
            "mac_ratio": mac_ratio, "efficiency": speedup.median / mac_ratio, "gmacs": macs / 1e9,
        })
    profiles = {}
    for row in rows:
        if row["method"] in TARGETS and row["efficiency"] < TARGETS[row["method"]]:
            key = f"{row['method']} @ {row['keep_rate']}"
            profiles[key] = operator_profile(models[(row["method"], row["keep_rate"])], inputs)
    return {"batch_size": batch_size, "rows": rows, "load": [load_before, load_after], "profiles": profiles}


def report(result, patches):
    def verdict(row):
        target = TARGETS.get(row["method"])
        if target is None or row["keep_rate"] == 1.0:
            return "-"
        return f">= {target}: {'met' if row['efficiency'] >= target else 'MISSED'}"

    header = ["method", "keep rate", "GMACs / clip", "median ms (IQR)", "speedup (min-max over rounds)", "MAC ratio",
              "efficiency", "target"]  # fmt: skip
    rows = ([row["method"], f"{row['keep_rate']:.2f}", f"{row['gmacs']:.2f}",
             f"{row['median_ms']:.0f} ({row['iqr_ms']:.0f})",
             f"{row['speedup']:.2f} ({row['speedup_min']:.2f}-{row['speedup_max']:.2f})", f"{row['mac_ratio']:.2f}",
             f"{row['efficiency']:.3f}", verdict(row)] for row in result["rows"])  # fmt: skip
    lines = [
        f"\n### {patches} patches, batch {result['batch_size']} (load average before {result['load'][0][0]:.2f}, "
        f"after {result['load'][1][0]:.2f})",
        markdown_table(header, rows),
    ]
    for key, profile in result["profiles"].items():
        lines.append(f"\nProfile of {key} (target missed), top operators by self CPU time:")
        lines += [f"- `{name}`: {ms:.1f} ms ({100 * share:.1f} %)" for name, ms, share in profile["operators"]]
        lines.append("Named regions (CPU time, nested: token scoring is inside attention): " + ", ".join(
            f"`{name}` {ms:.1f} ms" for name, ms in profile["regions_ms"].items()))
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, one keep rate, two rounds: a smoke test")
    add_torch_threads_argument(parser, 1, "torch intra-op threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds at batch 1 (batch 8: half, at least 3)")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/benchmark_reduction"),
                        help="where reduction.md / .json / .csv go (the committed run: docs/reports/results)")
    return parser.parse_args(argv)


@command("benchmark_reduction.py")
def main(argv):
    args = parse_args(argv)
    run = Run("benchmark_reduction.py", argv, args.torch_threads)
    torch.manual_seed(0)
    if args.quick:
        config = preset_config("vit-b", max_length=128, hidden_size=64, num_attention_heads=4, intermediate_size=128)
        scenarios = [(1, (0.5,), 2)]
    else:
        config = preset_config("vit-b", max_length=1024)
        scenarios = [(1, (0.7, 0.5), args.repeats), (8, (0.5,), max(3, args.repeats // 2))]
    patches = (config.max_length // 16) * (config.num_mel_bins // 16)
    header = (f"# Token reduction speed: ViT-B AST, {patches} patches, {args.torch_threads} thread(s), torch "
              f"{torch.__version__}, {os.cpu_count()} CPUs")
    print(header, flush=True)
    results, text = [], [header, f"\nCommand: `{run.command}`"]
    for batch_size, keep_rates, repeats in scenarios:
        result = run_scenario(config, batch_size, keep_rates, repeats)
        results.append(result)
        text.append(report(result, patches))
        print(text[-1], flush=True)
    rows = [dict(batch_size=result["batch_size"], **row) for result in results for row in result["rows"]]
    write_outputs([args.output_dir], "reduction_quick" if args.quick else "reduction", "\n".join(text) + "\n",
                  results, rows)  # fmt: skip
    return results


if __name__ == "__main__":
    main()

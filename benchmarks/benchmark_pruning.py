"""Speed and memory of token pruning, side by side with transformers' own AST.

    python benchmarks/benchmark_pruning.py            # full run (< 10 min on 2 cores): outputs/benchmark/
    python benchmarks/benchmark_pruning.py --quick    # seconds, tiny model: a smoke test of the whole pipeline

Times, in one process and with one fixed thread count, transformers' stock `ASTForAudioClassification` (SDPA and
eager attention) and `PrunedASTForAudioClassification` (SDPA) at keep rates 1.0 ... 0.4 -- plus
`PrunedAudioMAEForAudioClassification` (SDPA) at keep rates 1.0, 0.7, 0.5 in the batch-1 inference scenarios when this
installation has it -- all ViT-B with random weights (the same weights for every AST).

On a machine shared with other CPU-heavy jobs use ``--torch_threads 1``: with 2 threads on 2 busy cores every OpenMP
parallel region waits for whichever thread was descheduled (a 64-patch ViT-B forward took 1.7 s instead of 0.2 s).

Method:
* Scenarios: inference at 64 / 256 / 512 patches with batch 1 and at 64 patches with batch 8; a training step
  (forward + cross-entropy + backward) at 64 patches with batch 4. Measured on one thread, a batch-1 ViT-B
  forward takes ~0.2 / 0.6 / 1.4 s at 64 / 256 / 512 patches, batch 8 about 8x that, and a batch-4 training step
  ~1.9 s: batch 8 at 256 or 512 patches (5-11 s per forward) or in training, for >= 5 rounds of 9 models, does
  not fit the 10-minute budget.
* Timing: the shared harness (``harness.py``). In each scenario every model runs once untimed (warm-up, and the
  memory measurement below), then ``--repeats`` timed rounds; each round runs every model once, in an order rotated
  by one per round, so machine noise (other jobs on a shared machine) hits every model alike. Latency: median and
  interquartile range over rounds. Speedup of a model: the median over rounds of (PrunedAST at keep rate 1.0 in that
  round / the model in that round).
* MAC reduction: analytic MACs at keep rate 1.0 / at the keep rate (`hf_token_prune.macs`, exact against
  FlopCounterMode); the ideal speedup. Efficiency = speedup / MAC reduction (1.0 = every MAC saved is time saved).
* Peak memory: the profiler's allocator trace (`torch.profiler`, ``profile_memory=True``) records every CPU
  allocation and free made by torch during the call; the peak of the running total is the memory the call needs on
  top of what existed before (weights, and for training the already allocated gradient buffers). Process RSS would
  mix in the allocator's caching and other threads; ``tracemalloc`` does not see torch's allocations.
* Pruning overhead: the pruned forward under `torch.profiler`, read back through the regions the library names
  (``hf_token_prune.profiling``): token scoring (inside the attention), the reduction (top-k, gather, concatenation)
  and the bookkeeping (``PatchTracker.update``), as shares of the forward's time. Ranges around small operators are
  inflated whenever another process takes the core mid-operator, so each pruning call of one forward is also replayed
  alone (``torch.utils.benchmark``) and the sum set against the forward's median latency. The calls are caught
  through PyTorch's module hooks, not by replacing library functions: a forward pre-hook on each layer wraps the
  ``reduction`` it is handed (replayed as is; its plan replayed into a fresh ``PatchTracker``), one on each attention
  records its inputs. Scoring, replayed, is the attention asked for its token signal minus the same attention without
  it: for AudioMAE that is the chunked attention that yields the received-attention score against fused SDPA.
"""

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, record_function
from torch.utils import benchmark
from tqdm.auto import tqdm
from transformers import ASTConfig, ASTForAudioClassification


sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    COMMITTED_RESULTS,
    REPO,
    Run,
    Spread,
    add_torch_threads_argument,
    header_lines,
    markdown_table,
    paired_ratio,
    quiet_profile,
    region_seconds,
    target_records,
    targets_table,
    time_interleaved,
    write_outputs,
)

from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification  # noqa: E402
from hf_token_prune.errors import command  # noqa: E402
from hf_token_prune.macs import count_macs  # noqa: E402
from hf_token_prune.profiling import BOOKKEEPING, REDUCTION, REGIONS, TOKEN_SCORING  # noqa: E402
from hf_token_prune.tracker import PatchTracker  # noqa: E402


KEEP_RATES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
VIT_B = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
TINY = dict(hidden_size=64, num_hidden_layers=12, num_attention_heads=4, intermediate_size=128)
TARGETS = dict(kr1_vs_stock=1.02, inference_efficiency=0.95, overhead_share=0.02, training_efficiency=0.9)


@dataclass(frozen=True)
class Scenario:
    mode: str  # "inference" or "training"
    patches: int
    batch_size: int

    @property
    def max_length(self) -> int:
        return self.patches // 8 * 16  # 128 mel bins -> 8 frequency patches of 16

    @property
    def title(self) -> str:
        return f"{self.mode}, {self.patches} patches, batch {self.batch_size}"


FULL_SCENARIOS = (
    Scenario("inference", 64, 1),
    Scenario("inference", 256, 1),
    Scenario("inference", 512, 1),
    Scenario("inference", 64, 8),
    Scenario("training", 64, 4),
)
QUICK_SCENARIOS = (Scenario("inference", 64, 1), Scenario("training", 64, 2))


@dataclass
class Variant:
    """One timed model: a stock AST, or a pruned model at one keep rate."""

    label: str
    family: str  # "ast" / "audiomae": which PrunedX at keep rate 1.0 its speedup is measured against
    model: torch.nn.Module
    config: object  # what hf_token_prune.macs counts
    keep_rate: float = 1.0
    pruned: bool = True
    times: list = field(default_factory=list)
    peak_bytes: int = 0

    def prepare(self):
        if self.pruned:
            self.model.set_keep_rate(self.keep_rate)


def build_variants(scenario, keep_rates, sizes, audiomae_keep_rates):
    common = dict(**sizes, max_length=scenario.max_length, num_mel_bins=128, patch_size=16, num_labels=527)
    stock = ASTForAudioClassification(ASTConfig(**common, frequency_stride=16, time_stride=16))
    pruned_config = PrunedASTConfig(**common, frequency_stride=16, time_stride=16)
    pruned = PrunedASTForAudioClassification(pruned_config)
    pruned.load_state_dict(stock.state_dict())
    variants = [Variant("AST (transformers, sdpa)", "ast", stock, pruned_config, pruned=False)]
    if scenario.mode == "inference":
        eager = ASTForAudioClassification(ASTConfig(**common, frequency_stride=16, time_stride=16))
        eager.load_state_dict(stock.state_dict())
        eager.set_attn_implementation("eager")
        variants.append(Variant("AST (transformers, eager)", "ast", eager, pruned_config, pruned=False))
    variants += [Variant("PrunedAST", "ast", pruned, pruned_config, rate) for rate in keep_rates]
    if audiomae_keep_rates:
        from hf_token_prune import PrunedAudioMAEConfig, PrunedAudioMAEForAudioClassification

        config = PrunedAudioMAEConfig(**common)
        audiomae = PrunedAudioMAEForAudioClassification(config)
        variants += [Variant("PrunedAudioMAE", "audiomae", audiomae, config, rate) for rate in audiomae_keep_rates]
    for variant in variants:
        variant.model.train(scenario.mode == "training")
    return variants


def make_step(scenario, variant, inputs, labels):
    """A closure running one forward (inference) or forward + backward (training) of the variant."""
    model = variant.model
    if scenario.mode == "inference":

        def step():
            with torch.inference_mode():
                model(inputs)

    else:

        def step():
            # Gradient buffers stay allocated between steps (zeroed, not freed), as with an optimizer that keeps
            # them: the memory measured is then what the step itself needs.
            model.zero_grad(set_to_none=False)
            model(inputs, labels=labels).loss.backward()

    return step


def peak_allocated_bytes(step) -> int:
    """Peak of torch's running CPU allocation total during ``step()``, from the profiler's allocator trace."""
    with quiet_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (event for event in prof.profiler.kineto_results.events() if event.name() == "[memory]"),
        key=lambda event: event.start_ns(),
    )
    current = peak = 0
    for event in events:
        current += event.nbytes()  # negative for a free
        peak = max(peak, current)
    return peak


def run_scenario(scenario, variants, repeats, progress):
    torch.manual_seed(0)
    inputs = torch.randn(scenario.batch_size, scenario.max_length, 128)
    labels = torch.randint(0, 527, (scenario.batch_size,))
    steps = {index: make_step(scenario, variant, inputs, labels) for index, variant in enumerate(variants)}

    def measure_memory(index, step):
        variants[index].prepare()
        if scenario.mode == "training":
            step()  # allocates the gradient buffers before memory is measured
        variants[index].peak_bytes = peak_allocated_bytes(step)

    times = time_interleaved(steps, repeats, warm_up=measure_memory, prepare=lambda index: variants[index].prepare(),
                             progress=progress)  # fmt: skip
    for index, variant in enumerate(variants):
        variant.times = times[index]


# -- pruning overhead ---------------------------------------------------------------------------------------------

# The overhead parts of a reducing layer and the library's profiler region of each.
OVERHEAD_PARTS = {"scoring": TOKEN_SCORING, "reduction": REDUCTION, "bookkeeping": BOOKKEEPING}
PROFILED_KEEP_RATES = {False: (1.0, 0.7, 0.5), True: (1.0, 0.5)}  # by --quick


class _RecordedReduction:
    """A layer's ``LayerReduction`` standing in for it (a forward pre-hook passes it to the layer): each call is made
    as usual and its inputs and plan are kept for the replay."""

    def __init__(self, reduction, calls):
        self._reduction = reduction
        self._calls = calls

    def __getattr__(self, name):
        return getattr(self._reduction, name)

    def __call__(self, hidden_states, signal):
        reduced, plan = self._reduction(hidden_states, signal)
        self._calls.append((self._reduction, hidden_states, signal, plan))
        return reduced, plan


def recorded_pruning_calls(model, inputs):
    """One forward's reducing-layer calls, caught through module forward pre-hooks: ``(attention calls, reduction
    calls)``, each attention call as ``(module, args, kwargs)`` with the token signal it was asked for."""
    attention_calls, reduction_calls = [], []

    def wrap_reduction(layer, args, kwargs):
        if kwargs.get("reduction") is not None:
            return args, dict(kwargs, reduction=_RecordedReduction(kwargs["reduction"], reduction_calls))
        return None

    def record_attention(attention, args, kwargs):
        if kwargs.get("token_signal") is not None:
            attention_calls.append((attention, args, kwargs))

    layers = model.base_model.layers
    handles = [layer.register_forward_pre_hook(wrap_reduction, with_kwargs=True) for layer in layers]
    handles += [layer.attention.register_forward_pre_hook(record_attention, with_kwargs=True) for layer in layers]
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return attention_calls, reduction_calls


def replay_seconds(statement, **names):
    """Median time of ``statement`` replayed alone (torch.utils.benchmark)."""
    return benchmark.Timer(statement, globals=names).blocked_autorange(min_run_time=0.1).median


def replay_pruning_calls(attention_calls, reduction_calls):
    """Seconds per overhead part, summed over one forward's calls, each replayed alone."""
    replayed = dict.fromkeys(OVERHEAD_PARTS, 0.0)
    for attention, args, kwargs in attention_calls:
        plain = {key: value for key, value in kwargs.items() if key != "token_signal"}
        statement = "attention(*args, **kwargs)"
        asked = replay_seconds(statement, attention=attention, args=args, kwargs=kwargs)
        replayed["scoring"] += asked - replay_seconds(statement, attention=attention, args=args, kwargs=plain)
    for reduction, hidden_states, signal, plan in reduction_calls:
        replayed["reduction"] += replay_seconds(
            "reduction(hidden_states, signal)", reduction=reduction, hidden_states=hidden_states, signal=signal
        )
        # A tracker follows the tokens as it records, so each replay starts from a fresh one for this layer's tokens.
        extra = reduction.num_extra_tokens
        tracker = dict(batch_size=hidden_states.shape[0], num_patches=hidden_states.shape[1] - extra,
                       device=hidden_states.device, num_extra_tokens=extra, method=reduction.method)
        replayed["bookkeeping"] += replay_seconds(
            "method.record(PatchTracker(**tracker), plan)", method=reduction.method, PatchTracker=PatchTracker,
            tracker=tracker, plan=plan,
        )
    return replayed


def operator_group(key):
    if key == "aten::addmm":
        return "linear"
    if "scaled_dot_product" in key or key in ("aten::bmm", "aten::_softmax"):
        return "attention"
    return "other"


def profile_pruned_forward(model, inputs, keep_rate, forward_seconds, repeats=3):
    """Profile ``repeats`` forwards at ``keep_rate``: self time per operator group, and the pruning overhead.

    The overhead (scoring, reduction = top-k + gather + cat, bookkeeping) is measured two ways: ``profile_*`` from the
    library's profiler regions inside the forwards; ``replay_*`` from each pruning call of one forward replayed alone,
    summed, over the forward's median latency ``forward_seconds`` from the timed rounds.
    """
    model.eval()
    model.set_keep_rate(keep_rate)
    with torch.inference_mode():
        calls = recorded_pruning_calls(model, inputs)
        with quiet_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                with record_function("forward"):
                    model(inputs)
        replayed = replay_pruning_calls(*calls)
    events = prof.key_averages()
    forward_total = next(event.cpu_time_total for event in events if event.key == "forward") / 1e6
    regions = region_seconds(prof, required=keep_rate < 1.0)
    shares = {f"profile_{part}": regions[region] / forward_total for part, region in OVERHEAD_PARTS.items()}
    shares["profile_total"] = sum(shares.values())
    shares.update({f"replay_{part}": replayed[part] / forward_seconds for part in OVERHEAD_PARTS})
    shares["replay_total"] = sum(replayed.values()) / forward_seconds
    shares["profiled_forward_ms"] = forward_total / repeats * 1e3
    shares["forward_ms"] = forward_seconds * 1e3
    groups = dict.fromkeys(("linear", "attention", "other"), 0.0)
    for event in events:
        if event.key not in ("forward", *REGIONS):  # ranges, not operators: their time is in the operators
            groups[operator_group(event.key)] += event.self_cpu_time_total / repeats / 1e3
    shares["operator_ms"] = groups
    return shares


# -- reporting ----------------------------------------------------------------------------------------------------


def summarise(scenario, variants):
    """One row per variant: latency, speedup against the same family's keep rate 1.0, MAC reduction, memory."""
    references = {v.family: v for v in variants if v.pruned and v.keep_rate == 1.0}
    rows = []
    for variant in variants:
        reference = references[variant.family]
        macs = count_macs(variant.config, variant.keep_rate, batch_size=scenario.batch_size)
        reference_macs = count_macs(reference.config, 1.0, batch_size=scenario.batch_size)
        speedup = paired_ratio(reference.times, variant.times).median
        mac_reduction = reference_macs.total / macs.total
        latency = Spread.of(variant.times)
        rows.append(
            dict(
                model=variant.label,
                keep_rate=variant.keep_rate,
                pruned=variant.pruned,
                kept_patches=list(macs.kept_patches) if variant.pruned else None,
                gmacs=macs.total / 1e9,
                latency_ms=latency.median * 1e3,
                iqr_ms=latency.iqr * 1e3,
                speedup=speedup,
                mac_reduction=mac_reduction,
                efficiency=speedup / mac_reduction,
                peak_memory_mb=variant.peak_bytes / 2**20,
                times_ms=[t * 1e3 for t in variant.times],
            )
        )
    return rows


LATENCY_COLUMNS = ("model", "keep rate", "kept patches", "GMACs", "latency ms (median)", "IQR ms", "speedup vs kr 1.0",
                   "MAC reduction", "speedup / MAC reduction", "peak memory MB")  # fmt: skip


def latency_table(rows):
    return markdown_table(LATENCY_COLUMNS, (
        [row["model"], f"{row['keep_rate']:.1f}" if row["pruned"] else "-",
         ", ".join(map(str, row["kept_patches"])) if row["pruned"] else "-", f"{row['gmacs']:.2f}",
         f"{row['latency_ms']:.1f}", f"{row['iqr_ms']:.1f}", f"{row['speedup']:.2f}x", f"{row['mac_reduction']:.2f}x",
         f"{row['efficiency']:.2f}", f"{row['peak_memory_mb']:.1f}"]
        for row in rows
    ))  # fmt: skip


def target_checks(results, profiles):
    """The issue's targets, each with the measured value and whether it holds."""
    checks = []
    for entry in results:
        scenario, rows = entry["scenario"], entry["rows"]
        if scenario["mode"] == "inference":
            stock = next(row for row in rows if row["model"] == "AST (transformers, sdpa)")
            ratio = 1 / stock["speedup"]  # PrunedAST kr 1.0 latency / stock latency, paired per round
            checks.append(
                (
                    f"PrunedAST kr 1.0 / stock SDPA latency, {entry['title']}",
                    ratio,
                    f"<= {TARGETS['kr1_vs_stock']}",
                    ratio <= TARGETS["kr1_vs_stock"],
                )
            )
        target = TARGETS["inference_efficiency" if scenario["mode"] == "inference" else "training_efficiency"]
        for row in rows:
            if row["pruned"] and row["keep_rate"] in (0.7, 0.5):
                checks.append(
                    (
                        f"{row['model']} speedup / MAC reduction at kr {row['keep_rate']}, {entry['title']} "
                        f"({row['speedup']:.2f}x of {row['mac_reduction']:.2f}x)",
                        row["efficiency"],
                        f">= {target}",
                        row["efficiency"] >= target,
                    )
                )
    for entry in profiles:
        if entry["keep_rate"] < 1.0:
            checks.append(
                (
                    f"pruning overhead share of the forward (profile), {entry['title']}, kr {entry['keep_rate']} "
                    f"(replayed alone: {entry['replay_total']:.2%})",
                    entry["profile_total"],
                    f"<= {TARGETS['overhead_share']}",
                    entry["profile_total"] <= TARGETS["overhead_share"],
                )
            )
    return checks


def operator_table(profiles):
    """Per operator group: share of the unpruned forward, and speedup against the MAC reduction of that group."""
    header = ["scenario", "keep rate", "operator-time speedup (MAC reduction)",
              "linear layers (addmm): share at kr 1.0, speedup (MAC reduction)",
              "attention (SDPA): share, speedup (MAC reduction)", "everything else: share, speedup"]  # fmt: skip
    rows = []
    references = {entry["title"]: entry for entry in profiles if entry["keep_rate"] == 1.0}
    for entry in profiles:
        reference = references[entry["title"]]
        if entry is reference:
            continue
        ops, base = entry["operator_ms"], reference["operator_ms"]
        total = sum(base.values())

        def cell(group, macs_key=None):
            text = f"{base[group] / total:.0%}, {base[group] / ops[group]:.2f}x"
            return text + (f" ({reference[macs_key] / entry[macs_key]:.2f}x)" if macs_key else "")

        rows.append([entry["title"], entry["keep_rate"],
                     f"{total / sum(ops.values()):.2f}x ({reference['gmacs'] / entry['gmacs']:.2f}x)",
                     cell("linear", "linear_gmacs"), cell("attention", "attention_gmacs"), cell("other")])  # fmt: skip
    return markdown_table(header, rows)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5.5))
    largest = 1.0
    for index, entry in enumerate(results):
        color = f"C{index}"  # one colour per scenario, one line style per model family
        for family, style in (("PrunedAST", "-o"), ("PrunedAudioMAE", "--s")):
            rows = sorted((row for row in entry["rows"] if row["model"] == family), key=lambda row: -row["keep_rate"])
            if rows:
                x, y = [row["mac_reduction"] for row in rows], [row["speedup"] for row in rows]
                axis.plot(x, y, style, color=color, label=f"{family}, {entry['title']}", markersize=4)
                largest = max(largest, *x, *y)
    axis.plot([1, largest], [1, largest], "k:", label="ideal: speedup = MAC reduction")
    axis.set_xlabel("MAC reduction (MACs at keep rate 1.0 / MACs at keep rate)")
    axis.set_ylabel("measured speedup vs keep rate 1.0")
    axis.set_title("Measured speedup vs MAC reduction, keep rates 1.0 ... 0.4")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def report(args, results, profiles, checks, header):
    lines = [
        "# Token pruning benchmark",
        "",
        *header_lines(header),
        "",
        f"Models: {header['models']}. Random weights; {args.repeats} interleaved timed rounds after one warm-up. "
        "Speedup: median over rounds of the per-round ratio to the same family at keep rate 1.0. "
        "MAC reduction: analytic MACs (`hf_token_prune.macs`) at 1.0 / at the keep rate. "
        "Peak memory: torch's allocations during the call on top of weights (and gradient buffers), from the "
        "profiler's allocator trace.",
        "",
        "## Targets",
        "",
        targets_table(checks),
    ]
    for entry in results:
        lines += ["", f"## {entry['title']}", "", latency_table(entry["rows"])]
    lines += [
        "",
        "## Pruning overhead",
        "",
        "Share of the forward spent in token scoring / reduction (top-k, gather, cat) / bookkeeping. *Profile*: the "
        "library's named profiler regions (`hf_token_prune.profiling`) inside 3 profiled forwards. *Replayed*: each "
        "pruning call of one forward, caught by module hooks, timed alone (`torch.utils.benchmark`, median), summed, "
        "over the median forward latency of the timed rounds; scoring replayed = the attention asked for its token "
        "signal minus the same attention without it.",
        "",
        markdown_table(
            ["scenario", "keep rate", "forward ms", "profile: scoring", "reduction", "bookkeeping", "**total**",
             "replayed: scoring", "reduction", "bookkeeping", "**total**"],
            ([entry["title"], entry["keep_rate"], f"{entry['forward_ms']:.1f}"]
             + [f"{entry[f'{way}_{part}']:.2%}" for way in ("profile", "replay") for part in (*OVERHEAD_PARTS, "total")]
             for entry in profiles if entry["keep_rate"] < 1.0),
        ),
    ]  # fmt: skip
    lines += [
        "",
        "## Where the time goes",
        "",
        "Self CPU time by operator group in the same profiles (3 forwards each, against keep rate 1.0). A group whose "
        "speedup falls short of its MAC reduction runs less efficiently on fewer tokens.",
        "",
        operator_table(profiles),
    ]
    lines += ["", "![speedup vs MAC reduction](speedup_vs_macs.png)", ""]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: tiny model, keep rates 1.0 and 0.5, 2 rounds, 2 small scenarios (seconds)",
    )
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=None,
        help="where benchmark.md, .json, .csv and speedup_vs_macs.png go (default: outputs/benchmark, or "
        "outputs/benchmark_quick with --quick); the committed results are only replaced with --update_results",
    )
    parser.add_argument(
        "--update_results",
        action="store_true",
        help="write into docs/reports/results/, replacing the committed benchmark.* (their Command line records this "
        "run's flags)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed rounds per scenario (default: 7; 2 with --quick)"
    )
    add_torch_threads_argument(
        parser, 2, "torch.set_num_threads for the whole run (default: %(default)s, this machine's cores)"
    )
    parser.add_argument("--no_audiomae", action="store_true", help="skip the PrunedAudioMAE rows (shorter run)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 7
    if args.repeats < 1 or args.torch_threads < 1:
        parser.error("--repeats and --torch_threads must be at least 1")
    if args.update_results:
        if args.quick or args.output_dir is not None:
            parser.error("--update_results writes the full run to docs/reports/results: drop --quick, --output_dir")
        args.output_dir = COMMITTED_RESULTS
    elif args.output_dir is None:
        args.output_dir = REPO / "outputs" / ("benchmark_quick" if args.quick else "benchmark")
    elif args.output_dir.resolve() == COMMITTED_RESULTS.resolve():
        parser.error("--output_dir docs/reports/results holds the committed results: add --update_results instead")
    return args


@command("benchmark_pruning.py")
def main(argv):
    args = parse_args(argv)
    run = Run("benchmark_pruning.py", argv, args.torch_threads)
    scenarios = QUICK_SCENARIOS if args.quick else FULL_SCENARIOS
    sizes = TINY if args.quick else VIT_B
    keep_rates = (1.0, 0.5) if args.quick else KEEP_RATES
    with_audiomae = not args.no_audiomae
    # AudioMAE shares the time budget: the rates the targets name, in the batch-1 inference scenarios only.
    audiomae_rates = (1.0, 0.7, 0.5) if not args.quick else (1.0, 0.5)
    models = "transformers' ASTForAudioClassification (sdpa, eager), PrunedASTForAudioClassification (sdpa)"
    if with_audiomae:
        models += f", PrunedAudioMAEForAudioClassification (sdpa, keep rates {audiomae_rates}, batch-1 inference)"
    else:
        models += " (PrunedAudioMAE rows skipped: --no_audiomae)"

    plans = []
    for scenario in scenarios:
        rates = audiomae_rates if with_audiomae and scenario.mode == "inference" and scenario.batch_size == 1 else ()
        count = len(keep_rates) + (2 if scenario.mode == "inference" else 1) + len(rates)
        plans.append((scenario, rates, count))
    results, profiles = [], []
    total = sum(count * (args.repeats + 1) for _, _, count in plans)
    with tqdm(total=total, desc="timed calls", unit="call") as progress:
        for scenario, rates, _ in plans:
            progress.set_postfix_str(scenario.title)
            variants = build_variants(scenario, keep_rates, sizes, rates)
            run_scenario(scenario, variants, args.repeats, progress)
            results.append(dict(scenario=scenario.__dict__, title=scenario.title, rows=summarise(scenario, variants)))
            if scenario.mode == "inference" and scenario.batch_size == 1:
                inputs = torch.randn(scenario.batch_size, scenario.max_length, 128)
                for family in dict.fromkeys(v.family for v in variants if v.pruned):
                    for rate in PROFILED_KEEP_RATES[args.quick]:
                        timed = next(v for v in variants if v.pruned and v.family == family and v.keep_rate == rate)
                        shares = profile_pruned_forward(timed.model, inputs, rate, Spread.of(timed.times).median)
                        macs = count_macs(timed.config, rate)
                        shares.update(
                            linear_gmacs=(macs.attention_projections + macs.mlp + macs.classifier) / 1e9,
                            attention_gmacs=(macs.attention_matmuls + macs.token_scoring) / 1e9,
                            gmacs=macs.total / 1e9,
                        )
                        title = scenario.title + ("" if family == "ast" else ", AudioMAE")
                        profiles.append(dict(title=title, keep_rate=rate, **shares))
            del variants

    checks = target_checks(results, profiles)
    header = dict(run.header(), models=models)
    text = report(args, results, profiles, checks, header)
    data = dict(header=header, results=results, profiles=profiles, targets=target_records(checks))
    rows = [dict(scenario=entry["title"], **row) for entry in results for row in entry["rows"]]
    write_outputs([args.output_dir], "benchmark", text, data, rows)
    plot(results, args.output_dir / "speedup_vs_macs.png")
    print(text)
    print(f"wrote {args.output_dir}/benchmark.md, benchmark.json, benchmark.csv, speedup_vs_macs.png")


if __name__ == "__main__":
    main()

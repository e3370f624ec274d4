"""Deployment speed of token pruning per backend (eager, torch.compile, ONNX Runtime) and int8 stacked on pruning.

    python benchmarks/benchmark_deploy.py                  # ViT-B, 512 patches, batch 1 and 8 (~40 min on 2 cores)
    python benchmarks/benchmark_deploy.py --quick          # tiny model, a smoke test of the whole pipeline
    python benchmarks/benchmark_deploy.py --update_committed   # also write docs/reports/results/deploy.{md,json,csv}

Results go to a fresh folder (``outputs/benchmark_deploy-<UTC time>`` unless ``--output_dir``); the committed ones
in ``docs/reports/results/`` change only with ``--update_committed``, and name the command that made them.

Method:
* Models, ViT-B with random weights, 512 patches (1024 frames x 128 mel bins), 527 labels: transformers' stock
  ``ASTForAudioClassification`` (SDPA), ``PrunedASTForAudioClassification`` with the same weights and
  ``PrunedAudioMAEForAudioClassification``, each pruned model at keep rates 1.0 / 0.7 / 0.5.
* Backends: eager PyTorch; ``torch.compile`` (inductor, ``dynamic=False``: one compile per model, keep rate and
  batch size; a pruned model is compiled once and recompiles on a keep-rate change, dynamo guarding on
  ``config.keep_rate``); ONNX Runtime (CPU) on a graph from ``hf_token_prune.export.export_onnx`` (one per model and
  keep rate, dynamic batch), plus its dynamic int8 quantisation (``hf_token_prune.export.quantize_int8``) for stock
  AST and PrunedAST at 0.7. Every backend's logits are compared with eager's on the warm-up call.
* Timing: the shared harness (``harness.py``): one untimed warm-up call per variant (compiles, builds sessions), then
  ``--repeats`` rounds in which every variant runs once, in an order rotated by one per round, so machine noise hits
  all alike. Latency: median and
  interquartile range (IQR) over rounds. Ratios are medians over rounds of per-round ratios: speedup = same family and
  backend at keep rate 1.0 / the variant; kr 1.0 / stock = PrunedAST at 1.0 / stock AST in the same backend.
  MAC ratio: ``hf_token_prune.macs.count_macs`` at 1.0 / at the keep rate (the ideal speedup).
* torch and ONNX Runtime run with ``--torch_threads`` intra-op threads. The load average is printed before and after.
* Accuracy (with ``--model_name_or_path``, default ``outputs/demo`` when ``make demo`` has written it): every test
  clip of ``data/keywords``, top-1, for the demo model unpruned as stock AST (eager and ONNX Runtime fp32, int8), and
  at keep rate 0.7 through ``pipeline("audio-classification")`` in PyTorch and through ONNX Runtime fp32 and int8
  (``OnnxAudioClassifier``), with the number of clips whose top-1 differs from stock fp32's and, for ONNX Runtime at
  0.7, from ``pipeline()``'s.
"""

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import ASTConfig, ASTForAudioClassification


sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_pruning import TINY, VIT_B  # noqa: E402
from harness import (  # noqa: E402
    default_output_dir,
    COMMITTED_RESULTS,
    REPO,
    Run,
    Spread,
    add_model_argument,
    add_torch_threads_argument,
    header_lines,
    keyword_test_clips,
    markdown_table,
    paired_ratio,
    target_records,
    targets_table,
    time_interleaved,
    write_outputs,
)

from hf_token_prune import (  # noqa: E402
    PrunedASTConfig,
    PrunedASTForAudioClassification,
    PrunedAudioMAEConfig,
    PrunedAudioMAEForAudioClassification,
)
from hf_token_prune.errors import command  # noqa: E402
from hf_token_prune.export import export_onnx, onnx_session, quantize_int8  # noqa: E402
from hf_token_prune.macs import count_macs  # noqa: E402


KEEP_RATES = (1.0, 0.7, 0.5)
BACKENDS = ("eager", "inductor", "onnxruntime")
QUANTISED_KEEP_RATE = 0.7
TARGETS = dict(kr1_vs_stock=1.02, efficiency=0.95, int8_speedup=2.5, int8_accuracy_loss=0.01)


@dataclass
class Variant:
    """One timed call: a model at a keep rate in one backend (``precision`` int8 only for ONNX Runtime)."""

    model: str  # "AST (transformers)", "PrunedAST", "PrunedAudioMAE"
    keep_rate: float
    backend: str
    config: object
    run: object  # input_values -> logits (numpy or torch)
    precision: str = "fp32"
    times: list = field(default_factory=list)
    max_abs_diff: float = 0.0  # logits vs eager, on the warm-up call
    setup_s: float = 0.0  # export / compile / first call

    @property
    def label(self) -> str:
        return f"{self.model} kr {self.keep_rate} {self.backend} {self.precision}"


def build_models(sizes, max_length):
    common = dict(**sizes, max_length=max_length, num_mel_bins=128, patch_size=16, num_labels=527)
    stock = ASTForAudioClassification(ASTConfig(**common, frequency_stride=16, time_stride=16)).eval()
    ast_config = PrunedASTConfig(**common, frequency_stride=16, time_stride=16)
    pruned_ast = PrunedASTForAudioClassification(ast_config).eval()
    pruned_ast.load_state_dict(stock.state_dict())
    audiomae = PrunedAudioMAEForAudioClassification(PrunedAudioMAEConfig(**common)).eval()
    return [("AST (transformers)", stock, ast_config), ("PrunedAST", pruned_ast, ast_config),
            ("PrunedAudioMAE", audiomae, audiomae.config)]


def torch_runner(model, keep_rate, compiled=None):
    """Eager (or a compiled wrapper of the same module) at ``keep_rate``; set before every call, since one module
    serves every keep rate of its family."""
    target = model if compiled is None else compiled  # an OptimizedModule has no truth value

    def run(inputs):
        if hasattr(model, "set_keep_rate"):
            model.set_keep_rate(keep_rate)
        with torch.inference_mode():
            return target(inputs).logits

    return run


def onnx_runner(path, num_threads):
    session = onnx_session(path, num_threads)
    return lambda inputs: session.run(["logits"], {"input_values": inputs.numpy()})[0]


def build_variants(models, backends, keep_rates, num_threads, workdir, progress):
    """Every (model, keep rate, backend) to time; ONNX graphs exported (and int8-quantised) here."""
    variants = []
    for name, model, config in models:
        rates = (1.0,) if name.startswith("AST") else keep_rates
        # Both pruned classifiers share one forward (and so one dynamo cache): room for 2 batch sizes x 3 keep rates
        # of each family, where the default limit of 8 would silently fall back to eager.
        torch._dynamo.config.recompile_limit = 32
        compiled = torch.compile(model, dynamic=False) if "inductor" in backends else None
        for rate in rates:
            for backend in backends:
                if backend == "onnxruntime":
                    if hasattr(model, "set_keep_rate"):
                        model.set_keep_rate(rate)
                    started = time.perf_counter()
                    path = workdir / f"{name.split()[0]}-{rate}.onnx"
                    progress.set_postfix_str(f"export {path.name}")
                    # Weights are random, so a graph is only checked here; logits are compared on the warm-up call.
                    export_onnx(model, path, torch.randn(2, config.max_length, 128), check=False)
                    variant = Variant(name, rate, backend, config, onnx_runner(path, num_threads))
                    variant.setup_s = time.perf_counter() - started
                    variants.append(variant)
                    if name.startswith("AST") or (name == "PrunedAST" and rate == QUANTISED_KEEP_RATE):
                        started = time.perf_counter()
                        int8 = quantize_int8(path, path.with_suffix(".int8.onnx"))
                        quantised = Variant(name, rate, backend, config, onnx_runner(int8, num_threads), "int8")
                        quantised.setup_s = time.perf_counter() - started
                        variants.append(quantised)
                    progress.update(1)
                else:
                    variants.append(Variant(name, rate, backend, config, torch_runner(model, rate, compiled)
                                            if backend == "inductor" else torch_runner(model, rate)))
    return variants


def as_numpy(logits):
    return logits.numpy() if isinstance(logits, torch.Tensor) else logits


def run_batch(variants, batch_size, max_length, repeats, progress):
    """Warm up every variant (compiles, checks logits against eager), then the interleaved timed rounds."""
    torch.manual_seed(0)
    inputs = torch.randn(batch_size, max_length, 128)
    reference = {}

    def check_against_eager(index, run):
        variant = variants[index]
        progress.set_postfix_str(f"batch {batch_size}: warm-up {variant.label}")
        started = time.perf_counter()
        logits = as_numpy(run())
        variant.setup_s += time.perf_counter() - started
        key = (variant.model, variant.keep_rate)
        if variant.backend == "eager":
            reference[key] = logits
        variant.max_abs_diff = float(abs(logits - reference[key]).max())

    calls = {index: (lambda variant=variant: variant.run(inputs)) for index, variant in enumerate(variants)}
    times = time_interleaved(calls, repeats, warm_up=check_against_eager, progress=progress)
    for index, variant in enumerate(variants):
        variant.times = times[index]


def variant_ratio(numerator, denominator):
    """Median over rounds of the per-round latency ratio of two variants."""
    return paired_ratio(numerator.times, denominator.times).median


def summarise(variants, batch_size):
    rows = []
    find = {(v.model, v.keep_rate, v.backend, v.precision): v for v in variants}
    for variant in variants:
        family_reference = find[("AST (transformers)" if variant.model.startswith("AST") else variant.model, 1.0,
                                 variant.backend, "fp32")]
        macs = count_macs(variant.config, variant.keep_rate, batch_size=batch_size).total
        reference_macs = count_macs(family_reference.config, 1.0, batch_size=batch_size).total
        latency = Spread.of(variant.times)
        row = dict(
            model=variant.model, keep_rate=variant.keep_rate, backend=variant.backend, precision=variant.precision,
            gmacs=macs / 1e9, latency_ms=latency.median * 1e3,
            iqr_ms=latency.iqr * 1e3, speedup=variant_ratio(family_reference, variant),
            mac_ratio=reference_macs / macs, max_abs_diff_vs_eager=variant.max_abs_diff, setup_s=variant.setup_s,
            times_ms=[t * 1e3 for t in variant.times],
        )
        row["efficiency"] = row["speedup"] / row["mac_ratio"]
        if variant.model == "PrunedAST" and variant.keep_rate == 1.0 and variant.precision == "fp32":
            row["vs_stock"] = variant_ratio(variant, find[("AST (transformers)", 1.0, variant.backend, "fp32")])
        for backend in ("eager", "onnxruntime"):
            stock = find.get(("AST (transformers)", 1.0, backend, "fp32"))
            if stock is not None:
                row[f"speedup_vs_stock_{backend}_fp32"] = variant_ratio(stock, variant)
        rows.append(row)
    return rows


# -- accuracy of the demo model ------------------------------------------------------------------------------------


def demo_accuracy(demo_model, workdir, num_threads):
    """Top-1 on the keyword test split: stock AST and PrunedAST at 0.7, PyTorch and ONNX Runtime fp32 / int8."""
    from transformers import AutoFeatureExtractor, pipeline

    from hf_token_prune.export import OnnxAudioClassifier, export_pretrained

    clips = keyword_test_clips()
    labels = [clip.parent.name for clip in clips]
    pruned = PrunedASTForAudioClassification.from_pretrained(demo_model)
    fields = {k: v for k, v in pruned.config.to_dict().items() if k not in ("keep_rate", "pruning_layers", "token_score",
                                                                           "auto_map", "model_type", "architectures")}
    stock = ASTForAudioClassification(ASTConfig(**fields)).eval()
    stock.load_state_dict(pruned.state_dict())
    extractor = AutoFeatureExtractor.from_pretrained(demo_model)

    def score(predict):
        predictions = [predict(clip) for clip in clips]
        return sum(p == label for p, label in zip(predictions, labels)) / len(clips), predictions

    def top1(classify):
        return lambda clip: classify(str(clip), top_k=1)[0]["label"]

    rows = []
    stock_pipeline = pipeline("audio-classification", model=stock, feature_extractor=extractor)
    accuracy, stock_predictions = score(top1(stock_pipeline))

    def differ(predictions, reference):
        return sum(a != b for a, b in zip(predictions, reference))

    rows.append(dict(model="AST (transformers), demo weights", keep_rate=1.0, runtime="PyTorch pipeline()",
                     precision="fp32", accuracy=accuracy, clips=len(clips), top1_differs_from_stock=0))
    folders = {}
    for name, model, rate in (("stock", stock, 1.0), ("pruned", pruned, QUANTISED_KEEP_RATE)):
        folder = workdir / f"demo-{name}"
        if name == "pruned":
            export_pretrained(demo_model, folder, keep_rate=rate)
        else:
            export_onnx(model, folder / "model.onnx")
            model.config.save_pretrained(folder)
            extractor.save_pretrained(folder)
        quantize_int8(folder / "model.onnx", folder / "model.int8.onnx")
        folders[name] = folder
    pruned_pipeline = pipeline("audio-classification", model=str(demo_model), model_kwargs=dict(keep_rate=0.7))
    reference, predictions = score(top1(pruned_pipeline))
    rows.append(dict(model="PrunedAST (demo)", keep_rate=QUANTISED_KEEP_RATE, runtime="PyTorch pipeline()",
                     precision="fp32", accuracy=reference,
                     top1_differs_from_stock=differ(predictions, stock_predictions)))
    for name, rate in (("stock", 1.0), ("pruned", QUANTISED_KEEP_RATE)):
        for precision, onnx_file in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
            classifier = OnnxAudioClassifier(folders[name], num_threads, onnx_file=onnx_file)
            accuracy, onnx_predictions = score(top1(classifier))
            row = dict(model="AST (transformers), demo weights" if name == "stock" else "PrunedAST (demo)",
                       keep_rate=rate, runtime="ONNX Runtime", precision=precision, accuracy=accuracy,
                       top1_differs_from_stock=differ(onnx_predictions, stock_predictions))
            if name == "pruned":
                row["top1_differs_from_pipeline"] = differ(onnx_predictions, predictions)
            rows.append(row)
    return rows


# -- reporting -----------------------------------------------------------------------------------------------------


LATENCY_COLUMNS = ("model", "keep rate", "backend", "precision", "GMACs", "latency ms (median)", "IQR ms",
                   "speedup vs kr 1.0", "MAC ratio", "speedup / MAC ratio", "kr 1.0 / stock", "max abs diff vs eager",
                   "setup s")  # fmt: skip


def latency_table(rows):
    rows = sorted(rows, key=lambda r: (r["model"], -r["keep_rate"], BACKENDS.index(r["backend"]), r["precision"]))
    return markdown_table(LATENCY_COLUMNS, (
        [row["model"], row["keep_rate"], row["backend"], row["precision"], f"{row['gmacs']:.2f}",
         f"{row['latency_ms']:.1f}", f"{row['iqr_ms']:.1f}", f"{row['speedup']:.2f}x", f"{row['mac_ratio']:.2f}x",
         f"{row['efficiency']:.3f}", f"{row['vs_stock']:.3f}" if "vs_stock" in row else "",
         f"{row['max_abs_diff_vs_eager']:.1e}", f"{row['setup_s']:.0f}"]
        for row in rows
    ))  # fmt: skip


def quantisation_table(results, accuracy_rows):
    header = ["model", "keep rate", "precision", "batch", "ORT latency ms", "speedup vs stock ORT fp32",
              "speedup vs stock eager fp32"]  # fmt: skip
    rows = [
        [row["model"], row["keep_rate"], row["precision"], entry["batch_size"], f"{row['latency_ms']:.1f}",
         f"{row['speedup_vs_stock_onnxruntime_fp32']:.2f}x",
         f"{row.get('speedup_vs_stock_eager_fp32', float('nan')):.2f}x"]
        for entry in results
        for row in entry["rows"]
        if row["backend"] == "onnxruntime" and row["model"] != "PrunedAudioMAE"
        and (row["model"].startswith("AST") or row["keep_rate"] == QUANTISED_KEEP_RATE)
    ]  # fmt: skip
    lines = [markdown_table(header, rows), ""] if rows else []
    if accuracy_rows:
        clips = accuracy_rows[0]["clips"]
        header = ["demo model", "keep rate", "runtime", "precision", f"test accuracy ({clips} clips)",
                  "top-1 differs from stock fp32", "top-1 differs from pipeline() at kr 0.7"]  # fmt: skip
        rows = ([row["model"], row["keep_rate"], row["runtime"], row["precision"], f"{row['accuracy']:.4f}",
                 row["top1_differs_from_stock"], row.get("top1_differs_from_pipeline", "")]
                for row in accuracy_rows)  # fmt: skip
        lines.append(markdown_table(header, rows))
    return "\n".join(lines)


def target_checks(results, accuracy_rows):
    checks = []
    for entry in results:
        title = f"batch {entry['batch_size']}"
        for row in entry["rows"]:
            if "vs_stock" in row:
                checks.append((f"PrunedAST kr 1.0 / stock latency, {row['backend']}, {title}", row["vs_stock"],
                               f"<= {TARGETS['kr1_vs_stock']}", row["vs_stock"] <= TARGETS["kr1_vs_stock"]))
        for row in entry["rows"]:
            if entry["batch_size"] > 1 and row["keep_rate"] < 1.0 and row["precision"] == "fp32":
                checks.append((
                    f"{row['model']} kr {row['keep_rate']} speedup / MAC ratio, {row['backend']}, {title} "
                    f"({row['speedup']:.2f}x of {row['mac_ratio']:.2f}x)",
                    row["efficiency"], f">= {TARGETS['efficiency']}", row["efficiency"] >= TARGETS["efficiency"]))
        for row in entry["rows"]:
            if row["model"] == "PrunedAST" and row["precision"] == "int8":
                speedup = row["speedup_vs_stock_onnxruntime_fp32"]
                checks.append((f"PrunedAST kr {QUANTISED_KEEP_RATE} int8 vs stock fp32, ONNX Runtime, {title}",
                               speedup, f">= {TARGETS['int8_speedup']}", speedup >= TARGETS["int8_speedup"]))
    if accuracy_rows:
        stock = next(r for r in accuracy_rows if r["runtime"] == "PyTorch pipeline()" and r["keep_rate"] == 1.0)
        int8 = next(r for r in accuracy_rows if r["model"].startswith("Pruned") and r["precision"] == "int8")
        loss = stock["accuracy"] - int8["accuracy"]
        checks.append(("demo accuracy loss, pruned kr 0.7 int8 (ONNX Runtime) vs stock fp32", loss,
                       f"<= {TARGETS['int8_accuracy_loss']}", loss <= TARGETS["int8_accuracy_loss"]))
        pipeline_row = next(r for r in accuracy_rows if r["runtime"] == "PyTorch pipeline()" and r["keep_rate"] < 1)
        onnx_row = next(r for r in accuracy_rows if r["model"].startswith("Pruned") and r["runtime"] == "ONNX Runtime"
                        and r["precision"] == "fp32")
        difference = abs(onnx_row["accuracy"] - pipeline_row["accuracy"])
        checks.append(("demo accuracy, ONNX Runtime fp32 vs pipeline() at kr 0.7 (|difference|)", difference, "== 0",
                       difference == 0))
    return checks


def report(header, results, accuracy_rows, checks):
    lines = [
        "# Deployment benchmark: backends and int8",
        "",
        *header_lines(header),
        f"ONNX Runtime intra-op threads: {header['torch_threads']}, as torch's.",
        "",
    ]
    if results:
        lines += [
            f"Models: {header['models']}. {header['repeats']} interleaved timed rounds after one warm-up per variant. "
            "Speedup: median over rounds of the per-round latency ratio to the same family and backend at keep rate "
            "1.0; kr 1.0 / stock: PrunedAST at 1.0 over stock AST, same backend. MAC ratio: `hf_token_prune.macs`. "
            "Setup s: export (+ int8 quantisation) or compile, plus the first call. Max abs diff: logits vs eager.",
            "",
        ]
    lines += [
        "## Targets",
        "",
        targets_table(checks),
    ]
    for entry in results:
        lines += ["", f"## Batch {entry['batch_size']}", "", latency_table(entry["rows"])]
    lines += ["", "## int8 stacked on pruning (ONNX Runtime dynamic quantisation)", "",
              quantisation_table(results, accuracy_rows), ""]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny model, 64 patches, batch 1 and 2, 2 rounds, no inductor")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="where deploy.md, .json and .csv go (default: a fresh outputs/benchmark_deploy-<time>)")
    parser.add_argument("--update_committed", action="store_true",
                        help="also write the committed results, docs/reports/results/deploy.{md,json,csv}")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default: 5; 2 with --quick)")
    parser.add_argument("--batch_sizes", default=None, help="comma-separated (default: 1,8; 1,2 with --quick)")
    add_torch_threads_argument(parser, 2, "intra-op threads of torch and ONNX Runtime (default: %(default)s)")
    parser.add_argument("--backends", default=None,
                        help=f"comma-separated subset of {','.join(BACKENDS)} (default: all; no inductor with --quick)")
    add_model_argument(parser, REPO / "outputs" / "demo",
                       "the `make demo` folder whose test accuracy is measured per runtime (skipped if absent)")
    parser.add_argument("--accuracy_only", action="store_true", help="only the demo accuracies, no timing")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    default_backends = "eager,onnxruntime" if args.quick else ",".join(BACKENDS)
    args.backends = tuple((args.backends or default_backends).split(","))
    unknown = set(args.backends) - set(BACKENDS)
    if unknown or "eager" not in args.backends:
        parser.error(f"--backends: choose from {', '.join(BACKENDS)}, eager included (the reference)")
    try:
        args.batch_sizes = [int(b) for b in (args.batch_sizes or ("1,2" if args.quick else "1,8")).split(",")]
    except ValueError:
        parser.error("--batch_sizes: comma-separated integers, e.g. 1,8")
    if args.repeats < 1 or args.torch_threads < 1 or min(args.batch_sizes) < 1:
        parser.error("--repeats, --torch_threads and every batch size must be at least 1")
    if args.accuracy_only and not args.model_name_or_path.is_dir():
        parser.error(f"--accuracy_only: no such folder: {args.model_name_or_path} (run `make demo` first)")
    if args.output_dir is None:
        args.output_dir = default_output_dir("benchmark_deploy")
    return args


@command("benchmark_deploy.py")
def main(argv):
    args = parse_args(argv)
    run = Run("benchmark_deploy.py", argv, args.torch_threads)
    print(f"load average before: {run.load_before}", flush=True)
    sizes, max_length = (TINY, 128) if args.quick else (VIT_B, 1024)
    results, accuracy_rows = [], []
    with tempfile.TemporaryDirectory(prefix="benchmark_deploy_") as tmp:
        workdir = Path(tmp)
        if args.model_name_or_path.is_dir():
            accuracy_rows = demo_accuracy(args.model_name_or_path, workdir, args.torch_threads)
        else:
            print(f"no {args.model_name_or_path}: demo accuracies skipped (run `make demo` first)")
        if not args.accuracy_only:
            models = build_models(sizes, max_length)
            exports = sum(len(KEEP_RATES) if not name.startswith("AST") else 1 for name, _, _ in models)
            with tqdm(total=exports if "onnxruntime" in args.backends else 0, desc="ONNX exports") as progress:
                variants = build_variants(models, args.backends, KEEP_RATES, args.torch_threads, workdir, progress)
            for batch_size in args.batch_sizes:
                for variant in variants:
                    variant.times = []
                with tqdm(total=len(variants) * (args.repeats + 1), desc=f"batch {batch_size}", unit="call") as bar:
                    run_batch(variants, batch_size, max_length, args.repeats, bar)
                results.append(dict(batch_size=batch_size, rows=summarise(variants, batch_size)))
                write_results(args, run, results, accuracy_rows)  # partial results survive a cut
    folders, text, header = write_results(args, run, results, accuracy_rows)
    print(text)
    print(f"load average after: {header['load_after']}")
    print("wrote " + ", ".join(f"{folder}/deploy.md, deploy.json, deploy.csv" for folder in folders))


def write_results(args, run, results, accuracy_rows):
    """The report as of now into every output folder: ``(folders, markdown, header)``."""
    checks = target_checks(results, accuracy_rows)
    header = dict(
        run.header(), repeats=args.repeats,
        models=("tiny 12-layer models (hidden 64), 64 patches" if args.quick else
                "ViT-B, 512 patches (1024 frames x 128 mel bins), random weights, 527 labels")
        + f"; backends {', '.join(args.backends)}",
    )  # fmt: skip
    text = report(header, results, accuracy_rows, checks)
    data = dict(header=header, results=results, accuracy=accuracy_rows, targets=target_records(checks))
    rows = [dict(batch_size=entry["batch_size"], **row) for entry in results for row in entry["rows"]]
    folders = [args.output_dir] + ([COMMITTED_RESULTS] if args.update_committed else [])
    return write_outputs(folders, "deploy", text, data, rows), text, header


if __name__ == "__main__":
    main()

"""The paper's analyses of a pruned audio transformer on an audio classification split, as tables, figures and an index.

    hf-token-prune analyze --model_name_or_path outputs/demo --dataset_name audiofolder \\
        --data_dir data/keywords --split test            # or: python recipes/analyze.py ...

Analyses (--analyses, comma-separated; default all):
  sweep         Table I/II: metric at keep rates 1.0..0.4 for every token score and token reduction (prune, fuse,
                merge), training-free on the given weights, with analytic GMACs; --sweep_models adds fine-tuned
                folders (one per keep rate / score / method) to the table
  patterns      Fig. 3: spectrograms with the patches pruned at each pruning layer blanked, or under fuse / merge
                what the fused token absorbed / the merged groups (--num_examples)
  clusters      Table III / Fig. 5: 1-D k-means (k=5) of all patch intensities, C1..C5 by ascending intensity
  kendall       Fig. 4: Kendall's tau per block between attention score and clustered intensity / variation
  cluster_drop  Table IV: keep rate 1.0, drop the C1+C2 or C4+C5 tokens after block i (--blocks)
  histograms    Fig. 6: log 2-D histogram of patch mean vs std, all patches vs those kept to the last layer

The model folder must hold a pruned model (or a stock AST checkpoint) and its feature extractor. The data are read
as finetune reads them, with the same flags: a named dataset (--dataset_source for a copy or an official archive),
an audiofolder (--data_dir) or any Hub / local dataset with an audio and a label column (--audio_column_name /
--label_column_name). Everything is written to --output_dir (default: the model folder's analysis/): PNG figures,
CSV + markdown tables, and index.md linking them.
"""

import argparse
import shlex
from pathlib import Path

import torch

from ..analysis import (
    ANALYSES,
    DEFAULT_BLOCKS,
    DEFAULT_KEEP_RATES,
    analysis_keep_rate,
    cluster_drop,
    fine_tuned_sweep,
    intensity_clusters,
    keep_rate_sweep,
    kendall_tau_per_block,
    load_analysis_data,
    padding_note,
    parse_analyses,
    patch_statistics,
    pruning_patterns,
    retained_patch_histograms,
    variation_clusters,
)
from ..analysis.inputs import add_dataset_arguments, dataset_options
from ..analysis.report import write_index
from ..checks import CommandParser, check_model, keep_rate_argument, keep_rates_argument
from ..errors import command
from ..loading import load_pruned_model
from ..scores import TOKEN_SCORES
from ..token_reductions import token_reduction_names


def _analyses(text):
    try:
        return parse_analyses(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))


def _token_reductions(text):
    methods = text.split(",")
    unknown = [method for method in methods if method not in token_reduction_names()]
    if unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown {unknown}; choose from {','.join(token_reduction_names())}")
    return methods


def _numbers(kind):
    def parse(text):
        try:
            return [kind(value) for value in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated {kind.__name__}s")

    return parse


def parse_args(argv=None):
    parser = CommandParser("analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="pruned model folder (with its feature extractor)")
    add_dataset_arguments(parser)
    parser.add_argument("--split", default="test", help="split to analyse (default: %(default)s)")
    parser.add_argument("--analyses", type=_analyses, default=list(ANALYSES),
                        help=f"comma-separated subset of {','.join(ANALYSES)} (default: all)")
    parser.add_argument("--output_dir", type=Path,
                        help="where the figures, tables and index.md go (default: <model folder>/analysis)")
    parser.add_argument("--keep_rate", type=keep_rate_argument,
                        help="keep rate for patterns, kendall and histograms (default: the model's own, else 0.5)")
    parser.add_argument("--keep_rates", type=keep_rates_argument, default=list(DEFAULT_KEEP_RATES),
                        help="sweep keep rates (default: 1.0,0.9,...,0.4)")
    parser.add_argument("--token_scores", type=_numbers(str), default=list(TOKEN_SCORES),
                        help=f"sweep token scores (default: {','.join(TOKEN_SCORES)})")
    parser.add_argument("--token_reductions", type=_token_reductions, default=list(token_reduction_names()),
                        help=f"sweep methods, any of {','.join(token_reduction_names())}; fuse and merge rank by attention "
                        "(default: all)")
    parser.add_argument("--sweep_models", nargs="*", default=[],
                        help="fine-tuned model folders added to the sweep table, each at its own keep rate / score")
    parser.add_argument("--num_examples", type=int, default=4, help="patterns: examples drawn (default: %(default)s)")
    parser.add_argument("--blocks", type=_numbers(int), default=list(DEFAULT_BLOCKS),
                        help="cluster_drop: 0-based blocks after which tokens are dropped (default: 1,3,5,7,9,11)")
    parser.add_argument("--num_clusters", type=int, default=5, help="k of the intensity k-means (default: 5)")
    parser.add_argument("--exclude_padding", action="store_true",
                        help="leave patches touching padded frames out of clusters, kendall and histograms")
    parser.add_argument("--max_samples", type=int, help="analyse only the first N rows of the split")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader workers decoding audio")
    parser.add_argument("--torch_threads", type=int, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of k-means and of the random token score")
    return parser.parse_args(argv)


def run(args, argv):
    check_model(args.model_name_or_path)
    options = dataset_options(args)
    if args.output_dir is None:
        if not Path(args.model_name_or_path).is_dir():
            raise ValueError(f"--output_dir: give one; the model {args.model_name_or_path} is no folder to write into.")
        args.output_dir = Path(args.model_name_or_path) / "analysis"
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model, feature_extractor = load_pruned_model(args.model_name_or_path)
    data = load_analysis_data(
        model, feature_extractor, args.dataset_name, args.split, args.batch_size, args.max_samples,
        args.dataloader_num_workers, **options,
    )
    output_dir = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    keep_rate = analysis_keep_rate(model, args.keep_rate)

    statistics = clusters = None
    if {"clusters", "kendall", "cluster_drop", "histograms"} & set(args.analyses):
        statistics = patch_statistics(model, data)
        clusters = intensity_clusters(statistics, args.num_clusters, args.seed, args.exclude_padding)

    sections = []
    for analysis in args.analyses:
        print(f"[analyze] {analysis}", flush=True)
        if analysis == "sweep":
            result = keep_rate_sweep(model, data, args.keep_rates, args.token_scores, args.seed, args.token_reductions)
            if args.sweep_models:
                result = result.merge(fine_tuned_sweep(args.sweep_models, data, args.seed))
        elif analysis == "patterns":
            result = pruning_patterns(model, data, args.num_examples, keep_rate)
        elif analysis == "clusters":
            sections.append(clusters.write(output_dir, statistics))
            continue
        elif analysis == "kendall":
            variation = variation_clusters(statistics, args.num_clusters, args.seed, args.exclude_padding)
            result = kendall_tau_per_block(model, data, clusters, variation, keep_rate, args.exclude_padding)
        elif analysis == "cluster_drop":
            result = cluster_drop(model, data, clusters, args.blocks)
        else:
            result = retained_patch_histograms(model, data, clusters, keep_rate, args.exclude_padding)
        sections.append(result.write(output_dir))

    config = model.config
    header = [
        (
            f"model: `{args.model_name_or_path}` ({type(model).__name__}, {model.patch_layout.num_patches} patch "
            f"tokens, pruning layers {list(config.pruning_layers)}, saved keep rate {config.keep_rate:g}, "
            f"token score `{config.token_score}`)"
        ),
        f"data: `{args.dataset_name}`" + (f" `{args.data_dir}`" if args.data_dir else "")
        + f", split `{args.split}`, {len(data)} samples; metric: {data.metric_name}",
        f"keep rate of patterns / kendall / histograms: {keep_rate:g}",
        f"padding: {padding_note(feature_extractor)} Patches touching padding are "
        + ("excluded from" if args.exclude_padding else "included in") + " the statistics.",
        "command: `hf-token-prune analyze " + " ".join(shlex.quote(a) for a in argv) + "`",
    ]
    return write_index(output_dir, "Token pruning analysis", header, sections)


@command("analyze")
def main(argv=None):
    args = parse_args(argv)
    index = run(args, argv)
    print(f"wrote {index}")
    return 0

"""Calibrate a pruned model to an accuracy budget, training-free: the cheapest keep rate or keep mass (adaptive,
per clip) whose metric stays within --max_loss points of keep rate 1.0 on a labelled validation split, checked on a
held-out split.

    hf-token-prune calibrate --model_name_or_path outputs/demo --dataset_name audiofolder \\
        --data_dir data/keywords --validation_split validation --held_out_split test --max_loss 1.0 \\
        --output_dir outputs/demo-calibrated

Searched with the model's own weights, method, token score and pruning layers: fixed keep rates (--keep_rates, every
clip keeps the same fraction) and keep masses (--keep_masses, each clip keeps the fewest best-scored tokens holding
that share of its score mass, between --min_keep_rate and --max_keep_rate), on a coarse grid, then --refine_rounds
rounds of --refine_points settings each where the budget is crossed. Cost is the mean multiply-accumulates per clip,
counted from each clip's own kept tokens. The metric is top-1 accuracy, or mAP for multi-label data; the budget is in
points (1.0 = one point).

--output_dir receives the model saved with the chosen setting in its config (and its feature extractor),
calibration.json (every setting's numbers on both splits, the choice, the budget, versions), calibration.md (the
tables) and calibration.png (metric vs mean MACs per clip, both policies, their Pareto fronts, the budget, the
choice).
"""

import argparse
import shlex
from pathlib import Path

import torch

from hf_token_prune.analysis.inputs import add_dataset_arguments, dataset_options, load_analysis_splits
from hf_token_prune.calibration import (
    DEFAULT_KEEP_MASSES,
    DEFAULT_KEEP_RATES,
    DEFAULT_REFINE_POINTS,
    DEFAULT_REFINE_ROUNDS,
    calibrate,
    check_max_loss,
    save_calibrated,
)
from hf_token_prune.checks import (
    CommandParser, check_model, keep_rate_argument, keep_rates_argument, non_negative_int, positive_int,
)
from hf_token_prune.errors import command
from hf_token_prune.files import OVERWRITE_HELP, check_output_dir, same_or_nested
from hf_token_prune.loading import load_pruned_model


def _max_loss(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of points") from None
    try:
        return check_max_loss(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _joined(values):
    return ",".join(f"{value:g}" for value in values)


def parse_args(argv=None):
    parser = CommandParser("calibrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="pruned model folder (with its feature extractor)")
    add_dataset_arguments(parser)
    parser.add_argument("--validation_split", default="validation",
                        help="labelled split the search is measured on (default: %(default)s)")
    parser.add_argument("--held_out_split", default="test",
                        help="labelled split the choice is checked on, never searched (default: %(default)s)")
    parser.add_argument("--max_loss", type=_max_loss, default=1.0,
                        help="budget: points of the metric (top-1 accuracy or mAP, in %%) the calibrated model may "
                        "lose against keep rate 1.0 on the validation split (default: %(default)s)")
    parser.add_argument("--output_dir", type=Path, required=True,
                        help="new folder for the calibrated model and calibration.json / .md / .png")
    parser.add_argument("--overwrite_output_dir", action="store_true", help=OVERWRITE_HELP)
    parser.add_argument("--keep_rates", type=keep_rates_argument, default=list(DEFAULT_KEEP_RATES),
                        help=f"coarse grid of fixed keep rates, each < 1 (default: {_joined(DEFAULT_KEEP_RATES)})")
    parser.add_argument("--keep_masses", type=keep_rates_argument, default=list(DEFAULT_KEEP_MASSES),
                        help=f"coarse grid of keep masses in (0, 1] (default: {_joined(DEFAULT_KEEP_MASSES)})")
    parser.add_argument("--max_keep_rate", type=keep_rate_argument, default=1.0,
                        help="ceiling of the keep masses: at most this fraction of a clip's tokens per layer "
                        "(default: %(default)s, none)")
    parser.add_argument("--min_keep_rate", type=keep_rate_argument,
                        help="floor of the keep masses: at least this fraction of a clip's tokens per layer "
                        "(default: one token)")
    parser.add_argument("--refine_rounds", type=non_negative_int, default=DEFAULT_REFINE_ROUNDS,
                        help="refinement rounds after the coarse grid (default: %(default)s)")
    parser.add_argument("--refine_points", type=positive_int, default=DEFAULT_REFINE_POINTS,
                        help="settings added per policy and round where the budget is crossed (default: %(default)s)")
    parser.add_argument("--max_samples", type=positive_int, help="use only the first N clips of each split")
    parser.add_argument("--batch_size", type=positive_int, default=8, help="clips per forward (default: %(default)s)")
    parser.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader workers decoding audio")
    parser.add_argument("--torch_threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random token score (default: %(default)s)")
    return parser.parse_args(argv)


@command("calibrate")
def main(argv=None):
    args = parse_args(argv)
    check_model(args.model_name_or_path)
    options = dataset_options(args)
    if Path(args.model_name_or_path).is_dir() and same_or_nested(args.model_name_or_path, args.output_dir):
        raise ValueError(
            f"--output_dir {args.output_dir}: it is or holds or lies in the model folder {args.model_name_or_path}, "
            "which calibration reads and must not change; choose a folder outside it."
        )
    if args.validation_split == args.held_out_split:
        raise ValueError(
            f"--held_out_split {args.held_out_split} is the validation split: the check needs clips the search never "
            "saw; give another split."
        )
    check_output_dir(args.output_dir, args.overwrite_output_dir)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model, feature_extractor = load_pruned_model(args.model_name_or_path)
    validation, held_out = load_analysis_splits(
        model, feature_extractor, args.dataset_name,
        {"--validation_split": args.validation_split, "--held_out_split": args.held_out_split},
        args.batch_size, args.max_samples, args.dataloader_num_workers, **options,
    )
    result = calibrate(
        model, validation, held_out, args.max_loss, args.keep_rates, args.keep_masses, args.max_keep_rate,
        args.min_keep_rate, args.refine_rounds, args.refine_points, args.seed,
    )
    facts = {
        "model": args.model_name_or_path,
        "data": f"{args.dataset_name}" + (f" {args.data_dir}" if args.data_dir else ""),
        "validation split": f"{args.validation_split} ({len(validation)} clips)",
        "held-out split": f"{args.held_out_split} ({len(held_out)} clips)",
        "command": "hf-token-prune calibrate " + " ".join(shlex.quote(a) for a in argv),
    }
    save_calibrated(model, feature_extractor, result, args.output_dir, args.overwrite_output_dir, facts)
    print(result.summary())
    print(f"wrote {args.output_dir}")
    return 0

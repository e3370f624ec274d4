"""Classify audio files with a pruned model at a chosen keep rate.

    hf-token-prune classify clip.wav other.mp3 --model_name_or_path outputs/demo --keep_rate 0.7 [--top_k 3]
    hf-token-prune classify clip.wav --model_name_or_path outputs/demo --keep_mass 0.9 [--min_keep_rate 0.3]

Files are decoded and resampled to the feature extractor's rate (16 kHz) by ffmpeg, as transformers' audio pipeline
does, so any format and rate ffmpeg reads works (wav, flac, mp3, ogg, m4a, opus, ...). The model folder is one saved by
this package (e.g. outputs/demo after `make demo`) or a stock AST checkpoint; the keep rate defaults to the model's own.
--keep_mass lets each clip keep its own count of tokens (see docs/calibration.md); the keep rate is then its ceiling.
The model scores one window (its feature extractor's max_length frames; the demo model's: 1.015 s), so only a file's
first window is decoded, whatever its length; a longer file is said so, and `hf-token-prune tag` scores all of it.
"""

import argparse
import sys
from pathlib import Path

from ..checks import CommandParser, check_model, keep_rate_argument, positive_int
from ..errors import command


def parse_args(argv=None):
    parser = CommandParser("classify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="audio files (any format and rate ffmpeg reads)")
    parser.add_renamed_argument("--model_name_or_path", "--model", required=True,
                                help="model folder (saved by this package, or a stock AST)")
    parser.add_argument("--keep_rate", type=keep_rate_argument, help="keep rate in (0, 1] (default: the model's own)")
    parser.add_keep_policy_arguments("clip")
    parser.add_argument("--top_k", type=positive_int, default=5, help="classes shown per file (default: %(default)s)")
    parser.add_renamed_argument("--torch_threads", "--num_threads", type=positive_int,
                                help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(argv)


@command("classify")
def main(argv=None):
    args = parse_args(argv)
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        raise ValueError(f"no such file: {', '.join(missing)}.")
    check_model(args.model_name_or_path)
    # Only now the heavy imports: a mistyped file or folder is answered before them.
    import torch
    from transformers.utils import logging

    from ..classify import classify, keep_setting, read_audio
    from ..loading import load_pruned_model
    from ..tagging import model_window_samples

    logging.disable_progress_bar()  # one small folder: a loading bar is noise
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model, extractor = load_pruned_model(args.model_name_or_path)
    window = model_window_samples(extractor)
    # the model scores one window: decode only that, and one sample more to tell a longer file
    waves = [read_audio(path, extractor.sampling_rate, window + 1) for path in args.files]
    results = classify(model, extractor, [wave[:window] for wave in waves], args.keep_rate, args.top_k,
                       keep_mass=args.keep_mass, min_keep_rate=args.min_keep_rate)
    setting = keep_setting(model.config, args.keep_rate, args.keep_mass, args.min_keep_rate)
    seconds = window / extractor.sampling_rate
    for path, wave, predictions in zip(args.files, waves, results):
        length = f"first {seconds:.2f} s" if wave.size > window else f"{wave.size / extractor.sampling_rate:.2f} s"
        print(f"{path} ({length}, {setting}):")
        for prediction in predictions:
            print(f"  {prediction['score']:.3f}  {prediction['label']}")
    longer = [str(path) for path, wave in zip(args.files, waves) if wave.size > window]
    if longer:
        print(
            f"classify: note: {', '.join(longer)}: longer than the model's {seconds:.2f} s window, so only the first "
            f"{seconds:.2f} s were scored; `hf-token-prune tag <file> --model_name_or_path {args.model_name_or_path}` "
            "tags a whole recording in windows.",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

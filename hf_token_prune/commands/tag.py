"""Tag a recording longer than the model's window: a timeline of labels, the recording's top labels and a PNG.

    hf-token-prune tag recording.wav --model_name_or_path outputs/demo
    python recipes/tag.py recording.wav --model_name_or_path outputs/demo --window 1.0 --hop 0.25 --min_score 0.6

The recording is classified in overlapping windows (hf_token_prune.tag_recording): `--window` seconds (at most the
model's own window, the default) every `--hop` seconds (default: half the window). The last window is shorter and is
padded by the model's feature extractor as any short clip is. Printed: one line per run of consecutive windows with
the same best label scoring at least --min_score (from the first window's start to the last one's end: overlapping
windows give overlapping runs), then the recording's top labels by `mean` (average score over the windows) and by
`max` (best score in any window). The PNG shows every window's scores over time. --keep_mass lets each window keep
its own count of tokens (see docs/calibration.md), the keep rate being its ceiling.
"""

import argparse
import os
import sys
from pathlib import Path

from ..checks import CommandParser, keep_rate_argument, positive_int, positive_seconds
from ..errors import EXIT_ERROR, command


def parse_args(argv=None):
    parser = CommandParser("tag", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", type=Path, help="audio file (any format FFmpeg reads; down-mixed, resampled)")
    parser.add_argument("--model_name_or_path", required=True,
                        help="pruned AST / AudioMAE folder with its feature extractor (e.g. outputs/demo after "
                        "`make demo`) or a stock AST checkpoint")
    parser.add_argument("--window", type=positive_seconds, help="seconds per window, at most the model's (default: the model's)")
    parser.add_argument("--hop", type=positive_seconds, help="seconds between window starts, in (0, window] (default: window / 2)")
    parser.add_argument("--keep_rate", type=keep_rate_argument, help="keep rate to tag at (default: the model's own)")
    parser.add_keep_policy_arguments("window")
    parser.add_argument("--min_score", type=float, default=0.5,
                        help="windows whose best score is lower are left out of the timeline (default: %(default)s)")
    parser.add_argument("--top_k", type=positive_int, default=5, help="top labels of the recording to print (default: %(default)s)")
    parser.add_argument("--batch_size", type=positive_int, default=16, help="windows per forward pass (default: %(default)s)")
    parser.add_argument("--output", type=Path,
                        help="PNG of the labels over time (default: outputs/tag/<audio name>.png)")
    parser.add_renamed_argument("--torch_threads", "--num_threads", type=positive_int,
                                help="torch CPU threads (default: torch's)")
    parser.add_argument("--bucket_by_count", action="store_true",
                        help="batch windows of similar predicted kept counts together (faster for a drop_padding "
                        "model whose windows differ in length; same scores)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def png_path(output, audio: Path) -> Path:
    """Where the picture goes: `--output` as given, inside it when it is a folder, `.png` added when it has no suffix
    (matplotlib would add it silently)."""
    if output is None:
        return Path("outputs/tag") / f"{audio.stem}.png"
    if output.is_dir():
        return output / f"{audio.stem}.png"
    return output if output.suffix else output.with_name(output.name + ".png")


@command("tag")
def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.audio.is_file():
        return fail(f"{args.audio}: no such audio file.")
    png = png_path(args.output, args.audio)
    writable = png.absolute().parent
    while not writable.exists():
        writable = writable.parent
    if not os.access(writable, os.W_OK | os.X_OK):  # refuse before the minutes of tagging, not after
        return fail(f"--output {png}: cannot write in {writable} (read-only or not yours): choose another --output.")
    # Only now the heavy imports: a missing file or an unwritable --output is answered before them.
    import torch

    from ..classify import keep_setting
    from ..loading import load_pruned_model
    from ..tagging import plot_tags, tag_recording

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        model, extractor = load_pruned_model(args.model_name_or_path)
    except ValueError as error:
        if not Path(args.model_name_or_path).exists():
            return fail(f"--model_name_or_path {args.model_name_or_path}: no such folder, nor a model in the Hub cache.")
        return fail(f"--model_name_or_path: {str(error).splitlines()[0]}")
    try:
        # the file, not its samples: tag_recording decodes it as a stream, so memory stays flat in its length
        tags = tag_recording(args.audio, model, extractor, window=args.window, hop=args.hop,
                             batch_size=args.batch_size, progress=not args.no_progress,
                             bucket_by_count=args.bucket_by_count, keep_rate=args.keep_rate, keep_mass=args.keep_mass,
                             min_keep_rate=args.min_keep_rate)
    except ValueError as error:
        return fail(str(error).splitlines()[0])

    setting = f"keep rate {model.config.keep_rate if args.keep_rate is None else args.keep_rate}"
    if args.keep_mass is not None or getattr(model.config, "keep_mass", None) is not None:
        setting = keep_setting(model.config, args.keep_rate, args.keep_mass, args.min_keep_rate)
    print(f"{args.audio}: {tags.duration:.2f} s, {len(tags.starts)} windows of {tags.window:.3f} s every "
          f"{tags.hop:.3f} s | model {args.model_name_or_path} ({setting})")
    print(f"{'from':>8} {'to':>8}  {'label':<16} peak score   (runs of windows scoring >= {args.min_score})")
    for start, end, label, score in tags.timeline(min_score=args.min_score):
        print(f"{start:>8.2f} {end:>8.2f}  {label:<16} {score:.2f}")
    for by in ("mean", "max"):
        print(f"top {args.top_k} by {by}: " + ", ".join(f"{t['label']} {t['score']:.2f}" for t in tags.top(args.top_k, by)))
    plot_tags(tags, png, title=f"{args.audio.name}: {model.config.name_or_path}")
    print(f"wrote {png}")
    return 0


def fail(message: str) -> int:
    print(f"tag: error: {message}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())

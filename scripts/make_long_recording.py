"""A long test recording from the shipped keyword clips: words at random places, faint noise between them.

    python scripts/make_long_recording.py --output outputs/long_recording.flac    # 60 s, plus a .csv of the words

The .csv next to the audio lists each word with its onset and offset in seconds, to check a timeline against
(`python recipes/tag.py outputs/long_recording.flac --model_name_or_path outputs/demo`).
"""

import argparse
import csv
from pathlib import Path

import numpy as np
import soundfile


REPO = Path(__file__).resolve().parent.parent
SAMPLING_RATE = 16000
NOISE_RMS = 10 ** (-90 / 20)  # the shipped clips' own noise floor (data/keywords/README.md)


def long_recording(clips: list[Path], seconds: float, seed: int = 0, gap: tuple[float, float] = (0.5, 2.5)):
    """(waveform, words): clips drawn at random (without replacement while they last) and laid end to end with a
    gap of uniform(*gap) seconds of faint noise before each, until `seconds` is full; words = [(label, onset,
    offset)] in seconds. The label is the clip's folder name."""
    rng = np.random.default_rng(seed)
    total = round(seconds * SAMPLING_RATE)
    waveform = rng.normal(0.0, NOISE_RMS, total).astype(np.float32)
    words, position = [], 0
    for index in rng.permutation(len(clips)):
        clip, rate = soundfile.read(clips[index], dtype="float32")
        if rate != SAMPLING_RATE:
            raise ValueError(f"{clips[index]}: {rate} Hz, expected {SAMPLING_RATE} Hz.")
        onset = position + round(rng.uniform(*gap) * SAMPLING_RATE)
        if onset + clip.size > total:
            break
        waveform[onset : onset + clip.size] = clip
        words.append((clips[index].parent.name, onset / SAMPLING_RATE, (onset + clip.size) / SAMPLING_RATE))
        position = onset + clip.size
    return waveform, words


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("outputs/long_recording.flac"), help="audio file to write")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the recording (default: %(default)s)")
    parser.add_argument("--split", default="test", help="split of data/keywords to draw the words from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    clips = sorted((REPO / "data" / "keywords" / args.split).glob("*/*.flac"))
    if not clips:
        parser.error(f"--split {args.split}: no clips in data/keywords/{args.split}.")
    waveform, words = long_recording(clips, args.seconds, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(args.output, waveform, SAMPLING_RATE, subtype="PCM_16")
    with args.output.with_suffix(".csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("label", "onset", "offset"), *words])
    print(f"wrote {args.output} ({args.seconds:.0f} s, {len(words)} words) and {args.output.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

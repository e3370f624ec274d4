#!/usr/bin/env python3
"""Build a small, offline spoken-keyword dataset with espeak-ng.

The ten Speech-Commands core words (yes, no, up, down, left, right, on, off,
stop, go) are synthesised by Debian's ``espeak-ng`` with many voice / variant /
speed / pitch combinations, post-processed into 16 kHz mono 16-bit FLAC clips
of at most one second, and written in the Hugging Face ``audiofolder`` layout::

    <output_dir>/{train,validation,test}/<word>/<word>_<nnn>.flac

so that ``datasets.load_dataset("audiofolder", data_dir=<output_dir>)`` yields
a ``label`` column from the directory names.  Tests and demos can then run
without any network access.

Every clip with the same ``<nnn>`` comes from the same synthetic "speaker"
(accent + voice variant + base speed + base pitch), mirroring how Speech
Commands has each speaker say every word.  Splits are made by speaker, and
the voice *variants* (the timbre) used for validation and test never occur in
train, so the held-out splits measure generalisation to unseen voices rather
than memorisation.  The English accents themselves are shared by all splits:
there are only eight of them, too few to hold some out without making the
validation/test sets a different accent task altogether.

All randomness comes from ``--seed``; re-running with the same arguments and
the same espeak-ng (and libFLAC) version reproduces the files byte for byte.

Only numpy, scipy and soundfile are needed besides the espeak-ng binary.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
SPLITS = ["train", "validation", "test"]
SPLIT_FRACTIONS = {"validation": 0.15, "test": 0.15}  # train gets the rest

# espeak-ng's own English voices (the mbrola "mb-*" ones need extra packages
# that are usually not installed, so they are left out on purpose).
ACCENTS = [
    "en-gb",
    "en-us",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
]

# Voice variants (file names under espeak-ng-data/voices/!v), grouped so that
# every split gets female, male and Klatt-synthesiser voices.  Novelty
# variants (robots, whisper, croak, "Demonic", ...) are excluded because they
# do not sound like a person saying a word.  klatt6 is left out because it
# renders byte-identically to klatt and would leak one voice across splits.
VARIANT_GROUPS = {
    "female": [
        "f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie",
        "aunty", "belinda", "linda", "steph",
    ],
    "male": [
        "m1", "m2", "m3", "m4", "m5", "m6", "m7", "adam", "Alex", "Andy",
        "benjamin", "caleb", "david", "edward", "john", "max", "norbert", "quincy",
    ],
    "klatt": ["klatt", "klatt2", "klatt3", "klatt4", "klatt5"],
}
# The plain voice (no "+variant") is the most common way espeak is used, so it
# is kept, but only in train where it cannot leak into the held-out splits.
DEFAULT_VARIANT = ""

# Words per minute; espeak's default 175 lies inside.  The range leans fast
# because the repository budget is ~8 MB: 16-bit FLAC of espeak speech costs
# about 20 kB per second no matter what, so total speech time is the only
# real size lever, and slow speech (<140 wpm) pushed the set over budget.
SPEED_RANGE = (140, 240)
PITCH_RANGE = (20, 80)  # espeak scale 0..99; default 50
# Small per-word wobble around the speaker's base speed/pitch, so one speaker
# does not say all ten words with robotically identical prosody.
SPEED_JITTER = 10
PITCH_JITTER = 4

TARGET_SR = 16_000
MAX_SECONDS = 1.0
MIN_SECONDS = 0.25  # a fast "up" is shorter; keep clear of the 0.2 s tests expect
PEAK = 0.9
TRIM_DB = 40.0  # frames this far below the loudest frame count as silence
TRIM_MARGIN_S = 0.015  # keeps soft onsets/offsets ("s" in stop, "f" in off)
# Random lead/tail so the word does not always start at t=0.  Short, because
# clips are not padded to a fixed 1 s: that would only cost space, and a
# feature extractor pads to its own length anyway.
PAD_RANGE_S = (0.01, 0.05)
# Noise floor of about one 16-bit LSB (~ -90 dBFS): enough that no clip has
# long runs of exact digital zeros (log-spectrogram features of those are
# -inf, and real microphones never produce them), and no louder because noise
# does not compress: every extra bit of it costs FLAC size on every sample.
NOISE_STD = 3e-5


@dataclass(frozen=True)
class Speaker:
    index: int
    split: str
    accent: str
    variant: str
    speed: int
    pitch: int

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}" if self.variant else self.accent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=Path("data/keywords"),
        help="root of the audiofolder tree (default: %(default)s)",
    )
    parser.add_argument(
        "--clips_per_word",
        type=int,
        default=40,
        help="clips per word over all splits, i.e. the number of synthetic "
        "speakers; split roughly 70/15/15. With the default extra train "
        "speakers the committed set stays under ~8 MB (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for every random choice; same seed, same dataset (default: %(default)s)",
    )
    parser.add_argument(
        "--extra_train_speakers",
        type=int,
        default=42,
        help="train-only speakers added after the --clips_per_word ones, from their own random stream: the "
        "base clips and the validation/test splits do not change with this number. They give the fine-tuning "
        "demo, which trains a transformer from scratch, enough voices to learn from (default: %(default)s)",
    )
    parser.add_argument(
        "--extra_test_speakers",
        type=int,
        default=24,
        help="test-only speakers added after the extra train ones, from their own random stream and with the "
        "test split's held-out voice variants only: the train and validation clips do not change with this "
        "number. They make one test clip worth 1/300 of the accuracy rather than 1/60, fine enough to tell a "
        "1-point accuracy difference (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    for extra in ("extra_train_speakers", "extra_test_speakers"):
        if getattr(args, extra) < 0:
            parser.error(f"--{extra} must be >= 0")
    if args.clips_per_word < 3:
        parser.error("--clips_per_word must be at least 3 (one speaker per split)")
    return args


def find_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit(
            "error: the 'espeak-ng' program was not found on PATH.\n"
            "Install it with:  sudo apt-get install espeak-ng   (Debian/Ubuntu package 'espeak-ng')"
        )
    return exe


def espeak_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def split_counts(total: int) -> dict[str, int]:
    counts = {s: max(1, round(total * f)) for s, f in SPLIT_FRACTIONS.items()}
    counts["train"] = total - sum(counts.values())
    return {s: counts[s] for s in SPLITS}


def assign_variants(rng: random.Random) -> dict[str, list[str]]:
    """Partition variants between splits, stratified by group."""
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for group in sorted(VARIANT_GROUPS):
        pool = sorted(VARIANT_GROUPS[group])
        rng.shuffle(pool)
        n = len(pool)
        n_val = max(1, round(n * SPLIT_FRACTIONS["validation"]))
        n_test = max(1, round(n * SPLIT_FRACTIONS["test"]))
        by_split["validation"] += pool[:n_val]
        by_split["test"] += pool[n_val : n_val + n_test]
        by_split["train"] += pool[n_val + n_test :]
    by_split["train"].append(DEFAULT_VARIANT)
    return by_split


def plan_speakers(clips_per_word: int, variants: dict[str, list[str]], rng: random.Random) -> list[Speaker]:
    speakers: list[Speaker] = []
    for split, count in split_counts(clips_per_word).items():
        # Walk a shuffled variant list round-robin so every variant of the
        # split is used before any repeats; accents are drawn the same way.
        split_variants = list(variants[split])
        rng.shuffle(split_variants)
        accents = list(ACCENTS)
        rng.shuffle(accents)
        for i in range(count):
            speakers.append(
                Speaker(
                    index=len(speakers),
                    split=split,
                    accent=accents[i % len(accents)],
                    variant=split_variants[i % len(split_variants)],
                    speed=rng.randint(*SPEED_RANGE),
                    pitch=rng.randint(*PITCH_RANGE),
                )
            )
    return speakers


def plan_extra_speakers(
    split: str, count: int, first_index: int, split_variants: list[str], rng: random.Random
) -> list[Speaker]:
    """More speakers of one split, drawn like the base ones (round-robin over shuffled variants and accents)."""
    variants, accents = list(split_variants), list(ACCENTS)
    rng.shuffle(variants)
    rng.shuffle(accents)
    return [
        Speaker(
            index=first_index + i,
            split=split,
            accent=accents[i % len(accents)],
            variant=variants[i % len(variants)],
            speed=rng.randint(*SPEED_RANGE),
            pitch=rng.randint(*PITCH_RANGE),
        )
        for i in range(count)
    ]


def draw_jitter(speakers: list[Speaker], rng: random.Random) -> dict[tuple[int, str], tuple[int, int]]:
    return {
        (s.index, w): (
            rng.randint(-SPEED_JITTER, SPEED_JITTER),
            rng.randint(-PITCH_JITTER, PITCH_JITTER),
        )
        for s in speakers
        for w in WORDS
    }


def synthesise(
    exe: str, voice: str, speed: int, pitch: int, word: str, tmpdir: Path
) -> tuple[np.ndarray, int]:
    # -w rather than --stdout: espeak's streamed WAV header carries a bogus
    # "unknown length" size that some readers reject.
    wav = tmpdir / "clip.wav"
    cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), word]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wav.exists():
        raise RuntimeError(f"espeak-ng failed for {cmd}: {proc.stderr.strip()}")
    audio, sr = sf.read(wav, dtype="float64", always_2d=True)
    wav.unlink()
    return audio.mean(axis=1), sr


def resample(audio: np.ndarray, sr: int) -> np.ndarray:
    if sr == TARGET_SR:
        return audio
    g = gcd(TARGET_SR, sr)
    return resample_poly(audio, TARGET_SR // g, sr // g)


def trim_silence(audio: np.ndarray) -> np.ndarray:
    frame = TARGET_SR // 100
    n_frames = len(audio) // frame
    if n_frames == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1))
    # Relative threshold: espeak's level differs a lot between variants.
    loud = np.nonzero(rms > rms.max() * 10 ** (-TRIM_DB / 20))[0]
    if len(loud) == 0:
        return audio
    margin = int(TRIM_MARGIN_S * TARGET_SR)
    start = max(0, loud[0] * frame - margin)
    end = min(len(audio), (loud[-1] + 1) * frame + margin)
    return audio[start:end]


def finish(speech: np.ndarray, np_rng: np.random.Generator) -> np.ndarray:
    speech = speech / np.max(np.abs(speech)) * PEAK
    max_len = int(MAX_SECONDS * TARGET_SR)
    if len(speech) > max_len:
        # Only reachable with extreme speeds; fade rather than click at the cut.
        speech = speech[:max_len].copy()
        fade = TARGET_SR // 100
        speech[-fade:] *= np.linspace(1.0, 0.0, fade)
    lead, tail = (int(np_rng.uniform(*PAD_RANGE_S) * TARGET_SR) for _ in range(2))
    spare = max_len - len(speech)
    if lead + tail > spare:
        lead, tail = lead * spare // (lead + tail), tail * spare // (lead + tail)
    short = int(MIN_SECONDS * TARGET_SR) - (lead + len(speech) + tail)
    if short > 0:
        lead, tail = lead + short // 2, tail + short - short // 2
    clip = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    clip += np_rng.normal(0.0, NOISE_STD, size=len(clip))
    return np.clip(clip, -1.0, 1.0)


def clear_previous(output_dir: Path) -> None:
    # A re-run with fewer clips or another seed must not leave stale clips
    # behind, but only files this script would write are removed.
    for split in SPLITS:
        for word in WORDS:
            for old in (output_dir / split / word).glob(f"{word}_*.flac"):
                old.unlink()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    exe = find_espeak()
    rng = random.Random(args.seed)
    variants = assign_variants(rng)
    speakers = plan_speakers(args.clips_per_word, variants, rng)

    # Drawn after the whole speaker plan, so tuning the jitter cannot change
    # which voices land in which split.
    jitter = draw_jitter(speakers, rng)

    # The extra train speakers have their own stream, drawn after the base
    # plan: adding or removing them leaves every base clip byte-identical.
    # The extra test speakers likewise, after those: they only use the test split's held-out voices.
    for split, count in (("train", args.extra_train_speakers), ("test", args.extra_test_speakers)):
        extra_rng = random.Random(f"extra {split} speakers {args.seed}")
        extra = plan_extra_speakers(split, count, len(speakers), variants[split], extra_rng)
        jitter.update(draw_jitter(extra, extra_rng))
        speakers += extra

    out = args.output_dir
    clear_previous(out)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for s in speakers:
            for w_idx, word in enumerate(WORDS):
                d_speed, d_pitch = jitter[(s.index, word)]
                # Clamped to the 80..450 wpm that espeak-ng accepts.
                speed = min(max(s.speed + d_speed, 80), 450)
                pitch = min(max(s.pitch + d_pitch, 0), 99)
                audio, sr = synthesise(exe, s.voice, speed, pitch, word, tmpdir)
                speech = trim_silence(resample(audio, sr))
                if not np.any(speech):
                    raise RuntimeError(f"espeak-ng produced silence for {s.voice!r} {word!r}")
                # Own stream per clip, keyed by what identifies the clip, so
                # its padding and noise do not depend on generation order.
                np_rng = np.random.default_rng([args.seed, s.index, w_idx])
                clip = finish(speech, np_rng)
                rel = Path(s.split) / word / f"{word}_{s.index:03d}.flac"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(
                    out / rel, clip, TARGET_SR, subtype="PCM_16", format="FLAC",
                    compression_level=1.0,  # smallest files; encoding time is negligible
                )
                seconds = f"{len(clip) / TARGET_SR:.3f}"
                rows.append(
                    [rel.as_posix(), word, s.split, s.index, s.voice, speed, pitch, seconds]
                )

    # Named manifest.csv, not metadata.csv: audiofolder would treat the latter
    # as metadata and then stop deriving labels from directory names.
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "label", "split", "speaker", "voice", "speed", "pitch", "seconds"])
        writer.writerows(rows)

    counts = split_counts(args.clips_per_word)
    counts["train"] += args.extra_train_speakers
    counts["test"] += args.extra_test_speakers
    per_split = ", ".join(f"{s}={counts[s]}" for s in SPLITS)
    print(espeak_version(exe))
    print(f"wrote {len(rows)} clips to {out} ({per_split} per word)")


if __name__ == "__main__":
    main()

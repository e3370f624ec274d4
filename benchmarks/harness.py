"""What every benchmark here shares: the timing rule, its statistics, the run's record, the flags, tables and files.

Timing rule. Every call runs once untimed first (warm-up: lazy initialisation, the allocator's first requests, a
compile or an ONNX Runtime session), then ``repeats`` rounds; each round runs every call once, in an order rotated by
one per round, so machine noise (other jobs on a shared machine) hits every call alike. Each call is timed with
``time.perf_counter`` around it; on CPU a call returns when its outputs are computed. A latency is the median over
rounds with its interquartile range (IQR: third minus first quartile, ``statistics.quantiles``) and range; a ratio
between two calls (a speedup) is the median of the per-round ratios, so both sides of each ratio saw the same load.
``torch.utils.benchmark.Timer`` times one statement at a time, which would let a burst of load hit one model and not
the other; it serves the replays of small operations, where repeating one statement is the point.

Every run records its command, the machine, torch's thread count, the commit and the load average (``os.getloadavg``)
before and after, and writes a markdown report, its JSON and a CSV of its table rows.
"""

import contextlib
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.profiler import profile

from hf_token_prune.checks import DeprecatedSpelling
from hf_token_prune.profiling import REGIONS


REPO = Path(__file__).resolve().parent.parent
COMMITTED_RESULTS = REPO / "docs" / "reports" / "results"
KEYWORD_TEST_CLIPS = REPO / "data" / "keywords" / "test"


# -- timing ----------------------------------------------------------------------------------------------------------


def time_interleaved(calls, repeats, warm_up=None, prepare=None, progress=None):
    """``{key: [seconds per round]}`` for the ``calls`` ``{key: callable}``, by the module's timing rule.

    ``warm_up(key, call)`` replaces the plain untimed first call (e.g. to measure memory or check outputs on it);
    ``prepare(key)`` runs untimed before each timed call (e.g. to set the keep rate of a model several keys share);
    ``progress`` (a tqdm bar) advances once per call.
    """
    keys = list(calls)
    for key in keys:
        if warm_up is None:
            calls[key]()
        else:
            warm_up(key, calls[key])
        if progress is not None:
            progress.update(1)
    times = {key: [] for key in keys}
    for round_index in range(repeats):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            if prepare is not None:
                prepare(key)
            started = time.perf_counter()
            calls[key]()
            times[key].append(time.perf_counter() - started)
            if progress is not None:
                progress.update(1)
    return times


@dataclass(frozen=True)
class Spread:
    """Median, interquartile range and range of a few measurements (one round each)."""

    median: float
    iqr: float
    low: float
    high: float

    @classmethod
    def of(cls, values):
        values = list(values)
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        return cls(statistics.median(values), quartiles[2] - quartiles[0], min(values), max(values))


def paired_ratio(numerators, denominators) -> Spread:
    """The spread of the per-round ratios of two calls timed in the same rounds (speedup: reference / call)."""
    return Spread.of(n / d for n, d in zip(numerators, denominators, strict=True))


# -- profiling -------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stderr_silenced():
    """Point file descriptor 2 at /dev/null: the profiler's C++ side (kineto) writes a "USDT: profiler_start/stop"
    line there on every start and stop, whatever its log level."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def quiet_profile(**kwargs):
    """``torch.profiler.profile`` without kineto's start / stop lines; anything else the run prints still shows."""
    prof = profile(**kwargs)
    with _stderr_silenced():
        prof.__enter__()
    try:
        yield prof
    finally:
        with _stderr_silenced():
            prof.__exit__(None, None, None)


def region_seconds(prof, required: bool = True) -> dict[str, float]:
    """Total CPU time in each of the library's named regions (``hf_token_prune.profiling``) of a finished profile,
    0 for a region it never entered. ``required``: every region must have been entered (a forward that reduces tokens
    enters them all), else ``KeyError`` names the missing ones, so a region that disappears fails the benchmark."""
    totals = {event.key: event.cpu_time_total / 1e6 for event in prof.key_averages()}
    missing = [name for name in REGIONS if name not in totals]
    if required and missing:
        raise KeyError(f"the profile never entered {', '.join(missing)}: a forward that reduces tokens runs them all")
    return {name: totals.get(name, 0.0) for name in REGIONS}


# -- the run's record ------------------------------------------------------------------------------------------------


def load_average() -> str:
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def machine_description(torch_threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    backend = next(
        (line.split(":", 1)[1].strip() for line in torch.__config__.parallel_info().splitlines()
         if line.startswith("ATen parallel backend")),
        "unknown",
    )  # fmt: skip
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({backend} parallel backend, "
        f"BLAS: {'MKL' if torch.backends.mkl.is_available() else 'not MKL'}), "
        f"torch.set_num_threads({torch_threads}), Python {platform.python_version()}"
    )


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Run:
    """One benchmark run: sets torch's threads and records the command, machine, commit, load and wall time."""

    def __init__(self, script: str, argv, torch_threads: int):
        torch.set_num_threads(torch_threads)
        self.command = " ".join(["python", f"benchmarks/{script}", *argv])
        self.torch_threads = torch_threads
        self.started = time.perf_counter()
        self.load_before = load_average()

    def header(self) -> dict:
        """The record, its load after and wall time as of now."""
        return dict(
            command=self.command, machine=machine_description(self.torch_threads), torch_threads=self.torch_threads,
            commit=git_commit(), load_before=self.load_before, load_after=load_average(),
            wall_s=time.perf_counter() - self.started,
        )  # fmt: skip


def header_lines(header: dict) -> list[str]:
    """A report's opening lines: the record of :meth:`Run.header`."""
    return [
        f"Command: `{header['command']}`  ",
        f"Machine: {header['machine']}  ",
        f"Commit: {header['commit']}; load average (1, 5, 15 min) before: {header['load_before']}, after: "
        f"{header['load_after']}; wall time {header['wall_s']:.0f} s.",
    ]


# -- flags -----------------------------------------------------------------------------------------------------------


def add_torch_threads_argument(parser, default: int, help_text: str):
    """``--torch_threads N``, and ``--num_threads``, its spelling until this release."""
    parser.add_argument("--torch_threads", type=int, default=default, help=help_text)
    parser.add_argument("--num_threads", type=int, dest="torch_threads", action=DeprecatedSpelling,
                        replacement="--torch_threads", help="deprecated spelling of --torch_threads")  # fmt: skip


def add_model_argument(parser, default, help_text: str):
    """``--model_name_or_path DIR``, and ``--demo_model``, its spelling until this release."""
    parser.add_argument("--model_name_or_path", type=Path, default=default, help=help_text)
    parser.add_argument("--demo_model", type=Path, dest="model_name_or_path", action=DeprecatedSpelling,
                        replacement="--model_name_or_path",
                        help="deprecated spelling of --model_name_or_path")  # fmt: skip


def default_output_dir(script: str) -> Path:
    """``outputs/<script>-<UTC time>`` in the repository: a run never overwrites an earlier one."""
    return REPO / "outputs" / f"{script}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


# -- the demo's clips ------------------------------------------------------------------------------------------------


def keyword_test_clips(max_clips: int | None = None) -> list[Path]:
    """The first ``max_clips`` (default: all) test clips of ``data/keywords``, ``<word>/<clip>.flac``, sorted by path:
    the dataset's order, word by word. A clip's word is its folder's name."""
    return sorted(KEYWORD_TEST_CLIPS.glob("*/*.flac"))[:max_clips]


def clip_features(feature_extractor, paths):
    """``feature_extractor``'s features of the clips at ``paths`` as one padded batch, frame mask included."""
    import soundfile

    waves, rates = zip(*(soundfile.read(path, dtype="float32") for path in paths))
    (sampling_rate,) = set(rates)  # one batch, one rate
    return feature_extractor(list(waves), sampling_rate=sampling_rate, return_attention_mask=True, return_tensors="pt")


# -- tables and files ------------------------------------------------------------------------------------------------


def markdown_table(header, rows) -> str:
    """A markdown table: the ``header`` cells, then one line per row of cells."""
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    return "\n".join(lines + [f"| {' | '.join(map(str, row))} |" for row in rows])


def targets_table(checks) -> str:
    """``checks``: ``(target, measured, goal, holds)`` tuples."""
    rows = ([name, f"{value:.3f}", goal, "yes" if ok else "**no**"] for name, value, goal, ok in checks)
    return markdown_table(["target", "measured", "goal", "holds"], rows)


def target_records(checks) -> list[dict]:
    return [dict(target=name, measured=value, goal=goal, holds=ok) for name, value, goal, ok in checks]


def write_csv(path: Path, rows) -> None:
    """One line per row (dicts); lists and dicts in a cell as JSON."""
    rows = list(rows)
    columns = list(dict.fromkeys(column for row in rows for column in row))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()})


def write_outputs(folders, name: str, markdown: str, data: dict, rows) -> list[Path]:
    """``name.md``, ``name.json`` (``data``) and ``name.csv`` (``rows``) into every folder; returns the folders."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.md").write_text(markdown)
        (folder / f"{name}.json").write_text(json.dumps(data, indent=1))
        write_csv(folder / f"{name}.csv", rows)
    return list(folders)

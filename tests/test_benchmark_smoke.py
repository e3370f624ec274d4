import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, tiny_pruned_classifier


sys.path.insert(0, str(REPO / "benchmarks"))
import harness  # noqa: E402


BENCHMARKS = ("benchmark_adaptive", "benchmark_deploy", "benchmark_padding", "benchmark_pruning", "benchmark_reduction")


@pytest.mark.full
def test_quick_benchmark_runs_and_writes_its_report(tmp_path):
    # One thread: a smoke test must not depend on how busy the machine's other cores are.
    result = subprocess.run(
        [sys.executable, "benchmarks/benchmark_pruning.py", "--quick", "--num_threads", "1", "--output_dir", tmp_path],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "USDT" not in result.stderr  # kineto's profiler start / stop lines are silenced

    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert [entry["title"] for entry in report["results"]] == [
        "inference, 64 patches, batch 1",
        "training, 64 patches, batch 2",
    ]
    for entry in report["results"]:
        models = {(row["model"], row["keep_rate"]) for row in entry["rows"]}
        assert {("AST (transformers, sdpa)", 1.0), ("PrunedAST", 1.0), ("PrunedAST", 0.5)} <= models
        for row in entry["rows"]:
            assert len(row["times_ms"]) == 2 and all(time > 0 for time in row["times_ms"])
            assert row["peak_memory_mb"] > 0
        pruned = {row["keep_rate"]: row for row in entry["rows"] if row["model"] == "PrunedAST"}
        assert pruned[1.0]["speedup"] == 1.0 and pruned[0.5]["mac_reduction"] > 1.5
    profiled = {entry["keep_rate"]: entry for entry in report["profiles"]}
    assert set(profiled) == {1.0, 0.5}
    assert 0 < profiled[0.5]["profile_total"] < 1 and 0 < profiled[0.5]["replay_total"] < 1
    assert all(ms > 0 for ms in profiled[0.5]["operator_ms"].values())
    assert report["targets"]

    markdown = (tmp_path / "benchmark.md").read_text()
    assert "| PrunedAST | 0.5 | 32, 16, 8 |" in markdown
    assert "## Pruning overhead" in markdown and "## Where the time goes" in markdown
    assert (tmp_path / "speedup_vs_macs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_adaptive_benchmark_times_every_setting_three_ways(tmp_path):
    result = subprocess.run(
        [sys.executable, "benchmarks/benchmark_adaptive.py", "--quick", "--output_dir", tmp_path],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "adaptive.json").read_text())["rows"]
    assert [(row["padding"], row["keep_mass"] is None) for row in rows] == [
        ("kept", True), ("kept", False), ("dropped", True), ("dropped", False)
    ]
    for fixed, adaptive in (rows[:2], rows[2:]):
        assert fixed["keep_rate"] == 0.7 and adaptive["keep_rate"] == 1.0
        assert abs(adaptive["mean_mmacs"] / fixed["mean_mmacs"] - 1) < 0.1  # matched on the keep_mass grid
    for row in rows:
        for name in ("batch1", "in_order", "bucketed"):
            assert len(row[f"times_{name}_ms"]) == 2 and row[f"{name}_ms"] > 0
        assert row["in_order_over_bucketed"] > 0 and 0 <= row["accuracy"] <= 1
    assert rows[2]["prediction_rho"] == 1.0  # a fixed rate on the real patches: the prediction is the count
    markdown = (tmp_path / "adaptive.md").read_text()
    assert "| setting | padding | mean MMACs / clip | top-1 | batch 1 |" in markdown and "load average" in markdown


def test_timed_rounds_rotate_the_order_after_one_warm_up_each():
    log = []
    calls = {key: (lambda key=key: log.append(("call", key))) for key in "abc"}
    times = harness.time_interleaved(calls, repeats=4, prepare=lambda key: log.append(("prepare", key)))
    warm_up, rounds = log[:3], log[3:]
    assert warm_up == [("call", "a"), ("call", "b"), ("call", "c")]
    orders = ["".join(key for what, key in rounds[i : i + 6] if what == "call") for i in range(0, len(rounds), 6)]
    assert orders == ["abc", "bca", "cab", "abc"]
    assert rounds[:2] == [("prepare", "a"), ("call", "a")]
    assert {key: len(seconds) for key, seconds in times.items()} == {"a": 4, "b": 4, "c": 4}


def test_spreads_and_paired_ratios():
    spread = harness.Spread.of([5.0, 1.0, 4.0, 2.0, 3.0])
    # statistics.quantiles' default ("exclusive") quartiles of 1..5: 1.5 and 4.5
    assert spread == harness.Spread(median=3.0, iqr=3.0, low=1.0, high=5.0)
    assert harness.Spread.of([2.0]) == harness.Spread(2.0, 0.0, 2.0, 2.0)
    # per-round ratios 2, 1, 4: their median, not the ratio of the medians (3 / 2)
    assert harness.paired_ratio([2.0, 3.0, 8.0], [1.0, 3.0, 2.0]).median == 2.0
    with pytest.raises(ValueError):
        harness.paired_ratio([1.0, 2.0], [1.0])


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_takes_torch_threads_and_the_old_spelling_once_more(name, capsys):
    benchmark = importlib.import_module(name)
    assert benchmark.parse_args(["--torch_threads", "3"]).torch_threads == 3
    assert capsys.readouterr().err == ""
    assert benchmark.parse_args(["--num_threads", "3"]).torch_threads == 3
    assert capsys.readouterr().err == "--num_threads is deprecated, use --torch_threads\n"


@pytest.mark.parametrize("name", ["benchmark_adaptive", "benchmark_deploy", "benchmark_padding"])
def test_a_benchmark_of_a_model_takes_model_name_or_path_and_the_old_spelling(name, tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    benchmark = importlib.import_module(name)
    assert benchmark.parse_args(["--model_name_or_path", str(tmp_path)]).model_name_or_path == tmp_path
    assert benchmark.parse_args(["--demo_model", str(tmp_path)]).model_name_or_path == tmp_path
    assert capsys.readouterr().err == "--demo_model is deprecated, use --model_name_or_path\n"


def test_the_benchmarks_read_the_library_regions_and_miss_none():
    model = tiny_pruned_classifier("ast", keep_rate=0.5)
    with torch.no_grad(), harness.quiet_profile() as prof:
        model(torch.randn(1, 128, 64))
    assert all(seconds > 0 for seconds in harness.region_seconds(prof).values())
    model.set_keep_rate(1.0)
    with torch.no_grad(), harness.quiet_profile() as prof:
        model(torch.randn(1, 128, 64))
    with pytest.raises(KeyError, match="token_scoring"):
        harness.region_seconds(prof)
    assert harness.region_seconds(prof, required=False)["hf_token_prune::reduction"] == 0.0

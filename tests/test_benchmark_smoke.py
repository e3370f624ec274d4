import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


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

"""The paper's metrics as local `evaluate` modules, loadable offline (Hub metrics need the network)."""

from functools import cache
from pathlib import Path

import evaluate


METRICS = ("accuracy", "mean_average_precision")


@cache  # analyses score many subsets; `compute` on whole arrays leaves a module reusable
def load(name: str) -> evaluate.EvaluationModule:
    """`evaluate.load` of a metric shipped in this package: "accuracy" or "mean_average_precision"."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}: choose one of {', '.join(METRICS)}.")
    return evaluate.load(str(Path(__file__).with_name(f"{name}.py")))

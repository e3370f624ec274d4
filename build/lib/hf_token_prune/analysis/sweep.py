"""Metric and MACs per keep rate and token score (paper Tables I and II).

``keep_rate_sweep`` is training-free: it re-runs the given weights at every keep rate with every token score.
``fine_tuned_sweep`` adds models fine-tuned for one keep rate / score each (one folder per model) to the same table.
"""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..pruning import TOKEN_SCORES, kept_token_counts
from ..macs import count_macs
from .evaluation import evaluate_model
from .inputs import load_pruned_model
from .report import pyplot, save_figure, section, write_table


DEFAULT_KEEP_RATES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
TRAINING_FREE = "training-free"


def _row(model, source, token_score, keep_rate, metric_name, value):
    counts = kept_token_counts(model.patch_layout.num_patches, keep_rate, len(model.config.pruning_layers))
    return {
        "source": source,
        "token_score": token_score,
        "keep_rate": keep_rate,
        "patch tokens": " → ".join(str(n) for n in [model.patch_layout.num_patches, *counts]),
        "GMACs": count_macs(model.config, keep_rate).total / 1e9,
        f"{metric_name} (%)": 100 * value,
    }


@dataclass
class SweepResult:
    table: pd.DataFrame  # one row per (source, token score, keep rate)
    metric_name: str

    def merge(self, other):
        return SweepResult(pd.concat([self.table, other.table], ignore_index=True), self.metric_name)

    def pivot(self):
        """Table I's layout: one row per keep rate, one column per score (and per fine-tuned model)."""
        table = self.table.copy()
        table["column"] = [score if source == TRAINING_FREE else f"{score} ({source})"
                           for source, score in zip(table["source"], table["token_score"])]
        wide = table.pivot_table(index="keep_rate", columns="column", values=f"{self.metric_name} (%)", sort=False)
        gmacs = table.groupby("keep_rate")["GMACs"].first()
        wide.insert(0, "GMACs", gmacs.reindex(wide.index))
        return wide.sort_index(ascending=False).reset_index().rename(columns={"keep_rate": "keep rate"})

    def plot(self, path):
        plt = pyplot()
        fig, axis = plt.subplots(figsize=(6, 3.6))
        metric = f"{self.metric_name} (%)"
        for (source, score), rows in self.table.groupby(["source", "token_score"], sort=False):
            rows = rows.sort_values("GMACs")
            style = "o-" if source == TRAINING_FREE else "s"
            label = score if source == TRAINING_FREE else f"{score} ({source})"
            axis.plot(rows["GMACs"], rows[metric], style, label=label)
        axis.set_xlabel("GMACs per clip")
        axis.set_ylabel(metric)
        axis.legend(fontsize=8)
        return save_figure(fig, path)

    def write(self, output_dir, name="sweep"):
        write_table(self.table, output_dir, name, digits=3)
        markdown = write_table(self.pivot(), output_dir, f"{name}_table", digits={"GMACs": 3})
        self.plot(f"{output_dir}/{name}.png")
        text = (
            f"{self.metric_name} (%) per keep rate and token score. Training-free columns re-run the given weights "
            "at each keep rate (keep rate 1.0 prunes nothing, so it is one evaluation shared by every score); "
            "columns with a folder name are models fine-tuned for that keep rate. GMACs: analytic count, per block "
            "4·Na·D² + 2·Na²·D + 8·Nm·D² plus the patch embedding. The long table is "
            f"[{name}.csv]({name}.csv)."
        )
        return section("Keep-rate sweep (Tables I and II)", text, [(f"{name}_table", markdown)], [f"{name}.png"])


def keep_rate_sweep(model, data, keep_rates=DEFAULT_KEEP_RATES, token_scores=TOKEN_SCORES, seed=0):
    """Training-free Table I: the metric of ``model``'s weights at every keep rate with every token score."""
    unknown = [score for score in token_scores if score not in TOKEN_SCORES]
    if unknown:
        raise ValueError(f"unknown token scores {unknown}: choose from {', '.join(TOKEN_SCORES)}.")
    rows, unpruned = [], None
    for keep_rate in keep_rates:
        for token_score in token_scores:
            if keep_rate >= 1.0 and unpruned is not None:
                value = unpruned  # nothing is pruned, so the score cannot matter
            else:
                value = evaluate_model(model, data, keep_rate, token_score, seed, desc=f"{token_score} @ {keep_rate:g}")
                unpruned = value if keep_rate >= 1.0 else unpruned
            rows.append(_row(model, TRAINING_FREE, token_score, keep_rate, data.metric_name, value))
    return SweepResult(pd.DataFrame(rows), data.metric_name)


def fine_tuned_sweep(model_paths, data, seed=0):
    """Each folder evaluated at the keep rate and token score it was fine-tuned (and saved) with."""
    rows = []
    for path in model_paths:
        model, feature_extractor = load_pruned_model(path)
        folder_data = data
        if feature_extractor.to_json_string() != data.feature_extractor.to_json_string():
            folder_data = data.with_feature_extractor(feature_extractor)
        value = evaluate_model(model, folder_data, seed=seed, desc=Path(path).name)
        rows.append(_row(model, Path(path).name, model.config.token_score, model.config.keep_rate,
                         data.metric_name, value))
    return SweepResult(pd.DataFrame(rows), data.metric_name)

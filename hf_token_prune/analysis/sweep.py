"""Metric and MACs per keep rate and token score (paper Tables I and II).

``keep_rate_sweep`` is training-free: it re-runs the given weights at every keep rate, token score and method.
``fine_tuned_sweep`` adds models fine-tuned for one keep rate / score each (one folder per model) to the same table.
A model whose config sets the per-clip policy ``keep_mass`` gets the fixed-rate sweep of its weights and one row of its
own setting, whose cost is the mean over the clips of each clip's MACs (:func:`hf_token_prune.macs.clip_macs`).
"""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import calibration, training
from ..macs import count_macs
from ..scores import TOKEN_SCORES
from ..selection import kept_token_counts
from ..token_reductions import get_token_reduction, token_reduction_names
from .evaluation import classification_metric, evaluate_model, predict
from .inputs import check_pruned_model, load_pruned_model, model_settings
from .report import pyplot, save_figure, section, write_table


DEFAULT_KEEP_RATES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
TRAINING_FREE = "training-free"


def _row(model, source, token_reduction, token_score, keep_rate, metric_name, value, gmacs, keep_mass=None):
    if keep_mass is None:
        counts = kept_token_counts(model.patch_layout.num_patches, keep_rate, len(model.config.pruning_layers))
        tokens = " → ".join(str(n) for n in [model.patch_layout.num_patches, *counts])
    else:
        tokens = f"{model.patch_layout.num_patches} → per clip"
    return {
        "source": source,
        "token_reduction": token_reduction,
        "token_score": token_score,
        "keep_rate": keep_rate,
        "keep_mass": keep_mass,
        "patch tokens": tokens,
        "GMACs": gmacs,
        f"{metric_name} (%)": 100 * value,
    }


def _own_policy_row(model, data, source, seed):
    """The row of ``model`` as configured under ``keep_mass``: its metric and its mean MACs per clip."""
    config = model.config
    setting = calibration.Setting(config.keep_rate, config.keep_mass, config.min_keep_rate)
    measured = calibration.evaluate_settings(model, data, [setting], desc=setting.label, seed=seed)[setting]
    return _row(model, source, config.token_reduction, config.token_score, config.keep_rate, data.metric_name,
                measured.metric / 100, measured.mean_macs / 1e9, config.keep_mass)


def _label(source, token_reduction, token_score, keep_mass=None):
    """Column of a row: the score for a method ranking by any score (prune), else the method (fuse / merge rank by
    attention only); a ``keep_mass`` row is a column of its own."""
    name = token_score if get_token_reduction(token_reduction).attention_only is None else token_reduction
    if pd.notna(keep_mass):
        name = f"{name} keep_mass={keep_mass:g}"
    return name if source == TRAINING_FREE else f"{name} ({source})"


@dataclass
class SweepResult:
    table: pd.DataFrame  # one row per (source, token score, keep rate)
    metric_name: str

    def merge(self, other):
        return SweepResult(pd.concat([self.table, other.table], ignore_index=True), self.metric_name)

    def pivot(self):
        """Table I's layout: one row per keep rate, one column per score (and per fine-tuned model)."""
        table = self.table.copy()
        table["column"] = [_label(*row) for row in zip(table["source"], table["token_reduction"], table["token_score"],
                                                       table["keep_mass"])]
        wide = table.pivot_table(index="keep_rate", columns="column", values=f"{self.metric_name} (%)", sort=False)
        methods = list(dict.fromkeys(table["token_reduction"]))
        fixed = table[table["keep_mass"].isna()]  # a keep_mass row's mean GMACs is its own, in the long table
        for position, method in enumerate(methods):
            gmacs = fixed[fixed["token_reduction"] == method].groupby("keep_rate")["GMACs"].first()
            name = "GMACs" if method == "prune" and len(methods) == 1 else f"GMACs {method}"
            wide.insert(position, name, gmacs.reindex(wide.index))
        return wide.sort_index(ascending=False).reset_index().rename(columns={"keep_rate": "keep rate"})

    def plot(self, path):
        plt = pyplot()
        fig, axis = plt.subplots(figsize=(6, 3.6))
        metric = f"{self.metric_name} (%)"
        groups = self.table.groupby(["source", "token_reduction", "token_score", "keep_mass"], sort=False, dropna=False)
        for (source, method, score, keep_mass), rows in groups:
            rows = rows.sort_values("GMACs")
            style = "o-" if source == TRAINING_FREE and pd.isna(keep_mass) else "s"
            axis.plot(rows["GMACs"], rows[metric], style, label=_label(source, method, score, keep_mass))
        axis.set_xlabel("GMACs per clip")
        axis.set_ylabel(metric)
        axis.legend(fontsize=8)
        return save_figure(fig, path)

    def write(self, output_dir, name="sweep"):
        write_table(self.table, output_dir, name, digits=3)
        markdown = write_table(self.pivot(), output_dir, f"{name}_table", digits={"GMACs": 3})
        self.plot(f"{output_dir}/{name}.png")
        text = (
            f"{self.metric_name} (%) per keep rate and token score; `fuse` (EViT's fused token) and `merge` (ToMe's "
            "merging) rank by attention and keep the same number of patch tokens as pruning. Training-free columns "
            "re-run the given weights at each keep rate (keep rate 1.0 reduces nothing, so it is one evaluation "
            "shared by every score and method); "
            "columns with a folder name are models fine-tuned for that keep rate. A keep_mass column is the model's "
            "per-clip policy, in the row of its ceiling keep rate; its GMACs (in the long table) are the mean over the "
            "clips of each clip's count. GMACs: analytic count, per block "
            "4·Na·D² + 2·Na²·D + 8·Nm·D² plus the patch embedding. The long table is "
            f"[{name}.csv]({name}.csv)."
        )
        return section("Keep-rate sweep (Tables I and II)", text, [(f"{name}_table", markdown)], [f"{name}.png"])


def keep_rate_sweep(model, data, keep_rates=DEFAULT_KEEP_RATES, token_scores=TOKEN_SCORES, seed=0,
                    token_reductions=("prune",)):
    """Training-free Table I: the metric of ``model``'s weights at every keep rate with every token score and token
    reduction method (fuse and merge with the attention score), through :func:`hf_token_prune.training.keep_rate_sweep`,
    the evaluation the fine-tuning recipe reports too."""
    unknown = [score for score in token_scores if score not in TOKEN_SCORES]
    unknown += [method for method in token_reductions if method not in token_reduction_names()]
    if unknown:
        raise ValueError(
            f"unknown token scores / reductions {unknown}: choose from {', '.join(TOKEN_SCORES)} and "
            f"{', '.join(token_reduction_names())}."
        )
    check_pruned_model(model)

    def evaluate():
        config = model.config
        desc = f"{config.token_reduction}/{config.token_score} @ {config.keep_rate:g}"
        with model_settings(model):
            return classification_metric(*predict(model, data, desc=desc), data.multi_label)

    # a keep_mass model: the fixed-rate sweep of its weights, then its own setting
    with model.reduction_settings(keep_mass=None, min_keep_rate=None):
        rows = training.keep_rate_sweep(model, evaluate, keep_rates, token_reductions, token_scores, seed)
    rows = [_row(model, TRAINING_FREE, row["token_reduction"], row["token_score"], row["keep_rate"],
                 data.metric_name, row["metric"], row["gmacs"]) for row in rows]
    if model.config.keep_mass is not None:
        rows.append(_own_policy_row(model, data, TRAINING_FREE, seed))
    return SweepResult(pd.DataFrame(rows), data.metric_name)


def fine_tuned_sweep(model_paths, data, seed=0):
    """Each folder evaluated at the keep rate and token score it was fine-tuned (and saved) with."""
    rows = []
    for path in model_paths:
        model, feature_extractor = load_pruned_model(path)
        folder_data = data
        if feature_extractor.to_json_string() != data.feature_extractor.to_json_string():
            folder_data = data.with_feature_extractor(feature_extractor)
        config = model.config
        if config.keep_mass is not None:
            rows.append(_own_policy_row(model, folder_data, Path(path).name, seed))
            continue
        value = evaluate_model(model, folder_data, seed=seed, desc=Path(path).name)
        rows.append(_row(model, Path(path).name, config.token_reduction, config.token_score, config.keep_rate,
                         data.metric_name, value, count_macs(config).total / 1e9))
    return SweepResult(pd.DataFrame(rows), data.metric_name)

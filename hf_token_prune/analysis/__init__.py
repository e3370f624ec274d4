"""The paper's analysis of which spectrogram patches matter, for any pruned model of this package and any dataset.

Each analysis is a function returning a result with ``.write(output_dir)`` (CSV + markdown tables, PNG figures, and
the markdown section ``recipes/analyze.py`` puts in ``index.md``)::

    from hf_token_prune.analysis import *

    model, extractor = load_pruned_model("path/to/pruned-model")
    data = load_analysis_data(model, extractor, "audiofolder", "test", data_dir="data/keywords")
    sweep = keep_rate_sweep(model, data)                           # Table I (+ MACs, Table II)
    statistics = patch_statistics(model, data)
    clusters = intensity_clusters(statistics)                      # Table III, Fig. 5
    kendall = kendall_tau_per_block(model, data, clusters, variation_clusters(statistics))   # Fig. 4
    drop = cluster_drop(model, data, clusters)                     # Table IV
    histograms = retained_patch_histograms(model, data, clusters)  # Fig. 6
    patterns = pruning_patterns(model, data, num_examples=4)       # Fig. 3

Only the model interface shared by PrunedAST and PrunedAudioMAE is used (``num_extra_tokens``, ``patch_layout``,
``attention_token_scores``, ``base_model.layers``, ``set_keep_rate``, ``config.token_score``).
"""

from .cluster_drop import DEFAULT_BLOCKS, DEFAULT_GROUPS, ClusterDropResult, cluster_drop, dropping_tokens_after
from .clusters import (
    PatchStatistics,
    ValueClusters,
    fit_value_clusters,
    intensity_clusters,
    patch_statistics,
    variation_clusters,
)
from .evaluation import classification_metric, evaluate_model, predict
from .histograms import HistogramResult, retained_patch_histograms
from .inputs import (
    AnalysisData,
    analysis_keep_rate,
    check_pruned_model,
    load_analysis_data,
    load_analysis_splits,
    load_pruned_model,
    padding_kind,
    padding_note,
    prepare_analysis_data,
)
from .kendall import KendallResult, concordance_counts, kendall_tau_per_block, kendall_tau_ties_concordant
from .patterns import PatternsResult, pruning_patterns
from .sweep import DEFAULT_KEEP_RATES, SweepResult, fine_tuned_sweep, keep_rate_sweep


ANALYSES = ("sweep", "patterns", "clusters", "kendall", "cluster_drop", "histograms")


def parse_analyses(text):
    """``"sweep,kendall"`` -> ``["sweep", "kendall"]``, refusing names that are not analyses."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ANALYSES]
    if unknown or not names:
        raise ValueError(
            f"unknown analysis {', '.join(map(repr, unknown)) or '(none given)'}: choose from {', '.join(ANALYSES)}."
        )
    return names


__all__ = [
    "ANALYSES",
    "AnalysisData",
    "ClusterDropResult",
    "DEFAULT_BLOCKS",
    "DEFAULT_GROUPS",
    "DEFAULT_KEEP_RATES",
    "HistogramResult",
    "KendallResult",
    "PatchStatistics",
    "PatternsResult",
    "SweepResult",
    "ValueClusters",
    "analysis_keep_rate",
    "check_pruned_model",
    "classification_metric",
    "cluster_drop",
    "concordance_counts",
    "dropping_tokens_after",
    "evaluate_model",
    "fine_tuned_sweep",
    "fit_value_clusters",
    "intensity_clusters",
    "keep_rate_sweep",
    "kendall_tau_per_block",
    "kendall_tau_ties_concordant",
    "load_analysis_data",
    "load_analysis_splits",
    "load_pruned_model",
    "padding_kind",
    "padding_note",
    "parse_analyses",
    "patch_statistics",
    "predict",
    "prepare_analysis_data",
    "pruning_patterns",
    "retained_patch_histograms",
    "variation_clusters",
]

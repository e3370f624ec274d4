"""Kendall's tau between each block's attention score and the patches' clustered intensity / variation (Fig. 4).

The paper's tau counts, within each sample, every pair of patch tokens that enter a block: a pair is concordant when
the attention score and the cluster rank order it the same way *or either is tied* (cluster ranks tie often), and
discordant otherwise; pairs are pooled over samples, tau = (concordant - discordant) / pairs. After a pruning block
only the survivors are compared. Tau-b from ``scipy.stats.kendalltau`` (ties corrected, per sample, then averaged)
is reported beside it.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .inputs import analysis_keep_rate, batch_patch_statistics, model_settings
from .report import pyplot, save_figure, table_and_figure_section


STATISTICS = ("intensity", "variation")


def concordance_counts(scores, ranks, valid=None):
    """Concordant and discordant pair counts per sample, ties counted as concordant.

    ``scores`` and ``ranks`` are ``(batch, tokens)``; pairs ``i < j`` of the same sample are compared, only between
    tokens where ``valid`` (same shape, bool) is true. Returns two ``(batch,)`` integer tensors.
    """
    ordered_together = torch.sign(scores[:, :, None] - scores[:, None, :]) * torch.sign(
        (ranks[:, :, None] - ranks[:, None, :]).to(scores.dtype)
    )
    pairs = torch.ones(scores.shape[1], scores.shape[1], dtype=torch.bool, device=scores.device).triu(1)[None]
    if valid is not None:
        pairs = pairs & valid[:, :, None] & valid[:, None, :]
    concordant = ((ordered_together >= 0) & pairs).sum(dim=(1, 2))
    discordant = ((ordered_together < 0) & pairs).sum(dim=(1, 2))
    return concordant, discordant


def kendall_tau_ties_concordant(x, y):
    """The paper's tau for one sample: (concordant - discordant) / pairs, ties counted as concordant."""
    x, y = torch.as_tensor(x, dtype=torch.float64)[None], torch.as_tensor(y, dtype=torch.float64)[None]
    concordant, discordant = (count.item() for count in concordance_counts(x, y))
    return (concordant - discordant) / (concordant + discordant)


@dataclass
class KendallResult:
    table: pd.DataFrame  # one row per block
    keep_rate: float
    pruning_layers: list
    num_samples: int
    exclude_padding: bool

    def mean_tau(self, statistic):
        return float(self.table[f"tau {statistic}"].mean())

    def plot(self, path):
        plt = pyplot()
        fig, axis = plt.subplots(figsize=(6.5, 3.2))
        for statistic, colour in zip(STATISTICS, ("tab:red", "tab:blue")):
            axis.plot(self.table["block"], self.table[f"tau {statistic}"], "o-", color=colour,
                      label=f"{statistic} (mean {self.mean_tau(statistic):.3f})")
            axis.plot(self.table["block"], self.table[f"tau-b {statistic}"], "x--", color=colour, alpha=0.6,
                      label=f"{statistic}, scipy tau-b")
        for layer in self.pruning_layers:
            axis.axvline(layer + 0.5, color="grey", linewidth=0.8, linestyle=":")
        axis.axhline(0, color="black", linewidth=0.5)
        axis.set_xlabel("block (dotted: pruning after this block's attention)")
        axis.set_ylabel("Kendall's tau")
        axis.set_xticks(list(self.table["block"]))
        axis.legend(fontsize=7, ncol=2)
        axis.set_title(f"attention score vs clustered patch statistics, keep rate {self.keep_rate:g}", fontsize=9)
        return save_figure(fig, path)

    def write(self, output_dir, name="kendall"):
        text = (
            f"Per block, Kendall's tau between the attention score of each patch token entering the block and the "
            f"k-means cluster rank of its intensity / variation; ties count as concordant and pairs are pooled over "
            f"{self.num_samples} samples (the paper's definition). `tau-b` is scipy's tie-corrected tau per sample, "
            f"averaged. Keep rate {self.keep_rate:g}: after a pruning block only its survivors are compared. "
            f"Mean over blocks: intensity {self.mean_tau('intensity'):.3f}, variation {self.mean_tau('variation'):.3f}."
            + (" Patches touching padded frames are left out of every pair." if self.exclude_padding else "")
        )
        return table_and_figure_section(
            "Kendall's tau per block (Fig. 4)", text, self.table, self.plot, output_dir, name, digits=3
        )


def kendall_tau_per_block(model, data, intensity_clusters, variation_clusters, keep_rate=None, exclude_padding=False):
    """Fig. 4 on ``data``: tau of every block at ``keep_rate`` (default: the model's own, else 0.5).

    ``intensity_clusters`` / ``variation_clusters`` are ``ValueClusters`` fitted on the dataset (see ``clusters``).
    Runs eager attention with ``output_attentions=True`` so every block's weights exist, and turns them into the
    model's own token score with ``model.attention_token_scores``.
    """
    from scipy.stats import kendalltau

    clusters = {"intensity": intensity_clusters, "variation": variation_clusters}
    keep_rate = analysis_keep_rate(model, keep_rate)
    layers = list(model.config.pruning_layers)
    num_blocks = model.config.num_hidden_layers
    counts = {s: np.zeros((num_blocks, 2), dtype=np.int64) for s in STATISTICS}
    tau_b = {s: [[] for _ in range(num_blocks)] for s in STATISTICS}
    tokens_compared = np.zeros(num_blocks)
    num_samples = 0
    with model_settings(model, keep_rate=keep_rate, attn_implementation="eager"):
        for batch in data.batches(desc="kendall"):
            outputs = model(batch["input_values"], output_attentions=True, output_kept_patches=True)
            intensity, variation, padding = batch_patch_statistics(model, batch["input_values"], batch["num_frames"])
            ranks = {s: clusters[s].assign(v) for s, v in zip(STATISTICS, (intensity, variation))}
            valid = padding == 0 if exclude_padding else torch.ones_like(padding, dtype=torch.bool)
            tokens = torch.arange(intensity.shape[1]).expand_as(intensity)  # input patch of every current token
            for block, weights in enumerate(outputs.attentions):
                scores = model.attention_token_scores(weights).double()
                if scores.shape != tokens.shape:
                    raise RuntimeError(f"block {block}: {scores.shape[1]} token scores for {tokens.shape[1]} tokens")
                block_valid = valid.gather(1, tokens)
                tokens_compared[block] += block_valid.sum().item()
                for statistic in STATISTICS:
                    block_ranks = ranks[statistic].gather(1, tokens)
                    concordant, discordant = concordance_counts(scores, block_ranks, block_valid)
                    counts[statistic][block] += (concordant.sum().item(), discordant.sum().item())
                    for sample in range(scores.shape[0]):
                        keep = block_valid[sample]
                        tau_b[statistic][block].append(
                            kendalltau(scores[sample, keep].numpy(), block_ranks[sample, keep].numpy()).statistic
                            if keep.sum() > 1 else float("nan")
                        )
                if block in layers:
                    tokens = outputs.kept_patches[layers.index(block)]
            num_samples += len(batch["input_values"])

    table = {"block": np.arange(num_blocks), "prunes": [block in layers for block in range(num_blocks)],
             "tokens per sample": tokens_compared / max(num_samples, 1)}
    for statistic in STATISTICS:
        concordant, discordant = counts[statistic].T
        with np.errstate(invalid="ignore", divide="ignore"):
            table[f"tau {statistic}"] = (concordant - discordant) / (concordant + discordant)
        table[f"tau-b {statistic}"] = [_nanmean(values) for values in tau_b[statistic]]
    return KendallResult(pd.DataFrame(table), keep_rate, layers, num_samples, exclude_padding)


def _nanmean(values):
    """Mean of the per-sample tau-b, skipping samples where it is undefined (one side constant)."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

"""Drop the low- or high-intensity tokens after one block and measure the metric (paper Table IV).

At keep rate 1.0, the patch tokens whose intensity falls in the chosen clusters are removed from the sequence right
after block ``i`` (0-based, like ``pruning_layers``), so blocks ``i+1...`` never see them. Samples are run one at a
time, as in the paper, because each keeps a different number of tokens. A sample left with no patch token is, as in
the paper's code, left out of the metric and counted.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .evaluation import classification_metric
from .inputs import model_settings
from .report import pyplot, save_figure, table_and_figure_section


DEFAULT_BLOCKS = (1, 3, 5, 7, 9, 11)
# Cluster ranks (0 = C1) removed by each group of Table IV.
DEFAULT_GROUPS = {"L (C1+C2)": (0, 1), "H (C4+C5)": (3, 4)}


@contextmanager
def dropping_tokens_after(model, block):
    """Within the context, ``state["keep"]`` (indices into the input patch grid) selects the patch tokens that leave
    ``model.base_model.layers[block]``; ``None`` keeps all. Needs keep rate 1.0 up to that block (tokens still in
    grid order) and batch size 1."""
    state = {"keep": None}
    extra = model.num_extra_tokens

    def keep_selected_tokens(module, args, output):
        if state["keep"] is None:
            return output
        hidden_states = output[0]
        kept = torch.cat([hidden_states[:, :extra], hidden_states[:, extra + state["keep"]]], dim=1)
        return (kept, *output[1:])

    handle = model.base_model.layers[block].register_forward_hook(keep_selected_tokens)
    try:
        yield state
    finally:
        handle.remove()


@dataclass
class ClusterDropResult:
    table: pd.DataFrame
    metric_name: str
    baseline: float
    num_samples: int

    def plot(self, path):
        plt = pyplot()
        fig, axis = plt.subplots(figsize=(6, 3.2))
        for group, rows in self.table.groupby("dropped", sort=False):
            axis.plot(rows["after block"], rows[f"{self.metric_name} (%)"], "o-", label=f"drop {group}")
        axis.axhline(100 * self.baseline, color="black", linestyle="--", linewidth=0.8, label="nothing dropped")
        axis.set_xlabel("tokens dropped after block")
        axis.set_ylabel(f"{self.metric_name} (%)")
        axis.set_xticks(sorted(self.table["after block"].unique()))
        axis.legend(fontsize=8)
        return save_figure(fig, path)

    def write(self, output_dir, name="cluster_drop"):
        empty = self.table.groupby("dropped", sort=False)["samples with no patch token"].first()
        text = (
            f"Keep rate 1.0; the patch tokens of the named intensity clusters are removed after the given block "
            f"(0-based). Nothing dropped: {self.metric_name} {100 * self.baseline:.2f}% on {self.num_samples} samples. "
            "Samples left with no patch token are excluded from the metric (as in the paper's code): "
            + ", ".join(f"{group}: {count}" for group, count in empty.items())
            + ". `unpruned, same samples` is the undisturbed model on the samples that were evaluated."
        )
        return table_and_figure_section(
            "Dropping intensity clusters (Table IV)", text, self.table, self.plot, output_dir, name
        )


def cluster_drop(model, data, clusters, blocks=DEFAULT_BLOCKS, groups=None):
    """Table IV on ``data``: the metric with each group of intensity ``clusters`` dropped after each block in
    ``blocks``. ``groups`` maps a name to the cluster ranks it removes (default: C1+C2 and C4+C5)."""
    groups = DEFAULT_GROUPS if groups is None else groups
    num_blocks, num_clusters = model.config.num_hidden_layers, len(clusters.centers)
    bad_blocks = [block for block in blocks if not 0 <= block < num_blocks]
    if bad_blocks:
        raise ValueError(f"blocks {bad_blocks} do not exist: the model has blocks 0..{num_blocks - 1}.")
    for name, members in groups.items():
        if any(not 0 <= member < num_clusters for member in members):
            raise ValueError(f"group {name!r} names clusters {members}: ranks must lie in 0..{num_clusters - 1}.")

    baseline_logits, labels = [], []
    logits = {(group, block): {} for group in groups for block in blocks}
    kept_tokens = {group: {} for group in groups}
    with model_settings(model, keep_rate=1.0):
        for batch in data.batches(desc="cluster drop"):
            input_values = batch["input_values"]
            baseline_logits.append(model(input_values).logits.float())
            labels.append(batch["labels"])
            ranks = clusters.assign(model.patch_layout.patch_statistics(input_values)[0])
            for group, members in groups.items():
                dropped = torch.isin(ranks, torch.tensor(members, dtype=ranks.dtype))
                for row in range(len(input_values)):
                    sample = int(batch["index"][row])
                    keep = (~dropped[row]).nonzero()[:, 0]
                    kept_tokens[group][sample] = len(keep)
                    if len(keep) == 0:
                        continue
                    for block in blocks:
                        with dropping_tokens_after(model, block) as state:
                            state["keep"] = keep
                            logits[group, block][sample] = model(input_values[row : row + 1]).logits[0].float()

    baseline_logits, labels = torch.cat(baseline_logits), torch.cat(labels)
    baseline = classification_metric(baseline_logits, labels, data.multi_label)
    metric = f"{data.metric_name} (%)"
    rows = []
    for (group, block), by_sample in logits.items():
        samples = sorted(by_sample)
        evaluated = torch.stack([by_sample[s] for s in samples]) if samples else baseline_logits[:0]
        rows.append({
            "dropped": group,
            "after block": block,
            metric: 100 * classification_metric(evaluated, labels[samples], data.multi_label),
            "unpruned, same samples": 100 * classification_metric(
                baseline_logits[samples], labels[samples], data.multi_label
            ),
            "samples evaluated": len(samples),
            "samples with no patch token": sum(count == 0 for count in kept_tokens[group].values()),
            "patch tokens kept (mean)": float(np.mean(list(kept_tokens[group].values()))),
        })
    return ClusterDropResult(pd.DataFrame(rows), data.metric_name, baseline, len(labels))

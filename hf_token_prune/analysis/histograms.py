"""Which patches survive to the last layer, in (intensity, variation) space (paper Fig. 6)."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .inputs import analysis_keep_rate, batch_patch_statistics, model_settings
from .report import pyplot, save_figure, table_and_figure_section


# Table IV's and Fig. 6's "low-intensity" tokens: clusters C1 and C2.
LOW_INTENSITY_CLUSTERS = (0, 1)


@dataclass
class HistogramResult:
    all_patches: np.ndarray  # (patches, 2): intensity, variation of every input patch
    retained: np.ndarray  # the same for the patches that reach the last layer
    all_clusters: np.ndarray  # intensity cluster rank of each
    retained_clusters: np.ndarray
    cluster_names: list
    keep_rate: float
    exclude_padding: bool
    bins: int = 60

    @property
    def low_intensity_share(self):
        """Fraction of the retained tokens that come from C1 + C2."""
        return float(np.isin(self.retained_clusters, LOW_INTENSITY_CLUSTERS).mean()) if len(self.retained) else 0.0

    def table(self):
        all_counts = np.bincount(self.all_clusters, minlength=len(self.cluster_names))
        kept_counts = np.bincount(self.retained_clusters, minlength=len(self.cluster_names))
        with np.errstate(invalid="ignore", divide="ignore"):
            return pd.DataFrame({
                "cluster": self.cluster_names,
                "input patches": all_counts,
                "retained patches": kept_counts,
                "share of input (%)": 100 * all_counts / all_counts.sum(),
                "share of retained (%)": 100 * kept_counts / max(kept_counts.sum(), 1),
                "retained of cluster (%)": 100 * kept_counts / all_counts,
            })

    def plot(self, path):
        from matplotlib.colors import LogNorm

        plt = pyplot()
        x_edges = np.linspace(self.all_patches[:, 0].min(), self.all_patches[:, 0].max(), self.bins + 1)
        y_edges = np.linspace(self.all_patches[:, 1].min(), self.all_patches[:, 1].max(), self.bins + 1)
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True, sharey=True, layout="constrained")
        panels = [(self.all_patches, f"all input patches ({len(self.all_patches)})"),
                  (self.retained, f"retained to the last layer ({len(self.retained)}), keep rate {self.keep_rate:g}")]
        for axis, (values, title) in zip(axes, panels):
            counts, _, _ = np.histogram2d(values[:, 0], values[:, 1], bins=(x_edges, y_edges))
            image = axis.pcolormesh(x_edges, y_edges, np.ma.masked_equal(counts.T, 0), cmap="viridis",
                                    norm=LogNorm(vmin=1, vmax=max(counts.max(), 1)))
            axis.set_title(title, fontsize=9)
            axis.set_xlabel("patch intensity (mean)")
        axes[0].set_ylabel("patch variation (std)")
        fig.colorbar(image, ax=axes, label="patches (log)")
        return save_figure(fig, path)

    def write(self, output_dir, name="histograms"):
        text = (
            f"Log 2-D histogram of patch intensity vs variation: every input patch, and the patches whose tokens reach "
            f"the last layer at keep rate {self.keep_rate:g}. Retained tokens from the low-intensity clusters C1+C2: "
            f"{100 * self.low_intensity_share:.1f}% (of all input patches: "
            f"{100 * np.isin(self.all_clusters, LOW_INTENSITY_CLUSTERS).mean():.1f}%)."
            + (" Patches touching padded frames are left out." if self.exclude_padding else "")
        )
        return table_and_figure_section(
            "Retained patch statistics (Fig. 6)", text, self.table(), self.plot, output_dir, name
        )


def retained_patch_histograms(model, data, clusters, keep_rate=None, exclude_padding=False, bins=60):
    """Fig. 6 on ``data``: statistics of all input patches and of those kept through every pruning layer."""
    keep_rate = analysis_keep_rate(model, keep_rate)
    all_patches, retained = [], []
    with model_settings(model, keep_rate=keep_rate):
        for batch in data.batches(desc="histograms"):
            outputs = model(batch["input_values"], output_kept_patches=True)
            intensity, variation, padding = batch_patch_statistics(model, batch["input_values"], batch["num_frames"])
            statistics = torch.stack([intensity, variation], dim=-1)  # (batch, patches, 2)
            valid = padding == 0 if exclude_padding else torch.ones_like(padding, dtype=torch.bool)
            survivors = outputs.kept_patches[-1] if outputs.kept_patches else torch.arange(intensity.shape[1])[None]
            survivors = survivors.expand(len(intensity), -1)
            index = survivors[..., None].expand(-1, -1, 2)
            all_patches.append(statistics[valid])
            retained.append(statistics.gather(1, index)[valid.gather(1, survivors)])
    all_patches, retained = torch.cat(all_patches).numpy(), torch.cat(retained).numpy()
    return HistogramResult(
        all_patches=all_patches,
        retained=retained,
        all_clusters=clusters.assign(all_patches[:, 0]),
        retained_clusters=clusters.assign(retained[:, 0]),
        cluster_names=clusters.names,
        keep_rate=keep_rate,
        exclude_padding=exclude_padding,
        bins=bins,
    )

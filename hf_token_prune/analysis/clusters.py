"""Patch statistics of a dataset and their 1-D k-means clusters (paper Table III and Fig. 5).

The paper ranks patches by intensity cluster rather than by raw intensity, so that differences too small to hear do
not reorder them: a 1-D ``KMeans(5)`` over every patch mean of the evaluation set, clusters renumbered C1..C5 by
ascending intensity.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .inputs import batch_patch_statistics
from .report import pyplot, save_figure, table_and_figure_section


@dataclass
class PatchStatistics:
    """Intensity (mean), variation (unbiased std) and padded fraction of every patch token, each ``(samples,
    patches)`` in the model's token order."""

    intensity: torch.Tensor
    variation: torch.Tensor
    padding_fraction: torch.Tensor

    def values(self, statistic, exclude_padding=False):
        """One statistic of every patch as a flat numpy array, without patches touching padding if asked."""
        values = getattr(self, statistic)
        if exclude_padding:
            values = values[self.padding_fraction == 0]
        return values.flatten().numpy()


def patch_statistics(model, data):
    """One pass over the features of ``data`` (no forward): the statistics of every patch the model would see."""
    intensity, variation, padding = [], [], []
    for batch in data.batches(desc="patch statistics"):
        statistics = batch_patch_statistics(model, batch["input_values"], batch["num_frames"])
        for values, store in zip(statistics, (intensity, variation, padding)):
            store.append(values)
    return PatchStatistics(torch.cat(intensity), torch.cat(variation), torch.cat(padding))


@dataclass
class ValueClusters:
    """1-D k-means clusters of one patch statistic, numbered by ascending centre (index 0 is C1)."""

    statistic: str
    kmeans: object
    relabel: np.ndarray  # kmeans label -> rank of its centre
    centers: np.ndarray  # ascending
    minimums: np.ndarray  # observed range of each cluster
    maximums: np.ndarray
    sizes: np.ndarray  # patches per cluster
    histogram: tuple  # (counts, edges) of the clustered values, for the figure
    exclude_padding: bool

    @property
    def names(self):
        return [f"C{i + 1}" for i in range(len(self.centers))]

    @property
    def boundaries(self):
        """Decision thresholds between neighbouring clusters: the midpoints of their centres (1-D nearest centre)."""
        return (self.centers[1:] + self.centers[:-1]) / 2

    def assign(self, values):
        """0-based cluster rank (0 = C1, the lowest) of every value; a tensor in gives a tensor of the same shape."""
        array = torch.as_tensor(values).detach().cpu().float().numpy()
        if array.size == 0:
            ranks = np.zeros(array.shape, dtype=np.int64)
            return torch.from_numpy(ranks) if isinstance(values, torch.Tensor) else ranks
        ranks = self.relabel[self.kmeans.predict(array.reshape(-1, 1).astype(self.kmeans.cluster_centers_.dtype))]
        ranks = ranks.reshape(array.shape)
        return torch.from_numpy(ranks).to(values.device) if isinstance(values, torch.Tensor) else ranks

    def table(self):
        shares = 100.0 * self.sizes / self.sizes.sum()
        lower = np.concatenate([[-np.inf], self.boundaries])
        upper = np.concatenate([self.boundaries, [np.inf]])
        return pd.DataFrame(
            {
                "cluster": self.names,
                "size (%)": shares,
                "patches": self.sizes,
                "centre": self.centers,
                "observed min": self.minimums,
                "observed max": self.maximums,
                "lower boundary": lower,
                "upper boundary": upper,
            }
        )

    def plot(self, path):
        """Fig. 5: the histogram of the statistic with each cluster's observed range shaded and its share named."""
        plt = pyplot()
        counts, edges = self.histogram
        fig, axis = plt.subplots(figsize=(7, 2.8))
        colours = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, len(self.centers)))
        shares = 100.0 * self.sizes / self.sizes.sum()
        for name, low, high, share, colour in zip(self.names, self.minimums, self.maximums, shares, colours):
            axis.axvspan(low, high, color=colour, alpha=0.35, label=f"{name} ({share:.1f}%)")
        axis.stairs(counts, edges, color="black", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_xlabel(f"patch {self.statistic} (normalised input)")
        axis.set_ylabel("patches")
        axis.legend(fontsize=8, ncol=len(self.centers), loc="upper center", bbox_to_anchor=(0.5, 1.25), frameon=False)
        return save_figure(fig, path)

    def padding_shares(self, statistics):
        """Share (%) of the fully padded patches of ``statistics`` in each cluster: where the padding lands."""
        padded = statistics.padding_fraction == 1
        if not padded.any():
            return None
        counts = np.bincount(self.assign(getattr(statistics, self.statistic)[padded]), minlength=len(self.centers))
        return dict(zip(self.names, 100.0 * counts / counts.sum()))

    def write(self, output_dir, statistics=None, name="clusters"):
        """The table (CSV + markdown) and the figure (PNG); returns the ``index.md`` section. With the dataset's
        ``statistics``, the text also says how much is padding and where it lands."""
        text = (
            f"1-D k-means (k={len(self.centers)}, fixed seed) over {self.sizes.sum()} patch {self.statistic} values, "
            "clusters numbered by ascending centre."
        )
        if statistics is not None:
            touched = (statistics.padding_fraction > 0).float().mean().item() * 100
            text += (f" Patches touching padded frames: {touched:.1f}% "
                     f"({'excluded from' if self.exclude_padding else 'included in'} the clustering).")
            shares = self.padding_shares(statistics)
            if shares is not None:
                text += " Fully padded patches fall in: " + ", ".join(f"{k} {v:.0f}%" for k, v in shares.items() if v)
                text += "."
        title = f"{self.statistic.capitalize()} clusters"
        if self.statistic == "intensity":
            title += " (Table III, Fig. 5)"
        return table_and_figure_section(title, text, self.table(), self.plot, output_dir, name, digits=3)


def fit_value_clusters(values, statistic, num_clusters=5, seed=0, exclude_padding=False):
    """``KMeans(num_clusters)`` on 1-D ``values`` (fixed seed), renumbered so cluster 0 has the lowest centre."""
    from sklearn.cluster import KMeans

    values = np.asarray(values, dtype=np.float64).reshape(-1)
    distinct = np.unique(values).size
    if distinct < num_clusters:
        raise ValueError(
            f"only {distinct} distinct {statistic} values for {num_clusters} clusters: analyse more samples."
        )
    kmeans = KMeans(n_clusters=num_clusters, random_state=seed, n_init=10).fit(values.reshape(-1, 1))
    order = np.argsort(kmeans.cluster_centers_[:, 0])
    relabel = np.empty(num_clusters, dtype=np.int64)
    relabel[order] = np.arange(num_clusters)
    clusters = ValueClusters(
        statistic=statistic,
        kmeans=kmeans,
        relabel=relabel,
        centers=kmeans.cluster_centers_[order, 0],
        minimums=np.zeros(num_clusters),
        maximums=np.zeros(num_clusters),
        sizes=np.zeros(num_clusters, dtype=np.int64),
        histogram=np.histogram(values, bins=100),
        exclude_padding=exclude_padding,
    )
    ranks = clusters.assign(values)
    for rank in range(num_clusters):
        members = values[ranks == rank]
        clusters.sizes[rank] = members.size
        clusters.minimums[rank], clusters.maximums[rank] = members.min(), members.max()
    return clusters


def intensity_clusters(statistics, num_clusters=5, seed=0, exclude_padding=False):
    """Table III: the paper's clusters of patch intensity over a whole dataset (``PatchStatistics``)."""
    return fit_value_clusters(
        statistics.values("intensity", exclude_padding), "intensity", num_clusters, seed, exclude_padding
    )


def variation_clusters(statistics, num_clusters=5, seed=0, exclude_padding=False):
    """The same clustering of patch variation (std), which ranks patches for the variation Kendall's tau."""
    return fit_value_clusters(
        statistics.values("variation", exclude_padding), "variation", num_clusters, seed, exclude_padding
    )

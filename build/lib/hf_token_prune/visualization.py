"""Pictures of which spectrogram patches survive pruning (paper Fig. 3)."""

import torch
import torch.nn.functional as F

from .pruning import PatchLayout


def kept_patch_mask(kept_patches: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
    """Boolean (frequency, time) mask of the spectrogram pixels covered by at least one of ``kept_patches``.

    ``kept_patches`` are token indices as the models' ``kept_patches`` output gives them; ``fold`` is the inverse of
    the patch embedding's windowing, so overlapping strides are drawn correctly.
    """
    selected = torch.zeros(layout.num_patches)
    selected[layout.frequency_major_index(kept_patches.flatten().cpu())] = 1.0
    columns = selected.expand(layout.patch_size * layout.patch_size, -1).unsqueeze(0)
    stride = (layout.frequency_stride, layout.time_stride)
    height = (layout.num_frequency_patches - 1) * stride[0] + layout.patch_size
    width = (layout.num_time_patches - 1) * stride[1] + layout.patch_size
    coverage = F.fold(columns, output_size=(height, width), kernel_size=layout.patch_size, stride=stride)
    return coverage[0, 0] > 0


def plot_pruning_stages(spectrogram, masks, titles, path, suptitle=None):
    """Save one panel per stage: the (frequency, time) spectrogram, frequency up, with pruned pixels blanked.

    A mask may be smaller than the spectrogram when the patch grid does not reach its edge; the rest counts as pruned.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spectrogram = torch.as_tensor(spectrogram, dtype=torch.float32).cpu()
    fig, axes = plt.subplots(len(masks), 1, figsize=(8, 1.6 * len(masks) + 0.6), squeeze=False, sharex=True)
    vmin, vmax = spectrogram.min().item(), spectrogram.max().item()
    for axis, mask, title in zip(axes[:, 0], masks, titles):
        full_mask = torch.zeros(spectrogram.shape, dtype=torch.bool)
        full_mask[: mask.shape[0], : mask.shape[1]] = mask.cpu()
        shown = spectrogram.masked_fill(~full_mask, float("nan"))
        axis.imshow(shown.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        axis.set_facecolor("white")
        axis.set_title(title, fontsize=9)
        axis.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("frame")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

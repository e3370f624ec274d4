"""Pictures of which spectrogram patches survive pruning (paper Fig. 3)."""

import torch
import torch.nn.functional as F


def kept_patch_mask(kept_patches: torch.Tensor, image_shape, patch_size: int, stride) -> torch.Tensor:
    """Boolean ``image_shape`` mask of the pixels covered by at least one kept patch.

    ``image_shape`` and ``stride`` are in the orientation the patch embedding reads (AST: frequency x time), and
    ``kept_patches`` holds row-major indices into that patch grid, as the models' ``kept_patches`` output does.
    ``fold`` is the inverse of the patch embedding's windowing, so overlapping strides are drawn correctly.
    """
    grid = [(size - patch_size) // step + 1 for size, step in zip(image_shape, stride)]
    selected = torch.zeros(grid[0] * grid[1])
    selected[kept_patches.flatten().cpu()] = 1.0
    columns = selected.expand(patch_size * patch_size, -1).unsqueeze(0)
    coverage = F.fold(columns, output_size=tuple(image_shape), kernel_size=patch_size, stride=stride)
    return coverage[0, 0] > 0


def plot_pruning_stages(spectrogram, masks, titles, path, suptitle=None):
    """Save one panel per stage: the spectrogram (frequency up, time right) with pruned pixels blanked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spectrogram = torch.as_tensor(spectrogram, dtype=torch.float32).cpu()
    fig, axes = plt.subplots(len(masks), 1, figsize=(8, 1.6 * len(masks) + 0.6), squeeze=False, sharex=True)
    vmin, vmax = spectrogram.min().item(), spectrogram.max().item()
    for axis, mask, title in zip(axes[:, 0], masks, titles):
        shown = spectrogram.masked_fill(~mask.cpu(), float("nan"))
        axis.imshow(shown, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        axis.set_facecolor("white")
        axis.set_title(title, fontsize=9)
        axis.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("frame")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

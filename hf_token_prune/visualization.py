"""Pictures of which spectrogram patches survive pruning (paper Fig. 3), what EViT's fused token absorbed, and the
groups ToMe's merging formed."""

import torch
import torch.nn.functional as F

from .patch_layout import PatchLayout


def kept_patch_mask(kept_patches: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
    """Boolean (frequency, time) mask of the spectrogram pixels covered by at least one of ``kept_patches``.

    ``kept_patches`` are token indices as the models' ``kept_patches`` output gives them; ``fold`` is the inverse of
    the patch embedding's windowing, so overlapping strides are drawn correctly. Empty slots (-1, a short clip's
    under ``drop_padding``) are skipped.
    """
    kept_patches = kept_patches.flatten().cpu()
    selected = torch.zeros(layout.num_patches)
    selected[layout.frequency_major_index(kept_patches[kept_patches >= 0])] = 1.0
    columns = selected.expand(layout.patch_size * layout.patch_size, -1).unsqueeze(0)
    stride = (layout.frequency_stride, layout.time_stride)
    height = (layout.num_frequency_patches - 1) * stride[0] + layout.patch_size
    width = (layout.num_time_patches - 1) * stride[1] + layout.patch_size
    coverage = F.fold(columns, output_size=(height, width), kernel_size=layout.patch_size, stride=stride)
    return coverage[0, 0] > 0


def patch_label_image(labels: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
    """``(frequency, time)`` image of per-patch integer ``labels`` (token order), ``-1`` where no patch reaches.

    Where strides overlap, a pixel shows the last patch (in frequency-major order) covering it.
    """
    grid = torch.full((layout.num_patches,), -1, dtype=torch.long)
    grid[layout.frequency_major_index(torch.arange(layout.num_patches))] = labels.cpu().long()
    grid = grid.view(layout.num_frequency_patches, layout.num_time_patches)
    rows = _last_covering(layout.num_frequency_patches, layout.frequency_stride, layout.patch_size)
    columns = _last_covering(layout.num_time_patches, layout.time_stride, layout.patch_size)
    image = grid[rows.clamp(min=0)[:, None], columns.clamp(min=0)[None, :]]
    return image.masked_fill((rows < 0)[:, None] | (columns < 0)[None, :], -1)


def _last_covering(num_patches: int, stride: int, patch_size: int) -> torch.Tensor:
    """Per pixel along one axis, the last patch whose window covers it (-1 in a gap between windows).

    The patches covering a pixel form a rectangle of rows x columns, so the last in frequency-major order is the last
    row and the last column, found axis by axis.
    """
    pixels = torch.arange((num_patches - 1) * stride + patch_size)
    last = (pixels // stride).clamp(max=num_patches - 1)
    return torch.where(pixels - last * stride < patch_size, last, -1)


def merged_groups(source_map: torch.Tensor) -> torch.Tensor:
    """Per input patch, a colour number for its merged group (from one sample's ``source_maps`` entry), ``-1`` for a
    patch that is still a token of its own, so only real merges are coloured."""
    sizes = torch.bincount(source_map)
    merged = sizes[source_map] > 1
    numbers = torch.cumsum(sizes > 1, dim=0) - 1  # groups of two or more, numbered in token order
    return torch.where(merged, numbers[source_map], -1)


def plot_pruning_stages(spectrogram, masks, titles, path, suptitle=None, overlays=None):
    """Save one panel per stage: the (frequency, time) spectrogram, frequency up, with pruned pixels blanked.

    A mask may be smaller than the spectrogram when the patch grid does not reach its edge; the rest counts as pruned.
    ``overlays`` (one per stage, or ``None``) are :func:`patch_label_image` images drawn in a colour per label over the
    spectrogram: the merged groups, or (one label) what the fused token absorbed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spectrogram = torch.as_tensor(spectrogram, dtype=torch.float32).cpu()
    fig, axes = plt.subplots(len(masks), 1, figsize=(8, 1.6 * len(masks) + 0.6), squeeze=False, sharex=True)
    vmin, vmax = spectrogram.min().item(), spectrogram.max().item()
    overlays = overlays or [None] * len(masks)
    for axis, mask, title, overlay in zip(axes[:, 0], masks, titles, overlays):
        full_mask = torch.zeros(spectrogram.shape, dtype=torch.bool)
        full_mask[: mask.shape[0], : mask.shape[1]] = mask.cpu()
        shown = spectrogram.masked_fill(~full_mask, float("nan"))
        cmap = "gray" if overlay is not None else "magma"
        axis.imshow(shown.numpy(), origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        if overlay is not None:
            labels = torch.full(spectrogram.shape, -1, dtype=torch.long)
            labels[: overlay.shape[0], : overlay.shape[1]] = overlay
            colours = (labels % 20).float().masked_fill(labels < 0, float("nan"))
            axis.imshow(colours.numpy(), origin="lower", aspect="auto", cmap="tab20", vmin=0, vmax=19, alpha=0.6,
                        interpolation="nearest")
        axis.set_facecolor("white")
        axis.set_title(title, fontsize=9)
        axis.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("frame")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

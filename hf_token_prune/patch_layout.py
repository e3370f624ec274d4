"""Where each patch token of a model comes from on the spectrogram: the geometry every family's config states.

Remote code (copied next to saved models), so it imports nothing but torch.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PatchLayout:
    """Where each patch token of a model comes from on the spectrogram.

    Both models take ``input_values`` of shape ``(batch, frames, mel_bins)`` but patchify them in different
    orientations: AST transposes to (frequency, time), so its tokens are frequency-major (``f * time_patches + t``);
    AudioMAE keeps (time, frequency), so its tokens are time-major (``t * frequency_patches + f``).
    """

    patch_size: int
    frequency_stride: int
    time_stride: int
    num_frequency_patches: int
    num_time_patches: int
    time_major: bool

    @property
    def num_patches(self) -> int:
        return self.num_frequency_patches * self.num_time_patches

    def patch_statistics(self, input_values: torch.Tensor):
        """Mean ("intensity") and unbiased std ("variation") of every patch, in token order: ``(batch, patches)``.

        ``unfold`` walks the windows in the row-major order of the patch embedding's flattened output, so statistic
        ``i`` belongs to patch token ``i``, overlapping strides included.
        """
        image, stride = input_values.unsqueeze(1).float(), (self.time_stride, self.frequency_stride)
        if not self.time_major:
            image, stride = image.transpose(2, 3), stride[::-1]
        patches = F.unfold(image, kernel_size=self.patch_size, stride=stride)
        return patches.mean(dim=1), patches.std(dim=1)

    def real_patches(self, frame_mask: torch.Tensor) -> torch.Tensor:
        """``(batch, patches)`` bool in token order from a ``(batch, frames)`` frame mask (1 = real frame): a patch is
        padding when all its frames are, so a patch straddling the clip's end stays real. Every frequency patch of a
        time step shares its frames; AST's time windows overlap (stride 10 of 16 frames), AudioMAE's do not."""
        real_time = frame_mask.bool().unfold(1, self.patch_size, self.time_stride).any(dim=-1)  # (batch, time patches)
        batch_size, frequency_patches = real_time.shape[0], self.num_frequency_patches
        if self.time_major:
            return real_time[:, :, None].expand(-1, -1, frequency_patches).reshape(batch_size, -1)
        return real_time[:, None, :].expand(-1, frequency_patches, -1).reshape(batch_size, -1)

    def frequency_major_index(self, patch_indices: torch.Tensor) -> torch.Tensor:
        """Token indices re-expressed on the (frequency, time) grid, the orientation spectrograms are drawn in."""
        if not self.time_major:
            return patch_indices
        time, frequency = patch_indices // self.num_frequency_patches, patch_indices % self.num_frequency_patches
        return frequency * self.num_time_patches + time

    def num_real_patches(self, real_frames: int) -> int:
        """Patch tokens left of a clip of ``real_frames`` frames once its padding is dropped: every time step whose
        first frame is real (:meth:`real_patches`' rule for a clip starting at frame 0)."""
        return min(self.num_time_patches, -(-real_frames // self.time_stride)) * self.num_frequency_patches

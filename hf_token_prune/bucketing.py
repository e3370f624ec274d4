"""Batches of clips that keep similar token counts: what makes a per-clip keep policy pay off at batch > 1.

In eager mode a batch under ``keep_mass`` (or ``drop_padding``) is gathered to its largest kept count, so a quiet clip
batched with a dense one costs what the dense one costs. Ordering clips by a cheap prediction of their count before
batching puts similar clips together::

    from torch.utils.data import DataLoader
    from hf_token_prune.bucketing import CountOrderedSampler, predicted_kept_counts

    counts = predicted_kept_counts(model, features["input_values"], features.get("attention_mask"))
    loader = DataLoader(dataset, batch_size=16, sampler=CountOrderedSampler(counts))  # each batch: 16 similar clips

The prediction reads the model input only, never runs the model: the first pruning layer's count if the token score
were the patches' log-mel ``intensity``, through the model's own selection rule (:func:`selection.select_tokens`, its
policy, floor and ceiling). Padding filled with the clip's minimum (``fbank_padding="minimum"``) holds no intensity
mass, so the prediction follows a clip's length as well as how much of it is loud.
"""

import torch
from torch.utils.data import Sampler

from .selection import kept_counts_per_clip, select_tokens


def predicted_kept_counts(model, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """``(batch,)`` long: for each clip, the patch tokens the first pruning layer of ``model`` would keep under its
    config's policy (``keep_rate``, ``keep_mass``, ``min_keep_rate``, ``drop_padding``) if it ranked by intensity.

    ``attention_mask`` is the feature extractor's frame mask; it counts only for a ``drop_padding`` model, whose
    layers see the real patches alone. Under a fixed keep rate without ``drop_padding`` every clip gets the same count.
    """
    config, layout = model.config, model.patch_layout
    intensity = layout.patch_statistics(input_values)[0]
    real_patches = None
    if config.drop_padding and attention_mask is not None:
        real_patches = layout.real_patches(attention_mask)
    placeholder_tokens = intensity.new_zeros(*intensity.shape, 1)
    _, kept = select_tokens(
        placeholder_tokens, intensity, config.keep_rate, 0, real_patches,
        count_real_tokens=config.drop_padding or config.keep_mass is not None, keep_mass=config.keep_mass,
        min_keep_rate=config.min_keep_rate,
    )  # fmt: skip
    return kept_counts_per_clip([kept])[:, 0]


class CountOrderedSampler(Sampler[int]):
    """Dataset indices in ascending order of ``counts`` (ties in dataset order), so that consecutive indices, and so a
    ``DataLoader``'s batches, hold clips of similar counts.

    ``DataLoader(dataset, batch_size=16, sampler=CountOrderedSampler(counts))`` batches them; ``BatchSampler(
    CountOrderedSampler(counts), 16, drop_last=False)`` gives the batches' index lists; a ``Trainer`` evaluates in this
    order when its ``_get_eval_sampler`` returns one. Predictions come back in this order: ``sampler.order`` maps them
    to the dataset's.
    """

    def __init__(self, counts):
        self.order = torch.argsort(torch.as_tensor(counts), stable=True).tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)

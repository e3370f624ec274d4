"""Batches of clips that keep similar token counts: what makes a per-clip keep policy pay off at batch > 1.

In eager mode a batch under ``keep_mass`` (or ``drop_padding``) is gathered to its largest kept count, so a quiet clip
batched with a dense one costs what the dense one costs. Ordering clips by a cheap prediction of their count before
batching puts similar clips together::

    from torch.utils.data import DataLoader
    from hf_token_prune.bucketing import CountOrderedSampler, predicted_kept_counts

    counts = predicted_kept_counts(model, features["input_values"], features.get("attention_mask"))
    loader = DataLoader(dataset, batch_size=16, sampler=CountOrderedSampler(counts))  # each batch: 16 similar clips

The prediction reads the model input only, never runs the model. A ``drop_padding`` model's layers run on each clip's
real patches, so a clip's real patch count is its count up to the first pruning layer, exactly, and it ranks the clips'
MACs best (measured on the demo's test clips under ``keep_mass``: Spearman 0.69-0.79, against 0.55-0.63 for the
intensity count below). With the padding kept every clip enters with the same count; what varies is the first pruning
layer's count, predicted as the model's policy (``keep_rate``, ``keep_mass``, its floor) applied to the patches' log-mel
``intensity`` (:func:`selection.select_tokens`). That is the only input statistic that varies between the full-length
windows of a recording, but on the demo's clips it does not rank the counts its attention keeps (Spearman -0.1 to -0.2):
``benchmarks/benchmark_adaptive.py`` reports it per setting.
"""

import torch
from torch.utils.data import Sampler

from .selection import kept_counts_per_clip, select_tokens


def predicted_kept_counts(model, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          keep_mass: float | None = None, min_keep_rate: float | None = None,
                          keep_rate: float | None = None):
    """``(batch,)`` long: for each clip, the patch tokens ``model`` is predicted to run on: its real patches for a
    ``drop_padding`` model given the feature extractor's frame mask ``attention_mask``, else the first pruning layer's
    count under the keep rate and policy (``keep_rate``, ``keep_mass``, ``min_keep_rate``: a call's, as the forward
    takes them; the config's when ``None``) if it ranked by intensity. Under a fixed keep rate without
    ``drop_padding`` every clip gets the same count."""
    config, layout = model.config, model.patch_layout
    if config.drop_padding and attention_mask is not None:
        return layout.real_patches(attention_mask).sum(dim=1)
    keep_rate = model.resolve_keep_rate(keep_rate)
    keep_mass, min_keep_rate = model.resolve_keep_mass(keep_mass, keep_rate, min_keep_rate)
    intensity = layout.patch_statistics(input_values)[0]
    placeholder_tokens = intensity.new_zeros(*intensity.shape, 1)
    _, kept = select_tokens(
        placeholder_tokens, intensity, keep_rate, 0, count_real_tokens=keep_mass is not None,
        keep_mass=keep_mass, min_keep_rate=min_keep_rate,
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

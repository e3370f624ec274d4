"""Analytic multiply-accumulate count of a pruned forward (the count that reproduces the paper's Table II).

Private stand-in: ``hf_token_prune.macs`` is being written in parallel and replaces this module at merge.
"""

from ..pruning import kept_token_counts


def _approximate_macs(model, keep_rate):
    """MACs of one forward at ``keep_rate``: patch embedding plus, per block, 4*Na*D^2 + 2*Na^2*D (attention over Na
    tokens) + 2*Nm*D*I (MLP over the Nm tokens left after that block's pruning; 8*Nm*D^2 when I = 4D)."""
    config = model.config
    num_patches = model.patch_layout.num_patches
    extra = model.num_extra_tokens
    hidden, intermediate = config.hidden_size, config.intermediate_size
    layers = list(config.pruning_layers)
    counts = iter(kept_token_counts(num_patches, keep_rate, len(layers)))
    macs = num_patches * config.patch_size**2 * hidden
    tokens = num_patches + extra
    for index in range(config.num_hidden_layers):
        attention_tokens = tokens
        if index in layers:
            tokens = next(counts) + extra
        macs += 4 * attention_tokens * hidden**2 + 2 * attention_tokens**2 * hidden + 2 * tokens * hidden * intermediate
    return macs

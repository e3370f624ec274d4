"""Configuration of the Audio Spectrogram Transformer with TopK token pruning."""

from transformers import ASTConfig

from .patch_layout import PatchLayout
from .pruning_config import PruningConfigMixin


class PrunedASTConfig(PruningConfigMixin, ASTConfig):
    r"""
    [`ASTConfig`] plus the three fields of TopK token pruning. Any AST checkpoint's config loads into it; the pruning
    fields then take their defaults or the values passed to `from_pretrained`.

    keep_rate (`float`, *optional*, defaults to 1.0):
        Fraction of the patch tokens each pruning layer keeps, in (0, 1]: a layer that receives `n` patch tokens keeps
        `ceil(n * keep_rate)` (at least one). The same rate applies at every pruning layer, so the kept counts compound
        (512 patches at 0.7 -> 359, 252, 177). CLS and distillation tokens are always kept. 1.0 disables pruning.
    pruning_layers (`list[int]`, *optional*):
        0-based indices of the layers that prune, between their attention and their MLP; sorted, unique, inside
        `[0, num_hidden_layers)`, at least one when `keep_rate < 1`. Defaults to the paper's relative positions,
        `floor(k * num_hidden_layers / 4)` for k = 1, 2, 3: its 4th, 7th and 10th of 12 blocks (`[3, 6, 9]`),
        `[1, 3, 4]` of 6, `[6, 12, 18]` of 24.
    token_score (`str`, *optional*, defaults to `"attention"`):
        How patch tokens are ranked: `"attention"` (the CLS query's attention to each patch, mean over heads),
        `"intensity"` / `"variation"` (mean / unbiased std of the patch in the model input), or `"random"` (a control).
    token_reduction (`str`, *optional*, defaults to `"prune"`):
        What happens to the patch tokens a reducing layer does not keep: `"prune"` drops them (the paper); `"fuse"`
        replaces them by one extra token, their sum weighted by their attention scores (EViT), which joins the later
        layers, absorbs what they drop and is never dropped itself (nor pooled); `"merge"` keeps the same number of
        tokens by merging similar ones instead (ToMe: bipartite soft matching on the layer's keys, size-weighted means,
        proportional attention `+ log(size)` in later layers). fuse and merge need `token_score="attention"`.
    drop_padding (`bool`, *optional*, defaults to `False`):
        Whether `attention_mask` is the feature extractor's frame mask (`return_attention_mask=True`, shape
        `(batch_size, max_length)`, 1 on the clip's frames) and the padding patch tokens are gathered out before the
        first layer, so a short clip pays only for its real patches. A patch is padding when all its frames are. A batch
        of mixed lengths runs at its longest clip's token count, with a key-padding mask for the shorter ones; each
        clip's logits equal those of the clip run alone, and with pruning each clip keeps `ceil(n_real * keep_rate)` of
        its own real tokens (`kept_patches` marks a shorter clip's empty slots with -1). Without a mask nothing is
        dropped. Compiled and exported graphs have static shapes, so there the padding is masked, not gathered out
        (same outputs, no saving). `False` keeps the per-token mask of transformers' AST (and today's outputs). Needs
        `token_reduction="prune"`.
    keep_mass (`float`, *optional*):
        Per-sample keep policy, in (0, 1]; `None` (the default) keeps the fixed `ceil(n * keep_rate)`. When set, every
        pruning layer keeps, in each sample, the fewest of its best-scored patch tokens whose share of the sample's
        score mass reaches `keep_mass`, at least `ceil(n * min_keep_rate)` (one token when `min_keep_rate` is `None`)
        and at most `ceil(n * keep_rate)`, `n` being the sample's own real patch tokens entering the layer; so
        `keep_rate=1.0, keep_mass=0.9` prunes with no ceiling. The mass is each real token's score over the sum of the
        sample's real scores; a score that can be negative (the log-mel `"intensity"`) is first shifted by the
        sample's smallest real score when that is negative, so the weakest token holds no mass; a sample whose
        scores are all equal has no ranking and counts them as equal masses. In a batch each sample keeps its own
        count: tokens are gathered to the batch's largest count, the other slots are masked (and -1 in
        `kept_patches`), and each clip's logits equal the clip run alone. Compiled and exported graphs have static
        shapes, so there every sample is gathered to the ceiling and the rest is masked (same outputs, no saving).
        Needs `token_reduction="prune"`.
    min_keep_rate (`float`, *optional*):
        The floor of the `keep_mass` policy, in (0, keep_rate]: every sample keeps at least `ceil(n * min_keep_rate)`
        patch tokens in each pruning layer. `None`: at least one.

    Example:

    ```python
    >>> from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification
    >>> config = PrunedASTConfig(keep_rate=0.7, pruning_layers=[3, 6, 9])
    >>> model = PrunedASTForAudioClassification(config)
    ```"""

    model_type = "pruned-audio-spectrogram-transformer"
    num_extra_tokens = 2  # CLS and distillation token, never pruned

    keep_rate: float | int = 1.0
    pruning_layers: list[int] | None = None
    token_score: str = "attention"
    token_reduction: str = "prune"
    drop_padding: bool = False
    keep_mass: float | int | None = None
    min_keep_rate: float | int | None = None

    def patch_layout(self, max_length: int | None = None) -> PatchLayout:
        """How patch tokens map onto the input (frequency-major, overlapping strides allowed; `ASTEmbeddings.get_shape`'s
        arithmetic), for `max_length` frames (default: the config's). Reads only AST fields, so a stock `ASTConfig`
        can be passed as `self`."""
        max_length = self.max_length if max_length is None else max_length
        return PatchLayout(
            patch_size=self.patch_size,
            frequency_stride=self.frequency_stride,
            time_stride=self.time_stride,
            num_frequency_patches=(self.num_mel_bins - self.patch_size) // self.frequency_stride + 1,
            num_time_patches=(max_length - self.patch_size) // self.time_stride + 1,
            time_major=False,
        )

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        # A stock AST checkpoint is this model with pruning off: load it as ours, without transformers' warning
        # about mixing model types.
        if config_dict.get("model_type") == ASTConfig.model_type:
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs


__all__ = ["PrunedASTConfig"]

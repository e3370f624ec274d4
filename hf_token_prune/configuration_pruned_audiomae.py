"""Configuration of AudioMAE (the fine-tuning ViT of Huang et al., 2022) with TopK token pruning."""

from transformers import PreTrainedConfig

from .patch_layout import PatchLayout
from .pruning_config import PruningConfigMixin


class PrunedAudioMAEConfig(PruningConfigMixin, PreTrainedConfig):
    r"""
    Configuration of [`PrunedAudioMAEModel`]: the ViT that AudioMAE fine-tunes (Huang et al., "Masked Autoencoders that
    Listen", 2022), on a `(max_length frames x num_mel_bins)` log-mel spectrogram cut into non-overlapping square
    patches, time-major, with one CLS token, fixed 2-D sin-cos position embeddings, mean pooling over the patch tokens
    and a LayerNorm (`fc_norm`) before the classifier. The defaults are the ViT-B/16 of the official AudioSet
    checkpoints.

    hidden_size (`int`, *optional*, defaults to 768):
        Width of the tokens.
    num_hidden_layers (`int`, *optional*, defaults to 12):
        Number of transformer blocks.
    num_attention_heads (`int`, *optional*, defaults to 12):
        Attention heads per block.
    intermediate_size (`int`, *optional*, defaults to 3072):
        Width of the MLP's hidden layer.
    hidden_act (`str`, *optional*, defaults to `"gelu"`):
        MLP activation (exact GELU, as timm's `nn.GELU`).
    layer_norm_eps (`float`, *optional*, defaults to 1e-6):
        Epsilon of every LayerNorm.
    qkv_bias (`bool`, *optional*, defaults to `True`):
        Bias on the fused query/key/value projection.
    attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0):
        Dropout on the attention weights during training.
    drop_path_rate (`float`, *optional*, defaults to 0.0):
        Stochastic depth for fine-tuning: block `i` drops its residual branches with probability
        `drop_path_rate * i / (num_hidden_layers - 1)` (the paper fine-tunes with 0.1).
    patch_size (`int`, *optional*, defaults to 16):
        Side of the square, non-overlapping patches.
    num_mel_bins (`int`, *optional*, defaults to 128):
        Mel bins of the input spectrogram.
    max_length (`int`, *optional*, defaults to 1024):
        Frames of the input spectrogram (1024 for AudioSet and VoxCeleb, 512 for ESC-50, 128 for Speech Commands).
    initializer_range (`float`, *optional*, defaults to 0.02):
        Std of the truncated normal that initialises weights which are not loaded.
    keep_rate (`float`, *optional*, defaults to 1.0):
        Fraction of the patch tokens each pruning layer keeps, in (0, 1]: `ceil(n * keep_rate)`, at least one;
        compounds across pruning layers. The CLS token is always kept. 1.0 disables pruning.
    pruning_layers (`list[int]`, *optional*):
        0-based indices of the layers that prune between their attention and their MLP; sorted, unique, inside
        `[0, num_hidden_layers)`, at least one when `keep_rate < 1`. Defaults to the paper's relative positions,
        `floor(k * num_hidden_layers / 4)` for k = 1, 2, 3 (`[3, 6, 9]` of 12 layers).
    token_score (`str`, *optional*, defaults to `"attention"`):
        How patch tokens are ranked: `"attention"` (the attention each patch receives, mean over heads and patch
        queries, paper eq. 2a), `"intensity"` / `"variation"` (mean / unbiased std of the patch in the model input), or
        `"random"`.
    token_reduction (`str`, *optional*, defaults to `"prune"`):
        What happens to the patch tokens a reducing layer does not keep: `"prune"` (the paper), `"fuse"` (EViT's fused
        token) or `"merge"` (ToMe), as in [`PrunedASTConfig`]; fuse and merge need `token_score="attention"`.
    drop_padding (`bool`, *optional*, defaults to `False`):
        Whether `attention_mask` is the feature extractor's `(batch_size, max_length)` frame mask and the padding
        patches (all of whose frames are padding) are gathered out before the first layer, as in [`PrunedASTConfig`]:
        each clip's logits equal the clip run alone, its kept counts come from its own real patches (-1 marks empty
        `kept_patches` slots), and compiled / exported graphs mask instead of gathering. Needs `token_reduction="prune"`.
    keep_mass (`float`, *optional*):
        Per-sample keep policy, as in [`PrunedASTConfig`]: each pruning layer keeps, in each sample, the fewest of its
        best-scored patch tokens whose share of the sample's score mass reaches `keep_mass`, between
        `ceil(n * min_keep_rate)` and `ceil(n * keep_rate)`; mean pooling skips the empty slots. `None` (the default):
        the fixed keep rate. Needs `token_reduction="prune"`.
    min_keep_rate (`float`, *optional*):
        The floor of the `keep_mass` policy, in (0, keep_rate]; `None`: one token.
    """

    model_type = "pruned-audiomae"
    num_extra_tokens = 1  # the CLS token, never pruned (and not pooled)

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    attention_probs_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.0
    patch_size: int = 16
    num_mel_bins: int = 128
    max_length: int = 1024
    initializer_range: float = 0.02
    keep_rate: float | int = 1.0
    pruning_layers: list[int] | None = None
    token_score: str = "attention"
    token_reduction: str = "prune"
    drop_padding: bool = False
    keep_mass: float | int | None = None
    min_keep_rate: float | int | None = None

    def patch_layout(self, max_length: int | None = None) -> PatchLayout:
        """How patch tokens map onto the input (time-major, non-overlapping square patches), for `max_length` frames
        (default: the config's)."""
        max_length = self.max_length if max_length is None else max_length
        size = self.patch_size
        return PatchLayout(
            patch_size=size,
            frequency_stride=size,
            time_stride=size,
            num_frequency_patches=self.num_mel_bins // size,
            num_time_patches=max_length // size,
            time_major=True,
        )

    def _validate_pruning(self, **changes):
        super()._validate_pruning(**changes)
        if self.hidden_size % self.num_attention_heads or self.hidden_size % 4:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads} "
                "and by 4 (the 2-D sin-cos position embedding splits it into four sin/cos halves)."
            )
        for name in ("num_mel_bins", "max_length"):
            if getattr(self, name) % self.patch_size:
                raise ValueError(
                    f"{name}={getattr(self, name)} must be a multiple of patch_size={self.patch_size}: AudioMAE cuts the "
                    "spectrogram into non-overlapping patches."
                )


__all__ = ["PrunedAudioMAEConfig"]

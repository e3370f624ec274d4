"""TopK token pruning for audio spectrogram transformers in Hugging Face Transformers."""

import warnings

from .apply import apply_token_reduction, remove_token_reduction
from .configuration_pruned_ast import PrunedASTConfig
from .configuration_pruned_audiomae import PrunedAudioMAEConfig
from .families import ModelFamily, model_families, model_family, register_model_family
from .feature_extraction_audiomae import AudioMAEFeatureExtractor
from .modeling_pruned_ast import PrunedASTForAudioClassification, PrunedASTModel, PrunedASTPreTrainedModel
from .modeling_pruned_audiomae import (
    PrunedAudioMAEForAudioClassification,
    PrunedAudioMAEModel,
    PrunedAudioMAEPreTrainedModel,
)
from .reduction import TokenReduction
from .selection import kept_token_counts, num_kept_tokens
from .tagging import RecordingTags, tag_recording
from .token_reductions import get_token_reduction, register_token_reduction, token_reduction_names


__version__ = "0.1.0"

# AST's Kaldi fbank uses 128 mel bins over 257 FFT bins, so its lowest filters are empty by design; transformers
# warns about that on every feature extractor it builds.
warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")

# Installed users load saved pruned models through the Auto classes without trust_remote_code: every family is
# registered with them when families.py is imported, above.

__all__ = [
    "AudioMAEFeatureExtractor",
    "ModelFamily",
    "PrunedASTConfig",
    "PrunedASTForAudioClassification",
    "PrunedASTModel",
    "PrunedASTPreTrainedModel",
    "PrunedAudioMAEConfig",
    "PrunedAudioMAEForAudioClassification",
    "PrunedAudioMAEModel",
    "PrunedAudioMAEPreTrainedModel",
    "RecordingTags",
    "TokenReduction",
    "apply_token_reduction",
    "get_token_reduction",
    "kept_token_counts",
    "model_families",
    "model_family",
    "num_kept_tokens",
    "register_model_family",
    "register_token_reduction",
    "remove_token_reduction",
    "tag_recording",
    "token_reduction_names",
]

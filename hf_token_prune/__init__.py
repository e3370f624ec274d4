"""TopK token pruning for audio spectrogram transformers in Hugging Face Transformers."""

import warnings

from transformers import (
    ASTFeatureExtractor,
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
)

from .apply import apply_token_reduction, remove_token_reduction
from .configuration_pruned_ast import PrunedASTConfig
from .configuration_pruned_audiomae import PrunedAudioMAEConfig
from .feature_extraction_audiomae import AudioMAEFeatureExtractor
from .modeling_pruned_ast import PrunedASTForAudioClassification, PrunedASTModel, PrunedASTPreTrainedModel
from .modeling_pruned_audiomae import (
    PrunedAudioMAEForAudioClassification,
    PrunedAudioMAEModel,
    PrunedAudioMAEPreTrainedModel,
)
from .pruning import kept_token_counts, num_kept_tokens
from .tagging import RecordingTags, tag_recording


__version__ = "0.1.0"

# AST's Kaldi fbank uses 128 mel bins over 257 FFT bins, so its lowest filters are empty by design; transformers
# warns about that on every feature extractor it builds.
warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")

# Installed users load saved pruned models through the Auto classes without trust_remote_code.
AutoConfig.register(PrunedASTConfig.model_type, PrunedASTConfig)
AutoModel.register(PrunedASTConfig, PrunedASTModel)
AutoModelForAudioClassification.register(PrunedASTConfig, PrunedASTForAudioClassification)
AutoFeatureExtractor.register(PrunedASTConfig, ASTFeatureExtractor)
AutoConfig.register(PrunedAudioMAEConfig.model_type, PrunedAudioMAEConfig)
AutoModel.register(PrunedAudioMAEConfig, PrunedAudioMAEModel)
AutoModelForAudioClassification.register(PrunedAudioMAEConfig, PrunedAudioMAEForAudioClassification)
AutoFeatureExtractor.register(PrunedAudioMAEConfig, AudioMAEFeatureExtractor)

__all__ = [
    "AudioMAEFeatureExtractor",
    "PrunedASTConfig",
    "PrunedASTForAudioClassification",
    "PrunedASTModel",
    "PrunedASTPreTrainedModel",
    "PrunedAudioMAEConfig",
    "PrunedAudioMAEForAudioClassification",
    "PrunedAudioMAEModel",
    "PrunedAudioMAEPreTrainedModel",
    "RecordingTags",
    "apply_token_reduction",
    "kept_token_counts",
    "num_kept_tokens",
    "remove_token_reduction",
    "tag_recording",
]

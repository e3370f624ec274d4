"""TopK token pruning for audio spectrogram transformers in Hugging Face Transformers."""

import warnings

from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification

from .configuration_pruned_ast import PrunedASTConfig
from .modeling_pruned_ast import PrunedASTForAudioClassification, PrunedASTModel, PrunedASTPreTrainedModel
from .pruning import kept_token_counts, num_kept_tokens


__version__ = "0.1.0"

# AST's Kaldi fbank uses 128 mel bins over 257 FFT bins, so its lowest filters are empty by design; transformers
# warns about that on every feature extractor it builds.
warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")

# Installed users load saved pruned models through the Auto classes without trust_remote_code.
AutoConfig.register(PrunedASTConfig.model_type, PrunedASTConfig)
AutoModel.register(PrunedASTConfig, PrunedASTModel)
AutoModelForAudioClassification.register(PrunedASTConfig, PrunedASTForAudioClassification)

__all__ = [
    "PrunedASTConfig",
    "PrunedASTForAudioClassification",
    "PrunedASTModel",
    "PrunedASTPreTrainedModel",
    "kept_token_counts",
    "num_kept_tokens",
]

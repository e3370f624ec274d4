"""TopK token pruning for audio spectrogram transformers in Hugging Face Transformers.

The public names load on first use (PEP 562). Under the command line (`hf-token-prune`, hf_token_prune_cli) the
package and its light modules (checks, errors, loading) cost no torch: a command checks its flags and files before it
loads a model.
"""

import importlib
import sys
import warnings
from typing import TYPE_CHECKING


__version__ = "0.1.0"

# AST's Kaldi fbank uses 128 mel bins over 257 FFT bins, so its lowest filters are empty by design; transformers
# warns about that on every feature extractor it builds. Every module of the package runs this file first.
warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")

if TYPE_CHECKING:  # what type checkers and the API reference read; at run time __getattr__ imports each on first use
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

# public name -> the module defining it (the imports above, for run time)
_PUBLIC = {
    "AudioMAEFeatureExtractor": "feature_extraction_audiomae",
    "ModelFamily": "families",
    "PrunedASTConfig": "configuration_pruned_ast",
    "PrunedASTForAudioClassification": "modeling_pruned_ast",
    "PrunedASTModel": "modeling_pruned_ast",
    "PrunedASTPreTrainedModel": "modeling_pruned_ast",
    "PrunedAudioMAEConfig": "configuration_pruned_audiomae",
    "PrunedAudioMAEForAudioClassification": "modeling_pruned_audiomae",
    "PrunedAudioMAEModel": "modeling_pruned_audiomae",
    "PrunedAudioMAEPreTrainedModel": "modeling_pruned_audiomae",
    "RecordingTags": "tagging",
    "TokenReduction": "reduction",
    "apply_token_reduction": "apply",
    "get_token_reduction": "token_reductions",
    "kept_token_counts": "selection",
    "model_families": "families",
    "model_family": "families",
    "num_kept_tokens": "selection",
    "register_model_family": "families",
    "register_token_reduction": "token_reductions",
    "remove_token_reduction": "apply",
    "tag_recording": "tagging",
    "token_reduction_names": "token_reductions",
}


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Whoever takes a class or function from the package may next load a saved pruned model through the Auto classes
    # or pipeline() without trust_remote_code: importing families registers every family with them.
    importlib.import_module(".families", __name__)
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_PUBLIC})


# `import hf_token_prune` and then pipeline() or the Auto classes on a saved pruned folder must work without
# trust_remote_code, as it always has: register the families now (this loads torch). The command line
# (hf_token_prune_cli) skips it, so a command answers a bad flag or folder before torch loads; every command
# registers the families when it loads a model (loading.py).
if "hf_token_prune_cli" not in sys.modules:
    importlib.import_module(".families", __name__)


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

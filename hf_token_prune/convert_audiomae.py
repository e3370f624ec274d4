"""Convert an official AudioMAE checkpoint into a `PrunedAudioMAEForAudioClassification` folder.

    hf-token-prune convert --checkpoint finetuned.pth --output_dir audiomae-as20k \\
        [--num_labels 527 --id2label labels.json] [--max_length 1024] [--keep_rate 0.7]

Reads the official fine-tuning checkpoints (`.pth` with timm key names under `ckpt["model"]`), timm-format
`.safetensors` copies, and the AudioSet-2M *pre-training* checkpoint (its decoder and final norm are dropped; `fc_norm`
and the classifier start fresh, to be fine-tuned). The architecture (width, depth, MLP size, labels, frames) is read
from the tensors. Every key must map onto the model and every model weight must come from the checkpoint (except that
fresh head of a pre-training checkpoint); otherwise nothing is written and the error lists the keys. The output folder
holds the weights, the config, the feature extractor and remote code, and loads with or without `trust_remote_code`.
"""

import argparse
import pickle
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from .files import check_output_dir, written_whole
from .configuration_pruned_audiomae import PrunedAudioMAEConfig
from .feature_extraction_audiomae import AudioMAEFeatureExtractor
from .modeling_pruned_audiomae import PrunedAudioMAEForAudioClassification


# timm / official AudioMAE name -> ours; `{}` is the block index.
KEY_MAP = {
    "cls_token": "audiomae.embeddings.cls_token",
    "pos_embed": "audiomae.embeddings.position_embeddings",
    "patch_embed.proj.weight": "audiomae.embeddings.patch_embeddings.weight",
    "patch_embed.proj.bias": "audiomae.embeddings.patch_embeddings.bias",
    "blocks.{}.norm1.weight": "audiomae.layers.{}.layernorm_before.weight",
    "blocks.{}.norm1.bias": "audiomae.layers.{}.layernorm_before.bias",
    "blocks.{}.attn.qkv.weight": "audiomae.layers.{}.attention.qkv.weight",
    "blocks.{}.attn.qkv.bias": "audiomae.layers.{}.attention.qkv.bias",
    "blocks.{}.attn.proj.weight": "audiomae.layers.{}.attention.proj.weight",
    "blocks.{}.attn.proj.bias": "audiomae.layers.{}.attention.proj.bias",
    "blocks.{}.norm2.weight": "audiomae.layers.{}.layernorm_after.weight",
    "blocks.{}.norm2.bias": "audiomae.layers.{}.layernorm_after.bias",
    "blocks.{}.mlp.fc1.weight": "audiomae.layers.{}.mlp.fc1.weight",
    "blocks.{}.mlp.fc1.bias": "audiomae.layers.{}.mlp.fc1.bias",
    "blocks.{}.mlp.fc2.weight": "audiomae.layers.{}.mlp.fc2.weight",
    "blocks.{}.mlp.fc2.bias": "audiomae.layers.{}.mlp.fc2.bias",
    "fc_norm.weight": "audiomae.fc_norm.weight",
    "fc_norm.bias": "audiomae.fc_norm.bias",
    "head.weight": "classifier.weight",
    "head.bias": "classifier.bias",
}
# Pre-training only: the MAE decoder, its mask token, and the encoder norm that fine-tuning replaces by fc_norm.
PRETRAINING_ONLY = re.compile(r"^(decoder_|mask_token$|norm\.)")
FRESH_IN_PRETRAINING = ("audiomae.fc_norm.", "classifier.")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the AudioMAE architecture; nothing was written."""


def read_checkpoint(path: Path) -> dict:
    """Tensors of an official `.pth` (under `"model"`) or a timm-format `.safetensors` file."""
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file.")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        # MAE-style training scripts store their argparse.Namespace next to the weights: plain data, safe to allow.
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises weights_only=False, i.e. running whatever code the file holds: never pass that on.
        needed = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if needed:
            raise CheckpointMismatchError(
                f"{path} is not loaded: besides tensors it holds a Python object ({needed.group(1)}) that only pickle "
                "can rebuild, and unpickling can run arbitrary code. Convert a copy holding only the tensors (a "
                ".safetensors file, or a .pth of the state dict alone), made where you trust the file."
            ) from None
        raise CheckpointMismatchError(f"Could not read {path}: it is not a file torch.save wrote.") from None
    except Exception as error:  # torch and safetensors raise many types for truncated or foreign files
        raise CheckpointMismatchError(f"Could not read {path} as a PyTorch or safetensors checkpoint: {error}") from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointMismatchError(f"{path} holds no state dict (expected tensors, or a dict with a 'model' entry).")
    return checkpoint


def rename(timm_key: str) -> str | None:
    block = re.match(r"blocks\.(\d+)\.(.*)", timm_key)
    if block:
        pattern = KEY_MAP.get(f"blocks.{{}}.{block.group(2)}")
        return pattern.format(block.group(1)) if pattern else None
    return KEY_MAP.get(timm_key)


def config_from_checkpoint(
    state_dict: dict, num_labels=None, max_length=None, num_attention_heads=None, num_mel_bins=128, **pruning
):
    """Read the architecture off the tensors; raise CheckpointMismatchError naming what is missing or odd."""
    required = ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"]
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise CheckpointMismatchError(
            f"Not an AudioMAE/timm ViT checkpoint: missing {missing} (found e.g. {sorted(state_dict)[:8]})."
        )
    for name, value in (("num_labels", num_labels), ("max_length", max_length),
                        ("num_attention_heads", num_attention_heads), ("num_mel_bins", num_mel_bins)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"--{name} {value}: give a whole number >= 1.")
    projection = state_dict["patch_embed.proj.weight"]
    if projection.dim() != 4 or projection.shape[2] != projection.shape[3]:
        raise CheckpointMismatchError(
            f"patch_embed.proj.weight has shape {tuple(projection.shape)}; AudioMAE's is (width, 1, patch, patch)."
        )
    hidden_size, in_channels, patch_size, _ = projection.shape
    if in_channels != 1:
        raise CheckpointMismatchError(
            f"patch_embed.proj.weight has {in_channels} input channels; AudioMAE reads 1-channel spectrograms."
        )
    if num_mel_bins % patch_size:
        raise ValueError(f"--num_mel_bins {num_mel_bins}: give a multiple of the checkpoint's patch size {patch_size}.")
    if num_attention_heads is not None and hidden_size % num_attention_heads:
        raise ValueError(f"--num_attention_heads {num_attention_heads}: give a divisor of the width {hidden_size}.")
    position_embeddings = state_dict["pos_embed"]
    rows = num_mel_bins // patch_size
    if (position_embeddings.dim() != 3 or position_embeddings.shape[-1] != hidden_size
            or position_embeddings.shape[1] - 1 < rows or (position_embeddings.shape[1] - 1) % rows):
        raise CheckpointMismatchError(
            f"pos_embed has shape {tuple(position_embeddings.shape)}: AudioMAE's is (1, 1 + patches, {hidden_size}) "
            f"with a CLS token and a grid of {rows} mel rows of patches (at --num_mel_bins {num_mel_bins})."
        )
    num_layers = 1 + max(int(m.group(1)) for key in state_dict if (m := re.match(r"blocks\.(\d+)\.", key)))
    checkpoint_patches = position_embeddings.shape[1] - 1
    checkpoint_length = checkpoint_patches // (num_mel_bins // patch_size) * patch_size
    if max_length is not None and max_length > checkpoint_length:
        raise CheckpointMismatchError(
            f"--max_length {max_length} exceeds the checkpoint's {checkpoint_length} frames: its position embeddings "
            "can be shortened, not extended."
        )
    if num_labels is None:
        if "head.weight" not in state_dict:
            raise CheckpointMismatchError("A pre-training checkpoint has no classifier: pass --num_labels.")
        num_labels = state_dict["head.weight"].shape[0]
    return PrunedAudioMAEConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 64) if num_attention_heads is None else num_attention_heads,
        intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        patch_size=patch_size,
        num_mel_bins=num_mel_bins,
        max_length=max_length or checkpoint_length,
        num_labels=num_labels,
        **pruning,
    )


def shorten_position_embeddings(position_embeddings: torch.Tensor, config: PrunedAudioMAEConfig) -> torch.Tensor:
    """The official way to fit 1024-frame embeddings to a shorter input: keep the first columns of its grid."""
    rows = config.num_mel_bins // config.patch_size
    columns = config.max_length // config.patch_size
    grid = position_embeddings[:, 1:].reshape(1, rows, -1, position_embeddings.shape[-1])
    return torch.cat([position_embeddings[:, :1], grid[:, :, :columns].flatten(1, 2)], dim=1)


def convert(checkpoint_path, output_dir, num_labels=None, id2label=None, max_length=None, num_attention_heads=None,
            num_mel_bins=128, overwrite=False, **pruning) -> PrunedAudioMAEForAudioClassification:
    """Convert and save; returns the model. Raises CheckpointMismatchError (writing nothing) when keys do not fit.
    A non-empty `output_dir` is refused unless `overwrite`, and then replaced whole (hf_token_prune.files)."""
    check_output_dir(output_dir, overwrite)
    state_dict = read_checkpoint(Path(checkpoint_path))
    non_finite = sorted(key for key, value in state_dict.items() if value.is_floating_point() and not value.isfinite().all())
    if non_finite:
        raise CheckpointMismatchError(f"NaN or infinite values in {non_finite[:4]}: the checkpoint is broken.")
    pretraining = any(PRETRAINING_ONLY.match(key) for key in state_dict)
    if pretraining:
        state_dict = {key: value for key, value in state_dict.items() if not PRETRAINING_ONLY.match(key)}
    if id2label is not None:
        num_labels = len(id2label)
    config = config_from_checkpoint(state_dict, num_labels, max_length, num_attention_heads, num_mel_bins, **pruning)
    if id2label is not None:
        config.id2label = {int(i): label for i, label in id2label.items()}
        config.label2id = {label: int(i) for i, label in id2label.items()}

    renamed = {rename(key): value for key, value in state_dict.items()}
    unmapped = sorted(key for key in state_dict if rename(key) is None)
    model = PrunedAudioMAEForAudioClassification(config)
    expected = model.state_dict()
    fresh = {key for key in expected if pretraining and key.startswith(FRESH_IN_PRETRAINING)}
    missing = sorted(set(expected) - set(renamed) - fresh)
    position_key = "audiomae.embeddings.position_embeddings"
    if position_key in renamed and renamed[position_key].shape != expected[position_key].shape:
        renamed[position_key] = shorten_position_embeddings(renamed[position_key], config)
    if num_labels is not None and "classifier.weight" in renamed and renamed["classifier.weight"].shape[0] != num_labels:
        raise CheckpointMismatchError(
            f"The checkpoint's head has {renamed['classifier.weight'].shape[0]} classes but {num_labels} were asked "
            "for: convert with its own classes, then fine-tune for yours."
        )
    mismatched = sorted(
        f"{key}: checkpoint {tuple(renamed[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in renamed and renamed[key].shape != value.shape
    )
    if unmapped or missing or mismatched:
        raise CheckpointMismatchError(
            "The checkpoint does not fit AudioMAE; nothing was written.\n"
            + (f"  keys with no place in the model: {unmapped}\n" if unmapped else "")
            + (f"  model weights the checkpoint lacks: {missing}\n" if missing else "")
            + (f"  shape mismatches: {mismatched}\n" if mismatched else "")
        )
    if pretraining:
        # The fresh head and fc_norm keep their initialisation; everything else must load exactly.
        model.load_state_dict({**{k: v for k, v in expected.items() if k in fresh}, **renamed}, strict=True)
    else:
        model.load_state_dict(renamed, strict=True)

    with written_whole(output_dir, overwrite) as staging:
        model.save_pretrained(staging)
        AudioMAEFeatureExtractor(max_length=config.max_length, num_mel_bins=config.num_mel_bins).save_pretrained(staging)
    return model


# `python -m hf_token_prune.convert_audiomae`, as before the command had its own module
if __name__ == "__main__":
    from .commands.convert import main

    main()

"""`hf-token-prune convert`: an official AudioMAE checkpoint as a pruned model folder (the conversion is
hf_token_prune.convert_audiomae, whose docstring is the help)."""

import argparse
import json
from pathlib import Path

from .. import convert_audiomae
from ..checks import CommandParser, positive_int
from ..convert_audiomae import convert
from ..errors import command
from ..files import OVERWRITE_HELP, check_output_dir


def read_id2label(path: Path) -> dict:
    """`{index: name}` from a JSON list of names or a JSON object keyed by 0, 1, ... (strings or integers)."""
    try:
        names = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--id2label {path}: no such file.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--id2label {path}: not JSON ({error}); give a list of class names.") from None
    if isinstance(names, dict):
        try:
            names = {int(index): name for index, name in names.items()}
        except ValueError:
            raise ValueError(f"--id2label {path}: keys must be class indices 0, 1, ...; give a list of names.") from None
    elif isinstance(names, list):
        names = dict(enumerate(names))
    else:
        raise ValueError(f"--id2label {path}: give a JSON list of class names, or {{index: name}}.")
    if not names or sorted(names) != list(range(len(names))) or not all(isinstance(n, str) and n for n in names.values()):
        raise ValueError(f"--id2label {path}: give one non-empty name for each index 0 ... {max(len(names), 1) - 1}.")
    return names


@command("convert")
def main(argv=None):
    parser = CommandParser("convert", description=convert_audiomae.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help=".pth (official) or .safetensors (timm format)")
    parser.add_argument("--output_dir", type=Path, required=True, help="folder to write (must be empty or new)")
    parser.add_argument("--overwrite_output_dir", action="store_true", help=OVERWRITE_HELP)
    parser.add_argument("--num_labels", type=positive_int, help="classes; required for a pre-training checkpoint")
    parser.add_argument("--id2label", type=Path, help="JSON list of class names, or {index: name}")
    parser.add_argument("--max_length", type=positive_int, help="input frames if shorter than the checkpoint's (e.g. "
                        "512 for ESC-50, 128 for Speech Commands); position embeddings are shortened the official way")
    parser.add_argument("--num_attention_heads", type=positive_int,
                        help="heads (not stored in checkpoints; default width/64)")
    parser.add_argument("--num_mel_bins", type=positive_int, default=128, help="mel bins of the input (default 128, as "
                        "every official checkpoint)")
    parser.add_argument("--keep_rate", type=float, default=1.0, help="keep rate saved in the config (default 1.0)")
    parser.add_argument("--pruning_layers", help="comma-separated 0-based layers (default: the paper's relative "
                        "positions, 3,6,9 of 12 layers)")
    parser.add_argument("--token_score", default="attention", choices=["attention", "intensity", "variation", "random"])
    args = parser.parse_args(argv)

    try:
        pruning_layers = [int(layer) for layer in args.pruning_layers.split(",")] if args.pruning_layers else None
    except ValueError:
        parser.error(f"--pruning_layers {args.pruning_layers!r}: give comma-separated integers, e.g. 3,6,9")
    check_output_dir(args.output_dir, args.overwrite_output_dir)
    id2label = read_id2label(args.id2label) if args.id2label else None
    model = convert(
        args.checkpoint, args.output_dir, args.num_labels, id2label, args.max_length, args.num_attention_heads,
        args.num_mel_bins, overwrite=args.overwrite_output_dir, keep_rate=args.keep_rate,
        pruning_layers=pruning_layers, token_score=args.token_score,
    )
    config = model.config
    print(
        f"wrote {args.output_dir}: AudioMAE {config.num_hidden_layers} layers x {config.hidden_size}, "
        f"{config.max_length} frames x {config.num_mel_bins} mel ({model.patch_layout.num_patches} patches), "
        f"{config.num_labels} labels, keep rate {config.keep_rate}, pruning layers {config.pruning_layers}"
    )
    return 0


if __name__ == "__main__":
    main()

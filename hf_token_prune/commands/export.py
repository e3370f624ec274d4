"""`hf-token-prune export`: a pruned model folder as ONNX (or the folder transformers.js loads), checked against
PyTorch; the export itself is hf_token_prune.export."""

import sys

from ..checks import CommandParser, keep_rate_argument, positive_int
from ..errors import command
from ..export import (
    EXPORT_EXTRA,
    INT8_ONNX_FILE,
    LAYOUTS,
    ONNX_FILE,
    WEB_INT8_ONNX_FILE,
    WEB_ONNX_FILE,
    export_pretrained,
)
from ..files import OVERWRITE_HELP


@command("export")
def main(argv=None) -> int:
    parser = CommandParser(
        "export",
        description="Export a pruned audio classifier (PrunedAST, PrunedAudioMAE, or a stock AST checkpoint) to "
        "ONNX with a dynamic batch axis, check ONNX Runtime's outputs against PyTorch's, and write model.onnx, "
        "config.json and the feature extractor to --output_dir. Needs: " + EXPORT_EXTRA,
        epilog="Run the result with hf_token_prune.export.OnnxAudioClassifier(output_dir)(waveform), or see the "
        "deploy guide (docs/deploy.md) for plain onnxruntime.",
    )
    parser.add_argument(
        "--model_name_or_path", required=True, help="folder saved by save_pretrained (or the fine-tuning recipe)"
    )
    parser.add_argument("--output_dir", required=True, help="where model.onnx, config.json and the extractor go")
    parser.add_argument(
        "--keep_rate",
        type=keep_rate_argument,
        default=None,
        help="keep rate to bake into the graph, in (0, 1] (default: the saved config's)",
    )
    parser.add_argument(
        "--output_kept_patches",
        action="store_true",
        help="also output kept_patches_0, ... : per pruning layer, the input patches its surviving tokens come from",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help=f"also write {INT8_ONNX_FILE}: ONNX Runtime's dynamic int8 quantisation (run it with "
        f"OnnxAudioClassifier(output_dir, onnx_file='{INT8_ONNX_FILE}'); check its accuracy on your data)",
    )
    parser.add_argument("--overwrite_output_dir", action="store_true", help=OVERWRITE_HELP)
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="onnx",
        help=f"onnx: the files above; transformers.js: the folder transformers.js's pipeline('audio-classification', "
        f"folder) loads ({WEB_ONNX_FILE}, {WEB_INT8_ONNX_FILE}, config.json and preprocessor_config.json under the "
        "stock AST names), refused if transformers.js would compute other features than the model's extractor",
    )
    parser.add_argument(
        "--pad_in_graph",
        action="store_true",
        help="with --layout transformers.js and a model trained with minimum padding: the graph replaces the zero "
        "padding transformers.js writes by each clip's minimum fbank value (same features as in Python)",
    )
    parser.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default: torch's exporter's)")
    parser.add_argument("--no_check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    args = parser.parse_args(argv)
    try:
        check = export_pretrained(
            args.model_name_or_path,
            args.output_dir,
            args.keep_rate,
            args.output_kept_patches,
            args.int8,
            args.overwrite_output_dir,
            args.layout,
            args.pad_in_graph,
            opset_version=args.opset,
            check=not args.no_check,
        )
    except (ValueError, ImportError, OSError) as error:
        # transformers' loading errors run over several lines; the first names the problem.
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    if args.layout == "transformers.js":
        written = f"{WEB_ONNX_FILE}, {WEB_INT8_ONNX_FILE}, config.json and preprocessor_config.json (transformers.js)"
    else:
        written = ONNX_FILE + (f", {INT8_ONNX_FILE}" if args.int8 else "") + ", config.json and the feature extractor"
    print(f"wrote {written} to {args.output_dir}")
    if check is not None:
        for batch, diff, equal in zip(check.batch_sizes, check.max_abs_diff, check.kept_patches_equal):
            patches = ", kept patches identical" if args.output_kept_patches and equal else ""
            print(f"ONNX Runtime vs PyTorch, batch {batch}: max |logits difference| {diff:.1e}{patches}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

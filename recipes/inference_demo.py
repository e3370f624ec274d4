"""Token pruning at inference on one clip: kept tokens, latency and predictions per keep rate, plus a picture.

    python recipes/inference_demo.py                       # ViT-B AST, random weights, on a shipped keyword clip
    python recipes/inference_demo.py --model_name_or_path MIT/ast-finetuned-audioset-16-16-0.442 --audio my.wav

Without --model_name_or_path the model is a ViT-B AST laid out for 1.28 s keyword clips (128 frames x 128 mel bins,
16x16 patches: 64 patch tokens, the paper's Speech Commands setting) with random weights: the latency and the kept
counts are real, the predictions are not (fine-tuning comes with recipes/finetune.py).
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import ASTFeatureExtractor

from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification
from hf_token_prune.checks import CommandParser, check_model, one_line, positive_int
from hf_token_prune.errors import command
from hf_token_prune.loading import load_pruned_model
from hf_token_prune.classify import read_audio
from hf_token_prune.data import DATASETS
from hf_token_prune.checks import parse_keep_rates
from hf_token_prune.visualization import kept_patch_mask, plot_pruning_stages


REPO = Path(__file__).resolve().parent.parent
KEYWORD_TEST_DIR = REPO / "data" / "keywords" / "test"
WORDS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]


def parse_args(argv=None):
    parser = CommandParser(
        "inference_demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_name_or_path",
                        help="pruned AST / AudioMAE folder (e.g. outputs/demo after `make demo`) or stock AST "
                        "checkpoint, with its feature extractor; default: a random-weight ViT-B AST for 128-frame clips")
    parser.add_argument("--audio", type=Path, help="audio file (any format and rate ffmpeg reads; resampled to 16 kHz). "
                        "Default: the first 'yes' clip of the shipped keyword test split")
    parser.add_argument("--keep_rates", default="1.0,0.9,0.8,0.7,0.6,0.5,0.4",
                        help="comma-separated keep rates in (0, 1] (default: %(default)s)")
    parser.add_argument("--token_score", default="attention", choices=["attention", "intensity", "variation", "random"])
    parser.add_argument("--plot_keep_rate", type=float, default=0.5, help="keep rate drawn in the PNG")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed forwards per keep rate, at least 2 (median and spread reported)")
    parser.add_renamed_argument("--torch_threads", "--num_threads", type=positive_int, default=2,
                                help="torch CPU threads")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/inference_demo"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error(f"--repeats {args.repeats}: the spread needs at least 2 timed forwards.")
    return args


def build_model(args):
    if args.model_name_or_path:
        try:
            check_model(args.model_name_or_path)
            model, extractor = load_pruned_model(args.model_name_or_path)
        except (OSError, ValueError) as error:
            raise SystemExit(f"inference_demo.py: {one_line(error)}") from None
        model.config.token_score = args.token_score
        return model, extractor
    torch.manual_seed(args.seed)
    config = PrunedASTConfig(
        max_length=128, frequency_stride=16, time_stride=16, token_score=args.token_score,
        id2label=dict(enumerate(WORDS)), label2id={word: i for i, word in enumerate(WORDS)},
    )
    mean, std = DATASETS["speech_commands"].mean, DATASETS["speech_commands"].std  # the paper's normalisation
    extractor = ASTFeatureExtractor(max_length=128, num_mel_bins=128, mean=mean, std=std)
    return PrunedASTForAudioClassification(config), extractor


@command("inference_demo.py")
def main(argv=None):
    args = parse_args(argv)
    try:
        keep_rates = parse_keep_rates(args.keep_rates)
    except ValueError as error:
        raise SystemExit(f"--keep_rates {error}") from None
    torch.set_num_threads(args.torch_threads)
    model, extractor = build_model(args)
    model.eval()
    args.audio = args.audio or sorted((KEYWORD_TEST_DIR / "yes").glob("*.flac"))[0]
    try:
        wave = read_audio(args.audio, extractor.sampling_rate)
    except ValueError as error:
        raise SystemExit(f"--audio {error}") from None
    inputs = extractor(wave, sampling_rate=extractor.sampling_rate, return_tensors="pt")
    config = model.config
    num_patches = model.patch_layout.num_patches
    print(f"model: {args.model_name_or_path or 'random-weight ViT-B AST'} | {num_patches} patch tokens | "
          f"pruning layers {config.pruning_layers} | token score {config.token_score} | {args.torch_threads} threads")
    print(f"audio: {args.audio} ({len(wave) / extractor.sampling_rate:.2f} s)\n")
    print(f"{'keep rate':>9} | {'kept tokens per pruning layer':<30} | {'latency ms (median ± IQR/2)':>28} | top-3")

    baseline_ms = None
    plotted = None
    with torch.inference_mode():
        for keep_rate in keep_rates:
            model.set_keep_rate(keep_rate)
            output = model(**inputs, output_kept_patches=True)  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model(**inputs)
                times.append((time.perf_counter() - start) * 1000)
            quartiles = statistics.quantiles(times, n=4)
            median = statistics.median(times)
            baseline_ms = baseline_ms or median
            kept = [patches.shape[1] for patches in output.kept_patches]
            top = output.logits[0].softmax(-1).topk(min(3, config.num_labels))
            labels = ", ".join(f"{config.id2label[i.item()]} {p:.2f}" for p, i in zip(top.values, top.indices))
            print(f"{keep_rate:>9.2f} | {str(kept):<30} | {median:>8.1f} ± {(quartiles[2] - quartiles[0]) / 2:<5.1f} "
                  f"({baseline_ms / median:.2f}x) | {labels}")
            if abs(keep_rate - args.plot_keep_rate) < 1e-9:
                plotted = output.kept_patches

    if plotted is None:
        model.set_keep_rate(args.plot_keep_rate)
        with torch.inference_mode():
            plotted = model(**inputs, output_kept_patches=True).kept_patches
    spectrogram = inputs["input_values"][0].T  # (mel bins, frames)
    masks = [torch.ones_like(spectrogram, dtype=torch.bool)]
    masks += [kept_patch_mask(patches[0], model.patch_layout) for patches in plotted]
    titles = ["input"] + [f"after layer {layer} ({patches.shape[1]} of {num_patches} patches kept)"
                          for layer, patches in zip(config.pruning_layers, plotted)]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    png = args.output_dir / "kept_patches.png"
    plot_pruning_stages(spectrogram, masks, titles, png,
                        suptitle=f"{args.audio.name}: keep rate {args.plot_keep_rate}, score {config.token_score}")
    print(f"\nwrote {png}")


if __name__ == "__main__":
    main()

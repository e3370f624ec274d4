"""Which spectrogram patches each pruning stage keeps, drawn for a few examples (paper Fig. 3); under fuse, what the
fused token absorbed; under merge, the merged groups."""

from dataclasses import dataclass

import torch

from ..token_reductions import get_token_reduction
from ..visualization import kept_patch_mask, merged_groups, patch_label_image, plot_pruning_stages
from .inputs import analysis_keep_rate, model_settings
from .report import section


@dataclass
class PatternExample:
    spectrogram: torch.Tensor  # (mel bins, frames)
    masks: list  # one (frequency, time) bool mask per stage, the input first
    titles: list
    suptitle: str
    overlays: list | None = None  # per stage, a label image (fused token's patches, merged groups) or None


@dataclass
class PatternsResult:
    examples: list
    keep_rate: float
    token_score: str
    token_reduction: str = "prune"

    def write(self, output_dir, name="patterns"):
        figures = []
        for number, example in enumerate(self.examples, start=1):
            figure = f"{name}_{number}.png"
            plot_pruning_stages(example.spectrogram, example.masks, example.titles, f"{output_dir}/{figure}",
                                suptitle=example.suptitle, overlays=example.overlays)
            figures.append(figure)
        method = get_token_reduction(self.token_reduction)
        if method.records_source_maps:
            shown = ("every group of patches merged into one token after each merging layer in a colour of its own "
                     "(grey: patches still a token of their own)")
        elif method.added_tokens:
            shown = ("the patches the fused token has absorbed after each fusing layer coloured (one colour; the rest "
                     "are the kept patch tokens)")
        else:
            shown = "the patches pruned by each pruning layer blanked"
        text = (
            f"Normalised input spectrograms (frequency up) with {shown}, keep rate {self.keep_rate:g}, token score "
            f"`{self.token_score}`, token reduction `{self.token_reduction}`; one example per class first."
        )
        return section("Pruning patterns (Fig. 3)", text, figures=figures)


def _examples_per_class(data, num_examples):
    """Row indices: the first row of each class in dataset order, then the following rows, ``num_examples`` in all."""
    first, rest = {}, []
    for index, label in enumerate(data.labels()):
        key = tuple(label) if isinstance(label, list) else label
        if key in first:
            rest.append(index)
        else:
            first[key] = index
    chosen = list(first.values())[:num_examples]
    return chosen + rest[: num_examples - len(chosen)]


def _label_text(names, label):
    if label.dim() == 0:
        return names[int(label)]
    return "+".join(names[int(i)] for i in label.nonzero()[:, 0]) or "none"


def pruning_patterns(model, data, num_examples=4, keep_rate=None):
    """Fig. 3 for ``num_examples`` rows of ``data`` at ``keep_rate`` (default: the model's own, else 0.5)."""
    keep_rate = analysis_keep_rate(model, keep_rate)
    examples = []
    with model_settings(model, keep_rate=keep_rate):
        for batch in data.select(_examples_per_class(data, num_examples)).batches(desc="patterns"):
            outputs = model(batch["input_values"], output_kept_patches=True)
            for row, input_values in enumerate(batch["input_values"]):
                spectrogram = input_values.T  # (mel bins, frames): both models take (frames, mel bins)
                masks, overlays, titles = _stages(model, outputs, row, spectrogram)
                label = _label_text(data.label_names, batch["labels"][row])
                predicted = data.label_names[int(outputs.logits[row].argmax())]
                suptitle = (f"row {int(batch['index'][row])}: label {label}, predicted {predicted} "
                            f"(keep rate {keep_rate:g}, {model.config.token_score}, {model.config.token_reduction})")
                examples.append(PatternExample(spectrogram, masks, titles, suptitle, overlays))
    return PatternsResult(examples, keep_rate, model.config.token_score, model.config.token_reduction)


def _stages(model, outputs, row, spectrogram):
    """Masks, overlays and titles of one example's panels: the input, then one per reducing layer."""
    layout, layers = model.patch_layout, model.config.pruning_layers
    method = get_token_reduction(model.config.token_reduction)
    everything = torch.ones_like(spectrogram, dtype=torch.bool)
    masks, overlays, titles = [everything], [None], [f"input ({layout.num_patches} patches)"]
    if method.records_source_maps:
        for layer, source in zip(layers, outputs.source_maps):
            groups = merged_groups(source[row])
            sizes = torch.bincount(source[row])
            masks.append(everything)
            overlays.append(patch_label_image(groups, layout))
            titles.append(f"after layer {layer}: {len(sizes)} tokens for {layout.num_patches} patches, "
                          f"{int((sizes > 1).sum())} merged groups (largest {int(sizes.max())} patches)")
        return masks, overlays, titles
    for layer, kept in zip(layers, outputs.kept_patches):
        if method.added_tokens:
            absorbed = torch.zeros(layout.num_patches, dtype=torch.long).index_fill(0, kept[row].cpu(), -1)
            masks.append(everything)
            overlays.append(patch_label_image(absorbed, layout))
            titles.append(f"after layer {layer}: {kept.shape[1]} patches kept, the fused token holds the other "
                          f"{layout.num_patches - kept.shape[1]}")
        else:
            masks.append(kept_patch_mask(kept[row], layout))
            overlays.append(None)
            titles.append(f"after layer {layer}: {kept.shape[1]} of {layout.num_patches} patches kept")
    return masks, overlays, titles

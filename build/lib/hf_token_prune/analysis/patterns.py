"""Which spectrogram patches each pruning stage keeps, drawn for a few examples (paper Fig. 3)."""

from dataclasses import dataclass

import torch

from ..visualization import kept_patch_mask, plot_pruning_stages
from .inputs import analysis_keep_rate, model_settings
from .report import section


@dataclass
class PatternExample:
    spectrogram: torch.Tensor  # (mel bins, frames)
    masks: list  # one (frequency, time) bool mask per stage, the input first
    titles: list
    suptitle: str


@dataclass
class PatternsResult:
    examples: list
    keep_rate: float
    token_score: str

    def write(self, output_dir, name="patterns"):
        figures = []
        for number, example in enumerate(self.examples, start=1):
            figure = f"{name}_{number}.png"
            plot_pruning_stages(example.spectrogram, example.masks, example.titles, f"{output_dir}/{figure}",
                                suptitle=example.suptitle)
            figures.append(figure)
        text = (
            f"Normalised input spectrograms (frequency up) with the patches pruned by each pruning layer blanked, "
            f"keep rate {self.keep_rate:g}, token score `{self.token_score}`; one example per class first."
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
    layout = model.patch_layout
    examples = []
    with model_settings(model, keep_rate=keep_rate):
        for batch in data.select(_examples_per_class(data, num_examples)).batches(desc="patterns"):
            outputs = model(batch["input_values"], output_kept_patches=True)
            for row, input_values in enumerate(batch["input_values"]):
                spectrogram = input_values.T  # (mel bins, frames): both models take (frames, mel bins)
                masks = [torch.ones_like(spectrogram, dtype=torch.bool)]
                masks += [kept_patch_mask(kept[row], layout) for kept in outputs.kept_patches]
                titles = [f"input ({layout.num_patches} patches)"] + [
                    f"after layer {layer}: {kept.shape[1]} of {layout.num_patches} patches kept"
                    for layer, kept in zip(model.config.pruning_layers, outputs.kept_patches)
                ]
                label = _label_text(data.label_names, batch["labels"][row])
                predicted = data.label_names[int(outputs.logits[row].argmax())]
                suptitle = (f"row {int(batch['index'][row])}: label {label}, predicted {predicted} "
                            f"(keep rate {keep_rate:g}, {model.config.token_score})")
                examples.append(PatternExample(spectrogram, masks, titles, suptitle))
    return PatternsResult(examples, keep_rate, model.config.token_score)

"""The metric the paper reports: top-1 accuracy, or mAP for multi-label sets (AudioSet)."""

import torch

from .. import metrics
from .inputs import model_settings


def classification_metric(logits, labels, multi_label):
    """Top-1 accuracy, or for multi-label targets the mean over classes (with a positive) of the average precision."""
    logits, labels = torch.as_tensor(logits).float(), torch.as_tensor(labels)
    if len(labels) == 0:
        return float("nan")
    if not multi_label:
        return metrics.load("accuracy").compute(predictions=logits.argmax(dim=1).numpy(), references=labels.numpy())["accuracy"]
    targets = (labels.numpy() > 0.5).astype("int64")
    result = metrics.load("mean_average_precision").compute(predictions=logits.numpy(), references=targets)
    return result["mean_average_precision"]


def predict(model, data, desc=None, **forward_kwargs):
    """Logits and labels of every row of ``data`` with the model as currently configured."""
    logits, labels = [], []
    for batch in data.batches(desc=desc):
        logits.append(model(batch["input_values"], **forward_kwargs).logits.float())
        labels.append(batch["labels"])
    return torch.cat(logits), torch.cat(labels)


def evaluate_model(model, data, keep_rate=None, token_score=None, seed=0, desc="evaluate"):
    """The metric (a fraction) of ``model`` on ``data``; ``keep_rate``/``token_score`` apply for this call only.

    ``seed`` fixes the draws of the ``"random"`` token score so a sweep is reproducible.
    """
    with model_settings(model, keep_rate=keep_rate, token_score=token_score):
        torch.manual_seed(seed)
        logits, labels = predict(model, data, desc=desc)
    return classification_metric(logits, labels, data.multi_label)

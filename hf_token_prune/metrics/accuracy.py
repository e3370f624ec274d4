"""Accuracy: the fraction of predicted label ids equal to the reference ones, with the signature of `evaluate`'s
`accuracy` (`predictions` and `references` are label ids; `normalize`, `sample_weight`), so that
`evaluate.evaluator("audio-classification")`, transformers' example scripts and `Trainer` code written for the Hub
metric run on it offline. Class scores are turned into label ids by their caller (`argmax`), as for the Hub metric.

A local `evaluate` module (Hub metrics cannot be loaded offline); load it with
`hf_token_prune.metrics.load("accuracy")`, or `evaluate.load` of this file's path.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score


_DESCRIPTION = "Accuracy: the proportion of correct predictions, (TP + TN) / (TP + TN + FP + FN)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted label ids, one per example (top-1: the argmax of the class scores).
    references (`list` of `int`): reference label ids.
    normalize (`bool`, defaults to `True`): the fraction of correct predictions; `False`: their count.
    sample_weight (`list` of `float`, *optional*): a weight per example.
Returns:
    accuracy (`float` or `int`): in [0, 1] when `normalize`, else the number (or weighted sum) of correct predictions.
Examples:
    >>> accuracy_metric = hf_token_prune.metrics.load("accuracy")
    >>> accuracy_metric.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 1, 1, 2, 1, 0])
    {'accuracy': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        if len(references) == 0:
            raise ValueError("accuracy needs at least one prediction and reference.")
        correct = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(correct)}

"""Top-1 accuracy from class scores: the fraction of clips whose highest-scoring class is the reference class.

A local `evaluate` module (Hub metrics cannot be loaded offline); load it with
`hf_token_prune.metrics.load("accuracy")`.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = "Top-1 accuracy: mean of argmax(predictions) == references."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): class scores (logits or probabilities), one row per clip.
    references (`list` of `int`): the reference class index of each clip.
Returns:
    accuracy (`float`): correct / total, in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.ndim != 2 or len(predictions) != len(references) or len(references) == 0:
            raise ValueError(
                f"accuracy needs one row of class scores per reference, got predictions of shape {predictions.shape} "
                f"and {len(references)} references."
            )
        return {"accuracy": float((predictions.argmax(axis=1) == references).mean())}

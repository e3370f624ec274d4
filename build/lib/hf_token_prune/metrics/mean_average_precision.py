"""Mean average precision (mAP): average precision of each class, averaged over classes (macro), for multi-label
clip tagging such as AudioSet; the paper's AS-20K metric.

A local `evaluate` module (Hub metrics cannot be loaded offline); load it with
`hf_token_prune.metrics.load("mean_average_precision")`.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score


_DESCRIPTION = "Macro mean average precision over classes of multi-label scores (scikit-learn's average precision)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): class scores, one row per clip.
    references (`list` of `list` of `int`): 0/1 targets, one row per clip, same width as the scores.
Returns:
    mean_average_precision (`float`): mean over classes of the area under each class's precision-recall curve;
        classes without a positive clip are left out (their average precision is undefined).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanAveragePrecision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.shape != references.shape or predictions.ndim != 2:
            raise ValueError(
                f"mean average precision needs scores and 0/1 targets of the same (clips, classes) shape, got "
                f"{predictions.shape} and {references.shape}."
            )
        present = references.sum(axis=0) > 0
        if not present.any():
            raise ValueError("no class has a positive clip: average precision is undefined.")
        return {
            "mean_average_precision": float(
                average_precision_score(references[:, present], predictions[:, present], average="macro")
            )
        }

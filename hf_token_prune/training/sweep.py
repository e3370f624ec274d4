"""The evaluation sweep over keep rates, methods and token scores (paper Table I with a method dimension)."""

import torch
from transformers import Trainer

from ..macs import count_macs
from ..token_reductions import get_token_reduction


def keep_rate_sweep(
    model, evaluate, keep_rates, token_reductions=("prune",), token_scores=("attention",), seed: int = 0
) -> list[dict]:
    """The one evaluation sweep (paper Table I with a method dimension): the fine-tuning recipe's final table and
    `hf_token_prune.analysis.keep_rate_sweep` both run it.

    `evaluate()` returns the metric of `model` as currently set. It runs for every keep rate, method and token score
    that go together (fuse and merge rank by attention only), seeded with `seed` so the "random" score repeats; at keep
    rate 1.0 nothing is reduced, so one evaluation stands for every method and score. Returns rows of
    `{"token_reduction", "token_score", "keep_rate", "metric", "gmacs"}`; the model's settings are restored afterwards.
    """
    rows, unreduced = [], None
    for keep_rate in keep_rates:
        for token_reduction in token_reductions:
            attention_only = get_token_reduction(token_reduction).attention_only is not None
            for token_score in token_scores:
                if attention_only and token_score != "attention":
                    continue
                settings = dict(token_reduction=token_reduction, token_score=token_score, keep_rate=keep_rate)
                with model.reduction_settings(**settings):
                    if keep_rate < 1.0 or unreduced is None:
                        torch.manual_seed(seed)
                        value = evaluate()
                        unreduced = value if keep_rate >= 1.0 else unreduced
                    else:
                        value = unreduced
                    rows.append({**settings, "metric": value, "gmacs": count_macs(model.config, keep_rate).total / 1e9})
    return rows


def trainer_evaluator(trainer: Trainer, dataset, metric: str):
    """`evaluate` for :func:`keep_rate_sweep` through `trainer.predict` (what the fine-tuning recipe reports)."""
    return lambda: trainer.predict(dataset, metric_key_prefix="test").metrics[f"test_{metric}"]

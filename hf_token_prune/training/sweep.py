"""The evaluation sweep over keep rates, methods and token scores (paper Table I with a method dimension)."""

import torch
from transformers import Trainer

from ..macs import clip_macs, count_macs
from ..selection import kept_counts_per_clip
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
    # the rows are fixed keep rates, also for a model trained with the per-sample policy (its own row:
    # keep_mass_row)
    fixed_rate = {"keep_mass": None, "min_keep_rate": None} if getattr(model.config, "keep_mass", None) else {}
    for keep_rate in keep_rates:
        for token_reduction in token_reductions:
            attention_only = get_token_reduction(token_reduction).attention_only is not None
            for token_score in token_scores:
                if attention_only and token_score != "attention":
                    continue
                settings = dict(token_reduction=token_reduction, token_score=token_score, keep_rate=keep_rate)
                with model.reduction_settings(**settings, **fixed_rate):
                    if keep_rate < 1.0 or unreduced is None:
                        torch.manual_seed(seed)
                        value = evaluate()
                        unreduced = value if keep_rate >= 1.0 else unreduced
                    else:
                        value = unreduced
                    rows.append({**settings, "metric": value, "gmacs": count_macs(model.config, keep_rate).total / 1e9})
    return rows


def keep_mass_row(model, evaluate, batches, seed: int = 0) -> dict:
    """The row of a model set to the per-sample policy (`config.keep_mass`) beside :func:`keep_rate_sweep`'s fixed
    rates: `evaluate()`'s metric, `kept_tokens` (the mean patch tokens left after each pruning layer) and `gmacs`, the
    mean over the clips of `batches` (the evaluated ones, as model inputs) of each clip's MACs run alone
    (:func:`macs.clip_macs`). `keep_rate` is the policy's ceiling."""
    config = model.config
    torch.manual_seed(seed)
    metric = evaluate()
    counts, macs = [], []
    model.eval()
    with torch.no_grad():
        for batch in batches:
            kept = kept_counts_per_clip(model(**batch, output_kept_patches=True).kept_patches)
            mask = batch.get("attention_mask") if config.drop_padding else None
            num_patches = None if mask is None else model.patch_layout.real_patches(mask).sum(dim=1)
            counts.append(kept)
            macs.append(clip_macs(model, kept, num_patches))
    return {"token_reduction": config.token_reduction, "token_score": config.token_score,
            "keep_rate": config.keep_rate, "keep_mass": config.keep_mass, "min_keep_rate": config.min_keep_rate,
            "metric": metric, "gmacs": torch.cat(macs).double().mean().item() / 1e9,
            "kept_tokens": torch.cat(counts).double().mean(dim=0).tolist()}


def trainer_evaluator(trainer: Trainer, dataset, metric: str):
    """`evaluate` for :func:`keep_rate_sweep` and :func:`keep_mass_row` through `trainer.predict` (what the
    fine-tuning recipe reports)."""
    return lambda: trainer.predict(dataset, metric_key_prefix="test").metrics[f"test_{metric}"]

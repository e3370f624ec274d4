"""The model card of a fine-tuned pruned model: Hub metadata with `model-index` results, a results table against
MACs, how to load it, and a plot of the keep-rate schedule and of the metric per keep rate."""

import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData



METRIC_NAMES = {"accuracy": "accuracy", "mean_average_precision": "mAP"}


def plot_training(schedule, log_history, results, target_keep_rate, metric, path, title=None):
    """Two panels: the keep rate of every optimizer step with the logged training loss, and the metric per keep rate.

    `schedule` is `(epochs, keep_rates)` per optimizer step, e.g. `KeepRateScheduleCallback.trajectory`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (schedule_axis, sweep) = plt.subplots(1, 2, figsize=(10, 3.6))
    schedule_axis.plot(*schedule, color="tab:blue")
    logged = [entry for entry in log_history if "keep_rate" in entry]
    schedule_axis.plot(
        [e["epoch"] for e in logged],
        [e["keep_rate"] for e in logged],
        "o",
        color="tab:blue",
        markersize=2.5,
        label="logged",
    )
    schedule_axis.set_xlabel("epoch")
    schedule_axis.set_ylabel("keep rate", color="tab:blue")
    schedule_axis.set_ylim(0, 1.05)
    schedule_axis.set_title("keep-rate schedule (EViT cosine, per optimizer step)", fontsize=9)
    losses = [e for e in log_history if "loss" in e and "epoch" in e]
    if losses:
        loss_axis = schedule_axis.twinx()
        loss_axis.plot([e["epoch"] for e in losses], [e["loss"] for e in losses], color="tab:orange", alpha=0.6)
        loss_axis.set_ylabel("training loss", color="tab:orange")
    rates = [row["keep_rate"] for row in results]
    sweep.plot(rates, [row["metric"] for row in results], marker="o", color="tab:green")
    sweep.axvline(target_keep_rate, color="grey", linestyle="--", linewidth=1)
    sweep.set_xlabel("keep rate at evaluation")
    sweep.set_ylabel(METRIC_NAMES.get(metric, metric))
    sweep.invert_xaxis()
    sweep.set_title(f"trained to keep rate {target_keep_rate} (labels: GMACs per clip)", fontsize=9)
    for row in results:
        sweep.annotate(
            f"{row['gmacs']:.2g}",
            (row["keep_rate"], row["metric"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
        )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_model_card(
    template_path,
    *,
    model_name: str,
    model,
    base_model: str | None,
    dataset_id: str,
    dataset_pretty_name: str,
    dataset_config: str | None,
    dataset_split: str,
    metric: str,
    results: list[dict],
    hyperparameters: dict,
    plot_file: str | None,
    repo_id: str | None = None,
) -> ModelCard:
    """Fill the template with the model's pruning set-up and its metric / GMACs per keep rate.

    `results` rows are `{"keep_rate", "metric", "gmacs"}`; the rows at the model's keep rate and at 1.0 become the
    `model-index` results of the card's metadata.
    """
    config = model.config
    by_rate = {round(row["keep_rate"], 6): row for row in results}
    target = round(config.keep_rate, 6)
    if target not in by_rate or 1.0 not in by_rate:
        raise ValueError(f"the results must include the trained keep rate {target} and 1.0, got {sorted(by_rate)}.")
    metric_name = METRIC_NAMES.get(metric, metric)
    eval_results = [
        EvalResult(
            task_type="audio-classification",
            task_name="Audio Classification",
            dataset_type=dataset_id,
            dataset_name=dataset_pretty_name,
            dataset_config=dataset_config,
            dataset_split=dataset_split,
            metric_type=metric,
            metric_name=f"{metric_name} at keep rate {rate}",
            metric_value=round(by_rate[rate]["metric"], 4),
        )
        for rate in dict.fromkeys([target, 1.0])
    ]
    # The Hub only accepts model ids as `base_model`; a local checkpoint is named in the text alone.
    hub_base_model = base_model if base_model and not os.path.exists(base_model) else None
    card_data = ModelCardData(
        model_name=model_name,
        base_model=hub_base_model,
        datasets=[dataset_id] if "/" in dataset_id else None,
        library_name="transformers",
        pipeline_tag="audio-classification",
        tags=["audio-classification", "token-pruning", "hf-token-prune", config.model_type],
        metrics=[metric],
        eval_results=eval_results,
        keep_rate=config.keep_rate,
        pruning_layers=list(config.pruning_layers),
        token_score=config.token_score,
        gmacs=round(by_rate[target]["gmacs"], 3),
        gmacs_unpruned=round(by_rate[1.0]["gmacs"], 3),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        repo_id=repo_id or model_name,
        base_model=base_model,
        hub_base_model=hub_base_model,
        architecture=type(model).__name__,
        config=config,
        num_patches=model.patch_layout.num_patches,
        dataset_pretty_name=dataset_pretty_name,
        dataset_split=dataset_split,
        metric_name=metric_name,
        results=results,
        target=by_rate[target],
        unpruned=by_rate[1.0],
        hyperparameters=hyperparameters,
        plot_file=plot_file,
    )


__all__ = ["build_model_card", "plot_training"]

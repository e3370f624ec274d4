"""The model card of a fine-tuned pruned model: Hub metadata with `model-index` results, a results table against
MACs, how to load it, and a plot of the keep-rate schedule and of the metric per keep rate; and the results table a
run prints."""

import json
import math
import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data import DATASETS
from ..training import KeepRateScheduleCallback


CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "pruned_audio_model_card.md"
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


def results_table(rows, metric, split, config):
    """The metric and GMACs per keep rate (rows) and method (columns), as printed at the end of a run."""
    name = METRIC_NAMES[metric]
    methods = list(dict.fromkeys(row["token_reduction"] for row in rows))
    cells = {(row["keep_rate"], row["token_reduction"]): row for row in rows}
    full = cells[(1.0, config.token_reduction)]["gmacs"]
    lines = [
        f"\n{name} on the {split} split per keep rate and token reduction (trained: {config.token_reduction} to "
        f"keep rate {config.keep_rate}; GMACs per clip, MACs vs 1.0 of {config.token_reduction}):",
        f"{'keep rate':>9} | " + " | ".join(f"{method:>8}" for method in methods) + " | "
        + " | ".join(f"{'GMACs ' + method:>11}" for method in methods) + " | MACs vs 1.0",
    ]
    for keep_rate in dict.fromkeys(row["keep_rate"] for row in rows):
        marker = "  <- trained" if math.isclose(keep_rate, config.keep_rate) else ""
        lines.append(
            f"{keep_rate:>9.2f} | " + " | ".join(f"{cells[(keep_rate, m)]['metric']:>8.4f}" for m in methods) + " | "
            + " | ".join(f"{cells[(keep_rate, m)]['gmacs']:>11.3f}" for m in methods)
            + f" | {100 * cells[(keep_rate, config.token_reduction)]['gmacs'] / full:>9.1f} %{marker}"
        )
    return "\n".join(lines)


def training_hyperparameters(trainer, model, data_args, pruning_args, recipe_name):
    """The card's hyper-parameter table."""
    args = trainer.args
    extractor = trainer.processing_class
    return {
        "recipe": recipe_name or "-",
        "keep rate schedule": f"1.0 until epoch {pruning_args.shrink_start_epoch}, cosine to {pruning_args.keep_rate} "
        f"over {pruning_args.shrink_epochs} epochs, stepped per optimizer step",
        "epochs": round(trainer.state.epoch, 2),
        "batch size (global)": args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
        "optimizer": f"{pruning_args.optimizer}, betas ({args.adam_beta1}, {args.adam_beta2}), "
        f"weight decay {args.weight_decay}",
        "learning rate": args.learning_rate,
        "warm-up steps": args.warmup_steps,
        "gradient clipping (max norm)": args.max_grad_norm or "-",
        "learning-rate schedule": f"step decay (start epoch, every, factor) {pruning_args.lr_step_decay}"
        if pruning_args.lr_step_decay
        else str(args.lr_scheduler_type.value),
        "layer decay": pruning_args.layer_decay or "-",
        "loss": "binary cross-entropy" if model.config.problem_type.startswith("multi") else "cross-entropy",
        "SpecAugment (freq, time)": f"{data_args.freq_mask}, {data_args.time_mask}",
        "patch masking": data_args.patch_mask_ratio,
        "mixup (probability, alpha)": f"{data_args.mixup}, {data_args.mixup_alpha}",
        "fbank frames / normalisation": f"{model.config.max_length} / mean {extractor.mean:.4f}, "
        f"std {extractor.std:.4f}",
        "short clips padded with": getattr(extractor, "fbank_padding", "zero"),
        "time shift (each clip at a random position of the input)": data_args.time_shift,
    }


def write_card(trainer, model_args, data_args, pruning_args, data, results, recipe_name, output=None):
    """The model card (README.md), keep-rate plot and results JSON, written to the Trainer's output folder; the card
    is also the one `trainer.push_to_hub` publishes. `output` is the folder named in them (default: that one)."""
    model, folder = trainer.model, Path(trainer.args.output_dir)
    output = Path(output or folder)
    plot_file = "keep_rate_schedule.png"
    schedule = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, KeepRateScheduleCallback))
    plot_training(
        schedule.trajectory(trainer.state.max_steps),
        trainer.state.log_history,
        results,
        model.config.keep_rate,
        data.spec.metric,
        folder / plot_file,
        title=output.name,
    )
    (folder / "keep_rate_sweep.json").write_text(json.dumps(results, indent=2))
    audiofolder = data_args.dataset_name == "audiofolder"
    card = build_model_card(
        CARD_TEMPLATE,
        model_name=output.name,
        model=model,
        base_model=model_args.model_name_or_path,
        dataset_id=Path(data.source).name if audiofolder else data.source,
        dataset_pretty_name=f"{Path(data.source).name} (audio folder)" if audiofolder else data.spec.pretty_name,
        dataset_config=data.config_name,
        dataset_split=data.splits["test"],
        metric=data.spec.metric,
        results=results,
        hyperparameters={
            "test set": data.test_set,
            **training_hyperparameters(trainer, model, data_args, pruning_args, recipe_name),
        },
        plot_file=plot_file,
        repo_id=trainer.hub_model_id if trainer.args.push_to_hub else str(output),
    )
    card.save(folder / "README.md")
    trainer.model_card = card
    print(f"\nwrote {output}: weights, remote code, feature extractor, README.md (model card), {plot_file}")
    print(f"next: classify a clip: hf-token-prune classify <clip.wav> --model_name_or_path {output}")
    if data_args.dataset_name not in DATASETS or audiofolder:
        print(
            f"      which patches it keeps: hf-token-prune analyze --model_name_or_path {output} --dataset_name "
            f"{data_args.dataset_name}" + (f" --data_dir {data_args.data_dir}" if data_args.data_dir else "")
            + f" --split {data.splits['test']} --output_dir {output / 'analysis'}"
        )

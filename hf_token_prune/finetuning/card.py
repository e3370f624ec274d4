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
from ..training.callbacks import SCHEDULED_SETTINGS


CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "pruned_audio_model_card.md"
METRIC_NAMES = {"accuracy": "accuracy", "mean_average_precision": "mAP"}


def plot_training(schedule, log_history, results, target_keep_rate, metric, path, title=None, setting="keep_rate"):
    """Two panels: the keep rate (or keep_mass, `setting`) of every optimizer step with the logged training loss, and
    the metric per keep rate, a model of the per-sample policy's own row (one with `keep_mass`) as a horizontal line.

    `schedule` is `(epochs, values)` per optimizer step, e.g. `KeepRateScheduleCallback.trajectory`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (schedule_axis, sweep) = plt.subplots(1, 2, figsize=(10, 3.6))
    schedule_axis.plot(*schedule, color="tab:blue")
    logged = [entry for entry in log_history if setting in entry]
    schedule_axis.plot(
        [e["epoch"] for e in logged],
        [e[setting] for e in logged],
        "o",
        color="tab:blue",
        markersize=2.5,
        label="logged",
    )
    schedule_axis.set_xlabel("epoch")
    name = SCHEDULED_SETTINGS[setting]
    schedule_axis.set_ylabel(name, color="tab:blue")
    schedule_axis.set_ylim(0, 1.05)
    schedule_axis.set_title(f"{name} schedule (EViT cosine, per optimizer step)", fontsize=9)
    losses = [e for e in log_history if "loss" in e and "epoch" in e]
    if losses:
        loss_axis = schedule_axis.twinx()
        loss_axis.plot([e["epoch"] for e in losses], [e["loss"] for e in losses], color="tab:orange", alpha=0.6)
        loss_axis.set_ylabel("training loss", color="tab:orange")
    fixed = [row for row in results if row.get("keep_mass") is None]
    adaptive = [row for row in results if row.get("keep_mass") is not None]
    sweep.plot([row["keep_rate"] for row in fixed], [row["metric"] for row in fixed], marker="o", color="tab:green")
    for row in adaptive:
        sweep.axhline(row["metric"], color="tab:purple", linestyle="--", linewidth=1,
                      label=f"keep_mass {row['keep_mass']:g} ({row['gmacs']:.2g} GMACs per clip on average)")
    if adaptive:
        sweep.legend(fontsize=7)
        trained = f"keep_mass {adaptive[0]['keep_mass']:g}"
    else:
        sweep.axvline(target_keep_rate, color="grey", linestyle="--", linewidth=1)
        trained = f"keep rate {target_keep_rate}"
    sweep.set_xlabel("keep rate at evaluation")
    sweep.set_ylabel(METRIC_NAMES.get(metric, metric))
    sweep.invert_xaxis()
    sweep.set_title(f"trained to {trained} (labels: GMACs per clip)", fontsize=9)
    for row in fixed:
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
    `model-index` results of the card's metadata. A model of the per-sample policy (`config.keep_mass`) has its own
    row, with `keep_mass` (`training.keep_mass_row`): it stands for the model instead of the row at its keep rate.
    """
    config = model.config
    by_rate = {round(row["keep_rate"], 6): row for row in results if row.get("keep_mass") is None}
    target = round(config.keep_rate, 6)
    if target not in by_rate or 1.0 not in by_rate:
        raise ValueError(f"the results must include the trained keep rate {target} and 1.0, got {sorted(by_rate)}.")
    metric_name = METRIC_NAMES.get(metric, metric)
    keep_mass = getattr(config, "keep_mass", None)
    if keep_mass is not None:
        trained = next((row for row in results if row.get("keep_mass") == keep_mass), None)
        if trained is None:
            raise ValueError(f"the results must include the row of the trained keep_mass {keep_mass}.")
        named = {f"keep_mass {keep_mass}": trained, "keep rate 1.0": by_rate[1.0]}
    else:
        trained = by_rate[target]
        named = {f"keep rate {rate}": by_rate[rate] for rate in dict.fromkeys([target, 1.0])}
    eval_results = [
        EvalResult(
            task_type="audio-classification",
            task_name="Audio Classification",
            dataset_type=dataset_id,
            dataset_name=dataset_pretty_name,
            dataset_config=dataset_config,
            dataset_split=dataset_split,
            metric_type=metric,
            metric_name=f"{metric_name} at {setting}",
            metric_value=round(row["metric"], 4),
        )
        for setting, row in named.items()
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
        **({} if keep_mass is None else {"keep_mass": keep_mass, "min_keep_rate": config.min_keep_rate}),
        pruning_layers=list(config.pruning_layers),
        token_score=config.token_score,
        gmacs=round(trained["gmacs"], 3),
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
        target=trained,
        unpruned=by_rate[1.0],
        hyperparameters=hyperparameters,
        plot_file=plot_file,
    )


def results_table(rows, metric, split, config):
    """The metric and GMACs per keep rate (rows) and method (columns), as printed at the end of a run; then the row of
    a model of the per-sample policy (one with `keep_mass`), GMACs per clip on average."""
    name = METRIC_NAMES[metric]
    adaptive = [row for row in rows if row.get("keep_mass") is not None]
    rows = [row for row in rows if row.get("keep_mass") is None]
    methods = list(dict.fromkeys(row["token_reduction"] for row in rows))
    cells = {(row["keep_rate"], row["token_reduction"]): row for row in rows}
    full = cells[(1.0, config.token_reduction)]["gmacs"]
    trained = f"keep_mass {adaptive[0]['keep_mass']}" if adaptive else f"keep rate {config.keep_rate}"
    lines = [
        f"\n{name} on the {split} split per keep rate and token reduction (trained: {config.token_reduction} to "
        f"{trained}; GMACs per clip, MACs vs 1.0 of {config.token_reduction}):",
        f"{'keep rate':>9} | " + " | ".join(f"{method:>8}" for method in methods) + " | "
        + " | ".join(f"{'GMACs ' + method:>11}" for method in methods) + " | MACs vs 1.0",
    ]
    for keep_rate in dict.fromkeys(row["keep_rate"] for row in rows):
        marker = "  <- trained" if not adaptive and math.isclose(keep_rate, config.keep_rate) else ""
        lines.append(
            f"{keep_rate:>9.2f} | " + " | ".join(f"{cells[(keep_rate, m)]['metric']:>8.4f}" for m in methods) + " | "
            + " | ".join(f"{cells[(keep_rate, m)]['gmacs']:>11.3f}" for m in methods)
            + f" | {100 * cells[(keep_rate, config.token_reduction)]['gmacs'] / full:>9.1f} %{marker}"
        )
    for row in adaptive:
        floor = "" if row["min_keep_rate"] is None else f", floor {row['min_keep_rate']}"
        lines.append(
            f"keep_mass {row['keep_mass']} ({row['token_reduction']}, keep rate ceiling {row['keep_rate']}{floor}): "
            f"{row['metric']:.4f}, {row['gmacs']:.3f} GMACs per clip on average ({100 * row['gmacs'] / full:.1f} % "
            "of 1.0), patch tokens kept after each pruning layer on average: "
            + ", ".join(f"{count:.1f}" for count in row["kept_tokens"]) + "  <- trained"
        )
    return "\n".join(lines)


def training_hyperparameters(trainer, model, data_args, pruning_args, recipe_name):
    """The card's hyper-parameter table."""
    args = trainer.args
    extractor = trainer.processing_class
    setting, target = pruning_args.scheduled_setting, pruning_args.scheduled_target
    schedule = (f"1.0 until epoch {pruning_args.shrink_start_epoch}, cosine to {target} over "
                f"{pruning_args.shrink_epochs} epochs, stepped per optimizer step")
    if setting == "keep_mass":
        schedule += (f"; keep rate {pruning_args.keep_rate} throughout, the per-sample ceiling"
                     + (f", floor {pruning_args.min_keep_rate}" if pruning_args.min_keep_rate is not None else ""))
    return {
        "recipe": recipe_name or "-",
        f"{SCHEDULED_SETTINGS[setting]} schedule": schedule,
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
        setting=schedule.setting,
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

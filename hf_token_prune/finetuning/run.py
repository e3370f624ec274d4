"""A fine-tuning run as library calls, wired as transformers' `run_audio_classification.py` wires its own: the model
and its data, the keep-rate schedule and the Trainer, training, the evaluation table, the output folder."""

import logging
import shutil
from pathlib import Path

import torch
import transformers
from transformers import set_seed

from ..data import StreamingTrainingData
from ..training import (
    AugmentationEpochCallback,
    KeepRateScheduleCallback,
    PrunedModelTrainer,
    ScheduleDoesNotFitError,
    StreamingTrainer,
    keep_mass_row,
    keep_rate_sweep,
    trainer_evaluator,
)
from .card import results_table, write_card
from .inputs import load_data, make_compute_metrics, set_normalization, set_transforms
from .model import (
    build_config,
    build_model,
    checkpoint_label_names,
    optimizer_cls_and_kwargs,
    reset_classifier,
    scaled_learning_rate,
)
from .output import prepare_output_dir, resume_checkpoint, save_final_model


logger = logging.getLogger("finetune")


def finetune(recipe, model_args, data_args, pruning_args, training_args):
    """Fine-tune as the five argument dataclasses say (`commands.finetune.parse_arguments`), evaluate the model at
    every keep rate and method of the final table on the test split, and write the output folder. Returns the
    Trainer. Bad input raises `ValueError` / `OSError` before anything is trained."""
    output_dir = prepare_output_dir(recipe, training_args)
    set_up_process(model_args, pruning_args, training_args)
    # a config value the model refuses (e.g. a pruning layer it does not have) is refused before any data is read
    config = build_config(model_args, data_args, pruning_args)
    with training_args.main_process_first(desc="loading and checking the dataset"):
        data = load_data(data_args, model_args.cache_dir)
    model, extractor = prepare_model(config, model_args, data_args, data)
    set_normalization(extractor, data, data_args)
    loss = data_args.training_loss
    model.config.problem_type = "multi_label_classification" if loss == "bce" else "single_label_classification"
    train_transform, augmentations = set_transforms(
        data,
        extractor,
        data_args,
        model.config.patch_size,
        one_hot=loss == "bce",
        seed=training_args.seed,
        num_frames=config.max_length,
    )
    trainer = build_trainer(model, extractor, data, train_transform, augmentations, data_args, pruning_args,
                            training_args)  # fmt: skip
    train(trainer, training_args.resume_from_checkpoint)

    evaluate = trainer_evaluator(trainer, data.test, data.spec.metric)
    table = keep_rate_sweep(
        model, evaluate, pruning_args.keep_rates, pruning_args.token_reductions, (pruning_args.token_score,),
    )
    if model.config.keep_mass is not None:  # the trained policy's own row, beside the fixed rates
        inputs = (
            {name: value.to(model.device) for name, value in batch.items() if name != "labels"}
            for batch in trainer.get_test_dataloader(data.test)
        )
        table.append(keep_mass_row(model, evaluate, inputs))

    def write_outputs():
        print(results_table(table, data.spec.metric, data.splits["test"], model.config), flush=True)
        results = [row for row in table if row["token_reduction"] == model.config.token_reduction]
        write_card(trainer, model_args, data_args, pruning_args, data, results, recipe.recipe, output_dir)

    save_final_model(trainer, output_dir, write_outputs)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return trainer


def set_up_process(model_args, pruning_args, training_args):
    """Logging, torch threads, the seed and a learning rate scaled from a base rate."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity_warning()
    if model_args.torch_threads:
        torch.set_num_threads(model_args.torch_threads)
    set_seed(training_args.seed)
    if pruning_args.base_learning_rate is not None:
        training_args.learning_rate = scaled_learning_rate(pruning_args.base_learning_rate, training_args)
        logger.info("learning rate %.3g from base %.3g", training_args.learning_rate, pruning_args.base_learning_rate)


def prepare_model(config, model_args, data_args, data):
    """The model with a head for the dataset's classes (a checkpoint's own head kept when its classes are the
    dataset's, which are renumbered in its order), and its feature extractor."""
    same_classes = False
    if model_args.model_name_or_path:
        checkpoint_labels = checkpoint_label_names(config)
        if data.align_labels(checkpoint_labels):
            logger.info("classes renumbered in the order of the checkpoint's classifier, which is kept")
        same_classes = checkpoint_labels == data.label_names
    model, extractor = build_model(config, model_args, data_args, data.label_names)
    if extractor.sampling_rate != data_args.sampling_rate:
        # the Kaldi fbank frames 25 ms windows in samples of the extractor's rate: other audio would be misread
        raise ValueError(
            f"--sampling_rate {data_args.sampling_rate}: the feature extractor expects {extractor.sampling_rate} Hz "
            f"audio; decode at --sampling_rate {extractor.sampling_rate}."
        )
    if model_args.model_name_or_path and (model_args.reset_classifier or not same_classes):
        reset_classifier(model)
        logger.info("new classifier head for the %d classes of %s", len(data.label_names), data_args.dataset_name)
    return model, extractor


def build_trainer(model, extractor, data, train_transform, augmentations, data_args, pruning_args, training_args):
    """The Trainer with the keep-rate (or keep_mass) schedule, which also ends augmentation as shrinking starts (the
    paper's recipes, only in runs that prune); a `StreamingTrainer` over a streamed training split."""
    stop_augmenting = pruning_args.prunes and not pruning_args.augment_while_pruning
    if stop_augmenting and pruning_args.shrink_start_epoch == 0 and (
        data_args.freq_mask or data_args.time_mask or data_args.patch_mask_ratio
    ):
        logger.warning(
            "--freq_mask / --time_mask / --patch_mask_ratio have no effect: augmentation stops when the keep rate "
            "(or keep_mass) starts shrinking, which is at epoch 0 (--shrink_start_epoch). --augment_while_pruning true "
            "keeps it."
        )
    if pruning_args.keep_mass is not None:
        logger.info("keep_mass shrinks from 1.0 to %g; keep rate %g is the fixed per-clip ceiling from the first step",
                    pruning_args.keep_mass, pruning_args.keep_rate)
    schedule = KeepRateScheduleCallback(
        pruning_args.scheduled_target,
        pruning_args.shrink_start_epoch,
        pruning_args.shrink_epochs,
        augmentations=augmentations if stop_augmenting else (),
        setting=pruning_args.scheduled_setting,
    )
    trainer_class, callbacks = PrunedModelTrainer, [schedule, AugmentationEpochCallback(train_transform)]
    if data_args.streaming:
        data.train = StreamingTrainingData(
            data.train,
            train_transform,
            training_args.per_device_train_batch_size,
            data.num_rows.get("train"),
            shuffle_buffer_size=data_args.shuffle_buffer_size,
            seed=training_args.seed,
            rank=training_args.process_index,
            world_size=training_args.world_size,
            epoch_hooks=[schedule.augment_epoch],
        )
        trainer_class, callbacks = StreamingTrainer, [schedule]  # the stream sets the augmentation epoch itself
    return trainer_class(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=extractor,
        compute_metrics=make_compute_metrics(data.spec.metric),
        callbacks=callbacks,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(pruning_args.optimizer, training_args),
        layer_decay=pruning_args.layer_decay,
        lr_step_decay=pruning_args.step_decay,
        warmup_epochs=pruning_args.warmup_epochs,
    )


def train(trainer, resume_from_checkpoint):
    """Train in the staging folder, resuming from a checkpoint checked against the model first."""
    staging = Path(trainer.args.output_dir)
    resume = resume_checkpoint(resume_from_checkpoint, trainer.model, staging)
    try:
        trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"the checkpoints so far are in {staging}: continue with the same flags and --resume_from_checkpoint true"
        ) from None
    except ScheduleDoesNotFitError:  # refused as training begins, once the steps per epoch are known
        if resume is None:  # this run's own staging folder, nothing trained in it yet
            shutil.rmtree(staging, ignore_errors=True)
        raise

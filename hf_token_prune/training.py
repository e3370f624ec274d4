"""Fine-tuning with a shrinking keep rate: the EViT schedule as a `TrainerCallback`, and a `Trainer` with the
optimiser details of the paper's recipes (layer-wise learning-rate decay, AST's step decay, the pruned-model card).

The schedule is a pure function of the optimizer step, so a run resumed from a checkpoint continues exactly where it
stopped; the callback holds no state of its own besides the number of optimizer steps per epoch. A streamed training
split (`data.StreamingTrainingData`) has no length: its epochs are counted by `streaming_steps_per_epoch`, and its
position is saved with every checkpoint and restored on resuming (`StreamPositionCallback`).
"""

import inspect
import json
import logging
import math
import os
import re
from collections.abc import Iterable

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .data import StreamingTrainingData
from .macs import count_macs
from .pruning_config import check_keep_rate
from .token_reductions import get_token_reduction


logger = logging.getLogger(__name__)


def keep_rate_at(step: int, target: float, start_step: int, num_shrink_steps: int) -> float:
    """EViT's keep-rate schedule at optimizer step `step` (0-based, the step about to be taken).

    1.0 before `start_step`; then `target + (1 - target) * (cos(pi * i / num_shrink_steps) + 1) / 2` for the `i`-th step
    of the shrinking phase; `target` from `start_step + num_shrink_steps` on.
    """
    if step < start_step:
        return 1.0
    if step >= start_step + num_shrink_steps:
        return target
    progress = (step - start_step) / num_shrink_steps
    return target + (1.0 - target) * (math.cos(math.pi * progress) + 1.0) / 2.0


def num_update_steps_per_epoch(train_dataloader, gradient_accumulation_steps: int) -> int:
    """Optimizer steps in one epoch, counted the way `Trainer` counts them (a partial accumulation is a step)."""
    return max(math.ceil(len(train_dataloader) / gradient_accumulation_steps), 1)


def streaming_steps_per_epoch(num_rows: int, args) -> int:
    """Optimizer steps in one epoch of a streamed training split of `num_rows` rows: the rows over the global batch
    (per-device batch x processes x gradient accumulation), rounded up, as `Trainer` counts a map-style epoch."""
    global_batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    return max(math.ceil(num_rows / global_batch), 1)


class ScheduleDoesNotFitError(ValueError):
    """The training ends before the keep-rate schedule reaches its target."""


class KeepRateScheduleCallback(TrainerCallback):
    """Shrink the model's keep rate from 1.0 to `target` with EViT's cosine, stepped every optimizer step.

    Args:
        target (`float`): keep rate reached at the end of the schedule, used for evaluation and saved checkpoints.
        start_epoch (`float`): epoch at which shrinking starts (keep rate 1.0 before).
        num_epochs (`float`): length of the shrinking phase in epochs (0: jump to `target` at `start_epoch`).
        augmentations (iterable of objects with an `enabled` attribute): switched off, as the paper does (pruning
            already masks strongly), from the first epoch that does not start before `start_epoch`. They are switched
            at epoch boundaries, before the epoch's data loader is created, so data-loader workers see the change
            (a streamed training split calls `augment_epoch` as each of its epochs starts).
        steps_per_epoch (`int`, *optional*): optimizer steps per epoch; by default counted from the training data
            loader when training begins (`PrunedModelTrainer` sets it for a streamed training split).

    The model must have `set_keep_rate` (every pruned model of this package). The keep rate used for the last training
    step is logged as `keep_rate` next to the loss. A run that ends (`max_steps`, or its epochs) before the schedule
    does is refused when training begins (`ScheduleDoesNotFitError`): it would save the target keep rate untrained.
    """

    def __init__(
        self,
        target: float,
        start_epoch: float,
        num_epochs: float,
        augmentations: Iterable = (),
        steps_per_epoch: int | None = None,
    ):
        check_keep_rate(target, "target keep rate")
        if start_epoch < 0 or num_epochs < 0:
            raise ValueError(
                f"start_epoch={start_epoch} and num_epochs={num_epochs} must be >= 0: the schedule shrinks the keep "
                "rate from start_epoch for num_epochs epochs."
            )
        self.target = float(target)
        self.start_epoch = start_epoch
        self.num_epochs = num_epochs
        self.augmentations = list(augmentations)
        self.steps_per_epoch = steps_per_epoch

    def keep_rate(self, step: int) -> float:
        if self.steps_per_epoch is None:
            raise RuntimeError("the keep-rate schedule needs the number of steps per epoch, set when training begins.")
        return keep_rate_at(
            step,
            self.target,
            round(self.start_epoch * self.steps_per_epoch),
            round(self.num_epochs * self.steps_per_epoch),
        )

    def trajectory(self, num_steps: int) -> tuple[list[float], list[float]]:
        """Epoch and keep rate of every optimizer step of a run of `num_steps` steps (for plots)."""
        steps = range(num_steps)
        return [(step + 1) / self.steps_per_epoch for step in steps], [self.keep_rate(step) for step in steps]

    def on_train_begin(self, args, state, control, train_dataloader=None, model=None, **kwargs):
        if self.steps_per_epoch is None:
            if not hasattr(train_dataloader, "__len__"):
                raise ValueError(
                    "the training data has no length (a stream): give the keep-rate schedule its steps_per_epoch."
                )
            self.steps_per_epoch = num_update_steps_per_epoch(train_dataloader, args.gradient_accumulation_steps)
        start, length = round(self.start_epoch * self.steps_per_epoch), round(self.num_epochs * self.steps_per_epoch)
        # state.max_steps is 0 until a Trainer sets it: unknown, not too short.
        if self.target < 1.0 and 0 < state.max_steps < start + length:
            raise ScheduleDoesNotFitError(
                f"training stops after {state.max_steps} optimizer steps, but the keep rate shrinks until step "
                f"{start + length} (from epoch {self.start_epoch:g} for {self.num_epochs:g} epochs of "
                f"{self.steps_per_epoch} steps): the model would be evaluated and saved at keep rate {self.target} "
                "without having been trained at it. Train longer (--max_steps, --num_train_epochs), or shrink earlier "
                "(--shrink_start_epoch, --shrink_epochs; 0 and 0 train at the target keep rate from the first step)."
            )
        if model is not None:  # an evaluation before the first step (eval_on_start) sees the target too
            model.set_keep_rate(self.target)

    def augment_epoch(self, epoch: int):
        """Augment the epoch about to run only if shrinking starts later."""
        for augmentation in self.augmentations:
            augmentation.enabled = epoch < self.start_epoch

    def on_epoch_begin(self, args, state, control, **kwargs):
        # also right after resuming mid-epoch
        self.augment_epoch(state.global_step // self.steps_per_epoch)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        model.set_keep_rate(self.keep_rate(state.global_step))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # Evaluation and checkpoints happen between steps; the next step sets its own keep rate again.
        model.set_keep_rate(self.target)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        model.set_keep_rate(self.target)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs and state.global_step > 0:
            keep_rate = round(self.keep_rate(state.global_step - 1), 6)
            logs["keep_rate"] = keep_rate
            # Trainer stored a copy of `logs` in the history before calling back: keep trainer_state.json complete.
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1]["keep_rate"] = keep_rate


class StreamPositionCallback(TrainerCallback):
    """Save the position of a streamed training split (`data.StreamingTrainingData`) in every checkpoint, one file per
    process (`stream_position_rank<r>.json`: epoch, rows read in it, and `IterableDataset.state_dict()` without a
    shuffle buffer), and keep `state.epoch` in epochs of the data. `PrunedModelTrainer` adds it for a stream and calls
    `resume` when a run resumes from a checkpoint."""

    def __init__(self, stream: StreamingTrainingData, steps_per_epoch: int):
        self.stream = stream
        self.steps_per_epoch = steps_per_epoch

    @staticmethod
    def file_name(rank: int) -> str:
        return f"stream_position_rank{rank}.json"

    @classmethod
    def resume(cls, stream: StreamingTrainingData, folder: str, args):
        path = os.path.join(folder, cls.file_name(args.process_index))
        if not os.path.isfile(path):
            raise ValueError(
                f"{folder} holds no stream position for process {args.process_index} ({cls.file_name(args.process_index)}"
                "): it was not written by a streamed run with as many processes; resume it the way it was started."
            )
        with open(path) as handle:
            saved = json.load(handle)
        stream.resume_from(saved["position"], saved["batches"])

    def on_step_end(self, args, state, control, **kwargs):
        # Trainer knows no epochs in an endless stream: log epochs of the data, as the keep-rate schedule counts them
        state.epoch = state.global_step / self.steps_per_epoch

    def on_save(self, args, state, control, **kwargs):
        batches = state.global_step * args.gradient_accumulation_steps
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, self.file_name(args.process_index)), "w") as handle:
            json.dump({"batches": batches, "position": self.stream.position_after(batches)}, handle)


def layer_id(parameter_name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise lr decay: 0 for embeddings, i + 1 for encoder layer i, the rest on top."""
    match = re.search(r"\.layers?\.(\d+)\.", parameter_name)
    if match:
        return int(match.group(1)) + 1
    if ".embeddings." in parameter_name or parameter_name.split(".")[-1] in ("cls_token", "pos_embed"):
        return 0
    return num_layers + 1


def layer_decay_parameter_groups(model, learning_rate: float, weight_decay: float, layer_decay: float, decay_names):
    """Parameter groups with learning rate `learning_rate * layer_decay ** (num_layers + 1 - depth)` (BEiT, AudioMAE):
    the head trains at the full rate, each layer below at `layer_decay` times the one above. Only parameters named in
    `decay_names` get weight decay."""
    num_layers = model.config.num_hidden_layers
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth, decay = layer_id(name, num_layers), name in decay_names
        group = groups.setdefault(
            (depth, decay),
            {
                "params": [],
                "lr": learning_rate * layer_decay ** (num_layers + 1 - depth),
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]


def step_decay_lambda(steps_per_epoch: int, start_epoch: int, every_epochs: int, factor: float, warmup_steps: int = 0):
    """AST's learning-rate schedule per optimizer step: multiplied by `factor` at epoch `start_epoch` and every
    `every_epochs` epochs after (torch's MultiStepLR stepped per epoch in the original code), after a linear warm-up
    over the first `warmup_steps` steps (AST's AudioSet recipe warms up over 1000)."""

    def multiplier(step: int) -> float:
        epoch = step // steps_per_epoch
        decay = 1.0 if epoch < start_epoch else factor ** ((epoch - start_epoch) // every_epochs + 1)
        return decay * min(1.0, step / warmup_steps) if warmup_steps else decay

    return multiplier


class PrunedModelTrainer(Trainer):
    """`Trainer` with the optimiser details of the paper's recipes and the pruned-model card.

    Args (besides `Trainer`'s):
        layer_decay (`float`, *optional*): layer-wise learning-rate decay (AudioMAE: 0.75); parameter groups get
            `lr * layer_decay ** (num_layers + 1 - depth)`.
        lr_step_decay (`tuple(int, int, float)`, *optional*): `(start_epoch, every_epochs, factor)`, AST's step decay
            of the learning rate; replaces `args.lr_scheduler_type` (the warm-up of `args` still applies).
        warmup_epochs (`float`, *optional*): linear warm-up over this many epochs; replaces `args.warmup_steps` once
            the steps per epoch are known (AudioMAE: 4).

    Set `model_card` (a `huggingface_hub.ModelCard`) after evaluation: `push_to_hub` then publishes it as README.md
    instead of transformers' generic card.
    """

    def __init__(self, *args, layer_decay: float | None = None, lr_step_decay=None, warmup_epochs=None, **kwargs):
        given = inspect.signature(Trainer.__init__).bind_partial(self, *args, **kwargs).arguments
        self.streaming_steps_per_epoch = None
        stream = given.get("train_dataset")
        if isinstance(stream, StreamingTrainingData):
            self._set_up_streaming(given["args"], stream)
        super().__init__(*args, **kwargs)
        if self.streaming_steps_per_epoch is not None:
            self.add_callback(StreamPositionCallback(stream, self.streaming_steps_per_epoch))
        if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay={layer_decay} is invalid: it must lie in (0, 1] (AudioMAE uses 0.75).")
        self.layer_decay = layer_decay
        self.lr_step_decay = lr_step_decay
        self.warmup_epochs = warmup_epochs
        self.model_card = None
        self.update_steps_per_epoch = None
        # Callbacks run in order: put the keep-rate schedule first, so that every reporter sees `keep_rate` in the logs.
        schedules = [cb for cb in self.callback_handler.callbacks if isinstance(cb, KeepRateScheduleCallback)]
        for schedule in schedules:
            self.callback_handler.callbacks.remove(schedule)
        self.callback_handler.callbacks[:0] = schedules
        for schedule in schedules:
            if self.streaming_steps_per_epoch is not None and schedule.steps_per_epoch is None:
                schedule.steps_per_epoch = self.streaming_steps_per_epoch

    def _set_up_streaming(self, args, stream):
        """A streamed training split: epochs counted by `streaming_steps_per_epoch`, `max_steps` from the epochs
        unless given, epoch-wise evaluation / saving / logging every that many steps, each process reading its own
        part."""
        if args.dataloader_num_workers:
            raise ValueError(
                f"--dataloader_num_workers {args.dataloader_num_workers}: a streamed training split is read in the "
                "main process, where its position is saved with each checkpoint; use 0."
            )
        self.streaming_steps_per_epoch = streaming_steps_per_epoch(stream.num_rows, args)
        if args.max_steps <= 0:
            args.max_steps = math.ceil(args.num_train_epochs * self.streaming_steps_per_epoch)
        # Trainer's epoch of an endless stream is the whole run: "every epoch" becomes every epoch's steps
        for kind in ("eval", "save", "logging"):
            strategy = getattr(args, f"{kind}_strategy")
            if strategy == "epoch":
                setattr(args, f"{kind}_strategy", type(strategy)("steps"))
                setattr(args, f"{kind}_steps", self.streaming_steps_per_epoch)
        logger.info(
            "streaming: %d rows / (%d per device x %d processes x %d accumulation) = %d optimizer steps per epoch; "
            "training stops after %d steps",
            stream.num_rows,
            args.per_device_train_batch_size,
            args.world_size,
            args.gradient_accumulation_steps,
            self.streaming_steps_per_epoch,
            args.max_steps,
        )
        # Each process reads its own part (split_dataset_by_node): no batches dispatched from the first process, and
        # no skipping of consumed batches on resuming (the stream restores its own position).
        args.accelerator_config.dispatch_batches = False
        args.ignore_data_skip = True

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        if self.streaming_steps_per_epoch is not None and hasattr(loader.dataset, "num_processes"):
            # accelerate wraps an iterable dataset so that every process keeps every n-th batch of one shared stream;
            # this stream is already split by process, so every process keeps all of its own batches.
            loader.dataset.num_processes, loader.dataset.process_index = 1, 0
        return loader

    def train(self, resume_from_checkpoint=None, **kwargs):
        if self.streaming_steps_per_epoch is not None and resume_from_checkpoint:
            folder = resume_from_checkpoint
            if folder is True:
                folder = get_last_checkpoint(self.args.output_dir)
            if folder is not None:  # none: Trainer says so
                StreamPositionCallback.resume(self.train_dataset, folder, self.args)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        self.update_steps_per_epoch = self.streaming_steps_per_epoch or values[1]
        if self.warmup_epochs is not None:
            args.warmup_steps = round(self.warmup_epochs * self.update_steps_per_epoch)
        return values

    def get_decay_parameter_names(self, model) -> list[str]:
        # timm's ViTs (and AudioMAE's fine-tuning) exempt the extra tokens and position embeddings from weight decay,
        # besides the biases and LayerNorm weights Trainer already exempts.
        exempt = ("cls_token", "distillation_token", "position_embeddings")
        return [name for name in super().get_decay_parameter_names(model) if name.rsplit(".", 1)[-1] not in exempt]

    def create_optimizer(self, model=None):
        if self.layer_decay is None or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        groups = layer_decay_parameter_groups(
            model,
            optimizer_kwargs.get("lr", self.args.learning_rate),
            self.args.weight_decay,
            self.layer_decay,
            set(self.get_decay_parameter_names(model)),
        )
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_step_decay is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        start_epoch, every_epochs, factor = self.lr_step_decay
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer or self.optimizer,
            step_decay_lambda(
                self.update_steps_per_epoch,
                start_epoch,
                every_epochs,
                factor,
                self.args.get_warmup_steps(num_training_steps),
            ),
        )
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if model is not None or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_weights(resume_from_checkpoint)

    def _load_best_model(self):
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_best_model()
        self._load_weights(self.state.best_model_checkpoint)

    def _load_weights(self, folder):
        # Trainer reloads checkpoints with a bare `load_state_dict`, which skips the key renames transformers applies
        # in `from_pretrained` (AST checkpoints are written under the 4.x names) and, being non-strict, would silently
        # leave every encoder weight untouched. Load through `from_pretrained`, then copy the weights, strictly.
        saved = type(self.model).from_pretrained(folder)
        self.model.load_state_dict(saved.state_dict())

    def create_model_card(self, **kwargs):
        if self.model_card is None:
            return super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            self.model_card.save(os.path.join(self.args.output_dir, "README.md"))


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


__all__ = [
    "KeepRateScheduleCallback",
    "PrunedModelTrainer",
    "ScheduleDoesNotFitError",
    "StreamPositionCallback",
    "keep_rate_at",
    "keep_rate_sweep",
    "layer_decay_parameter_groups",
    "num_update_steps_per_epoch",
    "step_decay_lambda",
    "streaming_steps_per_epoch",
    "trainer_evaluator",
]

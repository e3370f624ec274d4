"""The `TrainerCallback`s of a pruned fine-tuning: the keep-rate (or keep_mass) schedule, stepped every optimizer
step, and the augmentation epoch of a training transform."""

import math
from collections.abc import Iterable

from transformers import TrainerCallback

from ..data import AudioFeatureTransform
from ..pruning_config import check_keep_rate
from .schedule import ScheduleDoesNotFitError, keep_rate_at, num_update_steps_per_epoch


# The settings a schedule can shrink, with their names in messages.
SCHEDULED_SETTINGS = {"keep_rate": "keep rate", "keep_mass": "keep_mass"}


class KeepRateScheduleCallback(TrainerCallback):
    """Shrink the model's keep rate (or, with `setting="keep_mass"`, the per-sample policy's `keep_mass`) from 1.0 to
    `target` with EViT's cosine, stepped every optimizer step.

    Args:
        target (`float`): keep rate (or keep_mass) reached at the end of the schedule, used for evaluation and saved
            checkpoints.
        start_epoch (`float`): epoch at which shrinking starts (1.0 before).
        num_epochs (`float`): length of the shrinking phase in epochs (0: jump to `target` at `start_epoch`).
        augmentations (iterable of objects with an `enabled` attribute): switched off, as the paper does (pruning
            already masks strongly), from the first epoch that does not start before `start_epoch`. They are switched
            at epoch boundaries, before the epoch's data loader is created, so data-loader workers see the change
            (a streamed training split calls `augment_epoch` as each of its epochs starts).
        steps_per_epoch (`int`, *optional*): optimizer steps per epoch; by default counted from the training data
            loader when training begins (`StreamingTrainer` sets it for a streamed training split).
        setting (`str`): `"keep_rate"` (the default: the model's `set_keep_rate`) or `"keep_mass"` (the config's
            per-sample policy; the model's keep rate then stays what it is, the policy's ceiling).

    The value used for the last training step is logged under the setting's name (`keep_rate` or `keep_mass`) next to
    the loss. A run that ends (`max_steps`, or its epochs) before the schedule does is refused when training begins
    (`ScheduleDoesNotFitError`): it would save the target untrained.
    """

    def __init__(
        self,
        target: float,
        start_epoch: float,
        num_epochs: float,
        augmentations: Iterable = (),
        steps_per_epoch: int | None = None,
        setting: str = "keep_rate",
    ):
        if setting not in SCHEDULED_SETTINGS:
            raise ValueError(f"setting={setting!r}: the schedule shrinks one of {', '.join(SCHEDULED_SETTINGS)}.")
        check_keep_rate(target, f"target {SCHEDULED_SETTINGS[setting]}")
        if start_epoch < 0 or num_epochs < 0:
            raise ValueError(
                f"start_epoch={start_epoch} and num_epochs={num_epochs} must be >= 0: the schedule shrinks the "
                f"{SCHEDULED_SETTINGS[setting]} from start_epoch for num_epochs epochs."
            )
        self.target = float(target)
        self.start_epoch = start_epoch
        self.num_epochs = num_epochs
        self.augmentations = list(augmentations)
        self.steps_per_epoch = steps_per_epoch
        self.setting = setting

    def keep_rate(self, step: int) -> float:
        """The scheduled value (keep rate or keep_mass, see `setting`) at optimizer step `step`."""
        if self.steps_per_epoch is None:
            raise RuntimeError("the keep-rate schedule needs the number of steps per epoch, set when training begins.")
        return keep_rate_at(
            step,
            self.target,
            round(self.start_epoch * self.steps_per_epoch),
            round(self.num_epochs * self.steps_per_epoch),
        )

    def trajectory(self, num_steps: int) -> tuple[list[float], list[float]]:
        """Epoch and scheduled value of every optimizer step of a run of `num_steps` steps (for plots)."""
        steps = range(num_steps)
        return [(step + 1) / self.steps_per_epoch for step in steps], [self.keep_rate(step) for step in steps]

    def set_value(self, model, value: float):
        if self.setting == "keep_rate":
            model.set_keep_rate(value)
        else:
            model.config.update_reduction(keep_mass=value)

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
            name = SCHEDULED_SETTINGS[self.setting]
            raise ScheduleDoesNotFitError(
                f"training stops after {state.max_steps} optimizer steps, but the {name} shrinks until step "
                f"{start + length} (from epoch {self.start_epoch:g} for {self.num_epochs:g} epochs of "
                f"{self.steps_per_epoch} steps): the model would be evaluated and saved at {name} {self.target} "
                "without having been trained at it. Train longer (--max_steps, --num_train_epochs), or shrink earlier "
                f"(--shrink_start_epoch, --shrink_epochs; 0 and 0 train at the target {name} from the first step)."
            )
        if model is not None:  # an evaluation before the first step (eval_on_start) sees the target too
            self.set_value(model, self.target)

    def augment_epoch(self, epoch: int):
        """Augment the epoch about to run only if shrinking starts later."""
        for augmentation in self.augmentations:
            augmentation.enabled = epoch < self.start_epoch

    def on_epoch_begin(self, args, state, control, **kwargs):
        # also right after resuming mid-epoch
        self.augment_epoch(state.global_step // self.steps_per_epoch)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.set_value(model, self.keep_rate(state.global_step))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # Evaluation and checkpoints happen between steps; the next step sets its own value again.
        self.set_value(model, self.target)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.set_value(model, self.target)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs and state.global_step > 0:
            value = round(self.keep_rate(state.global_step - 1), 6)
            logs[self.setting] = value
            # Trainer stored a copy of `logs` in the history before calling back: keep trainer_state.json complete.
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1][self.setting] = value


class AugmentationEpochCallback(TrainerCallback):
    """Tell a training transform which epoch is about to run (before its data loader is created), so each epoch
    draws new augmentations and a resumed run draws the same ones."""

    def __init__(self, transform: AudioFeatureTransform):
        self.transform = transform

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.transform.epoch = math.floor(state.epoch or 0)

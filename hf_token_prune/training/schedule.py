"""EViT's keep-rate schedule: a pure function of the optimizer step, so a resumed run continues exactly where it
stopped."""

import math


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

class ScheduleDoesNotFitError(ValueError):
    """The training ends before the keep-rate schedule reaches its target."""

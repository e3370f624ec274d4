"""EViT's schedule of the setting that shrinks during fine-tuning (the keep rate, or the per-sample policy's
`keep_mass`): a pure function of the optimizer step, so a resumed run continues exactly where it stopped."""

import math


def keep_rate_at(step: int, target: float, start_step: int, num_shrink_steps: int) -> float:
    """EViT's keep-rate schedule at optimizer step `step` (0-based, the step about to be taken); the same cosine
    shrinks `keep_mass` when fine-tuning with the per-sample policy.

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
    """The training ends before the keep-rate (or keep_mass) schedule reaches its target."""

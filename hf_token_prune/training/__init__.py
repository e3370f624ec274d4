"""Fine-tuning with a shrinking keep rate: the EViT schedule as a `TrainerCallback`, and a `Trainer` with the
optimiser details of the paper's recipes (layer-wise learning-rate decay, AST's step decay, the pruned-model card).

The schedule is a pure function of the optimizer step, so a run resumed from a checkpoint continues exactly where it
stopped; the callback holds no state of its own besides the number of optimizer steps per epoch. A streamed training
split (`data.StreamingTrainingData`) trains with `StreamingTrainer`: its epochs are counted by
`streaming_steps_per_epoch`, and its position is saved with every checkpoint and restored on resuming
(`StreamPositionCallback`).
"""

from .callbacks import AugmentationEpochCallback, KeepRateScheduleCallback
from .optimization import layer_decay_parameter_groups, step_decay_lambda
from .schedule import ScheduleDoesNotFitError, keep_rate_at, num_update_steps_per_epoch
from .streaming import StreamingTrainer, StreamPositionCallback, configure_streaming, streaming_steps_per_epoch
from .sweep import keep_mass_row, keep_rate_sweep, trainer_evaluator
from .trainer import PrunedModelTrainer


__all__ = [
    "AugmentationEpochCallback",
    "KeepRateScheduleCallback",
    "PrunedModelTrainer",
    "ScheduleDoesNotFitError",
    "StreamPositionCallback",
    "StreamingTrainer",
    "configure_streaming",
    "keep_rate_at",
    "keep_mass_row",
    "keep_rate_sweep",
    "layer_decay_parameter_groups",
    "num_update_steps_per_epoch",
    "step_decay_lambda",
    "streaming_steps_per_epoch",
    "trainer_evaluator",
]

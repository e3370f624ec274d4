"""Training on a streamed split (`data.StreamingTrainingData`), which has no length: its epochs are counted by
`streaming_steps_per_epoch`, and its position is saved with every checkpoint and restored on resuming
(`StreamPositionCallback`). `StreamingTrainer` wires both into a `PrunedModelTrainer`."""

import inspect
import json
import logging
import math
import os

from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..data import StreamingTrainingData
from .trainer import PrunedModelTrainer


logger = logging.getLogger(__name__)


def streaming_steps_per_epoch(num_rows: int, args) -> int:
    """Optimizer steps in one epoch of a streamed training split of `num_rows` rows: the rows over the global batch
    (per-device batch x processes x gradient accumulation), rounded up, as `Trainer` counts a map-style epoch."""
    global_batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    return max(math.ceil(num_rows / global_batch), 1)



def configure_streaming(args, stream: StreamingTrainingData) -> int:
    """Set `args` (`TrainingArguments`) up for a streamed training split and return its optimizer steps per epoch:
    `max_steps` from the epochs unless given, epoch-wise evaluation / saving / logging every that many steps, each
    process reading its own part."""
    if args.dataloader_num_workers:
        raise ValueError(
            f"--dataloader_num_workers {args.dataloader_num_workers}: a streamed training split is read in the "
            "main process, where its position is saved with each checkpoint; use 0."
        )
    steps_per_epoch = streaming_steps_per_epoch(stream.num_rows, args)
    if args.max_steps <= 0:
        args.max_steps = math.ceil(args.num_train_epochs * steps_per_epoch)
    # Trainer's epoch of an endless stream is the whole run: "every epoch" becomes every epoch's steps
    for kind in ("eval", "save", "logging"):
        strategy = getattr(args, f"{kind}_strategy")
        if strategy == "epoch":
            setattr(args, f"{kind}_strategy", type(strategy)("steps"))
            setattr(args, f"{kind}_steps", steps_per_epoch)
    logger.info(
        "streaming: %d rows / (%d per device x %d processes x %d accumulation) = %d optimizer steps per epoch; "
        "training stops after %d steps",
        stream.num_rows,
        args.per_device_train_batch_size,
        args.world_size,
        args.gradient_accumulation_steps,
        steps_per_epoch,
        args.max_steps,
    )
    # Each process reads its own part (split_dataset_by_node): no batches dispatched from the first process, and
    # no skipping of consumed batches on resuming (the stream restores its own position).
    args.accelerator_config.dispatch_batches = False
    args.ignore_data_skip = True
    return steps_per_epoch


class StreamPositionCallback(TrainerCallback):
    """Save the position of a streamed training split (`data.StreamingTrainingData`) in every checkpoint, one file per
    process (`stream_position_rank<r>.json`: epoch, rows read in it, and `IterableDataset.state_dict()` without a
    shuffle buffer), and keep `state.epoch` in epochs of the data. `StreamingTrainer` adds it and calls
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



class StreamingTrainer(PrunedModelTrainer):
    """`PrunedModelTrainer` over a streamed training split (`train_dataset`, a `data.StreamingTrainingData`): `args`
    set up by `configure_streaming`, the stream's position in every checkpoint, and a keep-rate schedule without its
    own `steps_per_epoch` counting the stream's epochs."""

    def __init__(self, *args, **kwargs):
        signature = inspect.signature(Trainer.__init__)
        # `PrunedModelTrainer`'s own keywords are not `Trainer`'s
        trainer_kwargs = {name: value for name, value in kwargs.items() if name in signature.parameters}
        given = signature.bind_partial(self, *args, **trainer_kwargs).arguments
        stream = given.get("train_dataset")
        if not isinstance(stream, StreamingTrainingData):
            raise TypeError(f"StreamingTrainer trains on a StreamingTrainingData, not {type(stream).__name__}.")
        self.streaming_steps_per_epoch = configure_streaming(given["args"], stream)
        super().__init__(*args, **kwargs)
        self.add_callback(StreamPositionCallback(stream, self.streaming_steps_per_epoch))
        for schedule in self.keep_rate_schedules():
            if schedule.steps_per_epoch is None:
                schedule.steps_per_epoch = self.streaming_steps_per_epoch

    def count_update_steps_per_epoch(self, counted: int) -> int:
        return self.streaming_steps_per_epoch

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        if hasattr(loader.dataset, "num_processes"):
            # accelerate wraps an iterable dataset so that every process keeps every n-th batch of one shared stream;
            # this stream is already split by process, so every process keeps all of its own batches.
            loader.dataset.num_processes, loader.dataset.process_index = 1, 0
        return loader

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint:
            folder = resume_from_checkpoint
            if folder is True:
                folder = get_last_checkpoint(self.args.output_dir)
            if folder is not None:  # none: Trainer says so
                StreamPositionCallback.resume(self.train_dataset, folder, self.args)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

"""Streamed splits as `Trainer` reads them: the training stream featurised batch-wise, resumable from a checkpoint
at the row it reached, and evaluation streams featurised row by row."""

import torch
from datasets import IterableDataset

from .features import AudioFeatureTransform


class StreamingTrainingData(torch.utils.data.IterableDataset):
    """A streamed training split as `Trainer` reads it: featurised examples in one endless stream of epochs.

    Each process reads its own part of `dataset` (`datasets.distributed.split_dataset_by_node`: whole shards when the
    number of shards divides by `world_size`, else every `world_size`-th row), shuffled through a buffer of
    `shuffle_buffer_size` rows filled from up to `max_buffer_input_shards` shards at a time (seeded, shard order and
    rows reshuffled every epoch with `set_epoch`; 0: source order). Rows are featurised
    `batch_size` at a time by `transform` (an `AudioFeatureTransform`), so mixup partners and augmentation draws come
    from the training batch, as on map-style data. Epochs follow each other without a break: `Trainer` stops at
    `max_steps`, and `epoch_hooks` (called with each epoch number as it starts) switch epoch-wise settings such as
    augmentation.

    The position reached after every batch is kept until the next checkpoint (`position_after`), and a run resumed
    with `resume_from(position)` continues the stream exactly where the checkpoint left it: through
    `IterableDataset.load_state_dict` without a shuffle buffer, and by skipping the consumed rows of the epoch with
    one (a shuffle buffer's content is not part of `datasets`' state, so its state alone would drop those rows). Rows
    are skipped before decoding, so no audio is decoded twice.

    Read in the main process: data-loader workers would each hold a part of the position (use
    `dataloader_num_workers=0`).
    """

    def __init__(
        self,
        dataset: IterableDataset,
        transform: "AudioFeatureTransform",
        batch_size: int,
        num_rows: int,
        shuffle_buffer_size: int = 1000,
        max_buffer_input_shards: int = 10,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_hooks: tuple = (),
    ):
        from datasets.distributed import split_dataset_by_node

        if shuffle_buffer_size < 0:
            raise ValueError(f"shuffle_buffer_size={shuffle_buffer_size}: give a number of rows >= 0 (0: no shuffling).")
        if not num_rows or num_rows <= 0:
            raise ValueError(
                "the number of training rows is unknown (the dataset's metadata does not give it): a stream's epochs "
                "are counted in rows; give it with --streaming_num_rows."
            )
        if shuffle_buffer_size:
            dataset = dataset.shuffle(
                seed=seed, buffer_size=shuffle_buffer_size, max_buffer_input_shards=max_buffer_input_shards
            )
        if world_size > 1:
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        self.dataset = dataset
        self.transform = transform
        self.batch_size = batch_size
        self.num_rows = num_rows
        self.shuffled = bool(shuffle_buffer_size)
        self.epoch_hooks = [transform.set_epoch, *epoch_hooks]
        self.rank = rank
        self.start = {"epoch": 0, "rows": 0, "dataset": None}
        self.batches = 0  # batches handed out since `start`
        self._positions = {}  # batches handed out -> position after them

    def resume_from(self, position: dict, batches: int):
        """Continue after `batches` batches, at `position` (from `position_after` of the interrupted run)."""
        self.start, self.batches, self._positions = dict(position), batches, {}

    def position_after(self, batches: int) -> dict:
        """Where the stream stood once `batches` batches had been handed out; forgets the positions before."""
        if batches == self.batches and not self._positions:
            return dict(self.start)
        if batches not in self._positions:
            raise RuntimeError(f"the stream position after batch {batches} was not recorded (reached: {self.batches}).")
        self._positions = {key: value for key, value in self._positions.items() if key >= batches}
        return self._positions[batches]

    def _epoch_rows(self, epoch: int, skip: int, state):
        self.dataset.set_epoch(epoch)
        if not skip:
            return self.dataset
        if not self.shuffled:
            self.dataset.load_state_dict(state)
            return self.dataset
        rest = self.dataset.skip(skip)
        rest.set_epoch(epoch)
        return rest

    def __iter__(self):
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError(
                "StreamingTrainingData is read in the main process, where its position is saved with each "
                "checkpoint: set dataloader_num_workers=0 (--dataloader_num_workers 0)."
            )
        epoch, skip, state = self.start["epoch"], self.start["rows"], self.start["dataset"]
        rows = []  # a last partial batch of an epoch is completed with the first rows of the next one
        while True:
            for hook in self.epoch_hooks:
                hook(epoch)
            stream, read = self._epoch_rows(epoch, skip, state), skip
            for row in stream:
                rows.append(row)
                read += 1
                if len(rows) < self.batch_size:
                    continue
                batch = self.transform({key: [row[key] for row in rows] for key in rows[0]})
                self.batches += 1
                self._positions[self.batches] = {
                    "epoch": epoch,
                    "rows": read,
                    "dataset": None if self.shuffled else stream.state_dict(),
                }
                rows = []
                for i in range(len(batch["labels"])):
                    yield {key: value[i] for key, value in batch.items()}
            if read == 0:
                raise ValueError("the training stream is empty: no rows to train on.")
            epoch, skip, state = epoch + 1, 0, None


class StreamingEvalData(torch.utils.data.IterableDataset):
    """A streamed evaluation or test split, featurised row by row with a deterministic `transform`.

    A plain torch `IterableDataset` on purpose: accelerate then gives every process the same number of batches
    (`IterableDatasetShard`, padded at the end, which `Trainer` trims), where shards of unequal size would leave one
    process waiting for the others. Every process reads the whole split for that.
    """

    def __init__(self, dataset: IterableDataset, transform: "AudioFeatureTransform"):
        self.dataset = dataset
        self.transform = transform

    def __iter__(self):
        for row in self.dataset:
            batch = self.transform({key: [value] for key, value in row.items()})
            yield {key: value[0] for key, value in batch.items()}

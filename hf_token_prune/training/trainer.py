"""`PrunedModelTrainer`: a `Trainer` with the optimiser details of the paper's recipes (layer-wise learning-rate decay,
AST's step decay, warm-up in epochs), strict checkpoint reloading and the pruned-model card."""

import os

import torch
from transformers import Trainer

from .callbacks import KeepRateScheduleCallback
from .optimization import layer_decay_parameter_groups, step_decay_lambda


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
    instead of transformers' generic card. A streamed training split trains with `training.StreamingTrainer`.
    """

    def __init__(self, *args, layer_decay: float | None = None, lr_step_decay=None, warmup_epochs=None, **kwargs):
        super().__init__(*args, **kwargs)
        if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay={layer_decay} is invalid: it must lie in (0, 1] (AudioMAE uses 0.75).")
        self.layer_decay = layer_decay
        self.lr_step_decay = lr_step_decay
        self.warmup_epochs = warmup_epochs
        self.model_card = None
        self.update_steps_per_epoch = None
        # Callbacks run in order: put the keep-rate schedule first, so that every reporter sees `keep_rate` in the logs.
        schedules = self.keep_rate_schedules()
        for schedule in schedules:
            self.callback_handler.callbacks.remove(schedule)
        self.callback_handler.callbacks[:0] = schedules

    def keep_rate_schedules(self) -> list[KeepRateScheduleCallback]:
        return [cb for cb in self.callback_handler.callbacks if isinstance(cb, KeepRateScheduleCallback)]

    def count_update_steps_per_epoch(self, counted: int) -> int:
        """Optimizer steps per epoch, given `Trainer`'s count from the training data loader."""
        return counted

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        self.update_steps_per_epoch = self.count_update_steps_per_epoch(values[1])
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


    def end_distributed_run(self):
        """End a distributed run as torch documents it (destroy the process group), so a finished run exits cleanly.

        Left to the interpreter's shutdown, gloo's worker threads may still hold tensors there and abort the process
        (SIGABRT) now and then after everything was saved. The DDP wrapper is let go first: its reducer holds the
        group, and a group freed while a worker waits for the GIL deadlocks. Afterwards the trainer's model (the
        unwrapped one) can still be read and saved on this process, but nothing that talks to the other processes
        runs: no evaluate, predict or train. `hf-token-prune finetune` calls it at the process's exit."""
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            return
        self.accelerator.wait_for_everyone()
        self.model_wrapped = self.model
        self.accelerator.free_memory()
        self.accelerator.end_training()

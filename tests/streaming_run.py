"""A tiny streamed fine-tuning run, launched by test_streaming.py under torchrun with 2 processes (gloo on CPU).

    python -m torch.distributed.run --nproc_per_node 2 tests/streaming_run.py <audioset copy> <output_dir> \\
        [--stop_at STEP] [--resume CHECKPOINT]
"""

import argparse
import json
import os

import torch
from transformers import ASTFeatureExtractor, TrainerCallback, TrainingArguments, set_seed

from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification
from hf_token_prune.data import (
    AudioFeatureTransform,
    SpecAugment,
    StreamingEvalData,
    StreamingTrainingData,
    load_audio_classification,
)
from hf_token_prune.training import KeepRateScheduleCallback, StreamingTrainer


class StopAt(TrainerCallback):
    """Interrupt the run right after the checkpoint of step `step` is written."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("output_dir")
    parser.add_argument("--stop_at", type=int)
    parser.add_argument("--resume")
    options = parser.parse_args()
    torch.set_num_threads(1)
    args = TrainingArguments(
        output_dir=options.output_dir,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        num_train_epochs=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_steps=4,
        save_strategy="steps",
        report_to="none",
        use_cpu=True,
        seed=0,
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    set_seed(0)
    data = load_audio_classification("audioset", source=options.source, config_name="unbalanced", streaming=True)
    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=48, mean=-4.27, std=4.57)
    config = PrunedASTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        num_mel_bins=32,
        max_length=48,
        pruning_layers=[1, 2],
        num_labels=len(data.label_names),
        problem_type="multi_label_classification",
    )
    model = PrunedASTForAudioClassification(config)
    augmentation = SpecAugment(freq_mask=8, time_mask=8, fill_value=0.0)
    transform = AudioFeatureTransform(extractor, len(data.label_names), True, True, [augmentation], seed=0)
    schedule = KeepRateScheduleCallback(0.5, 0.5, 1.0, augmentations=[augmentation])
    train = StreamingTrainingData(
        data.train,
        transform,
        batch_size=args.per_device_train_batch_size,
        num_rows=data.num_rows["train"],
        shuffle_buffer_size=5,
        max_buffer_input_shards=1,  # datasets pauses 5 s after each pass that interleaves shards
        seed=args.seed,
        rank=args.process_index,
        world_size=args.world_size,
        epoch_hooks=[schedule.augment_epoch],
    )
    plain = AudioFeatureTransform(extractor, len(data.label_names), True, True)
    callbacks = [schedule] + ([StopAt(options.stop_at)] if options.stop_at else [])
    trainer = StreamingTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=StreamingEvalData(data.eval, plain),
        processing_class=extractor,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=options.resume)
    if not options.stop_at:
        write_summary(trainer, StreamingEvalData(data.test, plain))
    trainer.end_distributed_run()


def write_summary(trainer, test_data):
    output = trainer.predict(test_data)
    if trainer.is_world_process_zero():
        trainer.save_model()
        summary = {
            "max_steps": trainer.state.max_steps,
            "steps_per_epoch": trainer.streaming_steps_per_epoch,
            "world_size": trainer.args.world_size,
            "log": [entry for entry in trainer.state.log_history if "loss" in entry],
            "test_predictions": output.predictions.shape[0],
        }
        with open(os.path.join(trainer.args.output_dir, "summary.json"), "w") as handle:
            json.dump(summary, handle)


if __name__ == "__main__":
    main()

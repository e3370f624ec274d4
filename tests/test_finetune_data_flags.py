"""The fine-tuning recipe on the benchmarks' own layouts: Speech Commands' official archive (the card names its test
set), the Hub copy's test split refused, and a streamed AudioSet-layout run."""

import json

import pytest
from huggingface_hub import ModelCard
from transformers import ASTFeatureExtractor

from conftest import TINY_SCHEDULE, tiny_ast_kwargs
from hf_token_prune import PrunedASTConfig, PrunedASTForAudioClassification

from test_official_layouts import hub_speech_commands, speech_commands_archive
from test_streaming import audioset_copy


TINY = [
    "--config_overrides", "hidden_size=32,num_hidden_layers=4,num_attention_heads=2,intermediate_size=64",
    "--pruning_layers", "1,2", "--num_mel_bins", "32", "--num_frames", "48", "--per_device_train_batch_size", "4",
    "--keep_rate", "0.5", "--eval_keep_rates", "1.0,0.5", "--report_to", "none", *TINY_SCHEDULE,
]  # fmt: skip


@pytest.fixture(scope="module")
def finetune():
    from hf_token_prune.commands import finetune as finetuning

    return finetuning


def test_speech_commands_archive_run_names_its_test_set(finetune, tmp_path):
    speech_commands_archive(tmp_path / "archive", clips_per_word=3)
    output = tmp_path / "out"
    finetune.main(
        ["--dataset_name", "speech_commands", "--dataset_source", str(tmp_path / "archive"), "--output_dir",
         str(output), "--max_train_samples", "8", "--max_eval_samples", "8", *TINY]
    )
    card = ModelCard.load(output / "README.md")
    assert "testing_list.txt of the official speech_commands_v0.02 archive" in card.text


def test_hub_speech_commands_recipe_refuses_its_test_split(finetune, tmp_path):
    hub_speech_commands(tmp_path / "hub")
    checkpoint = tmp_path / "tiny-ast"
    PrunedASTForAudioClassification(PrunedASTConfig(**tiny_ast_kwargs())).save_pretrained(checkpoint)
    ASTFeatureExtractor(num_mel_bins=64, max_length=128).save_pretrained(checkpoint)
    with pytest.raises(SystemExit) as error:
        finetune.main(["--recipe", "ast-speechcommands", "--dataset_source", str(tmp_path / "hub"), "--model_name_or_path",
                       str(checkpoint), "--output_dir", str(tmp_path / "out")])
    message = str(error.value)
    assert message.startswith("finetune: ") and "12-class test set" in message and "--accept_hub_test_split" in message


@pytest.mark.full
def test_streamed_run_counts_epochs_in_steps(finetune, tmp_path):
    source = audioset_copy(tmp_path / "audioset")
    output = tmp_path / "out"
    trainer = finetune.main(
        ["--dataset_name", "audioset", "--dataset_source", str(source), "--dataset_config_name", "unbalanced",
         "--streaming", "true", "--shuffle_buffer_size", "8", "--eval_strategy", "epoch", "--save_strategy", "epoch",
         "--output_dir", str(output), *TINY]
    )
    # "every epoch" is every 6 steps of the stream: evaluated and checkpointed (with the stream position) twice
    assert [entry["step"] for entry in trainer.state.log_history if "eval_loss" in entry] == [6, 12]
    assert (output / "checkpoint-6" / "stream_position_rank0.json").is_file()
    # 24 rows (the card's dataset_info) / 4 per step = 6 steps per epoch, 2 epochs
    assert trainer.state.max_steps == 12 and trainer.state.global_step == 12
    assert trainer.state.epoch == pytest.approx(2.0)
    results = json.loads((output / "keep_rate_sweep.json").read_text())
    assert [row["keep_rate"] for row in results] == [1.0, 0.5]
    card = ModelCard.load(output / "README.md")
    assert "'test' split of" in card.text
    with pytest.raises(SystemExit, match="dataloader_num_workers 2"):
        finetune.main(["--dataset_name", "audioset", "--dataset_source", str(source), "--dataset_config_name",
                       "unbalanced", "--streaming", "true", "--dataloader_num_workers", "2", "--output_dir",
                       str(tmp_path / "o2"), *TINY])

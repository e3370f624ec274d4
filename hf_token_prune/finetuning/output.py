"""The output folder of a run: trained in a staging folder beside it, resumed from its checkpoints, and moved in
whole once the model, its card and results are written (rescued elsewhere when writing fails)."""

import math
import shutil
import tempfile
from pathlib import Path

from safetensors import SafetensorError

from ..checks import one_line
from ..files import check_output_dir, commit


def staging_folder(output_dir) -> Path:
    """Where a run trains and saves before its output folder appears whole: `<output_dir>.partial` beside it (its
    checkpoints are what `--resume_from_checkpoint true` resumes after an interruption)."""
    output_dir = Path(output_dir).expanduser()
    return output_dir.with_name(output_dir.name + ".partial")


def prepare_output_dir(recipe, training_args) -> Path:
    """Refuse, before any training, an output folder the run could not write whole; point the Trainer at the staging
    folder. Returns the final output folder."""
    target = Path(training_args.output_dir).expanduser()
    check_output_dir(target, recipe.overwrite_output_dir)
    staging = staging_folder(target)
    if staging.exists() and not staging.is_dir():
        raise ValueError(f"{staging} is a file; this run trains in a folder of that name: move the file away.")
    if staging.is_dir() and any(staging.iterdir()) and training_args.resume_from_checkpoint is None:
        if not recipe.overwrite_output_dir:
            raise ValueError(
                f"{staging} holds an interrupted run: resume it with --resume_from_checkpoint true (its last "
                "checkpoint), or pass --overwrite_output_dir to delete it and start over."
            )
        with training_args.main_process_first(desc="removing the interrupted run"):
            shutil.rmtree(staging, ignore_errors=True)
    if training_args.push_to_hub and training_args.hub_model_id is None:
        training_args.hub_model_id = target.absolute().name  # the Trainer would name the repo after the staging folder
    training_args.output_dir = str(staging)
    return target


def resume_checkpoint(value, model, staging):
    """`--resume_from_checkpoint` checked against the model before training: `true` is the staging folder's last
    checkpoint; a path must be a complete Trainer checkpoint of this architecture."""
    from safetensors import SafetensorError, safe_open
    from transformers.trainer_utils import get_last_checkpoint

    if value is None:
        return None
    if value.lower() in ("true", "last"):
        path = get_last_checkpoint(staging) if staging.is_dir() else None
        if path is None:
            raise ValueError(
                f"--resume_from_checkpoint {value}: {staging} holds no checkpoint to resume; give a checkpoint folder."
            )
    else:
        path = value
    path = Path(path)
    flag = f"--resume_from_checkpoint {value}"
    if not path.is_dir():
        raise ValueError(f"{flag}: no such checkpoint folder (give one like {staging}/checkpoint-500).")
    if not (path / "trainer_state.json").is_file() or not (path / "model.safetensors").is_file():
        raise ValueError(
            f"{flag}: not a complete checkpoint (no trainer_state.json or model.safetensors; the run was probably "
            "killed while saving it): resume from the checkpoint before it."
        )
    try:
        with safe_open(path / "model.safetensors", "pt") as weights:
            saved = sorted(tuple(weights.get_slice(key).get_shape()) for key in weights.keys())
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{flag}: its model.safetensors is damaged ({one_line(error)}): resume from an earlier one.")
    # Checkpoints may store weights under a model's legacy names (transformers' conversion mapping): compare shapes.
    expected = sorted(tuple(tensor.shape) for tensor in model.state_dict().values())
    if saved != expected:
        raise ValueError(
            f"{flag}: it holds another architecture than this run builds ({len(saved)} weights, "
            f"{sum(math.prod(shape) for shape in saved):,} values; this run's model: {len(expected)}, "
            f"{sum(math.prod(shape) for shape in expected):,}): resume with the flags and --model_name_or_path of "
            "its run."
        )
    return str(path)


def save_final_model(trainer, target, write_outputs):
    """The trained model, card and results into the staging folder, which then becomes `target` whole. If writing
    fails (full disk, no permission), the trained weights go to a folder under the system temp folder, named in the
    error."""
    try:
        trainer.save_model()
        if trainer.is_world_process_zero():
            write_outputs()
            commit(trainer.args.output_dir, target)
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error
        if not trainer.is_world_process_zero():
            raise
        kept = rescue(trainer)
        if kept.startswith("the trained model is saved in"):  # safe elsewhere: free the disk of the unfinished folder
            shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
        raise OSError(f"could not write the trained model to {target} ({one_line(error)}); {kept}") from None
    trainer.args.output_dir = str(target)


def rescue(trainer) -> str:
    """Save the trained model somewhere else, and say where (or where its last checkpoint is)."""
    folder = None
    try:
        folder = tempfile.mkdtemp(prefix="hf-token-prune-rescued-")
        trainer.model.save_pretrained(folder)
        trainer.processing_class.save_pretrained(folder)
    except (OSError, SafetensorError):
        last = trainer.state.best_model_checkpoint or (trainer.state.global_step and trainer.args.output_dir)
        return (f"saving a copy in {folder or 'the temp folder'} failed too: the last checkpoint is in {last}"
                if last else "saving a copy in the temp folder failed too: nothing could be kept")
    return f"the trained model is saved in {folder}: free space or fix permissions, then move it where you want it"

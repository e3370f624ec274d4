"""What users name on the command line, checked before anything loads: each mistake is one `ValueError` naming the
problem and the fix, which the scripts print as one line (never a traceback).

transformers and datasets read any name that is not a local folder as a Hub id, so a mistyped folder otherwise ends
in a network error ("We couldn't connect to 'https://huggingface.co'") or, offline, in a cache miss.
"""

import argparse
import difflib
import functools
import math
import os
import sys
from pathlib import Path

from .errors import one_line
from .keep_rate import is_keep_rate


# What a model folder holds, as `save_pretrained` writes it: role -> (accepted files, the name given in errors).
MODEL_FILES = {
    "config": (("config.json",), "config.json"),
    "weights": (
        ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"),
        "weights (model.safetensors)",
    ),
    "feature_extractor": (("preprocessor_config.json",), "a feature extractor (preprocessor_config.json)"),
}


def _hub_id_shaped(name: str) -> bool:
    """Whether `name` could be a Hub repo id ("name" or "owner/name"); paths like ./x, /x, ~/x or a/b/c cannot."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def names_local_path(name: str) -> bool:
    """Whether `name` names a local path rather than a Hub id: it exists, it cannot be a repo id, or its first part
    ("outputs" of "outputs/demoo") is a local folder. Such a name never reaches the Hub, so a typo is reported at once,
    online too."""
    path = Path(name).expanduser()
    first = path.parts[0] if name else ""
    return path.exists() or not _hub_id_shaped(name) or ("/" in name and Path(first).is_dir())


def _closest_folder_hint(path: Path) -> str:
    parent = path.parent if path.parent.is_dir() else None
    folders = [child.name for child in parent.iterdir() if child.is_dir()] if parent else []
    close = difflib.get_close_matches(path.name, folders, n=1)
    return f" Did you mean {path.parent / close[0]}?" if close else ""


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def check_model(name, needs=("config", "weights", "feature_extractor"), cache_dir=None, flag="--model_name_or_path"):
    """Refuse a model name that cannot load: a missing folder ("no such folder", not a network error), a folder
    without the files in `needs` (names what it lacks), a Hub id that is not cached while offline."""
    path = Path(name).expanduser()
    if path.is_dir():
        missing = [MODEL_FILES[role][1] for role in needs if not any((path / f).is_file() for f in MODEL_FILES[role][0])]
        if missing:
            raise ValueError(
                f"{flag} {name}: the folder is not a model, it lacks {' and '.join(missing)}. Give a folder written by "
                "save_pretrained (a fine-tuned model, e.g. outputs/demo after `make demo`), feature extractor included."
            )
        return
    if path.exists():
        raise ValueError(f"{flag} {name}: a file, not a model folder; give the folder save_pretrained wrote.")
    if names_local_path(name):
        raise ValueError(f"{flag} {name}: no such folder.{_closest_folder_hint(path)}")
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json", cache_dir=cache_dir), str):
            raise ValueError(
                f"{flag} {name}: no such folder, and the Hub model {name} is not in the cache while offline "
                "(HF_HUB_OFFLINE=1): give a local model folder, or download the model once online."
            )


def audio_extensions():
    """The file types `datasets`' audiofolder reads."""
    from datasets.packaged_modules.audiofolder.audiofolder import AudioFolder

    return tuple(AudioFolder.EXTENSIONS)


def check_audio_folder(data_dir, flag="--data_dir"):
    """Refuse an audio folder that does not exist or holds no audio file (of any type audiofolder reads)."""
    if data_dir is None:
        raise ValueError(f"an audiofolder dataset needs {flag}: the folder of <split>/<label>/<clip> audio files.")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise ValueError(f"{flag} {data_dir}: no such folder.")
    extensions = audio_extensions()
    for _, _, files in os.walk(path):
        if any(file.lower().endswith(extensions) for file in files):
            return
    raise ValueError(
        f"{flag} {data_dir}: the folder holds no audio files ({', '.join(sorted(e[1:] for e in extensions)[:8])}, "
        "...): an audio folder is laid out <split>/<label>/<clip>.wav (or .flac, .mp3, ...)."
    )


def parse_keep_rates(text: str) -> list[float]:
    """Keep rates from a command-line list such as ``"1.0,0.7,0.5"``; ``ValueError`` names what is wrong."""
    try:
        rates = [float(value) for value in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{text!r}: give comma-separated keep rates in (0, 1], e.g. 1.0,0.7,0.5") from None
    bad = [rate for rate in rates if not is_keep_rate(rate)]
    if bad:
        raise ValueError(f"{text!r} contains {bad}: every keep rate must lie in (0, 1].")
    return rates


def keep_rates_argument(text):
    """argparse type: a comma-separated list of keep rates (:func:`parse_keep_rates`)."""
    try:
        return parse_keep_rates(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def keep_rate_argument(text):
    """argparse type: one keep rate in (0, 1]."""
    rates = keep_rates_argument(text)
    if len(rates) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one keep rate in (0, 1], e.g. 0.7")
    return rates[0]


def _whole_number(text, minimum):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value}: give a whole number >= {minimum}")
    return value


def positive_int(text):
    """argparse type: a whole number >= 1 (counts of threads, classes, windows per batch)."""
    return _whole_number(text, 1)


def non_negative_int(text):
    """argparse type: a whole number >= 0 (rounds, retries)."""
    return _whole_number(text, 0)


def positive_seconds(text):
    """argparse type: a finite duration > 0 in seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a finite number of seconds > 0")
    return value


def unknown_arguments_error(parser, unknown):
    """argparse's usage error for flags `parser` does not know, with the closest known flag as a hint."""
    known = [option for action in parser._actions for option in action.option_strings]
    hints = []
    for argument in unknown:
        if argument.startswith("--"):
            flag = "--" + argument[2:].split("=")[0].replace("-", "_")
            match = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
            hints += [f"{argument} -> {match[0]}"] if match else []
    hint = f" (did you mean: {'; '.join(hints)}?)" if hints else ""
    parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")


class DidYouMean:
    """Mixin for an argparse parser class: an unknown flag or a mistyped choice is a usage error naming the closest
    flag or choice (:func:`suggesting` adds it to any parser class)."""

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            unknown_arguments_error(self, unknown)
        return parsed

    def _check_value(self, action, value):
        # argparse's own check of `choices`, the one place that knows the value and the action it was given to
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as error:
            close = difflib.get_close_matches(str(value), [str(choice) for choice in action.choices], n=1)
            if not close:
                raise
            raise argparse.ArgumentError(action, f"{error.message} (did you mean {close[0]}?)") from None


@functools.cache
def suggesting(parser_class):
    """``parser_class`` (argparse's, or a subclass such as transformers' HfArgumentParser) with :class:`DidYouMean`."""
    return type(parser_class.__name__, (DidYouMean, parser_class), {})


# The release that drops the old spellings of renamed flags.
RENAMED_FLAGS_REMOVED_IN = "0.3"


class DeprecatedSpelling(argparse.Action):
    """argparse's "store" that says on stderr when a flag is given by an old spelling: ``notice`` with ``{old}``, the
    spelling given, and ``{new}``, the ``replacement`` (default: the action's first option string, whose use says
    nothing)."""

    def __init__(self, option_strings, dest, notice="{old} is deprecated, use {new}", replacement=None, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.notice = notice
        self.replacement = replacement or option_strings[0]

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string != self.replacement:
            print(self.notice.format(old=option_string, new=self.replacement), file=sys.stderr)
        setattr(namespace, self.dest, values)


class CommandParser(suggesting(argparse.ArgumentParser)):
    """The parser of every `hf-token-prune` command: "did you mean" for unknown flags and mistyped choices, and
    renamed flags whose old spellings still work for one release. `command` starts its deprecation lines, as the
    error boundary (:func:`hf_token_prune.errors.command`) starts its errors."""

    def __init__(self, command: str, **kwargs):
        super().__init__(**kwargs)
        self.command = command

    def add_renamed_argument(self, name, *old_names, help, **kwargs):
        """``add_argument(name, ...)`` that also accepts ``old_names`` (deprecated: each use says so on stderr)."""
        old = ", ".join(old_names)
        help = f"{help} ({old}: its old name, removed in hf-token-prune {RENAMED_FLAGS_REMOVED_IN})"
        notice = (
            f"{self.command}: {{old}} is deprecated, use {{new}} (removed in hf-token-prune {RENAMED_FLAGS_REMOVED_IN})"
        )
        return self.add_argument(name, *old_names, action=DeprecatedSpelling, notice=notice, help=help, **kwargs)

    def add_keep_policy_arguments(self, item="clip"):
        """``--keep_mass`` and ``--min_keep_rate``: the per-sample keep policy of one call, each ``item`` (a clip, a
        window) keeping its own count of tokens."""
        self.add_argument("--keep_mass", type=keep_rate_argument,
                          help=f"per-{item} keep policy in (0, 1]: each pruning layer keeps the fewest best-scored "
                          f"tokens holding this share of the {item}'s score mass, at most the keep rate (default: the "
                          "model's own; token_reduction prune only)")  # fmt: skip
        self.add_argument("--min_keep_rate", type=keep_rate_argument,
                          help=f"floor of the per-{item} policy in (0, keep rate]: every {item} keeps at least this "
                          "fraction of its tokens (default: the model's own, else one token)")  # fmt: skip


__all__ = [
    "CommandParser", "DeprecatedSpelling", "DidYouMean", "check_audio_folder", "check_model", "keep_rate_argument",
    "keep_rates_argument", "names_local_path", "non_negative_int", "one_line", "parse_keep_rates", "positive_int",
    "positive_seconds", "suggesting", "unknown_arguments_error",
]

"""The one definition of a valid keep rate, importing nothing: the commands check a keep rate given on the command
line before they load torch. Remote code (pruning_config.py imports it)."""


def is_keep_rate(value) -> bool:
    """The one definition of a valid keep rate in the package: a number in (0, 1]."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 < value <= 1.0


__all__ = ["is_keep_rate"]

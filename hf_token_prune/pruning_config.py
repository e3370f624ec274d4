"""Validation of the pruning fields every pruned config carries, and the config mixin that applies it.

Each check raises one ``ValueError`` naming the bad value and the fix. Remote code: nothing but torch and
transformers (and no command line).
"""

from .scores import TOKEN_SCORES
from .token_reductions import (
    get_token_reduction, keep_mass_token_reductions, padding_token_reductions, validate_token_reduction,
)


# The fields that decide how a model reduces tokens; changed together through ``update_reduction``.
REDUCTION_SETTINGS = (
    "keep_rate", "pruning_layers", "token_score", "token_reduction", "drop_padding", "keep_mass", "min_keep_rate",
)


def is_keep_rate(value) -> bool:
    """The one definition of a valid keep rate in the package: a number in (0, 1]."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 < value <= 1.0


def check_keep_rate(keep_rate, name="keep_rate"):
    """``keep_rate`` if :func:`is_keep_rate`, else a ``ValueError`` naming ``name`` and the range."""
    if not is_keep_rate(keep_rate):
        raise ValueError(
            f"{name}={keep_rate!r} is invalid: it must be a number in (0, 1], the fraction of patch tokens each "
            "pruning layer keeps (1.0 disables pruning)."
        )
    return keep_rate


def default_pruning_layers(num_hidden_layers: int) -> list[int]:
    """The paper's pruning positions at any depth: 0-based layers ``floor(k * num_hidden_layers / 4)`` for k = 1, 2, 3.

    That is the paper's 3, 6, 9 of 12 layers, 1, 3, 4 of 6, 6, 12, 18 of 24; repeats collapse (0, 1 of 2 layers).
    """
    return sorted({k * num_hidden_layers // 4 for k in (1, 2, 3)})


def validate_pruning_config(keep_rate, pruning_layers, token_score, num_hidden_layers):
    """Raise ``ValueError`` naming the bad value and the allowed range; shared by every pruned config."""
    check_keep_rate(keep_rate)
    if not isinstance(pruning_layers, (list, tuple)) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in pruning_layers
    ):
        raise ValueError(
            f"pruning_layers={pruning_layers!r} is invalid: it must be a list of 0-based layer indices, e.g. [3, 6, 9]."
        )
    out_of_range = [i for i in pruning_layers if not 0 <= i < num_hidden_layers]
    if out_of_range:
        raise ValueError(
            f"pruning_layers={list(pruning_layers)!r} contains {out_of_range}, outside the model's layers: indices "
            f"must lie in [0, {num_hidden_layers - 1}] (num_hidden_layers={num_hidden_layers})."
        )
    if list(pruning_layers) != sorted(set(pruning_layers)):
        raise ValueError(
            f"pruning_layers={list(pruning_layers)!r} is invalid: indices must be sorted and unique, e.g. "
            f"{sorted(set(pruning_layers))}."
        )
    if token_score not in TOKEN_SCORES:
        raise ValueError(f"token_score={token_score!r} is invalid: choose one of {', '.join(TOKEN_SCORES)}.")
    if keep_rate < 1.0 and not pruning_layers:
        raise ValueError(
            f"keep_rate={keep_rate!r} prunes nothing: pruning_layers is empty. Give 0-based layers to prune in, e.g. "
            f"{default_pruning_layers(num_hidden_layers)} (the default for num_hidden_layers={num_hidden_layers}), "
            "or keep_rate=1.0."
        )


def validate_drop_padding(drop_padding, token_reduction):
    """``drop_padding`` is a bool, and only a method that carries a padding mask can run it in a mixed batch."""
    if not isinstance(drop_padding, bool):
        raise ValueError(f"drop_padding={drop_padding!r} is invalid: it must be True or False.")
    if drop_padding and not get_token_reduction(token_reduction).supports_padding:
        raise ValueError(
            f"drop_padding=True is not supported with token_reduction={token_reduction!r}: in a batch of mixed lengths "
            f"a padded slot must never be fused or merged into a real token, and only "
            f"{', '.join(padding_token_reductions())} carries the padding mask. Use token_reduction='prune', or "
            "drop_padding=False."
        )


def validate_keep_mass(keep_mass, min_keep_rate, keep_rate, token_reduction):
    """The per-sample keep policy: ``keep_mass`` and its floor ``min_keep_rate`` are ``None`` or in (0, 1], the floor
    at most the ceiling ``keep_rate``, and the method must be able to keep a different count in every sample."""
    for name, value in (("keep_mass", keep_mass), ("min_keep_rate", min_keep_rate)):
        if value is not None and not is_keep_rate(value):
            raise ValueError(
                f"{name}={value!r} is invalid: it must be None or a number in (0, 1]"
                + (", the score mass each pruning layer keeps per sample." if name == "keep_mass" else
                   ", the fraction of its patch tokens every sample keeps at least.")
            )
    if min_keep_rate is not None and min_keep_rate > keep_rate:
        raise ValueError(
            f"min_keep_rate={min_keep_rate!r} is above keep_rate={keep_rate!r}: the floor of the per-sample keep "
            "policy must not exceed its ceiling; lower min_keep_rate or raise keep_rate."
        )
    method = get_token_reduction(token_reduction)
    if keep_mass is not None and not method.supports_keep_mass:
        raise ValueError(
            f"keep_mass={keep_mass!r} is not supported with token_reduction={token_reduction!r}: "
            f"{method.keep_mass_refusal} Use token_reduction={' or '.join(map(repr, keep_mass_token_reductions()))}, "
            "or keep_mass=None."
        )


class PruningConfigMixin:
    """Validation of the pruning fields (``REDUCTION_SETTINGS``) for a transformers config class.

    Fields are validated at construction and before every later assignment (``from_pretrained(..., keep_rate=x)``
    assigns after ``__init__``), so a refused value never lands. Fields that only make sense together (a method and
    the score it needs) change at once through :meth:`update_reduction`. ``pruning_layers=None`` (the default, and
    what a stock checkpoint's config gives) becomes ``default_pruning_layers(num_hidden_layers)``.

    A family's config also states its geometry: ``num_extra_tokens`` (front tokens never reduced) and
    ``patch_layout()``.
    """

    # The per-sample keep policy is off unless a family's config declares the fields (both built-in families do):
    # a family written before it needs no change.
    keep_mass = None
    min_keep_rate = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.pruning_layers is None:
            self.pruning_layers = default_pruning_layers(self.num_hidden_layers)
        elif isinstance(self.pruning_layers, tuple):
            self.pruning_layers = list(self.pruning_layers)
        self._validate_pruning()

    def __setattr__(self, name, value):
        if (name in REDUCTION_SETTINGS or name == "num_hidden_layers") and getattr(self, "_post_init_done", False):
            self._validate_pruning(**{name: value})
        super().__setattr__(name, value)

    def to_diff_dict(self):
        # transformers writes every field its base config lacks, even at its default; the per-sample policy's fields
        # came after models were saved, so they are left out while off and a saved config.json stays as it was.
        diff = super().to_diff_dict()
        for name in ("keep_mass", "min_keep_rate"):
            if name in diff and diff[name] is None:
                del diff[name]
        return diff

    def update_reduction(self, **settings):
        """Set several of ``REDUCTION_SETTINGS`` at once, validated together: all land or none (``ValueError``)."""
        unknown = sorted(set(settings) - set(REDUCTION_SETTINGS))
        if unknown:
            raise ValueError(f"unknown reduction settings {unknown}: choose from {', '.join(REDUCTION_SETTINGS)}.")
        self._validate_pruning(**settings)
        for name, value in settings.items():
            super().__setattr__(name, value)

    def _validate_pruning(self, **changes):
        """Validate the pruning fields with ``changes`` applied, without applying them."""
        value = {name: changes.get(name, getattr(self, name)) for name in (*REDUCTION_SETTINGS, "num_hidden_layers")}
        validate_pruning_config(value["keep_rate"], value["pruning_layers"], value["token_score"],
                                value["num_hidden_layers"])
        validate_token_reduction(value["token_reduction"], value["token_score"])
        validate_drop_padding(value["drop_padding"], value["token_reduction"])
        validate_keep_mass(value["keep_mass"], value["min_keep_rate"], value["keep_rate"], value["token_reduction"])

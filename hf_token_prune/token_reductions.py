"""The registry of token reduction methods: config validation, the models, the MAC counter, the sweep and the commands
all look a method up here by its ``token_reduction`` name.

A new method is one module implementing :class:`reduction.TokenReduction` plus one entry in ``_BUILT_IN`` (or one
:func:`register_token_reduction` call, e.g. from a user's own code). Remote code: torch only.
"""

from .method_fuse import FUSE
from .method_merge import MERGE
from .method_prune import PRUNE
from .reduction import TokenReduction


_BUILT_IN = (PRUNE, FUSE, MERGE)
TOKEN_REDUCTIONS: dict[str, TokenReduction] = {method.name: method for method in _BUILT_IN}


def register_token_reduction(method: TokenReduction) -> TokenReduction:
    """Make ``method`` a valid ``token_reduction`` under ``method.name`` (replacing a method of that name)."""
    if not isinstance(method, TokenReduction) or not isinstance(getattr(method, "name", None), str):
        raise TypeError(f"{method!r} is not a TokenReduction instance with a name: subclass reduction.TokenReduction.")
    TOKEN_REDUCTIONS[method.name] = method
    return method


def token_reduction_names() -> tuple[str, ...]:
    """The registered method names, built-ins first (the valid choices of every command)."""
    return tuple(TOKEN_REDUCTIONS)


def padding_token_reductions() -> tuple[str, ...]:
    """The methods that carry a padding mask (the only ones ``drop_padding`` and a masked batch can use)."""
    return tuple(name for name, method in TOKEN_REDUCTIONS.items() if method.supports_padding)


def keep_mass_token_reductions() -> tuple[str, ...]:
    """The methods that can keep a count of its own in every sample (the per-sample policy ``keep_mass``)."""
    return tuple(name for name, method in TOKEN_REDUCTIONS.items() if method.supports_keep_mass)


def get_token_reduction(name) -> TokenReduction:
    """The method registered as ``name``; ``ValueError`` naming the choices otherwise."""
    method = TOKEN_REDUCTIONS.get(name) if isinstance(name, str) else None
    if method is None:
        choices = "; ".join(method.summary for method in TOKEN_REDUCTIONS.values())
        raise ValueError(
            f"token_reduction={name!r} is invalid: choose one of {', '.join(TOKEN_REDUCTIONS)} ({choices})."
        )
    return method


def validate_token_reduction(token_reduction, token_score):
    """Raise ``ValueError`` for an unknown method, or a token score the method cannot use."""
    method = get_token_reduction(token_reduction)
    if method.attention_only is not None and token_score != "attention":
        reason = method.attention_only.format(score=token_score)
        raise ValueError(f"token_reduction={token_reduction!r} cannot use token_score={token_score!r}: {reason}")

"""Named ``torch.profiler`` regions of the pruned forward, so a profile shows where a reducing layer spends its time.

Every block runs inside ``attention`` and ``mlp``; a reducing layer adds ``token_scoring`` (inside ``attention``: the
score or keys its method asked for), ``reduction`` (the method's top-k / fuse / merge with its gathers) and
``bookkeeping`` (the per-forward tracker following the kept tokens). Read them back with
``torch.profiler.profile().key_averages()``, keyed by these names (:data:`REGIONS`). Outside a profiler, and in graphs
traced by torch.compile or torch.export, a region is a no-op. Remote code: torch only.
"""

import contextlib

import torch


ATTENTION = "hf_token_prune::attention"
TOKEN_SCORING = "hf_token_prune::token_scoring"
REDUCTION = "hf_token_prune::reduction"
BOOKKEEPING = "hf_token_prune::bookkeeping"
MLP = "hf_token_prune::mlp"
REGIONS = (ATTENTION, TOKEN_SCORING, REDUCTION, BOOKKEEPING, MLP)

_NO_REGION = contextlib.nullcontext()  # stateless, so one instance serves every region, nested ones too


def profile_region(name: str):
    """``torch.profiler.record_function(name)`` while a profiler records on this thread, else a null context.

    ``record_function`` alone costs a few microseconds per call even with no profiler running; the check costs a
    tenth of that. A traced graph never enters the region: dynamo folds ``is_compiling()`` to True.
    """
    if torch.compiler.is_compiling() or not torch.autograd._profiler_enabled():
        return _NO_REGION
    return torch.profiler.record_function(name)

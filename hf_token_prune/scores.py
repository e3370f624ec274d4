"""Token scores: how a pruning layer ranks the patch tokens it may drop (paper eq. 2a and 2b).

``"attention"`` is read from the layer's own attention (AST: the CLS query's, AudioMAE: the attention each patch
receives); ``"intensity"`` and ``"variation"`` are statistics of the model input (``PatchLayout.patch_statistics``);
``"random"`` is a control. Pure tensor functions on ``(batch, heads, seq, dim)`` attention tensors; remote code, so
torch only.
"""

import torch
import torch.nn.functional as F

from .profiling import TOKEN_SCORING, profile_region


TOKEN_SCORES = ("attention", "intensity", "variation", "random")


def _mask_padded_keys(logits: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """``logits`` ``(batch, heads, queries, keys)`` with padded keys (``token_mask`` False) at -inf."""
    if token_mask is None:
        return logits
    return logits.masked_fill(~token_mask[:, None, None, :], float("-inf"))


def cls_attention_score(
    query: torch.Tensor, key: torch.Tensor, scaling: float, num_extra_tokens: int, token_mask: torch.Tensor | None = None
):
    """Head-mean attention of the CLS query over the patch keys (paper eq. 2b), from ``(batch, heads, seq, dim)``.

    Only the CLS row of ``softmax(QK^T)`` is formed, so this costs O(n*d) and never needs the eager attention matrix.
    ``token_mask`` ``(batch, seq)``, False for padding, masks the keys as the attention itself does.
    """
    cls_logits = _mask_padded_keys(torch.matmul(query[:, :, :1], key.transpose(-1, -2)).float() * scaling, token_mask)
    cls_attention = cls_logits.softmax(dim=-1)[:, :, 0, num_extra_tokens:]
    return cls_attention.mean(dim=1)


def cls_attention_score_from_weights(attention_weights: torch.Tensor, num_extra_tokens: int):
    """The same score read from a full ``(batch, heads, seq, seq)`` attention matrix (eager attention)."""
    return attention_weights[:, :, 0, num_extra_tokens:].float().mean(dim=1)


def attention_with_received_score(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float, num_extra_tokens: int,
    chunk_size: int = 128, dropout: float = 0.0, token_mask: torch.Tensor | None = None,
):
    """Attention output ``(batch, seq, heads, dim)`` and the attention each patch receives (paper eq. 2a).

    The score averages ``softmax(QK^T)`` over heads and patch queries, with the softmax over all keys. Fused SDPA never
    returns those probabilities, and recomputing them costs as much again as the attention; so a pruning layer forms
    them once, ``chunk_size`` queries at a time (O(n * chunk_size) memory per head, never the n x n matrix), and uses
    them for both the output and the score. ``dropout`` (training only) applies to the output, not to the score.
    ``token_mask`` ``(batch, seq)``, False for padding: padded keys get no attention, padded queries give none.
    """
    key_transposed = key.transpose(-1, -2)
    query_weights = _patch_query_weights(query.shape[0], query.shape[2], num_extra_tokens, token_mask, query.device)
    outputs = []
    received = query.new_zeros(query.shape[0], query.shape[1], key.shape[2], dtype=torch.float32)
    for start in range(0, query.shape[2], chunk_size):
        logits = torch.matmul(query[:, :, start : start + chunk_size], key_transposed).float() * scaling
        probabilities = _mask_padded_keys(logits, token_mask).softmax(dim=-1)
        dropped = F.dropout(probabilities, p=dropout) if dropout > 0.0 else probabilities
        outputs.append(torch.matmul(dropped.to(value.dtype), value))
        with profile_region(TOKEN_SCORING):
            received += (probabilities * query_weights[:, None, start : start + chunk_size, None]).sum(dim=2)
    with profile_region(TOKEN_SCORING):
        score = received[:, :, num_extra_tokens:].mean(dim=1) / query_weights.sum(dim=1, keepdim=True)
    return torch.cat(outputs, dim=2).transpose(1, 2), score


def _patch_query_weights(batch_size, num_tokens, num_extra_tokens, token_mask, device):
    """``(batch, seq)`` float: 1 for the real patch queries whose attention a received score averages, else 0."""
    weights = torch.ones(batch_size, num_tokens, device=device)
    weights[:, :num_extra_tokens] = 0.0
    return weights if token_mask is None else weights * token_mask


def received_attention_score_from_weights(
    attention_weights: torch.Tensor, num_extra_tokens: int, token_mask: torch.Tensor | None = None
):
    """The same score read from a full ``(batch, heads, seq, seq)`` attention matrix (eager attention)."""
    batch_size, _, num_tokens, _ = attention_weights.shape
    query_weights = _patch_query_weights(batch_size, num_tokens, num_extra_tokens, token_mask, attention_weights.device)
    received = (attention_weights.float() * query_weights[:, None, :, None]).sum(dim=2).mean(dim=1)
    return received[:, num_extra_tokens:] / query_weights.sum(dim=1, keepdim=True)

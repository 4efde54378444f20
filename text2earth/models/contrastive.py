"""The SigLIP sigmoid loss with negatives from every rank.

Every image of the global batch is scored against every text of the global batch: a pair is positive on the
diagonal, negative elsewhere, and the loss is ``-sum log sigmoid(z * logit)`` over all pairs divided by the
*global* batch size. Each rank scores its own images against the texts of all ranks, gathered *with*
gradients (:class:`GatherWithGradients`: its backward sums every rank's gradient into the text that rank
contributed). Each rank returns ``its pairs' sum / its local batch``; DDP averages gradients
over ranks, so the update is the gradient of the global loss whatever the split (big_vision normalises the
same way). transformers' ``SiglipModel(return_loss=True)`` uses the local batch only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F


class GatherWithGradients(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward hands each rank the sum over ranks of the gradient of its slice.

    One all-reduce of the gathered gradient: works on every backend (gloo has no reduce-scatter).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def _gather_texts(text_embeds: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
    """All ranks' texts (differentiable), this rank's offset in them, and a mask of real (not padded) columns.

    Ranks may hold different batch sizes (the end of a stream): each pads to the largest, padded columns are
    masked out.
    """
    n = text_embeds.shape[0]
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return text_embeds, 0, torch.ones(n, dtype=torch.bool, device=text_embeds.device)
    sizes = [torch.zeros(1, dtype=torch.long, device=text_embeds.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([n], device=text_embeds.device))
    sizes_list = [int(s) for s in sizes]
    longest = max(sizes_list)
    padded = F.pad(text_embeds, (0, 0, 0, longest - n))
    gathered = GatherWithGradients.apply(padded)
    valid = torch.cat([torch.arange(longest, device=text_embeds.device) < s for s in sizes_list])
    return gathered, dist.get_rank() * longest, valid


def sigmoid_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    cross_rank: bool = True,
) -> torch.Tensor:
    """SigLIP loss of this rank's L2-normalised pairs (row i of both is a positive pair).

    ``logit_scale`` is the log temperature (logits are ``exp(logit_scale) * cosine + logit_bias``). With
    ``cross_rank`` and an initialised process group the negatives come from every rank.
    """
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(f"need one text per image, got {tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}")
    n = image_embeds.shape[0]
    if cross_rank:
        texts, offset, valid = _gather_texts(text_embeds)
    else:
        texts, offset, valid = text_embeds, 0, torch.ones(n, dtype=torch.bool, device=text_embeds.device)
    logits = image_embeds @ texts.t() * logit_scale.exp() + logit_bias
    labels = -torch.ones_like(logits)
    labels[torch.arange(n), offset + torch.arange(n)] = 1.0
    pair_losses = -F.logsigmoid(labels * logits) * valid.to(logits.dtype)
    return pair_losses.sum() / n

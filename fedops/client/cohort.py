"""Cohort training: many clients' local SGD at once, with ``torch.func`` (``functional_call``
under ``vmap(grad_and_value(...))``) over the clients' stacked parameters.

Each client does exactly what :func:`fedops.client.local.local_train` does: E epochs, a fresh
permutation of its rows per epoch drawn from its own generator, minibatches of ``batch_size``
(the last one smaller), the mean cross-entropy (or the mean of ``w_i * loss_i``), FedProx's
proximal term, and PyTorch's SGD (weight decay, momentum with no dampening). Clients with fewer
rows have fewer steps: their batches are padded and masked, and once a client's steps are done
its parameters and momentum are frozen (as FedJAX's ``for_each_client`` does). Clients are
trained ``chunk_size`` at a time to bound memory; a client's result does not depend on which
chunk it is in.

Models whose forward pass is random or updates state (dropout, batch norm) are not supported
(:func:`cohort_supported` says why); the round keeps those on the sequential path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedops.types import ClientUpdate, ParamLayout


@dataclass(frozen=True)
class CohortClient:
    """One client of a cohort: its rows of the shared ``x``/``y``, its generator (the same stream
    the sequential path draws from) and optional per-row loss weights (indexed like ``x``)."""

    client_id: int
    indices: torch.Tensor
    generator: torch.Generator
    sample_weights: torch.Tensor | None = None


def cohort_supported(model: nn.Module) -> str | None:
    """None when the model can be trained as a cohort, else why not."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return f"{name or 'the model'} is a batch norm layer (it updates running statistics in training)"
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"{name or 'the model'} is a dropout layer with p = {module.p} (a random forward pass)"
    return None


def _schedule(client: CohortClient, *, epochs: int, batch_size: int | None) -> list[torch.Tensor]:
    """The client's minibatches (row indices of ``x``) in order, drawn as the sequential path draws them."""
    n = client.indices.numel()
    if n == 0:
        raise ValueError(f"client {client.client_id} has no training samples")
    bs = n if batch_size is None else min(batch_size, n)
    out = []
    g = client.generator
    for _ in range(epochs):
        order = client.indices[torch.randperm(n, generator=g, device=g.device).to(client.indices.device)]
        out.extend(order[i:i + bs] for i in range(0, n, bs))
    return out


def cohort_train(
    model: nn.Module,
    *,
    layout: ParamLayout,
    global_params: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    clients: Sequence[CohortClient],
    epochs: int,
    batch_size: int | None,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    prox_mu: float = 0.0,
    chunk_size: int = 32,
) -> list[ClientUpdate]:
    """Local training of every client in ``clients`` from ``global_params``; one
    :class:`ClientUpdate` per client, in the given order, equal to what ``local_train`` returns."""
    why = cohort_supported(model)
    if why is not None:
        raise ValueError(f"cohort training does not support this model: {why}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out: list[ClientUpdate] = []
    for lo in range(0, len(clients), chunk_size):
        out.extend(_train_chunk(model, layout=layout, global_params=global_params, x=x, y=y,
                                clients=clients[lo:lo + chunk_size], epochs=epochs, batch_size=batch_size, lr=lr,
                                momentum=momentum, weight_decay=weight_decay, prox_mu=prox_mu))
    return out


def _train_chunk(model, *, layout, global_params, x, y, clients, epochs, batch_size, lr, momentum, weight_decay,
                 prox_mu) -> list[ClientUpdate]:
    from torch.func import functional_call, grad_and_value, vmap

    start = time.perf_counter()
    k = len(clients)
    schedules = [_schedule(c, epochs=epochs, batch_size=batch_size) for c in clients]
    steps = torch.tensor([len(s) for s in schedules], device=x.device)
    width = max(int(b.numel()) for s in schedules for b in s)
    layout.load_into(model, global_params)
    names = [n for n, _ in model.named_parameters()]
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = {n: p.detach().unsqueeze(0).repeat(k, *([1] * p.dim())).clone() for n, p in anchor.items()}
    buffers = {n: b for n, b in model.named_buffers()}
    bufs = {n: torch.zeros_like(p) for n, p in params.items()} if momentum else None
    weighted = any(c.sample_weights is not None for c in clients)

    def loss_fn(p, xb, yb, mask, w):
        logits = functional_call(model, (p, buffers), (xb,))
        per_row = F.cross_entropy(logits, yb, reduction="none") * w * mask
        loss = per_row.sum() / mask.sum().clamp_min(1)
        if prox_mu > 0:
            prox = sum(((p[n] - anchor[n]) ** 2).sum() for n in names)
            return loss + 0.5 * prox_mu * prox, loss
        return loss, loss

    step_fn = vmap(grad_and_value(loss_fn, has_aux=True))
    loss_sums = torch.zeros(k, device=x.device)  # the default dtype, as local_train sums its losses
    total = int(steps.max())
    for t in range(total):
        idx = torch.zeros(k, width, dtype=torch.long, device=x.device)
        mask = torch.zeros(k, width, dtype=x.dtype, device=x.device)
        for j, sched in enumerate(schedules):
            if t < len(sched):
                b = sched[t]
                idx[j, :b.numel()] = b
                mask[j, :b.numel()] = 1
        w = torch.ones_like(mask)
        if weighted:
            for j, c in enumerate(clients):
                if c.sample_weights is not None:
                    w[j] = c.sample_weights[idx[j]].to(w.dtype)
        grads, (_, loss) = step_fn(params, x[idx], y[idx], mask, w)
        active = (t < steps)
        loss_sums += torch.where(active, loss.detach(), torch.zeros_like(loss))  # in place: rounded as local_train rounds
        with torch.no_grad():
            for n in names:
                p, g = params[n], grads[n]
                if weight_decay:
                    g = g + weight_decay * p
                if bufs is not None:
                    g = g if t == 0 else momentum * bufs[n] + g
                    bufs[n] = torch.where(active.view(-1, *([1] * (p.dim() - 1))), g, bufs[n])
                params[n] = torch.where(active.view(-1, *([1] * (p.dim() - 1))), p - lr * g, p)
    elapsed = (time.perf_counter() - start) / k
    out = []
    for j, c in enumerate(clients):
        for n, p in model.named_parameters():
            p.data.copy_(params[n][j])
        delta = layout.flatten(model) - global_params
        out.append(ClientUpdate(client_id=c.client_id, delta=delta, num_samples=int(c.indices.numel()),
                                metrics={"train_loss": float(loss_sums[j]) / int(steps[j]), "steps": float(steps[j])},
                                wall_time_s=elapsed))
    return out

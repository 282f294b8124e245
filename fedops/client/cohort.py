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
    width: int | None = None,
) -> list[ClientUpdate]:
    """Local training of every client in ``clients`` from ``global_params``; one
    :class:`ClientUpdate` per client, in the given order, equal to what ``local_train`` returns
    up to rounding.

    Every minibatch is padded to ``width`` rows (default ``batch_size``; for full-batch training,
    the largest client's size, which the caller should fix for the population) and its loss
    taken as a masked mean, so that a client is computed with the same shapes and arithmetic
    whatever clients share its chunk: its bytes do not depend on the chunking."""
    why = cohort_supported(model)
    if why is not None:
        raise ValueError(f"cohort training does not support this model: {why}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if width is None:
        width = batch_size if batch_size is not None else max((int(c.indices.numel()) for c in clients), default=1)
    longest = max((int(c.indices.numel()) if batch_size is None else min(batch_size, int(c.indices.numel()))
                   for c in clients), default=0)
    if width < longest:
        raise ValueError(f"width {width} is smaller than a minibatch of {longest} rows")
    out: list[ClientUpdate] = []
    for lo in range(0, len(clients), chunk_size):
        out.extend(_train_chunk(model, layout=layout, global_params=global_params, x=x, y=y,
                                clients=clients[lo:lo + chunk_size], epochs=epochs, batch_size=batch_size, lr=lr,
                                momentum=momentum, weight_decay=weight_decay, prox_mu=prox_mu, width=width))
    return out


PARAM_COPIES = 8
"""Parameter-sized tensors a cohort client holds while its chunk trains: its parameters, their
gradients and momentum, the doubled copies of a lone client, the gathered deltas and the
autograd's temporaries (an upper count, not a measurement)."""


def client_bytes(model: nn.Module, *, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes one client adds to a cohort chunk at one step: the tensors autograd saves for the
    backward pass of one minibatch ``(x, y)`` (measured: a forward pass under a saved-tensors
    hook on the model's device, nothing stepped), plus :data:`PARAM_COPIES` copies of the
    parameters. Views of one tensor are each counted: an overestimate, never an underestimate of
    what the hook sees."""
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        nn.functional.cross_entropy(model(x), y)  # no backward: nothing is stepped or accumulated
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return saved[0] + PARAM_COPIES * params


def chunk_for_memory(model: nn.Module, *, x: torch.Tensor, y: torch.Tensor, budget_bytes: int,
                     most: int = 1024) -> int:
    """How many clients a chunk may hold within ``budget_bytes`` (at least 1, at most ``most``),
    from :func:`client_bytes` of a minibatch ``(x, y)`` of the padded width."""
    if budget_bytes < 1:
        raise ValueError(f"budget_bytes must be >= 1, got {budget_bytes}")
    return max(1, min(most, budget_bytes // max(1, client_bytes(model, x=x, y=y))))


def _train_chunk(model, *, layout, global_params, x, y, clients, epochs, batch_size, lr, momentum, weight_decay,
                 prox_mu, width) -> list[ClientUpdate]:
    """One chunk. Its clients are ordered by step count, longest first, so that at every step the
    clients still training are a prefix: they are updated through views of that prefix, and a
    client whose steps are done drops out of the computation with its parameters untouched."""
    from torch.func import functional_call, grad_and_value, vmap

    start = time.perf_counter()
    k = len(clients)
    schedules = [_schedule(c, epochs=epochs, batch_size=batch_size) for c in clients]
    order = sorted(range(k), key=lambda j: -len(schedules[j]))  # stable: ties keep the given order
    ranked = [clients[j] for j in order]
    schedules = [schedules[j] for j in order]
    steps = [len(s) for s in schedules]
    total = steps[0]
    device = x.device
    # the whole chunk's minibatches as one index tensor [step, client, row] and a row mask
    index = torch.zeros(total, k, width, dtype=torch.long, device=device)
    mask = torch.zeros(total, k, width, dtype=x.dtype, device=device)
    for j, sched in enumerate(schedules):
        for t, b in enumerate(sched):
            index[t, j, :b.numel()] = b
            mask[t, j, :b.numel()] = 1
    active = [sum(1 for s in steps if s > t) for t in range(total)]  # the training prefix at each step
    weights = None
    if any(c.sample_weights is not None for c in ranked):
        weights = torch.ones(total, k, width, dtype=x.dtype, device=device)
        for j, c in enumerate(ranked):
            if c.sample_weights is not None:
                weights[:, j] = c.sample_weights.to(device=device, dtype=x.dtype)[index[:, j]]

    layout.load_into(model, global_params)
    names = [n for n, _ in model.named_parameters()]
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = {n: p.detach().unsqueeze(0).repeat(k, *([1] * p.dim())).clone() for n, p in anchor.items()}
    buffers = dict(model.named_buffers())
    bufs: dict[str, torch.Tensor] = {}

    def objective(p, xb, yb, m, *w):
        logits = functional_call(model, (p, buffers), (xb,))
        # cross-entropy as log-softmax and gather: under vmap, F.cross_entropy goes through
        # nll_loss's Python decomposition, whose torch._check runs an import statement on every
        # call: the cohort threads queued on Python's import lock
        nll = -logits.log_softmax(dim=-1).gather(-1, yb.unsqueeze(-1)).squeeze(-1)
        per_row = nll * m  # a masked mean, always (see above)
        if w:
            per_row = per_row * w[0]
        loss = per_row.sum() / m.sum()
        if prox_mu > 0:
            prox = sum(((p[n] - anchor[n]) ** 2).sum() for n in names)
            return loss + 0.5 * prox_mu * prox, loss
        return loss, loss

    step_fn = vmap(grad_and_value(objective, has_aux=True))
    loss_sums = torch.zeros(k, device=device)  # the default dtype, as local_train sums its losses
    for t in range(total):
        a = active[t]
        # one client alone is computed twice over: a vmap of one may take other kernels (a plain
        # rather than a grouped convolution), and a client's bytes must not depend on its company
        twice = (lambda v: v) if a > 1 else (lambda v: v.repeat(2, *([1] * (v.dim() - 1))))  # real copies
        rows = twice(index[t, :a])
        extra = [twice(mask[t, :a])] + ([] if weights is None else [twice(weights[t, :a])])
        view = {n: params[n][:a] for n in names}
        grads, (_, loss) = step_fn({n: twice(v) for n, v in view.items()}, x[rows], y[rows], *extra)
        grads = {n: g[:a] for n, g in grads.items()}
        loss_sums[:a] += loss.detach()[:a]  # in place: rounded as local_train rounds
        with torch.no_grad():  # torch.optim.SGD's arithmetic (no dampening, no Nesterov)
            for n in names:
                p, g = view[n], grads[n]
                if weight_decay:
                    g = g.add(p, alpha=weight_decay)
                if momentum:
                    if t == 0:
                        bufs[n] = g.clone()
                    else:
                        bufs[n][:a].mul_(momentum).add_(g)
                    g = bufs[n][:a]
                p.add_(g, alpha=-lr)
    elapsed = (time.perf_counter() - start) / k
    state = model.state_dict()
    flat = torch.cat([params[s.name].reshape(k, -1).float() if s.name in params
                      else state[s.name].detach().reshape(1, -1).float().expand(k, -1) for s in layout.slots], dim=1)
    deltas = flat - global_params.unsqueeze(0)
    by_client = {}
    for j, c in enumerate(ranked):
        by_client[id(c)] = ClientUpdate(
            client_id=c.client_id, delta=deltas[j].clone(), num_samples=int(c.indices.numel()),
            metrics={"train_loss": float(loss_sums[j]) / steps[j], "steps": float(steps[j])}, wall_time_s=elapsed)
    return [by_client[id(c)] for c in clients]

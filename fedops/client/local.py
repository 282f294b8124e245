"""Local training on one client: E epochs of minibatch SGD from the global model (FedAvg's
ClientUpdate, McMahan et al. 2017, Alg. 1), with FedProx's proximal term mu/2 ||w - w_g||^2
(Li et al. 2020, "Federated Optimization in Heterogeneous Networks", Eq. 2) when ``prox_mu > 0``.

Pure apart from the model object it trains in place: randomness comes only from ``generator``.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedops.types import ClientUpdate, ParamLayout


def local_train(
    model: nn.Module,
    *,
    client_id: int,
    layout: ParamLayout,
    global_params: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    epochs: int,
    batch_size: int | None,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    prox_mu: float = 0.0,
    generator: torch.Generator,
    feature_transform: Any = None,
    sample_weights: torch.Tensor | None = None,
) -> ClientUpdate:
    """Train ``model`` on ``x[indices]`` and return the delta (local - global) as a ClientUpdate.

    ``batch_size=None`` means full batch (with ``epochs=1``: one FedSGD gradient step).
    ``feature_transform(xb, generator)`` is applied to each batch (feature-skew partitions).
    ``sample_weights`` (one per row of ``x``, e.g. :func:`reweighing_weights`) weight each row's loss:
    the batch loss is ``mean(w_i * loss_i)``.
    """
    if indices.numel() == 0:
        raise ValueError(f"client {client_id} has no training samples")
    start = time.perf_counter()
    layout.load_into(model, global_params)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    anchor = [p.detach().clone() for p in model.parameters()] if prox_mu > 0 else None
    n = indices.numel()
    bs = n if batch_size is None else min(batch_size, n)
    loss_sum = torch.zeros((), device=x.device)
    steps = 0
    for _ in range(epochs):
        order = indices[torch.randperm(n, generator=generator, device=generator.device).to(indices.device)]
        for start_i in range(0, n, bs):
            idx = order[start_i : start_i + bs]
            xb = x[idx]
            if feature_transform is not None:
                xb = feature_transform(xb, generator)
            if sample_weights is None:
                loss = F.cross_entropy(model(xb), y[idx])
            else:
                loss = (sample_weights[idx] * F.cross_entropy(model(xb), y[idx], reduction="none")).mean()
            loss_sum += loss.detach()
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
                loss = loss + 0.5 * prox_mu * prox
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    delta = layout.flatten(model) - global_params
    return ClientUpdate(
        client_id=client_id,
        delta=delta,
        num_samples=n,
        metrics={"train_loss": float(loss_sum) / steps, "steps": float(steps)},
        wall_time_s=time.perf_counter() - start,
    )


def reweighing_table(joint: torch.Tensor) -> torch.Tensor:
    """``P(a) P(y) / P(a, y)`` from the counts ``joint[a, y]`` (a cell with no rows gets 0)."""
    joint = joint.to(torch.float64)
    n = joint.sum()
    pa, py = joint.sum(1) / n, joint.sum(0) / n
    out = (pa[:, None] * py[None, :]) / (joint / n)
    return torch.where(joint > 0, out, torch.zeros_like(out))


def reweighing_weights(groups: torch.Tensor, labels: torch.Tensor, *, table: torch.Tensor | None = None) -> torch.Tensor:
    """Kamiran & Calders' reweighing ("Data preprocessing techniques for classification without
    discrimination", KAIS 2012, Sec. 4.2), on one client's own rows: row ``i`` of group ``a`` and
    label ``y`` gets ``P(a) P(y) / P(a, y)``, so that in the weighted data group and label are
    independent (they average to 1 over the rows). ``table`` (e.g. from the population's pooled
    counts, :func:`reweighing_table`) replaces the client's own statistics. Pure; float32."""
    if groups.shape != labels.shape or groups.ndim != 1:
        raise ValueError(f"groups and labels must be 1-D of one length, got {tuple(groups.shape)}, {tuple(labels.shape)}")
    n = groups.numel()
    if n == 0:
        return torch.empty(0, dtype=torch.float32, device=groups.device)
    g = groups.to(torch.long)
    y = labels.to(torch.long)
    if table is None:
        ng, ny = int(g.max()) + 1, int(y.max()) + 1
        table = reweighing_table(torch.bincount(g * ny + y, minlength=ng * ny).reshape(ng, ny))
    return table.to(g.device)[g, y].to(torch.float32)

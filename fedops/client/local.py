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
) -> ClientUpdate:
    """Train ``model`` on ``x[indices]`` and return the delta (local - global) as a ClientUpdate.

    ``batch_size=None`` means full batch (with ``epochs=1``: one FedSGD gradient step).
    ``feature_transform(xb, generator)`` is applied to each batch (feature-skew partitions).
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
            loss = F.cross_entropy(model(xb), y[idx])
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

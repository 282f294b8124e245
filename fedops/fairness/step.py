"""The round's fairness step: at every evaluation round, the global model on every client's
held-out split (client-level fairness) and on the test set by group (group fairness)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedops.fairness.metrics import client_level, group_fairness


@torch.inference_mode()
def predict(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 2048) -> np.ndarray:
    was = model.training
    model.eval()
    out = [model(x[i:i + batch_size]).argmax(1).cpu() for i in range(0, x.shape[0], batch_size)]
    model.train(was)
    return torch.cat(out).numpy() if out else np.empty(0, dtype=np.int64)


@dataclass
class FairnessResult:
    metrics: dict[str, float]
    client_accuracy: list[float] | None
    """The global model's accuracy on each client's held-out split, by client id."""


class FairnessStep:
    """Built once per run from the world: the held-out rows of all clients in one index tensor
    (one batched forward pass per evaluation round), their owners, labels and groups."""

    def __init__(self, world: Any) -> None:
        rt = world.runtime
        self.num_clients = rt.num_clients
        self.holdout = world.holdout
        if self.holdout is not None:
            self.rows = torch.as_tensor(np.concatenate([np.asarray(h, dtype=np.int64) for h in self.holdout]))
            self.owner = np.repeat(np.arange(self.num_clients), [len(h) for h in self.holdout])
            self.y_rows = rt.y_train[self.rows].numpy()
        self.groups_rows = (None if world.sensitive_train is None or self.holdout is None
                            else np.asarray(world.sensitive_train)[self.rows.numpy()])
        self.groups_test = None if world.sensitive_test is None else np.asarray(world.sensitive_test)
        self.binary = rt.num_classes == 2  # fairlearn's parity metrics are for a binary label

    def __call__(self, model: torch.nn.Module, *, x_train: torch.Tensor, x_test: torch.Tensor,
                 y_test: torch.Tensor) -> FairnessResult:
        metrics: dict[str, float] = {}
        accuracy = None
        if self.holdout is not None:
            pred = predict(model, x_train[self.rows.to(x_train.device)])
            hits = np.bincount(self.owner, weights=(pred == self.y_rows).astype(np.float64), minlength=self.num_clients)
            sizes = np.bincount(self.owner, minlength=self.num_clients).astype(np.float64)
            has = sizes > 0
            acc = np.divide(hits, sizes, out=np.full(self.num_clients, np.nan), where=has)
            metrics.update(client_level(acc[has]))
            accuracy = [float(a) for a in acc]
            if self.groups_rows is not None and self.binary:
                per_client = group_fairness(self.y_rows, pred, self.groups_rows, control=self.owner,
                                            prefix="fairness/client_")
                metrics.update(per_client)
        if self.groups_test is not None and self.binary:
            pred_test = predict(model, x_test)
            metrics.update(group_fairness(y_test.cpu().numpy(), pred_test, self.groups_test))
        return FairnessResult(metrics, accuracy)

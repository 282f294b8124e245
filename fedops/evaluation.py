"""Evaluation of a model on a held-out set: accuracy, mean cross-entropy, per-class accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, num_classes: int, batch_size: int = 4096) -> dict[str, float]:
    if x.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set")
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros(num_classes, dtype=torch.long, device=x.device)
    total = torch.zeros(num_classes, dtype=torch.long, device=x.device)
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        logits = model(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").double()
        hit = logits.argmax(1) == yb
        correct += torch.bincount(yb[hit], minlength=num_classes)
        total += torch.bincount(yb, minlength=num_classes)
    model.train(was_training)
    out = {"accuracy": float(correct.sum()) / x.shape[0], "loss": float(loss) / x.shape[0]}
    for c in range(num_classes):
        if int(total[c]):
            out[f"class_{c}_accuracy"] = float(correct[c]) / float(total[c])
    return out

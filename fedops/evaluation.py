"""Evaluation of a model on a held-out set: accuracy, mean cross-entropy, per-class accuracy.

``evaluation_sums`` works on any slice of the test set and ``summarize`` combines slices, so the
test set can be evaluated in shards on several workers and give exactly the single-pass result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.inference_mode()
def evaluation_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, num_classes: int, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Summed loss, per-class hits and per-class counts over ``(x, y)``."""
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
    return {"loss_sum": loss.cpu(), "correct": correct.cpu(), "total": total.cpu()}


def summarize(parts: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Accuracy, mean loss and per-class accuracy from one or more ``evaluation_sums``."""
    correct = sum(p["correct"] for p in parts)
    total = sum(p["total"] for p in parts)
    n = int(total.sum())
    if n == 0:
        raise ValueError("cannot evaluate on an empty set")
    out = {"accuracy": float(correct.sum()) / n, "loss": float(sum(p["loss_sum"] for p in parts)) / n}
    for c in range(len(total)):
        if int(total[c]):
            out[f"class_{c}_accuracy"] = float(correct[c]) / float(total[c])
    return out


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, num_classes: int, batch_size: int = 512) -> dict[str, float]:
    if x.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set")
    return summarize([evaluation_sums(model, x, y, num_classes=num_classes, batch_size=batch_size)])


class TestSet:
    """The server's held-out test set: CPU tensors, moved once to each device that evaluates.

    Pickles as its CPU tensors (an executor can ship it to worker processes once)."""

    __test__ = False  # not a pytest class

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, num_classes: int) -> None:
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"a test set needs the same non-zero number of inputs and labels, got {x.shape[0]} and {y.shape[0]}")
        self.x, self.y, self.num_classes = x.cpu(), y.cpu(), int(num_classes)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __reduce__(self):
        return (_restore_testset, (self.x, self.y, self.num_classes))

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = (self.x.to(device), self.y.to(device))
        return self._on[device]

    def shards(self, parts: int) -> list[tuple[int, int]]:
        """``parts`` contiguous slices of about equal size (evaluation sums add up exactly)."""
        n = len(self)
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        return [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]


def _restore_testset(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> TestSet:
    return TestSet(x, y, num_classes=num_classes)

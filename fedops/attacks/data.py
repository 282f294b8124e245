"""Data-poisoning attack ``label_flip`` and the sample picking shared with ``backdoor``."""

from __future__ import annotations

from typing import ClassVar, Literal

from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.attacks.base import ATTACKS, Attack, Fraction


def pick_samples(batch: int, fraction: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Indices of ``round(fraction * batch)`` distinct samples (Python ``round``: half to even).

    With ``fraction == 1`` every sample is picked and the generator is not touched; otherwise one
    ``randperm(batch)`` is drawn from it (on the generator's device), whatever the count.
    """
    if fraction >= 1:
        return torch.arange(batch, device=device)
    count = round(fraction * batch)
    perm = torch.randperm(batch, generator=generator, device=generator.device)
    return perm[:count].to(device)


@ATTACKS.register("label_flip")
class LabelFlip(Attack):
    """Label flipping (Fang et al. 2020; Tolpegin et al. 2020): ``y -> num_classes - 1 - y`` on
    ``round(fraction * B)`` samples of every training batch, chosen with the generator.
    The update is then sent unchanged."""

    name: Literal["label_flip"] = "label_flip"
    poisons_data: ClassVar[bool] = True
    fraction: Fraction = 1.0

    def poison_data(self, x, y, *, num_classes, generator):
        if num_classes < 2:
            raise ValueError(f"label_flip needs num_classes >= 2, got {num_classes}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"labels must be [B] with B = {x.shape[0]}, got shape {tuple(y.shape)}")
        idx = pick_samples(y.shape[0], self.fraction, generator, y.device)
        out = y.clone()
        out[idx] = num_classes - 1 - y[idx]
        return x, out

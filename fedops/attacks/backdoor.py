"""Model-replacement backdoor (Bagdasaryan et al., AISTATS 2020, "How To Backdoor Federated
Learning"), with a pixel-pattern trigger (BadNets-style square, Gu et al. 2017).

Data side: on ``round(poison_fraction * B)`` samples of every training batch (chosen with the
generator, as in ``label_flip``) a ``trigger_size x trigger_size`` square in the bottom-right
corner, all channels, i.e. ``x[i, :, H-s:, W-s:]``, is set to ``trigger_value`` and the label to
``target_label``.  Images only: inputs must be ``[B, C, H, W]``.

Update side: the client sends ``gamma * own`` (the paper's ``X = gamma (L - G) + G`` written on the
delta ``L - G``).  ``boost = None`` takes ``gamma = n / f`` for ``n`` selected and ``f`` malicious
clients: the paper's ``gamma = n / eta`` with global learning rate ``eta = 1`` split among the ``f``
colluding attackers, so that under an unweighted mean of the ``n`` updates their sum replaces the
model (``f * gamma / n = 1``) when the honest updates nearly cancel.  Under sample-weighted FedAvg
the effective factor also scales with the attackers' share of samples.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Literal

from fedops.lazy import torch, nn  # torch on first use: configs load without it
from pydantic import Field

from fedops.attacks.base import ATTACKS, Attack, FiniteFloat, Fraction, PositiveFloat
from fedops.attacks.data import pick_samples


def _check_image(x: torch.Tensor, size: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"backdoor trigger needs image inputs [B, C, H, W], got shape {tuple(x.shape)}")
    if not 1 <= size <= min(x.shape[2], x.shape[3]):
        raise ValueError(f"trigger size {size} does not fit images of shape {tuple(x.shape[1:])}")


def apply_trigger(x: torch.Tensor, *, size: int, value: float | torch.Tensor | None = None) -> torch.Tensor:
    """A copy of ``x [B, C, H, W]`` with the trigger stamped on every sample:
    ``x[:, :, H-size:, W-size:] = value`` (``value = None``: ``x.max()``)."""
    _check_image(x, size)
    out = x.clone()
    if x.shape[0] == 0:
        return out
    out[:, :, -size:, -size:] = x.max() if value is None else value
    return out


@ATTACKS.register("backdoor")
class Backdoor(Attack):
    name: Literal["backdoor"] = "backdoor"
    poisons_data: ClassVar[bool] = True
    target_label: int = Field(0, ge=0)
    poison_fraction: Fraction = 0.5
    trigger_size: int = Field(3, ge=1)
    trigger_value: FiniteFloat | None = None  # None: the max of the batch being stamped
    boost: PositiveFloat | None = None  # None: n / f

    def gamma(self, num_selected: int, num_malicious: int) -> float:
        if self.boost is not None:
            return self.boost
        if num_malicious < 1:
            raise ValueError(f"backdoor boost n/f needs f >= 1, got f={num_malicious}")
        return num_selected / num_malicious

    def poison_data(self, x, y, *, num_classes, generator):
        _check_image(x, self.trigger_size)
        if not self.target_label < num_classes:
            raise ValueError(f"target_label {self.target_label} is not a class of {num_classes}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"labels must be [B] with B = {x.shape[0]}, got shape {tuple(y.shape)}")
        if x.shape[0] == 0:
            return x, y
        idx = pick_samples(x.shape[0], self.poison_fraction, generator, x.device)
        s = self.trigger_size
        value = x.max() if self.trigger_value is None else self.trigger_value
        out_x, out_y = x.clone(), y.clone()
        out_x[idx, :, -s:, -s:] = value
        out_y[idx.to(y.device)] = self.target_label
        return out_x, out_y

    def craft(self, own, *, view, generator):
        self._check_own(own, view)
        return own * self.gamma(view.num_selected, view.num_malicious)


def backdoor_accuracy(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    attack: Backdoor | dict[str, Any],
    batch_size: int = 1024,
) -> float:
    """Attack success rate: among test samples whose true label is not the target, the fraction
    classified as the target once the trigger is stamped on them.

    The trigger value is ``attack.trigger_value``, or the max of the whole clean ``x_test`` when
    ``None`` (one value for every batch).  ``model`` is called on batches of ``x_test``'s device
    under ``torch.no_grad()``; an ``nn.Module`` is put in eval mode and its mode restored after.
    Raises ``ValueError`` when no test sample has a label other than the target.
    """
    if isinstance(attack, dict):
        attack = ATTACKS.build(attack)
    if not isinstance(attack, Backdoor):
        raise ValueError(f"backdoor_accuracy needs a backdoor attack, got {attack!r}")
    _check_image(x_test, attack.trigger_size)
    if y_test.shape != (x_test.shape[0],):
        raise ValueError(f"labels must be [N] with N = {x_test.shape[0]}, got shape {tuple(y_test.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keep = (y_test != attack.target_label).to(x_test.device)
    xs = x_test[keep]
    if xs.shape[0] == 0:
        raise ValueError(f"no test sample has a label other than the target {attack.target_label}")
    value = x_test.max() if attack.trigger_value is None else attack.trigger_value
    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    hits = torch.zeros((), dtype=torch.int64, device=x_test.device)
    try:
        with torch.no_grad():
            for i in range(0, xs.shape[0], batch_size):
                xb = apply_trigger(xs[i : i + batch_size], size=attack.trigger_size, value=value)
                pred = model(xb).argmax(dim=1)
                hits += (pred == attack.target_label).sum().to(hits.device)
    finally:
        if was_training is not None:
            model.train(was_training)
    return int(hits) / xs.shape[0]

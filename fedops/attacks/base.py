"""Attack simulation: the plug-in family of malicious-client behaviours.

An attack is a plug-in (its fields are its hyperparameters; the config names it by key) with two
hooks, both pure functions of their inputs and an explicit ``torch.Generator`` (never the global
RNG; inputs are never mutated):

* ``poison_data(x, y, *, num_classes, generator) -> (x', y')``: for data attacks
  (``poisons_data = True``), applied by a malicious client to each training batch before the
  forward pass.  Model attacks leave the batch alone.
* ``craft(own, *, view, generator) -> update``: the flat update ``[d]`` the malicious client
  sends instead of its own honestly computed one ``own``.

Threat model: the malicious clients of a round collude and are omniscient, as in the ALIE
(Baruch et al. 2019) and IPM (Xie et al. 2020) papers: :class:`RoundView` gives them the global
model, the round's honest updates (only to attacks with ``needs_benign = True``; the simulator can
skip collecting them otherwise), the number of selected clients ``n`` and of malicious clients
``f`` among them.  Which clients are malicious is the simulator's ground truth
(:func:`fedops.attacks.population.choose_malicious`); the server never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from fedops.lazy import torch  # torch on first use: configs load without it
from pydantic import Field

from fedops.registry import PluginModel, Registry

ATTACKS = Registry("attack", entry_points="fedops.attacks")

#: a strictly positive, finite float hyperparameter
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: a fraction in (0, 1]
Fraction = Annotated[float, Field(gt=0, le=1)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


@dataclass(frozen=True, eq=False)
class RoundView:
    """What the colluding malicious clients know in one round (omniscient attacker).

    ``eq=False``: comparing views field by field would compare tensors, which has no truth value.
    """

    global_params: torch.Tensor  # [d]
    benign: torch.Tensor | None  # [k_b, d] honest updates of the round, None if not needed
    num_selected: int  # n: clients in the round
    num_malicious: int  # f: malicious clients among them (the caller is one, so f >= 1)

    def __post_init__(self) -> None:
        if self.global_params.ndim != 1:
            raise ValueError(f"global_params must be a flat [d] vector, got shape {tuple(self.global_params.shape)}")
        d = self.global_params.shape[0]
        if self.benign is not None:
            if self.benign.ndim != 2 or self.benign.shape[1] != d:
                raise ValueError(f"benign must be a [k_b, {d}] stack, got shape {tuple(self.benign.shape)}")
            if self.benign.shape[0] > self.num_selected:
                raise ValueError(
                    f"{self.benign.shape[0]} benign updates but only {self.num_selected} clients in the round"
                )
        if self.num_selected < 1:
            raise ValueError(f"num_selected must be >= 1, got {self.num_selected}")
        if not 1 <= self.num_malicious <= self.num_selected:
            raise ValueError(
                f"num_malicious must be in [1, num_selected={self.num_selected}], got {self.num_malicious}"
            )

    @property
    def dim(self) -> int:
        return self.global_params.shape[0]


class Attack(PluginModel):
    """Base: honest behaviour.  Subclasses override one or both hooks."""

    #: craft() needs ``view.benign``, the honest updates of the round
    needs_benign: ClassVar[bool] = False
    #: poison_data() changes the client's training batches
    poisons_data: ClassVar[bool] = False

    def poison_data(
        self, x: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def craft(self, own: torch.Tensor, *, view: RoundView, generator: torch.Generator) -> torch.Tensor:
        """The update the malicious client sends, ``[d]``."""
        return own

    # helpers for subclasses -------------------------------------------------------------------

    def _check_own(self, own: torch.Tensor, view: RoundView) -> None:
        if own.ndim != 1 or own.shape[0] != view.dim:
            raise ValueError(
                f"attack {self.name!r}: own update must have shape ({view.dim},), got {tuple(own.shape)}"
            )

    def _benign(self, view: RoundView) -> torch.Tensor:
        if view.benign is None or view.benign.shape[0] == 0:
            raise ValueError(
                f"attack {self.name!r} needs the honest updates of the round (RoundView.benign), got none"
            )
        return view.benign

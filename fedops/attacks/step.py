"""The simulator's attack step in the round: after training, the round's malicious clients replace their
updates (they collude and see the round's honest updates, as ALIE and IPM assume). It runs between
local training and the clients' uplink, on the coordinator; which clients are malicious is the
simulator's ground truth (``ClientRuntime.malicious``), never given to server-side code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.rng import STREAM_ATTACK, torch_generator
from fedops.types import ClientUpdate


@dataclass(frozen=True)
class AttackStep:
    attack: Any  # a fedops.attacks.Attack plug-in with its own craft()
    malicious: frozenset[int]
    seed: int

    @classmethod
    def build(cls, *, attack: Any, malicious: frozenset[int], seed: int) -> "AttackStep | None":
        """The step, or None when no configured attacker rewrites its update after training."""
        from fedops.attacks import Attack

        if not malicious or type(attack).craft is Attack.craft:
            return None
        return cls(attack, malicious, seed)

    def __call__(self, *, round_idx: int, updates: dict[int, ClientUpdate], global_params: torch.Tensor,
                 num_selected: int) -> dict[int, ClientUpdate]:
        from fedops.attacks import RoundView

        bad = sorted(c for c in updates if c in self.malicious)
        if not bad:
            return updates
        honest = [updates[c].delta.detach().cpu().float() for c in sorted(updates) if c not in self.malicious]
        benign = torch.stack(honest) if (self.attack.needs_benign and honest) else None
        if self.attack.needs_benign and benign is None:
            return updates  # nothing to imitate: this round's malicious clients send honest updates
        view = RoundView(global_params=global_params.detach().cpu().float(), benign=benign,
                         num_selected=num_selected, num_malicious=len(bad))
        out = dict(updates)
        for c in bad:
            own = updates[c].delta.detach().cpu().float()
            crafted = self.attack.craft(own, view=view, generator=torch_generator(self.seed, STREAM_ATTACK, round_idx, c))
            out[c] = replace(updates[c], delta=crafted.to(torch.float32))
        return out

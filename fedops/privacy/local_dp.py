"""Sample-level DP-SGD inside one client via Opacus' ``PrivacyEngine`` (Abadi et al. 2016).

The client's tensors go through a ``DataLoader`` that Opacus turns into Poisson sampling
(sample rate ``1 / len(loader)``); per-sample gradients are clipped to ``max_grad_norm`` and
noised with ``noise_multiplier * max_grad_norm``; the client's epsilon comes from the engine's
own accountant.  Randomness (Poisson sampling and noise) is drawn from generators seeded with
``generator_seed`` (``secure_mode=False``: reproducible, not cryptographically secure).
"""

from __future__ import annotations

import copy
import warnings
from typing import Callable

import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedops.privacy.accountant import ACCOUNTANTS, check_delta, check_noise_multiplier


def offending_modules(model: nn.Module) -> list[str]:
    """``"name (Type): reason"`` for each sub-module Opacus' validators refuse."""
    found = []
    for name, sub in model.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(sub))
        if validator is None:
            continue
        for err in validator(sub):
            reason = str(err).split(".")[0]
            found.append(f"{name or '<root>'} ({type(sub).__name__}): {reason}")
    return found


def prepare_model(model: nn.Module, *, fix_model: bool) -> tuple[nn.Module, list[str]]:
    """A training-mode copy Opacus accepts (fixed with ``ModuleValidator.fix`` if allowed)."""
    model = copy.deepcopy(model).train()
    if ModuleValidator.validate(model, strict=False):
        bad = offending_modules(model)
        if not fix_model:
            raise ValueError(
                "model has modules Opacus cannot train with DP-SGD: "
                + "; ".join(bad or [str(e) for e in ModuleValidator.validate(model)])
                + " (pass fix_model=True to replace them, e.g. BatchNorm -> GroupNorm)"
            )
        model = ModuleValidator.fix(model).train()
        remaining = ModuleValidator.validate(model, strict=False)
        if remaining:
            raise ValueError(f"ModuleValidator.fix could not fix the model: {[str(e) for e in remaining]}")
        return model, bad
    return model, []


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector([p.detach() for p in model.parameters()]).clone()


def dp_sgd_train(
    model: nn.Module,
    *,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
    delta: float,
    generator_seed: int,
    fix_model: bool = False,
    loss_fn: nn.Module | None = None,
    accountant: str = "rdp",
    flatten: Callable[[nn.Module], torch.Tensor] | None = None,
    epsilon: bool = True,
) -> tuple[nn.Module, dict]:
    """Train a copy of ``model`` with DP-SGD on ``(x, y)``; the input model is not modified.

    Returns ``(trained_model, info)`` with ``info = {"epsilon", "steps", "delta_vector",
    "noise_multiplier", "max_grad_norm", "sample_rate", "accountant", "fixed_modules"}``;
    ``delta_vector = flatten(trained) - flatten(start)`` where ``start`` is the (possibly fixed)
    copy, ``flatten`` defaulting to ``parameters_to_vector``.  The trained model is a plain
    ``nn.Module`` (Opacus' hooks removed). ``epsilon=False`` skips the engine's own accounting
    (``info["epsilon"]`` is None): for a caller whose ledger composes the steps itself.
    """
    z = check_noise_multiplier(noise_multiplier)
    d = check_delta(delta)
    ACCOUNTANTS.get(accountant)
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (lr > 0):
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not (max_grad_norm > 0):
        raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same non-zero length, got {x.shape[0]} and {y.shape[0]}")
    flatten = flatten or _flat
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()

    work, fixed = prepare_model(model, fix_model=fix_model)
    start = flatten(work).detach().clone()
    optimizer = torch.optim.SGD(work.parameters(), lr=lr)
    sampling_gen = torch.Generator().manual_seed(int(generator_seed))
    noise_gen = torch.Generator().manual_seed(int(generator_seed) + 1)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, generator=sampling_gen)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        warnings.filterwarnings("ignore", message=".*full_backward_hook.*")
        engine = PrivacyEngine(accountant=accountant, secure_mode=False)
        private, dp_optimizer, dp_loader = engine.make_private(
            module=work,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=z,
            max_grad_norm=float(max_grad_norm),
            poisson_sampling=True,
            noise_generator=noise_gen,
        )
        steps = 0
        for _ in range(epochs):
            for xb, yb in dp_loader:
                dp_optimizer.zero_grad(set_to_none=True)
                if xb.shape[0] > 0:
                    loss = loss_fn(private(xb), yb)
                else:  # empty Poisson batch: zero-size per-sample grads, so the step is noise only
                    loss = private(xb).sum() * 0.0
                loss.backward()
                dp_optimizer.step()
                steps += 1
    trained = private.to_standard_module() if hasattr(private, "to_standard_module") else private
    for p in trained.parameters():
        p.grad = None
        for attr in ("grad_sample", "summed_grad", "_forward_counter"):
            if hasattr(p, attr):
                try:
                    delattr(p, attr)
                except AttributeError:
                    pass
    trained.eval()
    spent = None if not epsilon else float(engine.get_epsilon(d)) if z > 0 else float("inf")
    info = {
        "epsilon": spent,
        "steps": steps,
        "accountant_steps": sum(n for _, _, n in engine.accountant.history),
        "delta_vector": (flatten(trained).detach() - start),
        "noise_multiplier": z,
        "max_grad_norm": float(max_grad_norm),
        "sample_rate": 1.0 / len(dp_loader),
        "delta": d,
        "accountant": accountant,
        "fixed_modules": fixed,
    }
    return trained, info

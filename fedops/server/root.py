"""FLTrust's root set: a small clean data set the server owns and trains on each round (Cao et
al., NDSS 2021). The server's update on it is the reference that the ``fltrust`` rule measures
every client update against.

In simulation the root set is drawn uniformly from the training data, once per run, with
``numpy_rng(seed, STREAM_ROOT)``; the server keeps its own copy of those examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedops.client.local import local_train
from fedops.client.runtime import torch_threads
from fedops.config import Config, ConfigError
from fedops.rng import STREAM_ROOT, derive_seed, numpy_rng, torch_generator
from fedops.types import ParamLayout


@dataclass
class RootSet:
    config: Config
    x: torch.Tensor
    y: torch.Tensor
    layout: ParamLayout
    model: torch.nn.Module
    device: torch.device

    @classmethod
    def draw(cls, config: Config, *, x_train: torch.Tensor, y_train: torch.Tensor, layout: ParamLayout,
             model: torch.nn.Module, device: torch.device) -> "RootSet":
        rule = config.server.aggregator
        n = int(x_train.shape[0])
        if rule.root_size > n:
            raise ConfigError(
                f"server.aggregator.root_size = {rule.root_size} exceeds the {n} training examples; allowed: 1..{n}"
            )
        idx = torch.as_tensor(np.sort(numpy_rng(config.seed, STREAM_ROOT).choice(n, rule.root_size, replace=False)))
        return cls(config, x_train[idx].to(device), y_train[idx].to(device), layout, model.to(device), device)

    def update(self, *, round_idx: int, global_params: torch.Tensor) -> torch.Tensor:
        """The server's own update this round: local training on the root set from the global
        model, with the clients' hyperparameters and the rule's ``root_epochs`` (FLTrust's ``g0``)."""
        spec = self.config.client
        seed = self.config.seed
        with torch_threads(self.config.execution.threads_per_worker()), \
                torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(derive_seed(seed, STREAM_ROOT, round_idx, 1))
            update = local_train(
                self.model, client_id=-1, layout=self.layout, global_params=global_params.to(self.device),
                x=self.x, y=self.y, indices=torch.arange(self.x.shape[0], device=self.device),
                epochs=self.config.server.aggregator.root_epochs or spec.epochs, batch_size=spec.batch_size,
                lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, prox_mu=spec.prox_mu,
                generator=torch_generator(seed, STREAM_ROOT, round_idx, device=self.device),
            )
        return update.delta.detach().to("cpu", torch.float32)

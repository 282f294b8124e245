"""Everything a simulated client needs, built once per training job and shared by the client tasks:
the data on each device (partitions as index tensors, never copies), the model spec, the layout.

Clients are spread over the available GPUs (client id modulo GPU count); on a CPU-only machine
everything lives on the CPU.  One model instance per (thread, device) is reused across clients.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedops.client.local import local_train
from fedops.config import Config, ConfigError
from fedops.errors import FedopsError
from fedops.rng import (
    STREAM_ATTACK,
    STREAM_CLIENT,
    STREAM_DROPOUT,
    STREAM_ROOT,
    derive_seed,
    numpy_rng,
    torch_generator,
)
from fedops.types import ClientUpdate, EncodedUpdate, ParamLayout


class ClientDropped(FedopsError):
    """A client that did not return an update (simulated or real failure)."""


def resolve_devices(preference: str) -> list[torch.device]:
    """CUDA devices when asked for or available (``auto``), else the CPU."""
    if preference == "cpu":
        return [torch.device("cpu")]
    if torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    if preference == "cuda":
        raise RuntimeError("execution.device = 'cuda' but no CUDA device is available")
    return [torch.device("cpu")]


@dataclass
class _DeviceData:
    x: torch.Tensor
    y: torch.Tensor
    indices: list[torch.Tensor]


@dataclass
class ClientRuntime:
    config: Config
    x_train: torch.Tensor
    y_train: torch.Tensor
    partition_indices: list[np.ndarray]
    client_meta: list[dict[str, Any]]
    input_shape: tuple[int, ...]
    num_classes: int
    devices: list[torch.device]
    #: clients whose own data failed validation, with the failed expectations: what each client
    #: reports about its data (the server's data-quality policy reads it)
    data_failures: dict[int, list[str]] = field(default_factory=dict)
    layout: ParamLayout = field(init=False)
    _per_device: dict[torch.device, _DeviceData] = field(default_factory=dict, init=False)
    _local: threading.local = field(default_factory=threading.local, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    #: local DP: each client's privacy ledger, composed over every round it trained in
    _ledgers: dict[int, Any] = field(default_factory=dict, init=False)
    #: codec state across rounds (error feedback's residual), held per client as on its device
    _codec_state: dict[int, Any] = field(default_factory=dict, init=False)
    #: the simulator's ground truth: clients that run simulation.attack (never read by the server)
    malicious: frozenset[int] = field(default=frozenset(), init=False)
    #: the server's clean root data set (training-set positions), for rules that need one (FLTrust)
    root_indices: np.ndarray | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        model = self.new_model(seed=0)
        if self.config.privacy.mode == "local":
            from fedops.privacy.local_dp import offending_modules

            bad = offending_modules(model)
            if bad:
                raise ConfigError(
                    f"privacy.mode = 'local' (DP-SGD): model {self.config.model.name!r} has modules Opacus "
                    f"cannot train privately: {', '.join(bad)}; set privacy.fix_model: true to replace them "
                    "(e.g. BatchNorm -> GroupNorm) or choose another model"
                )
        self.layout = ParamLayout.from_module(model)
        sim = self.config.simulation
        from fedops.attacks import choose_malicious

        self.malicious = choose_malicious(self.num_clients, fraction=sim.malicious_fraction, seed=self.config.seed)
        rule = self.config.server.aggregator
        if getattr(rule, "needs_reference", False):
            n = int(self.x_train.shape[0])
            if rule.root_size > n:
                raise ConfigError(
                    f"server.aggregator.root_size = {rule.root_size} exceeds the {n} training examples; "
                    f"allowed: 1..{n}"
                )
            # FLTrust's root set: drawn uniformly from the training data once per run, as in Cao et al.
            self.root_indices = np.sort(numpy_rng(self.config.seed, STREAM_ROOT).choice(n, rule.root_size, replace=False))
        for dev in self.devices:  # move data once, up front
            self._data(dev)

    @property
    def crafts_updates(self) -> bool:
        """Whether the configured attack rewrites updates after training (needs the round's
        updates together, so the round trains first and encodes after the attack step)."""
        from fedops.attacks import Attack

        attack = self.config.simulation.attack
        return bool(self.malicious) and type(attack).craft is not Attack.craft

    def craft_attacks(self, *, round_idx: int, updates: dict[int, ClientUpdate], global_params: torch.Tensor,
                      num_selected: int) -> dict[int, ClientUpdate]:
        """The simulator's attack step: the malicious clients of the round replace their updates
        (colluding, they see the round's honest updates, as ALIE and IPM assume). The server never
        sees which clients these were."""
        from dataclasses import replace

        from fedops.attacks import RoundView

        bad = sorted(c for c in updates if c in self.malicious)
        if not bad or not self.crafts_updates:
            return updates
        attack = self.config.simulation.attack
        honest = [updates[c].delta.detach().cpu().float() for c in sorted(updates) if c not in self.malicious]
        benign = torch.stack(honest) if (attack.needs_benign and honest) else None
        if attack.needs_benign and benign is None:
            return updates  # nothing to imitate: this round's malicious clients send honest updates
        view = RoundView(global_params=global_params.detach().cpu().float(), benign=benign,
                         num_selected=num_selected, num_malicious=len(bad))
        out = dict(updates)
        for c in bad:
            own = updates[c].delta.detach().cpu().float()
            crafted = attack.craft(own, view=view, generator=torch_generator(self.config.seed, STREAM_ATTACK, round_idx, c))
            out[c] = replace(updates[c], delta=crafted.to(torch.float32))
        return out

    @property
    def num_clients(self) -> int:
        return len(self.partition_indices)

    def sizes(self) -> list[int]:
        return [len(ix) for ix in self.partition_indices]

    def new_model(self, *, seed: int) -> torch.nn.Module:
        model = self.config.model.build(input_shape=self.input_shape, num_classes=self.num_classes, seed=seed)
        if self.config.privacy.mode == "local" and self.config.privacy.fix_model:
            from opacus.validators import ModuleValidator

            model = ModuleValidator.fix(model)
        return model

    def device_for(self, client_id: int) -> torch.device:
        return self.devices[client_id % len(self.devices)]

    def _data(self, device: torch.device) -> _DeviceData:
        with self._lock:
            if device not in self._per_device:
                self._per_device[device] = _DeviceData(
                    x=self.x_train.to(device),
                    y=self.y_train.to(device),
                    indices=[torch.tensor(np.asarray(ix), dtype=torch.long, device=device) for ix in self.partition_indices],
                )
            return self._per_device[device]

    def thread_model(self, device: torch.device) -> torch.nn.Module:
        """This thread's reusable model instance on ``device`` (weights are loaded per use)."""
        models = getattr(self._local, "models", None)
        if models is None:
            models = self._local.models = {}
        if device not in models:
            models[device] = self.new_model(seed=0).to(device)
        return models[device]

    def use_worker_threads(self) -> None:
        """Set this thread's intra-op thread count (OpenMP keeps it per calling thread)."""
        threads = self.config.execution.threads_per_worker()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def check_dropout(self, *, round_idx: int, client_id: int) -> None:
        p = self.config.simulation.dropout_prob
        if p > 0 and numpy_rng(self.config.seed, STREAM_DROPOUT, round_idx, client_id).random() < p:
            raise ClientDropped(f"client {client_id} dropped out in round {round_idx} (simulated, p={p})")

    def train(self, *, round_idx: int, client_id: int, global_params: torch.Tensor) -> ClientUpdate:
        """Local training of one client in one round, replayable from (seed, round, client)."""
        if not 0 <= client_id < self.num_clients:
            raise ValueError(f"client id {client_id} out of range 0..{self.num_clients - 1}")
        self.check_dropout(round_idx=round_idx, client_id=client_id)
        self.use_worker_threads()
        device = self.device_for(client_id)
        data = self._data(device)
        spec = self.config.client
        gen = torch_generator(self.config.seed, STREAM_CLIENT, round_idx, client_id, device=device)
        meta = self.client_meta[client_id] if self.client_meta else {}
        transform = None
        if meta:
            from fedops.partition import apply_feature_transform

            transform = lambda xb, g: apply_feature_transform(xb, meta, generator=g)  # noqa: E731
        if self.config.privacy.mode == "local":
            return self._train_dp_sgd(round_idx=round_idx, client_id=client_id, global_params=global_params,
                                      device=device, data=data)
        x, y, indices = data.x, data.y, data.indices[client_id]
        attack = self.config.simulation.attack
        if attack.poisons_data and client_id in self.malicious:  # the simulator poisons this client's data
            x, y = attack.poison_data(
                x[indices], y[indices], num_classes=self.num_classes,
                generator=torch_generator(self.config.seed, STREAM_ATTACK, round_idx, client_id, device=device),
            )
            indices = torch.arange(x.shape[0], device=device)
        return self._local_sgd(device, x=x, y=y, indices=indices, client_id=client_id, global_params=global_params,
                               epochs=spec.epochs, generator=gen, transform=transform,
                               torch_seed=derive_seed(self.config.seed, STREAM_CLIENT, round_idx, client_id, 1))

    def _local_sgd(self, device, *, x, y, indices, client_id: int, global_params: torch.Tensor, epochs: int,
                   generator: torch.Generator, torch_seed: int, transform=None) -> ClientUpdate:
        """:func:`local_train` with the client section's hyperparameters on this thread's model.
        Modules with their own randomness (dropout) draw from the global generator: it is seeded
        with ``torch_seed`` so the round replays (exact when clients run one at a time)."""
        spec = self.config.client
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(torch_seed)
            return local_train(
                self.thread_model(device), client_id=client_id, layout=self.layout,
                global_params=global_params.to(device), x=x, y=y, indices=indices, epochs=epochs,
                batch_size=spec.batch_size, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                prox_mu=spec.prox_mu, generator=generator, feature_transform=transform,
            )

    def root_update(self, *, round_idx: int, global_params: torch.Tensor) -> torch.Tensor:
        """The server's own update this round: local training on the clean root set from the
        global model, with the clients' hyperparameters and the rule's ``root_epochs`` (FLTrust's
        ``g0``), on the first device."""
        if self.root_indices is None:
            raise ValueError(f"server.aggregator = {self.config.server.aggregator.name!r} has no root data set")
        self.use_worker_threads()
        device = self.devices[0]
        data = self._data(device)
        update = self._local_sgd(
            device, x=data.x, y=data.y, indices=torch.as_tensor(self.root_indices, dtype=torch.long, device=device),
            client_id=-1, global_params=global_params,
            epochs=self.config.server.aggregator.root_epochs or self.config.client.epochs,
            generator=torch_generator(self.config.seed, STREAM_ROOT, round_idx, device=device),
            torch_seed=derive_seed(self.config.seed, STREAM_ROOT, round_idx, 1),
        )
        return update.delta.detach().to("cpu", torch.float32)

    def _train_dp_sgd(self, *, round_idx: int, client_id: int, global_params: torch.Tensor, device, data) -> ClientUpdate:
        """Sample-level DP-SGD (Opacus PrivacyEngine) for one client; the client's epsilon is
        composed over all rounds it has trained in, on its own ledger."""
        import time

        from fedops.privacy import PrivacyLedger
        from fedops.privacy.local_dp import dp_sgd_train

        p, spec = self.config.privacy, self.config.client
        start = time.perf_counter()
        idx = data.indices[client_id]
        model = self.thread_model(device)
        self.layout.load_into(model, global_params.to(device))
        _, info = dp_sgd_train(
            model, x=data.x[idx], y=data.y[idx], epochs=spec.epochs, batch_size=spec.batch_size or idx.numel(),
            lr=spec.lr, noise_multiplier=p.local_noise_multiplier, max_grad_norm=p.local_max_grad_norm,
            delta=p.delta, generator_seed=derive_seed(self.config.seed, STREAM_CLIENT, round_idx, client_id) % 2**62,
            accountant=p.accountant, flatten=self.layout.flatten,
        )
        with self._lock:
            ledger = self._ledgers.setdefault(client_id, PrivacyLedger(p.accountant, p.delta))
            for _ in range(int(info["steps"])):
                ledger.step(noise_multiplier=p.local_noise_multiplier, sample_rate=info["sample_rate"])
            epsilon = ledger.epsilon()
        return ClientUpdate(
            client_id=client_id, delta=info["delta_vector"].to(torch.float32), num_samples=int(idx.numel()),
            metrics={"steps": float(info["steps"]), "epsilon": epsilon},
            wall_time_s=time.perf_counter() - start,
        )

    def encode(self, update: ClientUpdate, *, round_idx: int, dp_clip_norm: float | None = None) -> tuple[EncodedUpdate, dict[str, Any]]:
        """The client's upload: with client-level DP, clip to ``dp_clip_norm`` first (on the
        device, before any encoding); then either the codec's payload (its state, e.g. error
        feedback's residual, kept per client across rounds) or, under secure aggregation, the
        codec's linear projection quantised to fixed point in Z_M (:mod:`fedops.secagg.encode`).
        Returns the wire message and what the client reports about it."""
        from fedops.compress.context import codec_context

        cfg, cid = self.config, update.client_id
        codec = cfg.transport.codec
        ctx = codec_context(seed=cfg.seed, layout=self.layout, round_idx=round_idx, client_id=cid)
        delta = update.delta.detach().to("cpu", torch.float32)
        report: dict[str, Any] = {}
        within = None
        if cfg.privacy.mode == "central":
            if dp_clip_norm is None:
                raise ValueError("client-level DP: the server must send the round's clip norm (dp_clip_norm)")
            norm = float(delta.norm())
            within = norm <= dp_clip_norm
            if not within:
                delta = delta * (dp_clip_norm / norm)
            report["dp_clipped"] = float(not within)
        if cfg.secagg.enabled:
            from fedops.secagg.encode import encode_dp, encode_weighted

            sa = cfg.secagg
            reduced = codec.project(delta, ctx=ctx).to(torch.float64).numpy()
            if within is not None:
                q, _ = encode_dp(reduced, clip_norm=dp_clip_norm, send_count=cfg.privacy.adaptive_clipping,
                                 within=within, clip=sa.clip, scale=sa.scale, bits=sa.bits)
            else:
                q, info = encode_weighted(reduced, weight=update.num_samples / max(self.sizes()),
                                          clip=sa.clip, scale=sa.scale, bits=sa.bits)
                report.update(info)
            msg = EncodedUpdate(client_id=cid, payload=q, nbytes=q.size * sa.bits // 8, num_samples=update.num_samples)
            return msg, report
        with self._lock:
            state = self._codec_state.get(cid)
        payload, state = codec.encode(delta, ctx=ctx, state=state)
        if state is not None:
            with self._lock:
                self._codec_state[cid] = state
        indicator = None if within is None else int(within)  # one byte: 1[||u|| <= C]
        nbytes = len(payload) + (indicator is not None)
        msg = EncodedUpdate(client_id=cid, payload=payload, nbytes=nbytes, num_samples=update.num_samples,
                            clip_indicator=indicator)
        return msg, report

    def train_and_encode(
        self, *, round_idx: int, client_id: int, global_params: torch.Tensor, dp_clip_norm: float | None = None
    ) -> tuple[EncodedUpdate, dict[str, Any]]:
        """Client side of a round: train, then encode for upload. Returns the wire message and
        the client's own report (metrics, timing) for the client table. ``dp_clip_norm`` is the
        round's DP clip norm, sent by the server with the model under client-level DP."""
        update = self.train(round_idx=round_idx, client_id=client_id, global_params=global_params)
        return self.encode_with_report(update, round_idx=round_idx, dp_clip_norm=dp_clip_norm)

    def encode_with_report(self, update: ClientUpdate, *, round_idx: int, dp_clip_norm: float | None = None
                           ) -> tuple[EncodedUpdate, dict[str, Any]]:
        client_id = update.client_id
        msg, extra = self.encode(update, round_idx=round_idx, dp_clip_norm=dp_clip_norm)
        report = {
            **update.metrics,
            **extra,
            "num_samples": update.num_samples,
            "wall_time_s": update.wall_time_s,
            "update_norm": float(update.delta.norm()),
            "device": str(self.device_for(client_id)),
        }
        return msg, report

"""The simulated clients: their data on each device (partitions as index tensors, never copies),
the model spec, and one client's local training in one round.

A runtime holds nothing that changes across rounds: what lives across rounds (codec residuals,
local-DP ledgers) is in the run's state (:mod:`fedops.round`), so a client's round can run in
any thread or process that has the runtime and gives the same bytes. It pickles without its
device copies (a Dask worker rebuilds them on its own devices), so executors can ship it to
workers once.

Clients are spread over the available GPUs (client id modulo GPU count); on a CPU-only machine
everything lives on the CPU. One model instance per (thread, device) is reused across clients.
The simulated malicious clients (``simulation.attack``) poison their data here, inside their own
training: which clients they are is the simulator's knowledge, never the server's.
"""

from __future__ import annotations

import functools
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
import torch

from fedops.client.local import local_train
from fedops.config import Config, ConfigError, parse_config
from fedops.errors import FedopsError
from fedops.rng import STREAM_ATTACK, STREAM_CLIENT, STREAM_DROPOUT, derive_seed, numpy_rng, torch_generator
from fedops.threads import torch_threads
from fedops.types import ClientUpdate, ParamLayout


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
    devices: list[torch.device] | None = None
    """None: resolved from ``execution.device`` on the machine that uses the runtime."""
    sensitive: np.ndarray | None = None
    """Each training row's group under the sensitive attribute (FairFed's group counts)."""
    reweighing_table: Any = None
    """``client.reweighing: global``: ``P(a) P(y) / P(a, y)`` from the population's pooled counts
    (set by the run before the first round)."""
    layout: ParamLayout = field(init=False)
    #: the simulator's ground truth: clients that run simulation.attack (never read by the server)
    malicious: frozenset[int] = field(default=frozenset(), init=False)
    _per_device: dict[torch.device, _DeviceData] = field(default_factory=dict, init=False, repr=False)
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _chunks: dict[torch.device, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.devices is None:
            self.devices = resolve_devices(self.config.execution.device)
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
        if self.config.execution.executor == "cohort" and self.cohort_refusal is not None:
            raise ConfigError(f"execution.executor = 'cohort' cannot vectorise this run: {self.cohort_refusal}; "
                              "use 'auto' (it trains such clients one at a time) or 'threads'")
        from fedops.attacks import choose_malicious

        sim = self.config.simulation
        self.malicious = choose_malicious(self.num_clients, fraction=sim.malicious_fraction, seed=self.config.seed)
        for dev in self.devices:  # move data once, up front
            self._data(dev)

    def __reduce__(self):
        """Pickle the CPU data and the config, not the device copies or thread-local models."""
        spec = {
            "config": self.config.to_params(), "x_train": self.x_train.cpu(), "y_train": self.y_train.cpu(),
            "partition_indices": [np.asarray(ix) for ix in self.partition_indices],
            "client_meta": self.client_meta, "input_shape": tuple(self.input_shape),
            "num_classes": self.num_classes, "sensitive": self.sensitive, "reweighing_table": self.reweighing_table,
        }
        return (_restore_runtime, (spec,))

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

    def data_on(self, device: torch.device) -> _DeviceData:
        """The training data and the clients' index tensors on ``device`` (moved there once)."""
        return self._data(device)

    def thread_model(self, device: torch.device) -> torch.nn.Module:
        """This thread's reusable model instance on ``device`` (weights are loaded per use)."""
        models = getattr(self._local, "models", None)
        if models is None:
            models = self._local.models = {}
        if device not in models:
            models[device] = self.new_model(seed=0).to(device)
        return models[device]

    def dropout_prob(self, client_id: int) -> float:
        """A client's chance of dropping out of a round: its device's (``devices``), else
        ``simulation.dropout_prob``."""
        profiles = self.device_profiles
        return profiles[client_id].dropout_prob if profiles is not None else self.config.simulation.dropout_prob

    @functools.cached_property
    def device_profiles(self):
        """The simulated devices (``config.devices``), or None."""
        from fedops.incentives.devices import profiles_for

        return profiles_for(self.config.devices, num_clients=self.num_clients, seed=self.config.seed)

    def check_dropout(self, *, round_idx: int, client_id: int) -> None:
        p = self.dropout_prob(client_id)
        if p > 0 and numpy_rng(self.config.seed, STREAM_DROPOUT, round_idx, client_id).random() < p:
            raise ClientDropped(f"client {client_id} dropped out in round {round_idx} (simulated, p={p:g})")

    def train(self, *, round_idx: int, client_id: int, global_params: torch.Tensor, state: Any = None,
              broadcast: dict[str, Any] | None = None) -> ClientUpdate:
        """Local training of one client in one round, replayable from (seed, round, client).

        Runs with ``execution.torch_threads`` (default cores // max_workers) CPU threads in the
        calling thread, whichever executor calls it."""
        if not 0 <= client_id < self.num_clients:
            raise ValueError(f"client id {client_id} out of range 0..{self.num_clients - 1}")
        self.check_dropout(round_idx=round_idx, client_id=client_id)
        with torch_threads(self.config.execution.threads_per_worker()):
            device = self.device_for(client_id)
            data = self._data(device)
            if self.config.privacy.mode == "local":
                return self._train_dp_sgd(round_idx=round_idx, client_id=client_id, global_params=global_params,
                                          device=device, data=data)
            return self._train_sgd(round_idx=round_idx, client_id=client_id, global_params=global_params,
                                   device=device, data=data, state=state, broadcast=broadcast)

    # --- cohort training (execution.executor: cohort | auto) --------------------------------
    @functools.cached_property
    def cohort_refusal(self) -> str | None:
        """None when this run's clients can be trained as a cohort, else why not (for the whole run)."""
        from fedops.client.cohort import cohort_supported

        if self.evaluates_before:
            return "clients evaluate the global model before training (q-FFL, FairFed, FairBatch)"
        why = cohort_supported(self.new_model(seed=0))
        return None if why is None else f"model {self.config.model.name!r}: {why}"

    def cohort_exclusion(self, client_id: int) -> str | None:
        """Why this client trains on its own in a cohort round (None: it joins the cohort)."""
        if self.client_meta and self.client_meta[client_id]:
            return "feature-skewed data (a random transform per batch)"
        attack = self.config.simulation.attack
        if attack.poisons_data and client_id in self.malicious:
            return "poisoned data (simulated attack)"
        return None

    def cohort_chunk(self, device: torch.device) -> int:
        """Clients a cohort chunk holds on ``device``: ``execution.cohort_chunk`` when set, else as
        many as fit in ``execution.cohort_memory_mb`` (:func:`fedops.client.cohort.chunk_for_memory`,
        measured once per device on a minibatch of the padded width)."""
        ex = self.config.execution
        if ex.cohort_chunk is not None:
            return ex.cohort_chunk
        with self._lock:
            cached = self._chunks.get(device)
        if cached is None:
            from fedops.client.cohort import chunk_for_memory

            width = self._cohort_width
            data = self._data(device)
            rows = torch.arange(min(width, data.x.shape[0]), device=device)
            with torch_threads(ex.threads_per_worker()):
                model = self.new_model(seed=0).to(device)
                cached = chunk_for_memory(model, x=data.x[rows], y=data.y[rows],
                                          budget_bytes=int(ex.cohort_memory_mb * 2**20), per_sample=self._dp is not None)
            with self._lock:
                self._chunks[device] = cached
        return cached

    def train_cohort(self, *, round_idx: int, client_ids: list[int], global_params: torch.Tensor,
                     states: dict[int, Any] | None = None, broadcast: dict[str, Any] | None = None,
                     chunk_size: int | None = None) -> dict[int, ClientUpdate | Exception]:
        """Local training of ``client_ids`` in one round, the vectorised way
        (:func:`fedops.client.cohort.cohort_train`): each client's result, or the exception that
        stopped it (a dropout). Clients the cohort path cannot train (:meth:`cohort_exclusion`,
        or every client when :attr:`cohort_refusal` says so) train one at a time, as :meth:`train`
        does. Each update's ``metrics["cohort"]`` says which path trained it."""
        from fedops.client.cohort import cohort_train

        out: dict[int, ClientUpdate | Exception] = {}
        by_device: dict[torch.device, list[Any]] = {}
        states = states or {}
        for cid in client_ids:
            try:
                if not 0 <= cid < self.num_clients:
                    raise ValueError(f"client id {cid} out of range 0..{self.num_clients - 1}")
                if self.cohort_refusal is not None or self.cohort_exclusion(cid) is not None:
                    extra = {"broadcast": broadcast} if broadcast else {}
                    if cid in states:
                        extra["state"] = states[cid]
                    update = self.train(round_idx=round_idx, client_id=cid, global_params=global_params, **extra)
                    out[cid] = replace(update, metrics={**update.metrics, "cohort": 0.0})
                    continue
                self.check_dropout(round_idx=round_idx, client_id=cid)
                device = self.device_for(cid)
                client = self._cohort_client(self._data(device), round_idx, cid, device)
                if client.indices.numel() == 0:
                    raise ValueError(f"client {cid} has no training samples")
            except Exception as exc:  # this client's failure, not the cohort's
                out[cid] = exc
                continue
            by_device.setdefault(device, []).append(client)
        with torch_threads(self.config.execution.threads_per_worker()):
            for device, clients in by_device.items():
                data = self._data(device)
                cids = [c.client_id for c in clients]
                try:
                    updates = cohort_train(
                        self.thread_model(device), layout=self.layout, global_params=global_params.to(device),
                        x=data.x, y=data.y, clients=clients, chunk_size=chunk_size or self.cohort_chunk(device),
                        **self._cohort_hp)
                except Exception as exc:  # the whole group failed (e.g. out of memory): each client reports it
                    out.update({cid: exc for cid in cids})
                    continue
                for update in updates:
                    out[update.client_id] = replace(update, metrics={**update.metrics, "cohort": 1.0})
        return {cid: out[cid] for cid in client_ids}

    @functools.cached_property
    def _dp(self):
        """The cohort path's DP-SGD (``privacy.mode: local``), or None."""
        from fedops.client.cohort import DPSGD

        p = self.config.privacy
        return (DPSGD(noise_multiplier=p.local_noise_multiplier, max_grad_norm=p.local_max_grad_norm)
                if p.mode == "local" else None)

    @property
    def _cohort_hp(self) -> dict[str, Any]:
        """The cohort path's hyperparameters: the client's SGD, or DP-SGD's plain SGD (as
        :meth:`_train_dp_sgd`: no momentum, weight decay or proximal term)."""
        spec = self.config.client
        hp = dict(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, width=self._cohort_width)
        if self._dp is not None:
            return {**hp, "dp": self._dp}
        return {**hp, "momentum": spec.momentum, "weight_decay": spec.weight_decay, "prox_mu": spec.prox_mu}

    @property
    def _cohort_width(self) -> int:
        """Rows a cohort minibatch is padded to: the batch size, or for full-batch training the
        largest client's rows. A DP-SGD Poisson batch longer than that takes a second pass: on
        this project's CPU, padding to four deviations above the batch (55 rows for 32) made the
        chunks smaller and the rounds slower (W2 probe: MLP 2.05 against 0.95 s, small CNN 0.63-0.71
        against 0.46-0.59 s)."""
        return self.config.client.batch_size or max(self.sizes())

    def _cohort_client(self, data, round_idx: int, cid: int, device, *, seed: int | None = None):
        """A cohort client with the streams its sequential training draws from (``seed``: the
        probe's own, instead of the run's)."""
        from fedops.client.cohort import CohortClient

        indices = data.indices[cid]
        if self._dp is None:
            gen = (torch.Generator(device=device).manual_seed(seed) if seed is not None
                   else torch_generator(self.config.seed, STREAM_CLIENT, round_idx, cid, device=device))
            return CohortClient(client_id=cid, indices=indices, generator=gen,
                                sample_weights=self._reweighing(data, cid, data.x, data.y, indices))
        base = self._dp_seed(round_idx, cid) if seed is None else seed  # as dp_sgd_train seeds its two streams
        return CohortClient(client_id=cid, indices=indices, generator=torch.Generator().manual_seed(base),
                            noise_generator=torch.Generator().manual_seed(base + 1))

    def _dp_seed(self, round_idx: int, client_id: int) -> int:
        """The seed of a client's DP-SGD streams: from the OS CSPRNG, or (research mode) from
        (seed, round, client)."""
        from fedops.privacy.randomness import PrivacyRandomness

        p = self.config.privacy
        source = PrivacyRandomness(seeded=p.randomness == "seeded", seed=self.config.seed)
        return source.torch_seed(STREAM_CLIENT, round_idx, client_id)

    def probe_cohort(self, *, global_params: torch.Tensor, client_ids: list[int], clients: int = 16) -> dict[str, float]:
        """Seconds to train ``clients`` of ``client_ids`` per worker (their own rows, epochs and
        batch size: the round's real work) one at a time and as a cohort, with
        ``execution.max_workers`` threads at once, each with its worker's torch threads (so the
        workers' contention, the GIL's included, is in the figure), on the first client's device,
        after a warm-up; interleaved, the fastest of three tries. Nothing of the run changes (the
        generators are the probe's own). Cached per model, device, batch size, epochs and layout
        of workers."""
        from concurrent.futures import ThreadPoolExecutor

        from fedops.client.cohort import cohort_train

        spec, ex = self.config.client, self.config.execution
        workers = max(1, ex.max_workers)
        eligible = [c for c in client_ids if self.cohort_exclusion(c) is None]
        shares = [eligible[w::workers][:clients] for w in range(workers)]
        shares = [s for s in shares if s]
        if not shares or self.cohort_refusal is not None:
            return {"cohort_s": float("inf"), "sequential_s": 0.0, "clients": float(sum(map(len, shares)))}
        device = self.device_for(shares[0][0])
        threads = ex.threads_per_worker()
        key = (self.config.model.model_dump_json(), tuple(self.input_shape), self.num_classes, str(device),
               spec.batch_size, spec.epochs, threads, len(shares), self.cohort_chunk(device), self._dp)
        if key in _PROBES:
            return _PROBES[key]
        data = self._data(device)
        params = global_params.to(device)

        def one_at_a_time(some):
            with torch_threads(threads):
                for c in some:
                    if self._dp is not None:
                        self._dp_train(device, data, c, params, seed=c)
                        continue
                    local_train(self.thread_model(device), client_id=c, layout=self.layout, global_params=params,
                                x=data.x, y=data.y, indices=data.indices[c],
                                generator=torch.Generator(device=device).manual_seed(c), epochs=spec.epochs,
                                batch_size=spec.batch_size, lr=spec.lr, momentum=spec.momentum,
                                weight_decay=spec.weight_decay, prox_mu=spec.prox_mu)

        def cohort(some):
            with torch_threads(threads):
                cohort_train(self.thread_model(device), layout=self.layout, global_params=params, x=data.x, y=data.y,
                             clients=[self._cohort_client(data, 0, c, device, seed=c) for c in some],
                             chunk_size=self.cohort_chunk(device), **self._cohort_hp)

        times: dict[str, list[float]] = {"sequential_s": [], "cohort_s": []}
        with ThreadPoolExecutor(max_workers=len(shares)) as pool:
            list(pool.map(one_at_a_time, [s[:2] for s in shares]))  # warm-up
            list(pool.map(cohort, [s[:2] for s in shares]))
            for _ in range(3):
                for name, fn in (("sequential_s", one_at_a_time), ("cohort_s", cohort)):
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t = time.perf_counter()
                    list(pool.map(fn, shares))
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    times[name].append(time.perf_counter() - t)
        result = {name: min(ts) for name, ts in times.items()}
        result["clients"] = float(sum(map(len, shares)))
        _PROBES[key] = result
        return result

    def _train_sgd(self, *, round_idx: int, client_id: int, global_params: torch.Tensor, device, data,
                   state: Any = None, broadcast: dict[str, Any] | None = None) -> ClientUpdate:
        seed = self.config.seed
        meta = self.client_meta[client_id] if self.client_meta else {}
        transform = None
        if meta:
            from fedops.partition import apply_feature_transform

            transform = lambda xb, g: apply_feature_transform(xb, meta, generator=g)  # noqa: E731
        x, y, indices = data.x, data.y, data.indices[client_id]
        attack = self.config.simulation.attack
        if attack.poisons_data and client_id in self.malicious:  # the simulator poisons this client's data
            x, y = attack.poison_data(
                x[indices], y[indices], num_classes=self.num_classes,
                generator=torch_generator(seed, STREAM_ATTACK, round_idx, client_id, device=device),
            )
            indices = torch.arange(x.shape[0], device=device)
        spec = self.config.client
        before = None
        if self.evaluates_before:
            self.layout.load_into(self.thread_model(device), global_params.to(device))
            rows = data.indices[client_id].cpu().numpy()  # the client's rows, in the order of ``indices``
            groups = None if self.sensitive is None else np.asarray(self.sensitive)[rows]
            before = self._evaluate_before(device, x, y, indices, groups)
        table, state = self._fairbatch(client_id, before, state, broadcast)
        # Modules with their own randomness (dropout) draw from the global generator: seeded here so
        # the round replays (exact when clients run one at a time). A model without any skips it
        # (seeding costs ~1.6 ms a client in torch 2.13).
        with self._seeded_forward(device, derive_seed(seed, STREAM_CLIENT, round_idx, client_id, 1)):
            update = local_train(
                self.thread_model(device), client_id=client_id, layout=self.layout,
                global_params=global_params.to(device), x=x, y=y, indices=indices, epochs=spec.epochs,
                batch_size=spec.batch_size, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                prox_mu=spec.prox_mu, generator=torch_generator(seed, STREAM_CLIENT, round_idx, client_id, device=device),
                feature_transform=transform,
                sample_weights=self._reweighing(data, client_id, x, y, indices, table=table),
            )
        if before is None:
            return update
        return replace(update, metrics={**update.metrics, "loss_before": before["loss"]},
                       group_counts=before.get("group_counts"), state=state,
                       group_losses=self._group_losses(client_id, before))

    @functools.cached_property
    def random_forward(self) -> bool:
        """Whether the model's forward pass may draw random numbers: a dropout layer, or any module
        that is neither a ``torch.nn`` layer nor fedops' own (torchvision's stochastic depth, ...)."""
        for m in self.new_model(seed=0).modules():
            if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                if m.p > 0:
                    return True
            elif not type(m).__module__.startswith(("torch.nn.modules", "fedops.models")):
                return True
        return False

    @contextmanager
    def _seeded_forward(self, device: torch.device, seed: int) -> Iterator[None]:
        if not self.random_forward:
            yield
            return
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield

    def _group_losses(self, client_id: int, before: dict[str, Any]):
        """``fairbatch_global``: what the client adds to the round's sum, ``[loss sums, counts]``."""
        if self.config.client.reweighing != "fairbatch_global":
            return None
        return np.stack([before["group_loss_sums"], before["group_label_counts"]])

    def _fairbatch(self, client_id: int, before: dict[str, Any] | None, state: Any, broadcast: dict[str, Any] | None):
        """``client.reweighing: fairbatch``: this round's group shares, one FairBatch step from the
        client's previous ones (its natural shares the first time) on the global model's losses;
        the weight table and the new state. ``fairbatch_global``: the table the server sent.
        ``(None, None)`` otherwise."""
        mode = self.config.client.reweighing
        if mode == "fairbatch_global":
            if not broadcast or "reweighing_table" not in broadcast:
                raise ValueError("client.reweighing = 'fairbatch_global' needs the round's weight table (the run sends it)")
            return torch.as_tensor(broadcast["reweighing_table"]), None
        if mode != "fairbatch":
            return None, None
        from fedops.fairness.fairbatch import fairbatch_step, fairbatch_table, natural_lambda

        counts = before["group_label_counts"]
        lam = natural_lambda(counts) if state is None else np.asarray(state["lam"], dtype=np.float64)
        lam = fairbatch_step(lam, loss_sums=before["group_loss_sums"], counts=counts,
                             alpha=self.config.client.fairbatch_alpha, target=self.config.client.fairbatch_target)
        return torch.as_tensor(fairbatch_table(lam, counts)), {"lam": [float(v) for v in lam]}

    def _reweighing(self, data, client_id: int, x, y, indices, table: torch.Tensor | None = None) -> torch.Tensor | None:
        """``client.reweighing``: weights by the rows' (group, label) as a tensor over ``x``'s rows
        (only the client's rows are read): Kamiran & Calders' from the client's own rows or the
        population's table, or FairBatch's ``table``."""
        mode = self.config.client.reweighing
        if mode == "none":
            return None
        from fedops.client.local import reweighing_weights

        if mode == "global" and self.reweighing_table is None:
            raise ValueError("client.reweighing = 'global' needs the population's counts (the run sets them)")
        rows = data.indices[client_id]
        groups = torch.as_tensor(np.asarray(self.sensitive)[rows.cpu().numpy()], device=x.device)
        weights = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        weights[indices] = reweighing_weights(groups, y[indices],
                                              table=self.reweighing_table if mode == "global" else table)
        return weights

    def group_label_counts(self, client_id: int) -> np.ndarray:
        """``counts[a, y]`` of the client's training rows (what it adds to the global reweighing sum)."""
        rows = np.asarray(self.partition_indices[client_id])
        g = np.asarray(self.sensitive)[rows].astype(np.int64)
        y = self.y_train[torch.as_tensor(rows)].numpy().astype(np.int64)
        ng = int(np.asarray(self.sensitive).max()) + 1
        return np.bincount(g * self.num_classes + y, minlength=ng * self.num_classes).reshape(ng, self.num_classes)

    @property
    def evaluates_before(self) -> bool:
        """Whether clients evaluate the global model on their training rows before training: q-FFL's
        loss ``F_k``, FairFed's group counts."""
        agg = self.config.server.aggregator
        return bool(getattr(agg, "needs_losses", False) or getattr(agg, "needs_group_counts", False)
                    or self.config.client.reweighing.startswith("fairbatch"))

    @torch.no_grad()
    def _evaluate_before(self, device, x, y, indices, groups: np.ndarray | None) -> dict[str, Any]:
        """The global model (already loaded into this thread's model) on the client's own training
        rows: their mean loss and, for FairFed, the counts per (group, label, prediction)."""
        import torch.nn.functional as F

        model = self.thread_model(device)
        was = model.training
        model.eval()
        fairbatch = self.config.client.reweighing.startswith("fairbatch")
        if fairbatch and groups is None:
            raise ValueError("FairBatch needs the sensitive attribute of the clients' rows")
        loss = torch.zeros((), dtype=torch.float64, device=device)
        cells = torch.zeros(2 * self.num_classes, dtype=torch.float64, device=device)
        preds = []
        for i in range(0, indices.numel(), 1024):
            idx = indices[i:i + 1024]
            logits = model(x[idx])
            loss += F.cross_entropy(logits, y[idx], reduction="sum").double()
            preds.append(logits.argmax(1))
            if fairbatch:  # FairBatch: the loss sums per (group, label)
                cell = torch.as_tensor(groups[i:i + 1024], device=device).long() * self.num_classes + y[idx].long()
                cells.index_add_(0, cell, F.cross_entropy(logits, y[idx], reduction="none").double())
        model.train(was)
        out: dict[str, Any] = {"loss": float(loss) / max(1, indices.numel())}
        if fairbatch:  # counted from the same rows and labels as the sums (poisoned labels included)
            out["group_loss_sums"] = cells.reshape(2, self.num_classes).cpu().numpy()
            cell = torch.as_tensor(groups, device=device).long() * self.num_classes + y[indices].long()
            out["group_label_counts"] = torch.bincount(cell, minlength=2 * self.num_classes).reshape(
                2, self.num_classes).cpu().numpy().astype(np.float64)
        if getattr(self.config.server.aggregator, "needs_group_counts", False):
            from fedops.fairness.metrics import group_counts

            if groups is None:
                raise ValueError("FairFed needs the sensitive attribute of the clients' rows")
            out["group_counts"] = group_counts(y[indices].cpu().numpy(), torch.cat(preds).cpu().numpy(), groups)
        return out

    def _train_dp_sgd(self, *, round_idx: int, client_id: int, global_params: torch.Tensor, device, data) -> ClientUpdate:
        """Sample-level DP-SGD (Opacus PrivacyEngine) for one client. Its Poisson sampling and noise
        generators are seeded from the OS CSPRNG (``privacy.randomness: os``) or, in the research
        mode, from (seed, round, client). The client's steps and sample rate travel back with the
        update; its ledger, composed over every round it trains in, is part of the run's state."""
        start = time.perf_counter()
        idx = data.indices[client_id]
        info = self._dp_train(device, data, client_id, global_params, seed=self._dp_seed(round_idx, client_id))
        return ClientUpdate(
            client_id=client_id, delta=info["delta_vector"].to(torch.float32), num_samples=int(idx.numel()),
            metrics={"steps": float(info["steps"]), "sample_rate": float(info["sample_rate"])},
            wall_time_s=time.perf_counter() - start,
        )


    def _dp_train(self, device, data, client_id: int, global_params: torch.Tensor, *, seed: int) -> dict[str, Any]:
        """:func:`fedops.privacy.local_dp.dp_sgd_train` of one client from ``global_params``."""
        from fedops.privacy.local_dp import dp_sgd_train

        p, spec = self.config.privacy, self.config.client
        idx = data.indices[client_id]
        model = self.thread_model(device)
        self.layout.load_into(model, global_params.to(device))
        _, info = dp_sgd_train(
            model, x=data.x[idx], y=data.y[idx], epochs=spec.epochs, batch_size=spec.batch_size or idx.numel(),
            lr=spec.lr, noise_multiplier=p.local_noise_multiplier, max_grad_norm=p.local_max_grad_norm,
            delta=p.delta, generator_seed=seed, accountant=p.accountant, flatten=self.layout.flatten,
            epsilon=False,  # the run's ledger composes the client's steps over rounds
        )
        return info


_PROBES: dict[tuple, dict[str, float]] = {}
"""probe_cohort's results in this process."""


def _restore_runtime(spec: dict[str, Any]) -> ClientRuntime:
    return ClientRuntime(config=parse_config(spec.pop("config")), **spec)

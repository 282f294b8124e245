"""Pydantic config models, one section per pipeline stage.

Unknown keys and invalid values are refused when the config loads, with one message naming the
key, the value and what is allowed.  Plug-ins (dataset, partitioner, model, aggregator, server
optimiser, codec, client selector) are named by registry key and validated by their own models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from fedops.registry import Registry


class ConfigError(ValueError):
    """A config that cannot run; ``str()`` is a one-line message for the user."""


def _plugin(registry_getter):
    """A before-validator that builds a plug-in from ``{name: key, **hyperparameters}``."""

    def build(value: Any) -> Any:
        registry: Registry = registry_getter()
        try:
            return registry.build(value)
        except ValidationError as exc:  # re-raise as one flat message, keeping key paths
            raise ValueError(_describe(exc, prefix="")) from None

    return BeforeValidator(build)


def _datasets():
    from fedops.data import DATASETS

    return DATASETS


def _partitioners():
    from fedops.partition import PARTITIONERS

    return PARTITIONERS


def _models():
    from fedops.models import MODELS

    return MODELS


def _aggregators():
    from fedops.aggregate import AGGREGATORS

    return AGGREGATORS


def _server_optimizers():
    from fedops.aggregate import SERVER_OPTIMIZERS

    return SERVER_OPTIMIZERS


def _codecs():
    from fedops.compress import CODECS

    return CODECS


def _selectors():
    from fedops.selection import SELECTORS

    return SELECTORS


SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
"""Names that become MLflow experiment and model names and file names: letters, digits, ``_ . -``,
not starting with a dot or a dash (no ``..``, no path separators)."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class ValidationSection(Section):
    """Great Expectations checks on the whole data set and on every client's partition."""

    enabled: bool = True
    clients: bool = True


class PartitionSection(Section):
    """How the training set is split over clients: ``num_clients`` plus a partitioner plug-in
    whose hyperparameters sit beside ``name`` (e.g. ``name: dirichlet, alpha: 0.5``)."""

    num_clients: int = Field(20, ge=1, le=10_000_000)
    partitioner: Annotated[Any, _plugin(_partitioners)] = {"name": "dirichlet", "alpha": 0.5}
    keep: list[int] = Field(default_factory=list, max_length=100_000)
    """The partitions that train, in client order (empty: all ``num_clients``): client ``j`` of the
    run holds partition ``keep[j]``. The marketplace runs a task on its enrolled owners' partitions."""

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        if isinstance(data, dict) and "partitioner" not in data:
            data = dict(data)
            own = {k: data.pop(k) for k in list(data) if k in ("num_clients", "keep")}
            return {**own, "partitioner": data or {"name": "dirichlet", "alpha": 0.5}}
        return data

    @model_validator(mode="after")
    def _keep(self) -> "PartitionSection":
        bad = [c for c in self.keep if not 0 <= c < self.num_clients]
        if bad:
            raise ValueError(f"partition.keep = {bad[:10]}: no such partition; allowed: 0..{self.num_clients - 1}")
        if len(set(self.keep)) != len(self.keep):
            raise ValueError(f"partition.keep names a partition twice: {self.keep[:20]}")
        return self

    @property
    def clients(self) -> int:
        """How many clients train: ``len(keep)`` when given, else ``num_clients``."""
        return len(self.keep) or self.num_clients


class ClientSection(Section):
    """Local training: E epochs of minibatch SGD (``batch_size: null`` = full batch, i.e.
    FedSGD when ``epochs: 1``), optional FedProx proximal term ``prox_mu``."""

    epochs: int = Field(2, ge=1, le=100_000)
    batch_size: int | None = Field(32, ge=1)
    lr: float = Field(0.05, gt=0, le=1e6)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    prox_mu: float = Field(0.0, ge=0)
    reweighing: Literal["none", "local", "global", "fairbatch", "fairbatch_global"] = "none"
    """Debiasing in local training. Kamiran & Calders 2012 (aimed at demographic parity): each
    client weights its rows by ``P(a) P(y) / P(a, y)`` (group ``a`` of the sensitive attribute,
    label ``y``): ``local`` from its own rows, ``global`` from the population's counts, pooled once
    through the round's sum (a secure sum under secure aggregation), as in Abay et al. 2020.
    ``fairbatch`` (aimed at equal opportunity or equalized odds, ``fairbatch_target``): FairBatch's
    group shares within each label, adapted every round from the global model's losses on the
    client's rows (:mod:`fedops.fairness.fairbatch`; step ``fairbatch_alpha``; binary attribute and
    label); ``fairbatch_global``: the same shares for
    the whole population, moved by the clients' pooled losses (a secure sum under secure aggregation),
    which also reweighs clients that hold one group only. FairFed's authors pair their aggregation
    with such local debiasing. Needs a sensitive attribute."""
    fairbatch_alpha: float = Field(0.05, gt=0, le=1)
    """FairBatch's step on a group's share per round (``reweighing: fairbatch`` and ``fairbatch_global``)."""
    fairbatch_target: Literal["eqopp", "eqodds"] = "eqopp"
    """What FairBatch equalises: ``eqopp``, the loss gap on positive rows (the true-positive-rate
    gap, FairFed's EOD), or ``eqodds``, the larger of the two labels' gaps."""


class ServerSection(Section):
    rounds: int = Field(30, ge=1, le=1_000_000)
    fraction: float = Field(0.5, gt=0, le=1)
    min_clients: int = Field(1, ge=1)
    selector: Annotated[Any, _plugin(_selectors)] = "uniform"
    backups: int = Field(0, ge=0, le=100_000)
    """Extra ranked clients per round, promoted in rank order when a cohort member drops."""
    min_reputation: float | None = Field(None, ge=0, le=1)
    """Leave out clients whose reputation is below this (needs ``reputation.enabled``)."""
    aggregator: Annotated[Any, _plugin(_aggregators)] = "fedavg"
    optimizer: Annotated[Any, _plugin(_server_optimizers)] = "fedavg"
    eval_every: int = Field(1, ge=1, le=1_000_000)


class TransportSection(Section):
    """What travels: the upload codec (``none`` sends float32)."""

    codec: Annotated[Any, _plugin(_codecs)] = "none"


def _attacks():
    from fedops.attacks import ATTACKS

    return ATTACKS


class MissingValuesSection(Section):
    """Simulated bad data: ``rate`` of the feature cells of each listed client's training rows are
    missing (tabular data sets only), as in CrowdFL's Pima experiment."""

    clients: list[int] = Field(default_factory=list)
    rate: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> "MissingValuesSection":
        if any(c < 0 for c in self.clients) or len(set(self.clients)) != len(self.clients):
            raise ValueError(f"clients = {self.clients}: expected distinct client ids >= 0")
        return self


class SimulationSection(Section):
    """Simulated client behaviour: ``dropout_prob`` of a selected client failing every attempt;
    ``malicious_fraction`` of the clients (fixed for the run, known to the simulator only) run
    ``attack`` (a plug-in: sign_flip, gaussian, label_flip, alie, ipm, backdoor, free_rider)."""

    dropout_prob: float = Field(0.0, ge=0, lt=1)
    attack: Annotated[Any, _plugin(_attacks)] = "none"
    malicious_fraction: float = Field(0.0, ge=0, lt=1)
    missing_values: MissingValuesSection = MissingValuesSection()

    @model_validator(mode="after")
    def _check_attack(self) -> "SimulationSection":
        if (self.attack.name == "none") != (self.malicious_fraction == 0):
            raise ValueError(
                f"attack = {self.attack.name!r} with malicious_fraction = {self.malicious_fraction}: set both "
                "(an attack and a fraction > 0) or neither"
            )
        return self


class DeviceRanges(Section):
    """``devices.source: ranges``: each profile field uniform in its ``[low, high]``."""

    cpu_cores: tuple[float, float] = (1.0, 8.0)
    ram_mb: tuple[float, float] = (100.0, 4000.0)
    storage_mb: tuple[float, float] = (20.0, 64000.0)
    bandwidth_mbps: tuple[float, float] = (1.0, 100.0)
    speed: tuple[float, float] = (0.25, 2.0)
    dropout_prob: tuple[float, float] = (0.0, 0.0)

    @model_validator(mode="after")
    def _check(self) -> "DeviceRanges":
        for name, (lo, hi) in self:
            if not lo <= hi:
                raise ValueError(f"devices.ranges.{name} = [{lo}, {hi}]: expected low <= high")
            if lo < 0 or (name != "dropout_prob" and lo <= 0) or (name == "dropout_prob" and hi >= 1):
                raise ValueError(f"devices.ranges.{name} = [{lo}, {hi}]: expected "
                                 + ("0 <= low <= high < 1" if name == "dropout_prob" else "0 < low <= high"))
        return self


class DeviceRow(Section):
    """One client's device (``devices.source: table``)."""

    cpu_cores: float = Field(..., gt=0)
    ram_mb: float = Field(..., gt=0)
    storage_mb: float = Field(..., gt=0)
    bandwidth_mbps: float = Field(..., gt=0)
    speed: float = Field(..., gt=0)
    dropout_prob: float = Field(0.0, ge=0, lt=1)


class DevicesSection(Section):
    """Simulated devices (:mod:`fedops.incentives.devices`): every client gets a profile (CPU
    cores, free RAM and storage, bandwidth, a compute-speed factor, a dropout probability) drawn
    from ``ranges`` (seeded), given as ``table`` (one row per client), or ``crowdfl_table2``
    (CrowdFL's four devices: their free RAM and storage; CPU, bandwidth and speed are fedops').
    Each round a client's time on a virtual clock is ``steps * step_s / speed`` of compute plus
    its bytes over its bandwidth; a client drops out with its profile's probability."""

    source: Literal["none", "ranges", "table", "crowdfl_table2"] = "none"
    ranges: DeviceRanges = DeviceRanges()
    table: list[DeviceRow] = Field(default_factory=list)
    step_s: float = Field(0.05, gt=0)
    """Seconds one local optimisation step takes on a device of speed 1."""

    @property
    def enabled(self) -> bool:
        return self.source != "none"


def _estimators():
    from fedops.contribution import ESTIMATORS

    return ESTIMATORS


class ContributionSection(Section):
    """Contribution scoring every round (:mod:`fedops.contribution`): the round's coalition game by
    reconstruction (the global model plus the sample-weighted mean of a coalition's accepted
    updates) scored by accuracy on the server's validation set (``validation_size`` rows of the
    server's test set, drawn once from the seed), and an ``estimator`` (``loo``,
    ``exact_shapley``, ``tmc_shapley``, ``gtg_shapley``). Needs individual updates."""

    enabled: bool = False
    estimator: Annotated[Any, _plugin(_estimators)] = "gtg_shapley"
    validation_size: int = Field(1000, ge=10)


class ReputationSection(Section):
    """A reputation ledger that lasts across runs and tasks (:mod:`fedops.reputation`): every
    round's events (completed, dropped, rejected, flagged, contribution) and the task's points
    go to the database at ``ledger`` (SQLAlchemy URL; a relative SQLite path is in the work
    directory); each client's subjective-logic reputation is computed from them (``kappa``,
    ``eta``: weights of positive and negative events, ``fading`` per later task). ``task`` names
    the task the events belong to (default: the run)."""

    enabled: bool = False
    ledger: str = "sqlite:///ledger.db"
    task: str | None = Field(None, min_length=1, max_length=200)
    kappa: float = Field(1.0, gt=0)
    eta: float = Field(3.0, gt=0)
    fading: float = Field(0.8, gt=0, le=1)
    client_ids: list[str] = Field(default_factory=list, max_length=100_000)
    """The ledger's name of each client, in client order (empty: the client's index). The
    marketplace names its owners, so a reputation follows an owner across tasks."""

    @model_validator(mode="after")
    def _check(self) -> "ReputationSection":
        if self.eta < self.kappa:
            raise ValueError(f"reputation.eta = {self.eta} must be at least reputation.kappa = {self.kappa} "
                             "(negative interactions weigh more)")
        if self.enabled:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(self.ledger)
            except ArgumentError:
                raise ValueError(f"reputation.ledger = {self.ledger!r} is not a database URL; expected e.g. "
                                 "sqlite:///ledger.db or postgresql://user@host/db") from None
        return self


class IncentivesSection(Section):
    """Incentive points (:mod:`fedops.incentives.points`): when training ends, ``budget`` points
    are split over the clients that completed at least one round: ``floor`` each, the rest by
    ``scheme`` (``equal``, ``data_size``, ``contribution``: cumulative contribution). 0: off."""

    budget: float = Field(0.0, ge=0)
    scheme: Literal["equal", "data_size", "contribution"] = "equal"
    floor: float = Field(0.0, ge=0)


class PrivacySection(Section):
    """Differential privacy. ``central``: client-level DP-FedAvg (McMahan et al. 2018): each
    update clipped to ``clip_norm`` (fixed, or adaptive as in Andrew et al. 2021), Gaussian noise
    on the sum at the server, accounted by an Opacus accountant. Give ``noise_multiplier``, or
    ``target_epsilon`` alone to solve it for ``server.rounds``; with ``target_epsilon`` a run
    whose next round would exceed it stops cleanly. ``local``: sample-level DP-SGD inside every
    client via Opacus' PrivacyEngine."""

    mode: Literal["none", "central", "local"] = "none"
    delta: float = Field(1e-5, gt=0, lt=1)
    accountant: str = "rdp"
    noise_multiplier: float | None = Field(None, ge=0)
    target_epsilon: float | None = Field(None, gt=0)
    clip_norm: float = Field(0.1, gt=0)
    adaptive_clipping: bool = False
    target_quantile: float = Field(0.5, ge=0, le=1)
    clip_lr: float = Field(0.2, ge=0)
    clip_count_stddev: float | None = Field(None, ge=0)
    local_noise_multiplier: float = Field(1.0, ge=0)
    local_max_grad_norm: float = Field(1.0, gt=0)
    fix_model: bool = False
    randomness: Literal["os", "seeded"] = "os"
    """Where DP noise, the DP client sampling and local DP-SGD's seeds come from: ``os`` (the
    operating system's CSPRNG) or ``seeded`` (research mode: derived from ``seed``, so runs repeat
    bit for bit, and epsilon holds only against parties who do not know the seed)."""

    @model_validator(mode="after")
    def _check(self) -> "PrivacySection":
        from fedops.privacy import ACCOUNTANTS

        ACCOUNTANTS.get(self.accountant)  # unknown -> ValueError listing the known ones
        if self.randomness == "seeded" and self.mode == "none":
            raise ValueError(
                "privacy.randomness = 'seeded' is the research mode of a DP run; with privacy.mode = 'none' there is "
                "no privacy randomness to seed: remove it or set privacy.mode"
            )
        if self.mode == "central" and self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError(
                "privacy.mode = 'central' needs privacy.noise_multiplier or privacy.target_epsilon "
                "(a DP run with no noise and no budget is not a DP run)"
            )
        return self


class SecAggSection(Section):
    """Secure aggregation (Bonawitz et al. 2017; SecAgg+ neighbour graph of Bell et al. 2020):
    the server learns only the sum of the surviving clients' updates. Each client clips every
    coordinate of its update to [-clip, clip], weights it by its sample count (relative to the
    largest client) and quantises it to fixed point in Z_M, M = 2**bits. ``neighbours`` is
    SecAgg+'s k (default ~2 log2 n); ``complete_graph: true`` runs plain SecAgg."""

    enabled: bool = False
    bits: Literal[32, 64] = 32
    clip: float = Field(1.0, gt=0)
    scale: float = Field(65536.0, gt=0)
    complete_graph: bool = False
    neighbours: int | None = Field(None, ge=1)
    threshold: int | None = Field(None, ge=1)
    dropout_fraction: float = Field(0.0, ge=0, lt=1)
    dropout_stage: Literal["advertise", "share", "masked"] = "masked"


class QualitySection(Section):
    """Quality control of individual updates, every round (needs individual updates, so it is
    off under secure aggregation). ``norm_multiple``: reject an update whose L2 norm exceeds this
    multiple of the round's median norm (off when null). ``anomaly_scores``: robust norm z-score
    of the log norm (median / MAD), cosine to the aggregate and its robust z-score, and Krum score per client in
    the client table (null: on unless secure aggregation or central DP is on). A client is flagged
    when its norm z-score exceeds ``flag_norm_z`` or its cosine z-score is below ``-flag_cosine_z``
    (outliers relative to the round's other clients); rounds with fewer than ``flag_min_clients``
    updates flag no one. ``num_byzantine``: Krum's f for
    the score (null: the largest f with n > 2f + 2). ``bad_data``: what happens to a client whose
    own data failed its Great Expectations suite (partition stage): ``exclude`` (not trained,
    rejected in the client table), ``downweight`` (its aggregation weight times
    ``bad_data_weight``) or ``keep``."""

    norm_multiple: float | None = Field(None, gt=1)
    anomaly_scores: bool | None = None
    flag_norm_z: float = Field(3.5, gt=0)
    flag_cosine_z: float = Field(3.5, gt=0)
    flag_min_clients: int = Field(10, ge=3)
    num_byzantine: int | None = Field(None, ge=0)
    bad_data: Literal["exclude", "downweight", "keep"] = "exclude"
    bad_data_weight: float = Field(0.1, gt=0, lt=1)

    def scores_on(self, *, secagg: bool, central_dp: bool) -> bool:
        """Per-client anomaly scores: on by default unless the server must not see (secure
        aggregation) or release (central DP) per-client values."""
        return (not (secagg or central_dp)) if self.anomaly_scores is None else self.anomaly_scores


class ExecutionSection(Section):
    """Where clients train: ``device`` auto picks CUDA when present (clients spread over the
    GPUs), else CPU. ``executor`` runs the client work: ``threads`` (Prefect tasks on a pool of
    ``max_workers`` threads), ``dask`` (Prefect tasks on Dask through prefect-dask: a local
    cluster of ``max_workers`` single-threaded processes, or the existing cluster whose scheduler
    is at ``dask_address``), ``sequential`` (one client after another in the calling thread, no
    Prefect tasks), ``cohort`` (the clients of a task trained at once, vectorised with
    ``torch.func``, or a hand-written kernel for chains of Linear and ReLU layers,
    ``cohort_chunk`` at a time, by default as many as fit in
    ``cohort_memory_mb``) or ``auto`` (cohort or one client at a time,
    whichever a short probe of the model on the device finds faster). ``clients_per_task`` puts
    at most that many clients in one Prefect task, the round's clients spread over the tasks by
    their training rows so that the tasks carry similar work (default: for ``threads``, ``cohort``
    and ``auto``, one task per worker, ``max_workers`` tasks a round; for ``dask``, one client per
    task). Failed clients
    are retried ``retries`` times. ``torch_threads`` per worker defaults to cores // max_workers:
    on CPU, one OpenMP team per core beats several teams competing for the same cores.

    The executor does not change the result beyond rounding: ``threads``, ``dask`` and
    ``sequential`` give the same model bytes for the same config and seed on one machine;
    ``cohort`` gives the same bytes whatever ``cohort_chunk`` and ``clients_per_task`` are, and
    the per-client path's updates to float rounding (vectorised kernels sum in another order)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    executor: Literal["threads", "dask", "sequential", "cohort", "auto"] = "threads"
    dask_address: str | None = Field(None, min_length=1)
    max_workers: int = Field(2, ge=1, le=4096)
    clients_per_task: int | None = Field(None, ge=1, le=100_000)
    cohort_chunk: int | None = Field(None, ge=1, le=100_000)
    """At most this many clients are trained at once by the cohort path; None: as many as fit in
    ``cohort_memory_mb``."""
    cohort_memory_mb: float = Field(64.0, gt=0, le=1_048_576)
    """Per worker: what one cohort chunk may take (the tensors autograd saves for one minibatch
    of each client, measured on the device, plus copies of its parameters). On a GPU, raise it."""
    retries: int = Field(1, ge=0)
    retry_delay_s: float = Field(0.0, ge=0)
    torch_threads: int | None = Field(None, ge=1)
    malloc: Literal["retain", "default"] = "retain"
    """``retain``: the process that runs the rounds keeps the memory a round frees for the next
    round (glibc's mmap and trim thresholds, :mod:`fedops.malloc`; the free heap goes back when the
    rounds end; Dask's worker processes are left as Dask sets them); ``default``: the C library's
    own settings in a process that has not retained yet. It changes speed and memory, never results."""

    @model_validator(mode="after")
    def _check(self) -> "ExecutionSection":
        if self.dask_address is not None and self.executor != "dask":
            raise ValueError(
                f"execution.dask_address = {self.dask_address!r} needs execution.executor = 'dask' "
                f"(got {self.executor!r})"
            )
        if self.clients_per_task is not None and self.executor == "sequential":
            raise ValueError(
                f"execution.clients_per_task = {self.clients_per_task} needs Prefect tasks: the 'sequential' "
                "executor runs no tasks (choose threads, dask, cohort or auto)"
            )
        return self

    def group_size(self, count: int) -> int:
        """Clients per task in a round of ``count`` clients."""
        if self.clients_per_task is not None:
            return self.clients_per_task
        if self.executor in ("threads", "cohort", "auto"):  # a task run costs the API server ~50 ms of CPU
            return max(1, -(-count // self.max_workers))
        return 1

    def threads_per_worker(self) -> int:
        import os

        return self.torch_threads or max(1, (os.cpu_count() or 1) // self.max_workers)


class TrackingSection(Section):
    """MLflow: ``uri`` (or ``MLFLOW_TRACKING_URI``) overrides the embedded SQLite store."""

    uri: str | None = None
    experiment: str | None = Field(None, pattern=SAFE_NAME)
    register_model: bool = True
    model_name: str | None = Field(None, pattern=SAFE_NAME)
    promote_margin: float = Field(0.0, ge=0, le=1)
    """A new registered version takes the ``current`` alias only if its test accuracy is at most
    this much (a fraction) below the version holding it, on the same test set."""
    ui_url: str = Field("http://127.0.0.1:5000", pattern=r"^https?://\S+$")
    """Where people open the MLflow UI (``fedops ui``'s address by default): links to runs use it."""


class BaselineSection(Section):
    """A centralised model trained on the union of the clients' data, same split, logged beside
    the federated run."""

    enabled: bool = True
    epochs: int = Field(3, ge=1, le=100_000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)


from fedops.fairness.checks import CHECKS, GROUP_CHECKS  # noqa: E402  (the checks' table)


class FairnessChecks(Section):
    """Thresholds the final model must meet (unset: not checked). A run whose final model fails
    one finishes, is tagged with the failed checks, its model is registered without the
    ``current`` alias, and ``fedops run`` exits with status 3."""

    max_dpd: float | None = Field(None, ge=0, le=1)
    max_eqodds: float | None = Field(None, ge=0, le=1)
    max_eopp: float | None = Field(None, ge=0, le=1)
    max_abs_spd: float | None = Field(None, ge=0, le=1)
    max_abs_eod: float | None = Field(None, ge=0, le=1)
    max_client_acc_std: float | None = Field(None, ge=0, le=1)
    min_client_acc_worst10: float | None = Field(None, ge=0, le=1)
    min_client_acc_min: float | None = Field(None, ge=0, le=1)
    min_jain_index: float | None = Field(None, ge=0, le=1)

    def active(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class FairnessSection(Section):
    """Fairness checks every evaluation round. Client-level: the global model's accuracy on every
    client's held-out split (``holdout`` of each client's rows, drawn per client from the seed and
    never trained on). Group-level (data sets with a sensitive attribute): demographic parity,
    equalized odds and equal opportunity differences with fairlearn on the test set, and per
    client on the held-out splits. ``enabled: null`` turns it on for data sets with a sensitive
    attribute."""

    enabled: bool | None = None
    holdout: float = Field(0.2, gt=0, lt=1)
    checks: FairnessChecks = FairnessChecks()


class Config(Section):
    name: str = Field("fashion-mnist-default", pattern=SAFE_NAME)
    seed: int = Field(0, ge=0)
    data: Annotated[Any, _plugin(_datasets)] = "fashion_mnist"
    validation: ValidationSection = ValidationSection()
    partition: PartitionSection = PartitionSection()
    model: Annotated[Any, _plugin(_models)] = "small_cnn"
    client: ClientSection = ClientSection()
    server: ServerSection = ServerSection()
    transport: TransportSection = TransportSection()
    simulation: SimulationSection = SimulationSection()
    privacy: PrivacySection = PrivacySection()
    secagg: SecAggSection = SecAggSection()
    quality: QualitySection = QualitySection()
    execution: ExecutionSection = ExecutionSection()
    tracking: TrackingSection = TrackingSection()
    baseline: BaselineSection = BaselineSection()
    fairness: FairnessSection = FairnessSection()
    devices: DevicesSection = DevicesSection()
    contribution: ContributionSection = ContributionSection()
    reputation: ReputationSection = ReputationSection()
    incentives: IncentivesSection = IncentivesSection()

    @property
    def fairness_on(self) -> bool:
        f = self.fairness.enabled
        return self.data.sensitive_attribute is not None if f is None else f

    @model_validator(mode="after")
    def _combinations(self) -> "Config":
        self._check_fairness()
        k = self.partition.clients
        ids = self.reputation.client_ids
        if ids and (len(ids) != k or len(set(ids)) != k or not all(i.strip() for i in ids)):
            raise ValueError(f"reputation.client_ids has {len(ids)} names ({len(set(ids))} distinct) for {k} clients; "
                             "expected one distinct, non-empty name per client")
        per_round = clients_per_round(k, self.server.fraction)
        self._check_crowd(k, per_round)
        if self.server.min_clients > per_round:
            raise ValueError(
                f"server.min_clients = {self.server.min_clients} exceeds the clients selected per "
                f"round ({per_round} = fraction {self.server.fraction} x {k} clients); "
                f"allowed: 1..{per_round}"
            )
        sim = self.simulation
        if sim.malicious_fraction > 0 and round(sim.malicious_fraction * k) < 1:
            raise ValueError(
                f"simulation.malicious_fraction = {sim.malicious_fraction} of {k} clients selects no client; "
                f"allowed: at least {0.5 / k:.3g}"
            )
        known = getattr(self.data, "num_train", None)  # data sets whose size the config fixes (synthetic)
        if isinstance(known, int):
            per_client = max(1, int(getattr(self.partition.partitioner, "min_size", 1) or 1))
            n = self.partition.num_clients
            if n * per_client > known:
                raise ValueError(
                    f"partition.num_clients = {n} needs at least {n * per_client} training examples ({per_client} per "
                    f"client), but data.num_train = {known}; allowed: 1..{known // per_client} clients"
                )
        bad = [c for c in sim.missing_values.clients if c >= k]
        if bad:
            raise ValueError(f"simulation.missing_values.clients = {bad}: no such client; allowed: 0..{k - 1}")
        if sim.missing_values.clients and not getattr(self.data, "tabular", False):
            raise ValueError(
                f"simulation.missing_values needs a tabular data set (e.g. pima), got data.name = {self.data.name!r}"
            )
        if self.quality.bad_data == "downweight" and (self.secagg.enabled or self.privacy.mode == "central"):
            raise ValueError(
                "quality.bad_data = 'downweight' needs the server to weight individual updates, which "
                f"{'secure aggregation' if self.secagg.enabled else 'DP-FedAvg (unweighted clipped sum)'} "
                "does not; use 'exclude' or 'keep'"
            )
        if self.secagg.enabled:
            self._check_secagg(per_round)
        self._check_cohort()
        check_cohort = getattr(self.server.aggregator, "check_cohort", None)
        if check_cohort is not None:
            try:
                check_cohort(per_round)
            except ValueError as exc:
                raise ValueError(
                    f"server.aggregator = {self.server.aggregator.name!r} with {per_round} clients per round: {exc}"
                ) from None
        if self.privacy.mode == "central":
            if self.server.selector.name != "poisson":
                raise ValueError(
                    f"privacy.mode = 'central' needs server.selector = 'poisson' (got "
                    f"{self.server.selector.name!r}): the accountant's privacy amplification assumes "
                    "each client joins a round independently with probability q = server.fraction"
                )
            if self.server.aggregator.name != "fedavg":
                raise ValueError(
                    f"privacy.mode = 'central' aggregates with DP-FedAvg (clip, sum, noise); "
                    f"server.aggregator = {self.server.aggregator.name!r} decides each client's influence from the "
                    "other clients' updates, which breaks the sensitivity bound C: use fedavg"
                )
            if self.quality.norm_multiple is not None:
                raise ValueError(
                    f"privacy.mode = 'central' cannot run with quality.norm_multiple = {self.quality.norm_multiple:g}: "
                    "that filter rejects an update by comparing it with the round's median norm, so one client's "
                    "update decides whether others are rejected and the sum's sensitivity is no longer the clip "
                    "norm C; unset quality.norm_multiple (clipping to C already bounds every update)"
                )
            if self.quality.anomaly_scores:
                raise ValueError(
                    "privacy.mode = 'central' releases nothing computed from individual updates, so "
                    "quality.anomaly_scores (per-client norm z, cosine and Krum scores) cannot run; unset it"
                )
        return self

    def _check_cohort(self) -> None:
        """``execution.executor: cohort`` trains every client the vectorised way; what needs a
        client's own training loop is refused here (``auto`` runs those one at a time instead)."""
        if self.execution.executor != "cohort":
            return
        agg = self.server.aggregator
        why = None
        if getattr(agg, "needs_losses", False) or getattr(agg, "needs_group_counts", False):
            why = f"server.aggregator = {agg.name!r} has each client evaluate the global model before training"
        elif self.client.reweighing.startswith("fairbatch"):
            why = f"client.reweighing = {self.client.reweighing!r} has each client evaluate the global model first"
        if why is not None:
            raise ValueError(f"execution.executor = 'cohort': {why}, which the cohort path does not do; "
                             "use 'auto' (it trains such clients one at a time) or 'threads'")

    def _check_fairness(self) -> None:
        sensitive = self.data.sensitive_attribute
        checks = self.fairness.checks.active()
        agg = self.server.aggregator
        group = sorted(set(checks) & GROUP_CHECKS)
        if group and sensitive is None:
            raise ValueError(
                f"fairness.checks {group} measure group fairness, but data set {self.data.name!r} has no sensitive "
                "attribute (use adult or compas, or only the client-level checks)")
        if checks and not self.fairness_on:
            raise ValueError(f"fairness.checks {sorted(checks)} need fairness measured: set fairness.enabled: true")
        private = self.secagg.enabled or self.privacy.mode == "central"
        client_checks = sorted(set(checks) - GROUP_CHECKS)
        if client_checks and private:
            raise ValueError(
                f"fairness.checks {client_checks} read per-client accuracies, which "
                f"{'secure aggregation' if self.secagg.enabled else 'client-level DP'} does not release; "
                "keep only the test-set group checks (max_dpd, max_eqodds, max_eopp, max_abs_spd, max_abs_eod)")
        if self.client.reweighing != "none" and sensitive is None:
            raise ValueError(f"client.reweighing weights rows by their group of the sensitive attribute; data set "
                             f"{self.data.name!r} has none (use adult or compas)")
        if self.client.reweighing != "none" and self.privacy.mode != "none":
            raise ValueError(f"client.reweighing = {self.client.reweighing!r} cannot run with privacy.mode = "
                             f"{self.privacy.mode!r}: the weights and the pooled counts are not covered by the privacy "
                             "accounting")
        if self.client.reweighing.startswith("fairbatch") and sensitive is not None and (
                self.data.num_groups != 2 or len(getattr(self.data, "CLASSES", ())) != 2):
            raise ValueError(f"client.reweighing = {self.client.reweighing!r} needs a binary sensitive attribute and a binary label; "
                             f"data.sensitive = {sensitive!r} has {self.data.num_groups} groups and "
                             f"{self.data.name!r} {len(getattr(self.data, 'CLASSES', ()))} classes (set data.binary: true)")
        part = self.partition.partitioner
        if getattr(part, "uses_sensitive", False) and sensitive is None:
            raise ValueError(
                f"partition {part.name!r} skews the sensitive attribute, but data set {self.data.name!r} has none")
        column = getattr(part, "column", None)
        if column is not None:
            known = getattr(self.data, "CATEGORICAL", ())
            if column not in known:
                raise ValueError(f"partition.column = {column!r} is not a categorical column of {self.data.name!r}"
                                 + (f"; allowed: {', '.join(known)}" if known else " (it has none)"))
        if getattr(agg, "needs_group_counts", False):
            if sensitive is None:
                raise ValueError(f"server.aggregator = {agg.name!r} needs a sensitive attribute; data set "
                                 f"{self.data.name!r} has none (use adult or compas)")
            if self.data.num_groups != 2:
                raise ValueError(f"server.aggregator = {agg.name!r} needs a binary sensitive attribute; "
                                 f"data.sensitive = {sensitive!r} with data.binary: false has {self.data.num_groups} "
                                 "groups (set data.binary: true)")
            if len(getattr(self.data, "CLASSES", ())) != 2:
                raise ValueError(f"server.aggregator = {agg.name!r} needs a binary label; {self.data.name!r} has "
                                 f"{len(getattr(self.data, 'CLASSES', ()))} classes")
        if getattr(agg, "needs_losses", False) and self.secagg.enabled:
            raise ValueError(f"server.aggregator = {agg.name!r} weighs each update by its client's loss, which the "
                             "server would need per client; secure aggregation hides that: use fedavg or fairfed")
        if getattr(agg, "needs_losses", False) and self.privacy.mode == "local":
            raise ValueError(f"server.aggregator = {agg.name!r} needs each client's training loss; local DP-SGD does "
                             "not report it: use fedavg")

    def _check_crowd(self, k: int, per_round: int) -> None:
        """Devices, selection with context, backups, contribution, reputation and incentives."""
        srv, dev, rep, con, inc = self.server, self.devices, self.reputation, self.contribution, self.incentives
        sel = srv.selector
        if dev.source == "table" and len(dev.table) != k:
            raise ValueError(f"devices.table has {len(dev.table)} rows for {k} clients; expected one row per client")
        if dev.source != "table" and dev.table:
            raise ValueError(f"devices.table is given but devices.source = {dev.source!r}; set devices.source: table")
        if dev.source == "crowdfl_table2" and k != 4:
            raise ValueError(f"devices.source = 'crowdfl_table2' holds CrowdFL's 4 devices; partition.num_clients = {k}")
        if dev.enabled and self.simulation.dropout_prob > 0:
            raise ValueError(f"simulation.dropout_prob = {self.simulation.dropout_prob} with devices.source = "
                             f"{dev.source!r}: a client's dropout probability is its device's; set it in devices")
        needs = set(getattr(sel, "needs", ()))
        if "devices" in needs and not dev.enabled:
            raise ValueError(f"server.selector = {sel.name!r} reads device profiles; set devices.source "
                             "(ranges, table or crowdfl_table2)")
        if ("reputation" in needs or srv.min_reputation is not None) and not rep.enabled:
            what = "server.min_reputation" if srv.min_reputation is not None else \
                f"server.selector = {sel.name!r} with a reputation weight"
            raise ValueError(f"{what} needs reputations: set reputation.enabled: true")
        if self.privacy.mode == "central":
            on = [name for name, flag in (("devices", dev.enabled), ("contribution", con.enabled),
                                          ("reputation", rep.enabled), ("incentives", inc.budget > 0),
                                          ("server.backups", srv.backups > 0)) if flag]
            if on:
                raise ValueError(f"privacy.mode = 'central' keeps who took part in a round secret (the accountant's "
                                 f"amplification by sampling); {', '.join(on)} would record it per client: turn "
                                 f"{'it' if len(on) == 1 else 'them'} off")
        if srv.backups and sel.variable_cohort:
            raise ValueError(f"server.backups = {srv.backups} needs a ranking to promote from; server.selector = "
                             f"{sel.name!r} draws each client independently: use uniform, crowdfl or fedcs")
        if con.enabled:
            est = con.estimator
            n = k if sel.variable_cohort else per_round  # a backup only replaces a client that dropped
            try:
                est.check_players(n)
            except ValueError as exc:
                raise ValueError(f"contribution.estimator: {exc}") from None
            if self.secagg.enabled:
                raise ValueError(f"contribution.estimator = {est.name!r} scores each client's own update, which "
                                 "secure aggregation hides from the server (it learns only the sum); turn one off")
        if inc.scheme == "contribution" and inc.budget > 0 and not con.enabled:
            raise ValueError("incentives.scheme = 'contribution' splits points by contribution: set "
                             "contribution.enabled: true")
        if inc.floor * k > inc.budget and inc.budget > 0:
            raise ValueError(f"incentives.floor = {inc.floor} for up to {k} clients is {inc.floor * k} points, more "
                             f"than incentives.budget = {inc.budget}")
        if inc.floor > 0 and inc.budget == 0:
            raise ValueError(f"incentives.floor = {inc.floor} with incentives.budget = 0: set a budget")
        if inc.scheme == "data_size" and inc.budget > 0 and self.secagg.enabled:
            raise ValueError("incentives.scheme = 'data_size' pays in proportion to each client's sample count, which "
                             "secure aggregation keeps from the server and the released tables: use equal")

    def _check_secagg(self, per_round: int) -> None:
        from fedops.secagg import check_overflow

        if self.server.aggregator.needs_individual_updates:
            raise ValueError(
                f"secagg.enabled hides individual updates, so server.aggregator = "
                f"{self.server.aggregator.name!r} (which needs them) cannot run; use fedavg"
            )
        if self.server.aggregator.name not in ("fedavg", "fairfed"):
            raise ValueError(
                f"secagg.enabled gives the server only the sum of the updates, which it averages with FedAvg; "
                f"server.aggregator = {self.server.aggregator.name!r} would have to run on each client before "
                "masking, which fedops does not do: use fedavg or fairfed"
            )
        if self.quality.norm_multiple is not None or self.quality.anomaly_scores:
            raise ValueError(
                "secagg.enabled hides individual updates, so the per-client checks quality.norm_multiple and "
                "quality.anomaly_scores cannot run; unset them"
            )
        codec = self.transport.codec
        if not codec.secagg_compatible:
            from fedops.compress import CODECS

            ok = [k for k in CODECS.keys() if CODECS.get(k).secagg_compatible]
            settings = ", ".join(f"{k} = {v!r}" for k, v in codec.model_dump(exclude_defaults=True).items() if k != "name")
            raise ValueError(
                f"transport.codec = {codec.name!r}{f' ({settings})' if settings else ''} cannot run with "
                "secagg.enabled: its payloads are "
                "not one linear map shared by every client, so they cannot be summed under masks; use one of "
                f"{', '.join(ok)} (secure aggregation quantises to fixed point with a shared scale itself)"
            )
        # The most clients that can be in one sum: the round size, or everyone under Poisson sampling.
        n = self.partition.clients if self.server.selector.variable_cohort else per_round
        check_overflow(n=n, clip=self.secagg.clip, scale=self.secagg.scale, bits=self.secagg.bits)

    def to_params(self) -> dict[str, Any]:
        """The resolved config as a plain, YAML/JSON-ready dict (plug-ins expanded)."""
        return self.model_dump(mode="json")

    def flat_params(self) -> dict[str, str]:
        """Dotted keys for tracking (``partition.partitioner.alpha`` -> "0.5")."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = str(value)

        walk("", self.to_params())
        return out


def clients_per_round(num_clients: int, fraction: float) -> int:
    """max(1, round(C * K)) clients per round, as in McMahan et al. 2017."""
    return max(1, min(num_clients, round(fraction * num_clients)))


def _describe(exc: ValidationError, *, prefix: str) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown key (value {err['input']!r})")
        elif err["type"] in ("value_error", "assertion_error") or loc == "":
            parts.append(f"{loc}: {msg}" if loc else msg)
        else:
            parts.append(f"{loc} = {err['input']!r}: {msg}")
    return "; ".join(parts)


def parse_config(data: dict[str, Any] | None) -> Config:
    """Validate a config mapping; raise :class:`ConfigError` with a one-line message."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping of sections, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {_describe(exc, prefix='')}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (``params.yaml`` or a preset in ``configs/``) and validate it.

    ``overrides`` are dotted keys (``{"server.rounds": 3}``) applied before validation.
    """
    data = _read_yaml(Path(path))
    for dotted, value in (overrides or {}).items():
        apply_override(data, dotted, value)
    return parse_config(data)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def resolve_config(config: "str | Path | dict[str, Any] | Config" = "params.yaml",
                   overrides: dict[str, Any] | None = None) -> "Config":
    """The config a run uses: ``config`` is a preset name (``tiny`` finds ``configs/tiny.yaml`` in
    the project), a YAML path (relative paths: from the working directory, then the project), a
    mapping, or a :class:`Config`; ``overrides`` are merged into it key by key (dotted keys such as
    ``server.rounds``, or nested mappings, which merge rather than replace a section) and the result
    is validated. Errors are one-line :class:`ConfigError` s."""
    if isinstance(config, Config) and not overrides:
        return config
    if isinstance(config, Config):
        data = config.to_params()
    elif isinstance(config, dict):
        import copy

        data = copy.deepcopy(config)
    elif isinstance(config, (str, Path)):
        data = _read_yaml(_find_preset(str(config)))
    else:
        raise ConfigError(f"config must be a preset name, a YAML path or a mapping, got {type(config).__name__}")
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(f"overrides must be a mapping of config keys to values, got {type(overrides).__name__}")
    for key, value in (overrides or {}).items():
        merge_override(data, str(key), value)
    return parse_config(data)


def _find_preset(name: str) -> Path:
    from fedops.env import project_home

    home = project_home()
    candidates = [Path(name), home / name, home / "configs" / name, home / "configs" / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    presets = sorted(p.stem for p in (home / "configs").glob("*.yaml"))
    raise ConfigError(f"config {name!r} is neither a YAML file nor a preset; presets: {', '.join(presets)}")


def merge_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``dotted`` in ``data``; a mapping value merges into an existing mapping key by key,
    unless it names another plug-in (``{"name": "trimmed_mean", "beta": 0.2}`` over ``fedavg`` or
    over ``{"name": "dirichlet", "alpha": 0.5}``): a new plug-in starts from its own defaults."""
    current: Any = data
    for key in dotted.split("."):
        current = current.get(key) if isinstance(current, dict) else None
    if isinstance(value, dict) and isinstance(current, dict):
        if value.get("name", current.get("name")) == current.get("name"):
            for key, inner in value.items():
                merge_override(data, f"{dotted}.{key}", inner)
            return
        # another plug-in in a section that holds it beside its own keys (partition: num_clients)
        own = _section_fields(dotted)
        value = {**{k: v for k, v in current.items() if k in own}, **value}
    apply_override(data, dotted, value)


def _section_fields(dotted: str) -> set[str]:
    """The fields of the config section at ``dotted`` (empty when it is not a section)."""
    model: Any = Config
    for key in dotted.split("."):
        field = model.model_fields.get(key) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return set()
        model = field.annotation
    return set(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else set()


def parse_override(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from the command line: the value is YAML (a number, a list, a mapping), but
    without tags (``!!python/...``, ``!custom``): an override is data, never a constructor."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. server.rounds=3")
    key, value = (part.strip() for part in item.split("=", 1))
    if not key or not all(part.isidentifier() for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: {key!r} is not a dotted config key, e.g. server.rounds")
    try:
        if any(isinstance(token, yaml.TagToken) for token in yaml.scan(value)):
            raise ConfigError(f"--set {item!r}: YAML tags are not allowed in an override; give a plain value")
        return key, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})".replace("\n", " ")) from None


def apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(k.isidentifier() for k in keys):
        raise ConfigError(f"override {dotted!r} is not a dotted config key, e.g. server.rounds")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value

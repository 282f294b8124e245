"""Cohort training: many clients' local SGD at once, with ``torch.func`` (``functional_call``
under ``vmap(grad_and_value(...))``) over the clients' stacked parameters.

Each client does exactly what :func:`fedops.client.local.local_train` does: E epochs, a fresh
permutation of its rows per epoch drawn from its own generator, minibatches of ``batch_size``
(the last one smaller), the mean cross-entropy (or the mean of ``w_i * loss_i``), FedProx's
proximal term, and PyTorch's SGD (weight decay, momentum with no dampening). Clients with fewer
rows have fewer steps: their batches are padded and masked, and once a client's steps are done
its parameters and momentum are frozen (as FedJAX's ``for_each_client`` does). Clients are
trained ``chunk_size`` at a time to bound memory; a client's result does not depend on which
chunk it is in.

A model that is a chain of ``Linear`` layers with ReLU between them (a ``Flatten`` first, the
MLPs of the zoo) is trained by a hand-written kernel (``kernel="dense"``, chosen by ``"auto"``):
the forward and backward passes as batched matrix products over the clients (``torch.baddbmm``),
the loss's gradient as softmax minus the one-hot target, and plain SGD's step fused into the
weight gradient's product. It computes what the ``torch.func`` path computes (equal to ``local_train``
within 1e-10 in float64 in the tests, and bytes that do not depend on the chunk) without autograd's
stored gradients: 1.5× faster for the 2NN MLP on this project's CPU (``fedops bench cohort``).

Sample-level DP-SGD (``dp``, :class:`DPSGD`) is computed the same way: each client's Poisson
minibatches are drawn from its own sampling generator exactly as Opacus' ``DPDataLoader`` draws
them in :func:`fedops.privacy.local_dp.dp_sgd_train` (it is the same loader, over the client's
row positions), the per-sample gradients come from a ``vmap`` over the rows inside the ``vmap``
over the clients, each is clipped to ``max_grad_norm`` (Opacus' factor ``C / (norm + 1e-6)``,
at most 1), their sum gets Gaussian noise drawn from the client's noise generator in Opacus'
order (each parameter in turn, every step) and is divided by the expected batch size, and the
step is plain SGD. A Poisson batch longer than the padded width is taken in several passes.

Models whose forward pass is random or updates state (dropout, batch norm) are not supported
(:func:`cohort_supported` says why); the round keeps those on the sequential path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from fedops.types import ClientUpdate, ParamLayout


@dataclass(frozen=True)
class CohortClient:
    """One client of a cohort: its rows of the shared ``x``/``y``, its generator (the same stream
    the sequential path draws from) and optional per-row loss weights (indexed like ``x``)."""

    client_id: int
    indices: torch.Tensor
    generator: torch.Generator
    sample_weights: torch.Tensor | None = None
    noise_generator: torch.Generator | None = None
    """DP-SGD's noise stream (a CPU generator; with ``dp``, the sampling stream is ``generator``)."""


@dataclass(frozen=True)
class DPSGD:
    """Sample-level DP-SGD for a cohort: what :func:`fedops.privacy.local_dp.dp_sgd_train` does
    with Opacus (noise standard deviation ``noise_multiplier * max_grad_norm`` on the sum of the
    clipped per-sample gradients, plain SGD)."""

    noise_multiplier: float
    max_grad_norm: float


def cohort_supported(model: nn.Module) -> str | None:
    """None when the model can be trained as a cohort, else why not."""
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if frozen:  # the per-client paths leave them alone (no gradient; Opacus neither clips nor noises them)
        return f"parameter {frozen[0]} does not require a gradient (frozen)"
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return f"{name or 'the model'} is a batch norm layer (it updates running statistics in training)"
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"{name or 'the model'} is a dropout layer with p = {module.p} (a random forward pass)"
    return None


def _schedule(client: CohortClient, *, epochs: int, batch_size: int | None) -> list[torch.Tensor]:
    """The client's minibatches (row indices of ``x``) in order, drawn as the sequential path draws them."""
    n = client.indices.numel()
    if n == 0:
        raise ValueError(f"client {client.client_id} has no training samples")
    bs = n if batch_size is None else min(batch_size, n)
    out = []
    g = client.generator
    for _ in range(epochs):
        order = client.indices[torch.randperm(n, generator=g, device=g.device).to(client.indices.device)]
        out.extend(order[i:i + bs] for i in range(0, n, bs))
    return out


def cohort_train(
    model: nn.Module,
    *,
    layout: ParamLayout,
    global_params: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    clients: Sequence[CohortClient],
    epochs: int,
    batch_size: int | None,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    prox_mu: float = 0.0,
    chunk_size: int = 32,
    width: int | None = None,
    dp: DPSGD | None = None,
    kernel: str = "auto",
) -> list[ClientUpdate]:
    """Local training of every client in ``clients`` from ``global_params``; one
    :class:`ClientUpdate` per client, in the given order, equal to what ``local_train`` returns
    up to rounding.

    Every minibatch is padded to ``width`` rows (default ``batch_size``; for full-batch training,
    the largest client's size, which the caller should fix for the population) and its loss
    taken as a masked mean, so that a client is computed with the same shapes and arithmetic
    whatever clients share its chunk: its bytes do not depend on the chunking.

    With ``dp`` each client trains as :func:`fedops.privacy.local_dp.dp_sgd_train` does (Poisson
    minibatches from ``generator``, noise from ``noise_generator``, plain SGD: ``momentum``,
    ``weight_decay``, ``prox_mu`` and per-row weights must be unset) and reports its ``steps``
    and ``sample_rate`` for the privacy ledger.

    ``kernel``: ``"dense"`` (the hand-written kernel for a chain of ``Linear`` and ReLU layers,
    :func:`dense_chain`), ``"autograd"`` (``torch.func``, any supported model) or ``"auto"``
    (dense when the model is such a chain and there is no ``dp``)."""
    why = cohort_supported(model)
    if why is not None:
        raise ValueError(f"cohort training does not support this model: {why}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, got {kernel!r}")
    chain = dense_chain(model)
    why_not = ("this model is not one" if chain is None else "DP-SGD is on" if dp is not None
               else f"rows of shape {tuple(x.shape[1:])} need a Flatten first" if not chain.flattens and x.dim() != 2
               else None)
    if kernel == "dense" and why_not:
        raise ValueError(f"kernel 'dense' needs a chain of Linear layers with ReLU between them and no DP-SGD ({why_not})")
    dense = why_not is None and kernel != "autograd"
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if width is None:
        width = batch_size if batch_size is not None else max((int(c.indices.numel()) for c in clients), default=1)
    longest = max((int(c.indices.numel()) if batch_size is None else min(batch_size, int(c.indices.numel()))
                   for c in clients), default=0)
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if dp is None and width < longest:  # DP-SGD takes a longer (Poisson) batch in passes of width rows
        raise ValueError(f"width {width} is smaller than a minibatch of {longest} rows")
    if dp is not None:
        plain = {"momentum": momentum, "weight_decay": weight_decay, "prox_mu": prox_mu}
        if any(plain.values()) or any(c.sample_weights is not None for c in clients):
            raise ValueError(f"DP-SGD trains with plain SGD and unweighted rows, got {plain} and per-row weights "
                             f"{[c.client_id for c in clients if c.sample_weights is not None]}")
        if any(c.noise_generator is None for c in clients):
            raise ValueError("DP-SGD needs each client's noise_generator")
    out: list[ClientUpdate] = []
    for lo in range(0, len(clients), chunk_size):
        some = clients[lo:lo + chunk_size]
        if dense:
            out.extend(_train_chunk_dense(model, chain, layout=layout, global_params=global_params, x=x, y=y,
                                          clients=some, epochs=epochs, batch_size=batch_size, lr=lr,
                                          momentum=momentum, weight_decay=weight_decay, prox_mu=prox_mu, width=width))
        elif dp is None:
            out.extend(_train_chunk(model, layout=layout, global_params=global_params, x=x, y=y, clients=some,
                                    epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                                    weight_decay=weight_decay, prox_mu=prox_mu, width=width))
        else:
            out.extend(_train_chunk_dp(model, layout=layout, global_params=global_params, x=x, y=y, clients=some,
                                       epochs=epochs, batch_size=batch_size, lr=lr, dp=dp, width=width))
    return out


PARAM_COPIES = 8
"""Parameter-sized tensors a cohort client holds while its chunk trains: its parameters, their
gradients and momentum, the doubled copies of a lone client, the gathered deltas and the
autograd's temporaries (an upper count, not a measurement)."""

PER_SAMPLE_COPIES = 1
"""Parameter-sized tensors per row a DP-SGD cohort client holds: its per-sample gradients (their
clipped sum is parameter-sized, among :data:`PARAM_COPIES`). A lone client is computed twice
over (see :func:`_twice`), so a chunk of one takes up to twice its estimate."""



def client_bytes(model: nn.Module, *, x: torch.Tensor, y: torch.Tensor, per_sample: bool = False) -> int:
    """Bytes one client adds to a cohort chunk at one step: the tensors autograd saves for the
    backward pass of one minibatch ``(x, y)`` (measured: a forward pass under a saved-tensors
    hook on the model's device, nothing stepped), plus :data:`PARAM_COPIES` copies of the
    parameters, plus with ``per_sample`` (DP-SGD) :data:`PER_SAMPLE_COPIES` copies of a
    gradient per row. Views of one tensor are each counted: an overestimate, never an
    underestimate of what the hook sees."""
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        nn.functional.cross_entropy(model(x), y)  # no backward: nothing is stepped or accumulated
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return saved[0] + PARAM_COPIES * params + (PER_SAMPLE_COPIES * x.shape[0] * params if per_sample else 0)


def chunk_for_memory(model: nn.Module, *, x: torch.Tensor, y: torch.Tensor, budget_bytes: int,
                     most: int = 1024, per_sample: bool = False) -> int:
    """How many clients a chunk may hold within ``budget_bytes`` (at least 1, at most ``most``),
    from :func:`client_bytes` of a minibatch ``(x, y)`` of the padded width."""
    if budget_bytes < 1:
        raise ValueError(f"budget_bytes must be >= 1, got {budget_bytes}")
    return max(1, min(most, budget_bytes // max(1, client_bytes(model, x=x, y=y, per_sample=per_sample))))


def _ranked(schedules: list, clients: Sequence[CohortClient]):
    """The chunk's clients (and their schedules) longest first: ties keep the given order."""
    order = sorted(range(len(clients)), key=lambda j: -len(schedules[j]))
    return [clients[j] for j in order], [schedules[j] for j in order]


def _stacked(model: nn.Module, layout: ParamLayout, global_params: torch.Tensor, k: int):
    """``(names, anchor, params)``: the model's parameter names, the global parameters by name,
    and ``k`` stacked copies of them (one row per client) to train."""
    layout.load_into(model, global_params)
    names = [n for n, _ in model.named_parameters()]
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = {n: p.detach().unsqueeze(0).repeat(k, *([1] * p.dim())) for n, p in anchor.items()}  # copies
    return names, anchor, params


def _twice(a: int):
    """One client alone is computed twice over: a vmap of one may take other kernels (a plain
    rather than a grouped convolution), and a client's bytes must not depend on its company."""
    return (lambda v: v) if a > 1 else (lambda v: v.repeat(2, *([1] * (v.dim() - 1))))  # real copies


def _active(steps: list[int]) -> list[int]:
    """The training prefix at each step (``steps`` longest first)."""
    return [sum(1 for s in steps if s > t) for t in range(steps[0] if steps else 0)]


def _updates(model, layout, global_params, params, ranked, clients, metrics, start) -> list[ClientUpdate]:
    """Each client's :class:`ClientUpdate` (its delta from the global parameters), in ``clients``' order."""
    k = len(ranked)
    elapsed = (time.perf_counter() - start) / k
    state = model.state_dict()
    by_client = {}
    for j, c in enumerate(ranked):
        delta = torch.empty_like(global_params)  # its own memory, written once (the round frees it alone)
        for s in layout.slots:
            mine = params[s.name][j] if s.name in params else state[s.name].detach()
            part = slice(s.offset, s.offset + s.numel)
            torch.sub(mine.reshape(-1).to(torch.float32), global_params[part], out=delta[part])
        by_client[id(c)] = ClientUpdate(client_id=c.client_id, delta=delta,
                                        num_samples=int(c.indices.numel()), metrics=metrics[j], wall_time_s=elapsed)
    return [by_client[id(c)] for c in clients]


def _train_chunk(model, *, layout, global_params, x, y, clients, epochs, batch_size, lr, momentum, weight_decay,
                 prox_mu, width) -> list[ClientUpdate]:
    """One chunk. Its clients are ordered by step count, longest first, so that at every step the
    clients still training are a prefix: they are updated through views of that prefix, and a
    client whose steps are done drops out of the computation with its parameters untouched."""
    from torch.func import functional_call, grad_and_value, vmap

    start = time.perf_counter()
    k = len(clients)
    ranked, schedules = _ranked([_schedule(c, epochs=epochs, batch_size=batch_size) for c in clients], clients)
    steps = [len(s) for s in schedules]
    total, device = steps[0], x.device
    index, mask, weights = _padded(ranked, schedules, width=width, x=x)
    active = _active(steps)
    names, anchor, params = _stacked(model, layout, global_params, k)
    buffers = dict(model.named_buffers())
    bufs: dict[str, torch.Tensor] = {}

    def objective(p, xb, yb, m, *w):
        logits = functional_call(model, (p, buffers), (xb,))
        # cross-entropy as log-softmax and gather: under vmap, F.cross_entropy goes through
        # nll_loss's Python decomposition, whose torch._check runs an import statement on every
        # call: the cohort threads queued on Python's import lock
        nll = -logits.log_softmax(dim=-1).gather(-1, yb.unsqueeze(-1)).squeeze(-1)
        per_row = nll * m  # a masked mean, always (see above)
        if w:
            per_row = per_row * w[0]
        loss = per_row.sum() / m.sum()
        if prox_mu > 0:
            prox = sum(((p[n] - anchor[n]) ** 2).sum() for n in names)
            return loss + 0.5 * prox_mu * prox, loss
        return loss, loss

    step_fn = vmap(grad_and_value(objective, has_aux=True))
    loss_sums = torch.zeros(k, device=device)  # the default dtype, as local_train sums its losses
    for t in range(total):
        a = active[t]
        twice = _twice(a)
        rows = twice(index[t, :a])
        extra = [twice(mask[t, :a])] + ([] if weights is None else [twice(weights[t, :a])])
        view = {n: params[n][:a] for n in names}
        grads, (_, loss) = step_fn({n: twice(v) for n, v in view.items()}, x[rows], y[rows], *extra)
        grads = {n: g[:a] for n, g in grads.items()}
        loss_sums[:a] += loss.detach()[:a]  # in place: rounded as local_train rounds
        with torch.no_grad():
            for n in names:
                _sgd(view[n], grads[n], bufs, n, first=t == 0, lr=lr, momentum=momentum, weight_decay=weight_decay)
    metrics = [{"train_loss": float(loss_sums[j]) / steps[j], "steps": float(steps[j])} for j in range(k)]
    return _updates(model, layout, global_params, params, ranked, clients, metrics, start)


def _padded(ranked, schedules, *, width: int, x: torch.Tensor):
    """The chunk's minibatches as one index tensor ``[step, client, row]``, its row mask, and
    the per-row loss weights (None when no client has any), padded to ``width`` rows."""
    total, k, device = len(schedules[0]), len(ranked), x.device
    index = torch.zeros(total, k, width, dtype=torch.long, device=device)
    mask = torch.zeros(total, k, width, dtype=x.dtype, device=device)
    for j, sched in enumerate(schedules):
        for t, b in enumerate(sched):
            index[t, j, :b.numel()] = b
            mask[t, j, :b.numel()] = 1
    weights = None
    if any(c.sample_weights is not None for c in ranked):
        weights = torch.ones(total, k, width, dtype=x.dtype, device=device)
        for j, c in enumerate(ranked):
            if c.sample_weights is not None:
                weights[:, j] = c.sample_weights.to(device=device, dtype=x.dtype)[index[:, j]]
    return index, mask, weights


def _sgd(p: torch.Tensor, g: torch.Tensor, bufs: dict, name: str, *, first: bool, lr: float, momentum: float,
         weight_decay: float) -> None:
    """``torch.optim.SGD``'s step (no dampening, no Nesterov) on the training clients' rows ``p``
    (a view of the stacked parameters), with their momentum rows in ``bufs[name]``."""
    if weight_decay:
        g = g.add(p, alpha=weight_decay)
    if momentum:
        a = p.shape[0]
        if first:
            bufs[name] = g.clone()
        else:
            bufs[name][:a].mul_(momentum).add_(g)
        g = bufs[name][:a]
    p.add_(g, alpha=-lr)


KERNELS = ("auto", "dense", "autograd")


@dataclass(frozen=True)
class DenseLayer:
    """One ``Linear`` layer of a dense chain: its parameters' names, and whether a ReLU follows."""

    weight: str
    bias: str | None
    relu: bool


@dataclass(frozen=True)
class DenseChain:
    """A model :func:`dense_chain` recognised: its layers, and whether it flattens its input first."""

    layers: tuple[DenseLayer, ...]
    flattens: bool


def _hooked(module: nn.Module) -> bool:
    return any(getattr(module, name, None) for name in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def dense_chain(model: nn.Module) -> DenseChain | None:
    """The model as ``[Flatten] Linear (ReLU Linear)*``, exactly those classes (identities and
    dropout with p = 0 left out), or None when it is anything else: a subclass (it may have its
    own forward), a module with hooks or a parametrisation, or a layer used twice."""
    from torch.nn.utils import parametrize

    glob = nn.modules.module
    if type(model) is not nn.Sequential or _hooked(model) or any(getattr(glob, name, None) for name in (
            "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
            "_global_backward_pre_hooks")):
        return None
    entries = list(model._modules.items())  # every entry the forward runs, a module used twice included
    if len({id(m) for _, m in entries}) != len(entries) or any(
            _hooked(m) or parametrize.is_parametrized(m) for _, m in entries):
        return None
    mods = [(n, m) for n, m in entries
            if type(m) is not nn.Identity and not (type(m) in (nn.Dropout, nn.Dropout1d) and m.p == 0)]
    flattens = bool(mods) and type(mods[0][1]) is nn.Flatten and (mods[0][1].start_dim, mods[0][1].end_dim) == (1, -1)
    if flattens:
        mods = mods[1:]
    named = dict(model.named_parameters())
    layers: list[DenseLayer] = []
    for i, (name, m) in enumerate(mods):
        if type(m) is nn.Linear and (i == 0 or type(mods[i - 1][1]) is nn.ReLU):
            layer = DenseLayer(weight=f"{name}.weight", bias=f"{name}.bias" if m.bias is not None else None, relu=False)
            if layer.weight not in named or (layer.bias is not None and layer.bias not in named):
                return None
            layers.append(layer)
        elif type(m) is nn.ReLU and layers and not layers[-1].relu and i < len(mods) - 1:
            layers[-1] = DenseLayer(weight=layers[-1].weight, bias=layers[-1].bias, relu=True)
        else:
            return None
    return DenseChain(layers=tuple(layers), flattens=flattens) if layers else None


def _train_chunk_dense(model, chain: DenseChain, *, layout, global_params, x, y, clients, epochs, batch_size,
                       lr, momentum, weight_decay, prox_mu, width) -> list[ClientUpdate]:
    """One chunk of a dense chain, as :func:`_train_chunk` (longest first, the training clients a
    prefix, padded rows masked), with the backward pass written out: for each layer, from the
    last, the weight gradient is ``delta^T @ input`` and the input's delta ``delta @ W`` times
    the ReLU's mask. With plain SGD the step is fused into that product (``baddbmm_``)."""
    start = time.perf_counter()
    k = len(clients)
    ranked, schedules = _ranked([_schedule(c, epochs=epochs, batch_size=batch_size) for c in clients], clients)
    steps = [len(s) for s in schedules]
    index, mask, weights = _padded(ranked, schedules, width=width, x=x)
    active = _active(steps)
    names, anchor, params = _stacked(model, layout, global_params, k)
    fused = not (momentum or weight_decay or prox_mu)
    bufs: dict[str, torch.Tensor] = {}
    loss_sums = torch.zeros(k, device=x.device)  # the default dtype, as local_train sums its losses
    with torch.no_grad():
        for t in range(steps[0]):
            a = active[t]
            twice = _twice(a)  # a lone client is computed (and stepped) as two: copied back below
            work = {n: twice(params[n][:a]) for n in names}
            rows, m = twice(index[t, :a]), twice(mask[t, :a])
            rw = m if weights is None else m * twice(weights[t, :a])  # each row's weight in the loss
            inputs = [x[rows].reshape(rows.shape[0], rows.shape[1], -1)]
            for layer in chain.layers:
                w = work[layer.weight]
                z = (torch.bmm(inputs[-1], w.transpose(1, 2)) if layer.bias is None
                     else torch.baddbmm(work[layer.bias].unsqueeze(1), inputs[-1], w.transpose(1, 2)))
                inputs.append(z.clamp_min(0) if layer.relu else z)
            logp = inputs.pop().log_softmax(dim=-1)
            target = y[rows].unsqueeze(-1)
            denom = m.sum(dim=1)
            loss = (-logp.gather(-1, target).squeeze(-1) * rw).sum(dim=1) / denom
            loss_sums[:a] += loss[:a]
            delta = logp.exp_()  # d loss / d logits: (softmax - one-hot) * the row's weight / the rows
            delta.scatter_add_(-1, target, torch.full_like(target, -1, dtype=delta.dtype))
            delta.mul_((rw / denom.unsqueeze(1)).unsqueeze(-1))
            grads = {}
            for i in range(len(chain.layers) - 1, -1, -1):
                layer, inp = chain.layers[i], inputs[i]
                w = work[layer.weight]
                back = torch.bmm(delta, w) if i > 0 else None  # with the layer's weights before the step
                if fused:  # plain SGD: w <- w - lr * delta^T @ input, in one product
                    w.baddbmm_(delta.transpose(1, 2), inp, alpha=-lr)
                    if layer.bias is not None:
                        work[layer.bias].sub_(delta.sum(dim=1), alpha=lr)
                else:
                    grads[layer.weight] = torch.bmm(delta.transpose(1, 2), inp)
                    if layer.bias is not None:
                        grads[layer.bias] = delta.sum(dim=1)
                if back is not None:
                    delta = back.mul_(inp > 0)  # the ReLU before this layer
            if fused and a == 1:  # the lone client's copy was stepped
                for n in names:
                    params[n][:1].copy_(work[n][:1])
            for n, g in grads.items():
                view = params[n][:a]
                g = g[:a]
                if prox_mu:  # FedProx: the gradient of mu/2 * |w - w_global|^2
                    g = g + prox_mu * (view - anchor[n])
                _sgd(view, g, bufs, n, first=t == 0, lr=lr, momentum=momentum, weight_decay=weight_decay)
    metrics = [{"train_loss": float(loss_sums[j]) / steps[j], "steps": float(steps[j])} for j in range(k)]
    return _updates(model, layout, global_params, params, ranked, clients, metrics, start)


@dataclass(frozen=True)
class _DPSchedule:
    batches: list[torch.Tensor]  # each step's rows of ``x`` (a Poisson batch: any length, maybe 0)
    sample_rate: float
    expected_batch_size: int

    def __len__(self) -> int:
        return len(self.batches)


def _dp_schedule(client: CohortClient, *, epochs: int, batch_size: int | None) -> _DPSchedule:
    """The client's Poisson minibatches, drawn by the loader :func:`fedops.privacy.local_dp.dp_sgd_train`
    hands Opacus (its ``DPDataLoader`` over the client's row positions, from ``client.generator``:
    the same draws in the same order), with Opacus' sample rate and expected batch size."""
    import warnings

    from opacus.data_loader import DPDataLoader
    from torch.utils.data import DataLoader, TensorDataset

    n = client.indices.numel()
    if n == 0:
        raise ValueError(f"client {client.client_id} has no training samples")
    loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=n if batch_size is None else batch_size,
                        generator=client.generator)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        private = DPDataLoader.from_data_loader(loader)
    sample_rate = 1 / len(private)  # as make_private computes them: from the private loader's length,
    batches = []  # int(1 / (1 / L)), which is L - 1 for some L (93, 99, ...), not from L itself
    for _ in range(epochs):
        for (positions,) in private:
            batches.append(client.indices[positions.reshape(-1).to(device=client.indices.device, dtype=torch.long)])
    return _DPSchedule(batches=batches, sample_rate=sample_rate, expected_batch_size=int(n * sample_rate))


def _train_chunk_dp(model, *, layout, global_params, x, y, clients, epochs, batch_size, lr, dp: DPSGD,
                    width) -> list[ClientUpdate]:
    """One chunk of DP-SGD clients, longest first as in :func:`_train_chunk`. Each step, every
    training client's Poisson batch is cut into passes of ``width`` rows (padded and masked: as
    many passes as the longest batch needs; a client with fewer adds exact zeros), so a client's
    arithmetic does not depend on its company."""
    from torch.func import functional_call, grad, vmap

    start = time.perf_counter()
    k = len(clients)
    ranked, schedules = _ranked([_dp_schedule(c, epochs=epochs, batch_size=batch_size) for c in clients], clients)
    steps = [len(s) for s in schedules]
    active = _active(steps)
    device = x.device
    names, _, params = _stacked(model, layout, global_params, k)
    buffers = dict(model.named_buffers())
    std = dp.noise_multiplier * dp.max_grad_norm

    def sample_loss(p, xi, yi):  # one row's cross-entropy (Opacus' mean loss, per sample)
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return -logits.log_softmax(dim=-1)[0].gather(0, yi.unsqueeze(0)).squeeze(0)

    per_sample = vmap(vmap(grad(sample_loss), in_dims=(None, 0, 0)))  # [clients, rows, *shape]
    dtype = next(iter(params.values())).dtype  # Opacus casts the clip factor to the parameters' dtype
    divisor = torch.tensor([float(s.expected_batch_size) for s in schedules], dtype=dtype, device=device)
    for t in range(len(active)):
        a = active[t]
        twice = _twice(a)
        batches = [schedules[j].batches[t] for j in range(a)]
        view = {n: params[n][:a] for n in names}
        summed = {n: torch.zeros_like(v) for n, v in view.items()}
        for lo in range(0, max(1, max(b.numel() for b in batches)), width):
            rows = torch.zeros(a, width, dtype=torch.long, device=device)
            mask = torch.zeros(a, width, dtype=dtype, device=device)
            for j, b in enumerate(batches):
                part = b[lo:lo + width]
                rows[j, :part.numel()] = part
                mask[j, :part.numel()] = 1
            grads = per_sample({n: twice(v) for n, v in view.items()}, x[twice(rows)], y[twice(rows)])
            grads = {n: g[:a] for n, g in grads.items()}
            with torch.no_grad():  # Opacus' clipping: the norm of the per-parameter norms
                norms = torch.stack([grads[n].reshape(a, width, -1).norm(2, dim=-1) for n in names], dim=-1).norm(2, dim=-1)
                factor = (dp.max_grad_norm / (norms + 1e-6)).clamp(max=1.0) * mask
                for n in names:
                    summed[n] += torch.einsum("kw,kw...->k...", factor, grads[n])
        with torch.no_grad():
            if std > 0:  # Opacus' noise: each parameter in turn, from the client's own stream
                for j, c in enumerate(ranked[:a]):
                    for n in names:
                        noise = torch.normal(mean=0, std=std, size=tuple(view[n].shape[1:]), generator=c.noise_generator,
                                             dtype=view[n].dtype)
                        summed[n][j] += noise.to(device)
            for n in names:
                scale = divisor[:a].reshape(a, *([1] * (view[n].dim() - 1)))
                view[n].add_(summed[n] / scale, alpha=-lr)
    metrics = [{"steps": float(steps[j]), "sample_rate": float(schedules[j].sample_rate)} for j in range(k)]
    return _updates(model, layout, global_params, params, ranked, clients, metrics, start)

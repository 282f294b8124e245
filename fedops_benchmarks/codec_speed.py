"""Codec speed: encode + decode of one 1.2M-coordinate float32 update on the CPU.

For each codec configuration, the median (after a warm-up) of ``repeats`` encode+decode round
trips of a random float32 vector, next to the median time of a plain ``tensor.clone()`` of the
same vector in the same run (the ratio says how many copies the codec costs). Torch runs with one
thread here: a 1.2M-float clone through the intra-op thread pool stalls for a scheduler tick
whenever another process holds a core, which made the reference copy jump between 0.06 and 8 ms
on the 2-core machines (the codecs' own arithmetic is NumPy, single-threaded anyway). Non-RPN
codecs see one flat tensor of ``dim``; RPN sees the layout of the 1,199,882-parameter MNIST CNN
(its ``dim`` is that model's).

    uv run python -m fedops_benchmarks.codec_speed
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from fedops.compress import CODECS
from fedops.compress.base import CodecContext
from fedops.types import ParamLayout, TensorSlot

CONFIGS: list[dict[str, Any]] = [
    {"name": "none"},
    {"name": "fp16"},
    {"name": "qsgd", "bits": 8},
    {"name": "qsgd", "bits": 4},
    {"name": "topk", "fraction": 0.1},
    {"name": "topk", "fraction": 0.1, "error_feedback": True},
    {"name": "topk", "fraction": 0.01},
    {"name": "randk", "fraction": 0.1},
    {"name": "rpn"},
    {"name": "rpn", "unpooled_filters": 0.25},
]


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (caches, allocator, lazy imports)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def mnist_cnn_layout() -> ParamLayout:
    from fedops.models import MODELS

    model = MODELS.build({"name": "mnist_cnn"}).build(input_shape=(1, 28, 28), num_classes=10, seed=0)
    return ParamLayout.from_module(model)


def main(*, dim: int = 1_199_882, repeats: int = 15, log=print) -> list[dict[str, Any]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(dim=dim, repeats=repeats, log=log)
    finally:
        torch.set_num_threads(threads)


def _run(*, dim: int, repeats: int, log) -> list[dict[str, Any]]:
    flat = ParamLayout((TensorSlot("w", (dim,), 0, dim),))
    cnn = mnist_cnn_layout()
    gen = torch.Generator().manual_seed(0)
    rows = []
    log(f"encode+decode of {dim:,} float32 coordinates (RPN: the mnist_cnn layout), median of {repeats}, "
        "against a tensor.clone() of the same vector")
    for spec in CONFIGS:
        codec = CODECS.build(spec)
        layout = cnn if spec["name"] == "rpn" else flat
        ctx = CodecContext(round_idx=1, client_id=3, seed=0, layout=layout)
        x = torch.randn(layout.size, generator=gen) * 1e-3
        state: list[Any] = [None]

        def roundtrip():
            payload, new_state = codec.encode(x, ctx=ctx, state=state[0])
            state[0] = new_state  # error feedback carries its residual into the next call
            return codec.decode(payload, ctx=ctx), len(payload)

        copy_ms = _median_ms(lambda: x.clone(), repeats)
        ms = _median_ms(roundtrip, repeats)
        _, nbytes = roundtrip()
        label = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
        row = {"codec": spec["name"], "params": label, "dim": layout.size, "bytes": nbytes,
               "compression": 4 * layout.size / nbytes, "ms": ms, "copy_ms": copy_ms, "ratio_to_copy": ms / copy_ms}
        rows.append(row)
        log(f"{spec['name'] + ' ' + label:38s} {ms:6.2f} ms = {ms / copy_ms:5.1f}x copy ({copy_ms:.2f} ms)  "
            f"{nbytes:>10,} B = {row['compression']:5.2f}x smaller")
    return rows


if __name__ == "__main__":
    main()

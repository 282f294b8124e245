"""CPU threads for torch: a block's intra-op thread count, set and restored."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op CPU threads in this thread, then restore the setting.

    OpenMP keeps the count per calling thread; the same count gives the same floating-point
    reduction order, which is what makes a round's bytes independent of the executor."""
    before = torch.get_num_threads()
    if before != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)

"""How torch runs in a training process: seeds, deterministic kernels and intra-op threads.

Reproducibility does not depend on carrying RNG state across a restart: every epoch re-seeds
torch (augmentation, dropout) and the shuffle generator from :func:`epoch_seed`, so "2 epochs"
and "1 epoch, stop, resume 1 epoch" do the same arithmetic.
"""

from __future__ import annotations

import contextlib
import os
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; ask torch for deterministic kernels where they exist."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch of a run: the same whether or not the run was resumed."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63)


@contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """Run a block on ``threads`` torch intra-op threads (0: unchanged), then restore the count."""
    before = torch.get_num_threads()
    if threads <= 0 or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_thread() -> contextlib.AbstractContextManager[None]:
    """Run per-image work on one intra-op thread, then restore the thread count.

    On 64 px images each op is tiny and thread hand-offs dominate: a 64-image batch of the
    ``light`` preset took 1.7-2.6 s with 2 threads on 2 busy cores and 80-105 ms with one,
    while the model step (which does use both threads) was unchanged (bench/bench_train.py).
    """
    return intra_op_threads(1)

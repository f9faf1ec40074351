"""Fixed torch CPU thread counts where a result must not depend on the machine.

CPU kernels split their sums by thread, so the same training on 1 and on 2 threads
ends in different weights (the tiny base, MTL's model) and then in different scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# The ServerApp's own training (the centralized MTL reference) runs on this many
# threads: the benchmark machine's cores, whatever process it runs in (a ServerApp
# under `flwr run`, or the in-process benchmark whose clients use 1 thread each).
SERVER_TRAINING_THREADS = 2


@contextmanager
def pinned_threads(count: int) -> Iterator[None]:
    """Run the block on ``count`` torch CPU threads, then restore the caller's."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)

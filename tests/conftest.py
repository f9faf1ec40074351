"""Shared fixtures."""

import os

import pytest

# The suite checks behaviour, not accuracy: it runs on the small "smoke" base
# (about a minute to pre-train) instead of the benchmark's standard base.
os.environ.setdefault("FCIT_TINY_BASE", "smoke")
from flwr.supercore.task_identity import TaskIdentity


@pytest.fixture(autouse=True)
def flower_task_identity():
    """Messages need the identity a ServerApp process has (run, task, node)."""
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 1
    yield

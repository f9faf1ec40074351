"""The message protocol: every record key and array layout, in one place.

Both sides of a federation read this module and nothing else to agree on what travels,
so it imports only ``flwr.app`` and numpy. Record keys are kebab-case (Flower's own:
``num-examples``, ``server-round``); array keys are the model's module paths,
prefixed by the part of the global state they belong to.

Messages (server -> client, client -> server):

- TRAIN: ``arrays`` (what the client trains from), ``config`` (:data:`STAGE`,
  :data:`SERVER_ROUND`, :data:`CLIENT`, :data:`ATTEMPT`, and per method
  :data:`SUBSPACE`, :data:`BLOCK` or :data:`ESTIMATE_FISHER`). Reply: ``arrays``
  (the update), ``metrics`` (:data:`NUM_EXAMPLES`, :data:`TRAIN_LOSS`,
  :data:`CLIENT_SECONDS`, and DISCO's :data:`SUBSPACE`).
- QUERY ``kind = describe``: reply ``config`` with :data:`PARTITION_ID`,
  :data:`BASE_FINGERPRINT`, :data:`VERSIONS`, :data:`DATA_FINGERPRINT` and
  :data:`SITE_SETTINGS`.
- QUERY ``kind = identity-token`` (DISCO): reply ``arrays`` with :data:`TOKEN_KEY`,
  ``metrics`` with :data:`NUM_EXAMPLES`.

No reply carries a task name or a label: what the method needs and nothing else.
TRAIN arrays travel both ways in the run's ``transport-dtype`` (float32, bfloat16
bits or float16; :mod:`fcit_flower.transport` encodes and decodes them).
Diagnostics that need a client's tasks (DISCO's routing accuracy) take them from the
run's schedule, which the server computes from the same run-config.

Global-state layouts:

- DISCO: ``slot{k}/<lora key>`` (subspace ``k``), ``token/slot{k}`` and
  ``token-weight/slot{k}`` (its identity token and the sample mass behind it).
- O-LoRA / M-LoRA: ``block{k}/<lora key>`` (the block of stage ``k``).
- EWC (in TRAIN messages): ``ewc-anchor/<key>`` and ``ewc-fisher/<key>``.
- Every method: the multimodal projector under plain ``model.multi_modal_projector.*``
  keys when it is trained.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

Arrays = dict[str, np.ndarray]

# Records of a message's content.
ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"

# Config record keys, server -> client.
KIND = "kind"
STAGE = "stage"
SERVER_ROUND = "server-round"
CLIENT = "client"
ATTEMPT = "attempt"
SUBSPACE = "subspace"
BLOCK = "block"
ESTIMATE_FISHER = "ewc-estimate-fisher"
# The strategy's own train config: rounds of the stage already done (a resumed stage).
ROUND_OFFSET = "round-offset"

# Query kinds.
DESCRIBE = "describe"
IDENTITY_TOKEN = "identity-token"

# Reply keys, client -> server.
PARTITION_ID = "partition-id"
BASE_FINGERPRINT = "base-fingerprint"  # describe: the site's base ("" = not built)
VERSIONS = "versions"  # describe: "package=version ..." of the site
DATA_FINGERPRINT = "data-fingerprint"  # describe: the site's train files ("" = none)
SITE_SETTINGS = "site-settings"  # describe: the node-config keys the site sets
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
CLIENT_SECONDS = "client-seconds"
TOKEN_KEY = "identity-token"

# Array layouts.
PROJECTOR = "multi_modal_projector"
ANCHOR_PREFIX = "ewc-anchor/"
FISHER_PREFIX = "ewc-fisher/"
_BLOCK_KEY = re.compile(r"^block(\d+)/")


class ProtocolError(ValueError):
    """A message lacks a key, or holds a value of the wrong type."""


def to_numpy(record: ArrayRecord) -> Arrays:
    """ArrayRecord -> dict of numpy arrays."""
    return {k: v.numpy() for k, v in record.items()}


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Dict of numpy arrays -> ArrayRecord (dtypes kept as they are)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def read_int(record: ConfigRecord, key: str, default: int | None = None) -> int:
    """The integer under ``key`` (or ``default`` when absent).

    Raises
    ------
    ProtocolError
        When the key is absent without a default, or its value is not a number.
    """
    value = record.get(key, default)
    if value is None:
        raise ProtocolError(f"config record lacks {key!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{key}={value!r} is not an integer")
    return int(value)


def read_bool(record: ConfigRecord, key: str, default: bool = False) -> bool:
    """The flag under ``key`` (``default`` when absent)."""
    value = record.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"{key}={value!r} is not true or false")
    return value


def read_str(record: ConfigRecord, key: str, default: str | None = None) -> str:
    """The string under ``key`` (or ``default`` when absent)."""
    value = record.get(key, default)
    if not isinstance(value, str):
        raise ProtocolError(f"{key}={value!r} is not a string")
    return value


def strip_prefix(arrays: Mapping[str, np.ndarray], prefix: str) -> Arrays:
    """The arrays whose key starts with ``prefix``, keys without it."""
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def split_projector(arrays: Mapping[str, np.ndarray]) -> tuple[Arrays, Arrays]:
    """Split arrays into (adapter, projector) dicts."""
    projector = {k: v for k, v in arrays.items() if PROJECTOR in k}
    adapter = {k: v for k, v in arrays.items() if PROJECTOR not in k}
    return adapter, projector


def slot_prefix(slot: int) -> str:
    """Key prefix of a DISCO subspace's LoRA factors."""
    return f"slot{slot}/"


def token_key(slot: int) -> str:
    """Key of a DISCO slot's global identity token."""
    return f"token/slot{slot}"


def token_weight_key(slot: int) -> str:
    """Key of the sample mass behind a DISCO slot's token."""
    return f"token-weight/slot{slot}"


def occupied_slots(arrays: Mapping[str, np.ndarray]) -> int:
    """How many DISCO slots hold a token (slots ``0..n-1``)."""
    count = 0
    while token_key(count) in arrays:
        count += 1
    return count


def subspace_arrays(arrays: Mapping[str, np.ndarray], slot: int) -> Arrays:
    """LoRA factors of one DISCO subspace, keys without the slot prefix."""
    return strip_prefix(arrays, slot_prefix(slot))


def block_prefix(block: int) -> str:
    """Key prefix of an O-LoRA / M-LoRA block's LoRA factors."""
    return f"block{block}/"


def block_indices(arrays: Mapping[str, np.ndarray]) -> list[int]:
    """Sorted indices of the blocks present in ``arrays``."""
    return sorted({int(m.group(1)) for k in arrays if (m := _BLOCK_KEY.match(k))})


def block_arrays(arrays: Mapping[str, np.ndarray], block: int) -> Arrays:
    """The factors of one block, keys without the block prefix."""
    return strip_prefix(arrays, block_prefix(block))


def split_ewc(arrays: Mapping[str, np.ndarray]) -> tuple[Arrays, Arrays, Arrays]:
    """Split arrays into (model arrays, EWC anchor, EWC Fisher); prefixes removed."""
    plain = {
        k: v
        for k, v in arrays.items()
        if not k.startswith((ANCHOR_PREFIX, FISHER_PREFIX))
    }
    return (
        plain,
        strip_prefix(arrays, ANCHOR_PREFIX),
        strip_prefix(arrays, FISHER_PREFIX),
    )

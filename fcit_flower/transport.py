"""How adapter arrays travel: float32, bfloat16 bits or float16 (numpy).

Run-config ``transport-dtype`` (both directions, server -> client and back):

- ``"float32"``: every array travels as it is (the default; bit-identical to
  :func:`~fcit_flower.protocol.to_record` / :func:`~fcit_flower.protocol.to_numpy`).
- ``"bfloat16"``: every float32 array travels as the upper 16 bits of its values,
  rounded to nearest even, in a uint16 ``.npy`` whose Flower ``Array.dtype`` declares
  ``"bfloat16"``; half the bytes. Overflow rounds to inf, inf stays inf and every
  NaN becomes a quiet NaN (as torch does).
- ``"float16"``: every float32 array travels as IEEE half precision
  (``astype(np.float16)``, rounded to nearest even) in a float16 ``.npy`` declared
  ``"float16"``; half the bytes too. 10 mantissa bits instead of bfloat16's 7: the
  rounding is 8x finer (relative 2^-11 for normal values), but the range is
  float16's: a finite value beyond 65504 would become inf, so the sender refuses
  it (:class:`TransportError` naming the array, its largest magnitude and
  ``"bfloat16"``). Below 2^-14 (6.1e-5) values are subnormal, rounded to a
  multiple of 2^-24 (an absolute error up to 3e-8), and up to 2^-25 they become 0:
  accepted (a tiny EWC Fisher suffers most). inf and NaN travel as they are, as
  under ``"bfloat16"`` (the server's upload check refuses them).

Other dtypes travel as they are (no TRAIN array has one; a float64 upload is then
refused by the server's dtype check). The receiver widens 16-bit arrays back to
float32 and refuses an array whose declared dtype is not the run's
(:class:`TransportError`, one line).

Uploads in 16 bits carry the *update*: each array is the difference between the
client's result and what it received (same key and shape; an array it was not
sent travels whole), and the server adds the difference to what it sent, in
float32. Why: the client trained from the 16-bit global, so ``upload - received``
is its true update, and adding it to the server's float32 state keeps the global's
own rounding out of the aggregate (no spurious update ``current - bf16(current)``
for a server optimizer or the DP clip to see). And the rounding error of a 16-bit
difference is relative to the update, not to the much larger weights.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.app.message.array import SType

from fcit_flower.config import TRANSPORT_DTYPES
from fcit_flower.protocol import Arrays, ProtocolError, to_record

FLOAT32, BFLOAT16, FLOAT16 = TRANSPORT_DTYPES
_QUIET_NAN = np.uint16(0x7FC0)  # what torch.bfloat16 makes of every NaN
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
# What a 16-bit array holds on the wire (the .npy inside the Flower Array).
_WIRE_DTYPES = {BFLOAT16: np.dtype(np.uint16), FLOAT16: np.dtype(np.float16)}


class TransportError(ProtocolError):
    """An array arrived in another format than the run's ``transport-dtype``."""


def to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded to nearest, ties to even.

    The IEEE rounding torch uses (``c10::round_to_nearest_even``): add ``0x7FFF``
    plus the lowest kept bit, then drop the low 16 bits; overflow rounds to inf,
    and every NaN becomes the quiet NaN ``0x7FC0``.
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16  # wraps only for NaN
    out = rounded.astype(np.uint16)
    out[np.isnan(values)] = _QUIET_NAN
    return out


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32 (exact: bfloat16 is float32's top half)."""
    wide = np.ascontiguousarray(bits, dtype=np.uint16).astype(np.uint32) << 16
    return wide.view(np.float32)


def to_float16(values: np.ndarray, *, key: str) -> np.ndarray:
    """float32 -> IEEE float16, rounded to nearest even; refuses what would be inf.

    Raises
    ------
    TransportError
        When a finite value exceeds float16's largest, 65504 (inf and NaN pass).
    """
    values = np.asarray(values, dtype=np.float32)
    magnitude = np.abs(values)
    largest = float(np.max(magnitude, where=np.isfinite(values), initial=0.0))
    if largest > FLOAT16_MAX:
        raise TransportError(
            f"array {key!r} holds a value of magnitude {largest:.6g}, beyond the "
            f"float16 maximum {FLOAT16_MAX:g}: "
            'use transport-dtype "bfloat16"'
        )
    return values.astype(np.float16)


def _sixteen_bit_array(key: str, values: np.ndarray, transport: str) -> Array:
    """A Flower Array of ``values`` in ``transport`` (16 bits), declared as such."""
    if transport == FLOAT16:
        wire = to_float16(values, key=key)
    else:
        wire = to_bfloat16_bits(values)
    buffer = io.BytesIO()
    np.save(buffer, wire, allow_pickle=False)
    return Array(
        dtype=transport,
        shape=tuple(values.shape),
        stype=SType.NUMPY,
        data=buffer.getvalue(),
    )


def _shared(key: str, value: np.ndarray, reference: Mapping[str, np.ndarray]) -> bool:
    """Whether ``value`` travels as a difference from ``reference[key]``."""
    return key in reference and reference[key].shape == value.shape


def encode_arrays(
    arrays: Mapping[str, np.ndarray],
    *,
    transport: str,
    reference: Mapping[str, np.ndarray] | None = None,
) -> ArrayRecord:
    """The ArrayRecord that carries ``arrays`` in the run's transport format.

    Parameters
    ----------
    arrays : Mapping[str, np.ndarray]
        What to send.
    transport : {"float32", "bfloat16", "float16"}
        The run's ``transport-dtype``.
    reference : Mapping[str, np.ndarray], optional
        An upload's received arrays: in 16 bits float32 arrays travel as their
        difference from it (see the module docstring).

    Returns
    -------
    ArrayRecord
        The record to put in the message.

    Raises
    ------
    TransportError
        Under ``"float16"``, when a finite value to send exceeds 65504.
    """
    if transport == FLOAT32:
        return to_record(arrays)
    reference = reference or {}
    record = {}
    for key, value in arrays.items():
        if value.dtype != np.float32:
            record[key] = Array(np.ascontiguousarray(value))
        elif _shared(key, value, reference):
            record[key] = _sixteen_bit_array(key, value - reference[key], transport)
        else:
            record[key] = _sixteen_bit_array(key, value, transport)
    return ArrayRecord(record)


def decode_arrays(
    record: ArrayRecord,
    *,
    transport: str,
    reference: Mapping[str, np.ndarray] | None = None,
) -> Arrays:
    """The float32 arrays of a record sent by :func:`encode_arrays`.

    Parameters
    ----------
    record : ArrayRecord
        The received record.
    transport : {"float32", "bfloat16", "float16"}
        The run's ``transport-dtype``: what each array must declare.
    reference : Mapping[str, np.ndarray], optional
        For an upload: what was sent, in float32; differences are added to it.

    Returns
    -------
    dict
        Key -> array; 16-bit arrays widened to float32.

    Raises
    ------
    TransportError
        When an array declares another format than ``transport``, or its data
        does not match its declaration.
    """
    reference = reference or {}
    out: Arrays = {}
    for key, array in record.items():
        declared = array.dtype
        if declared in TRANSPORT_DTYPES and declared != transport:
            raise TransportError(
                f"array {key!r} arrived as {declared}, but transport-dtype="
                f"{transport!r}: server and client must use the same run-config"
            )
        value = array.numpy()
        if declared not in _WIRE_DTYPES:
            out[key] = value
            continue
        if value.dtype != _WIRE_DTYPES[declared] or value.shape != tuple(array.shape):
            raise TransportError(
                f"array {key!r} declares {declared} {tuple(array.shape)} but holds "
                f"{value.dtype} {value.shape}"
            )
        if declared == FLOAT16:
            widened = value.astype(np.float32)  # exact
        else:
            widened = from_bfloat16_bits(value)
        if _shared(key, widened, reference):
            widened = np.asarray(reference[key], dtype=np.float32) + widened
        out[key] = widened
    return out

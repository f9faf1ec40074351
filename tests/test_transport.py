"""16-bit transport: bfloat16 bits, float16, declared dtype, no spurious update."""

import numpy as np
import pytest
import torch
from fake_grid import FakeGrid
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from test_disco_strategy import NODES, SHAPES, SIZES, TOKENS, run_round

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.faults import corrupt
from fcit_flower.protocol import to_numpy, to_record
from fcit_flower.strategies.continual import Federation
from fcit_flower.strategies.disco import Disco
from fcit_flower.strategies.server_optim import ServerOptimizerSpec
from fcit_flower.strategies.uploads import RoundFailedError, RoundPolicy
from fcit_flower.transport import (
    FLOAT16_MAX,
    TransportError,
    decode_arrays,
    encode_arrays,
    from_bfloat16_bits,
    to_bfloat16_bits,
    to_float16,
)

RNG = np.random.default_rng(0)
SIXTEEN_BITS = ("bfloat16", "float16")
# Relative rounding error of a normal value: half the spacing at 1.
HALF_ULP = {"bfloat16": 2.0**-8, "float16": 2.0**-11}
# float16's subnormals are multiples of 2^-24: an absolute error up to 2^-25.
SUBNORMAL_ERROR = {"bfloat16": 0.0, "float16": 2.0**-25}
WIRE = {"bfloat16": np.uint16, "float16": np.float16}


def _torch_bits(values):
    tensor = torch.from_numpy(values).to(torch.bfloat16)
    return tensor.view(torch.int16).numpy().view(np.uint16)


def _specials():
    one = np.float32(1.0)
    ulp = np.float32(2.0**-7)  # bfloat16's spacing at 1
    return np.array(
        [
            0.0,
            -0.0,
            one + ulp / 2,  # a tie: to 1 (even)
            one + 3 * ulp / 2,  # a tie: to 1 + 2 ulp (even)
            np.nextafter(one + ulp / 2, np.float32(2)),  # just above a tie: up
            np.finfo(np.float32).max,  # rounds to inf, as torch does
            np.finfo(np.float32).tiny / 3,  # subnormal
            np.inf,
            -np.inf,
            -3.14159,
            1e-40,
            65504.0,
        ],
        dtype=np.float32,
    )


def test_bits_equal_torch_bfloat16_rounding():
    values = np.concatenate(
        [
            _specials(),
            RNG.standard_normal(10_000).astype(np.float32),
            (RNG.standard_normal(1000) * 1e-30).astype(np.float32),
            RNG.integers(0, 2**32, 10_000, dtype=np.uint32).view(np.float32),
        ]
    )
    finite = values[~np.isnan(values)]
    np.testing.assert_array_equal(to_bfloat16_bits(finite), _torch_bits(finite))
    widened = torch.from_numpy(finite).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(from_bfloat16_bits(to_bfloat16_bits(finite)), widened)
    nan = np.array([np.nan, -np.nan], np.float32)
    assert np.isnan(from_bfloat16_bits(to_bfloat16_bits(nan))).all()


def test_round_trip_is_exact_on_bfloat16_values_and_close_on_others():
    bits = RNG.integers(0, 2**16, 5000, dtype=np.uint16)
    bits = bits[~np.isnan(from_bfloat16_bits(bits))]
    np.testing.assert_array_equal(to_bfloat16_bits(from_bfloat16_bits(bits)), bits)
    values = RNG.standard_normal((64, 32)).astype(np.float32)
    back = from_bfloat16_bits(to_bfloat16_bits(values))
    assert back.dtype == np.float32 and back.shape == values.shape
    np.testing.assert_allclose(back, values, rtol=2.0**-8)


def _float16_round_trip(values):
    record = encode_arrays({"x": values}, transport="float16")
    return decode_arrays(record, transport="float16")["x"]


def test_float16_is_numpy_s_half_within_2_to_the_minus_11():
    values = np.concatenate(
        [
            RNG.standard_normal(10_000).astype(np.float32),
            (RNG.standard_normal(1000) * 1e3).astype(np.float32),
            (RNG.uniform(2.0**-14, 1, 1000) * RNG.choice([-1, 1], 1000)).astype(
                np.float32
            ),
        ]
    )
    values = values[np.abs(values) >= 2.0**-14]  # normal in float16
    back = _float16_round_trip(values)
    assert back.dtype == np.float32 and back.shape == values.shape
    np.testing.assert_array_equal(back, values.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(back, values, rtol=2.0**-11, atol=0)
    # ties to even: float16's spacing at 1 is 2^-10
    one, ulp = 1.0, 2.0**-10
    ties = np.array([one + ulp / 2, one + 3 * ulp / 2, -(one + ulp / 2)], np.float32)
    np.testing.assert_array_equal(_float16_round_trip(ties), [one, one + 2 * ulp, -one])
    # float16 values (to its largest, 65504) travel exactly
    exact = RNG.integers(0, 2**16, 5000, dtype=np.uint16).view(np.float16)
    exact = exact[np.isfinite(exact)].astype(np.float32)
    np.testing.assert_array_equal(_float16_round_trip(exact), exact)
    assert _float16_round_trip(np.array([FLOAT16_MAX], np.float32))[0] == 65504.0


def test_float16_underflow_is_absolute_and_inf_nan_travel_as_they_are():
    tiny = (RNG.standard_normal(1000) * 1e-6).astype(np.float32)
    back = _float16_round_trip(tiny)
    np.testing.assert_allclose(back, tiny, rtol=0, atol=2.0**-25)
    assert _float16_round_trip(np.array([2.0**-26, -1e-30], np.float32)).tolist() == [
        0.0,
        0.0,
    ]
    special = np.array([np.inf, -np.inf, np.nan, 1.0], np.float32)
    back = _float16_round_trip(special)
    assert back[:2].tolist() == [np.inf, -np.inf] and np.isnan(back[2])
    assert back[3] == 1.0


@pytest.mark.parametrize("reference", [None, "zeros"])
def test_float16_refuses_what_would_become_inf_in_one_line(reference):
    value = np.ones((4, 4), np.float32)
    value[1, 2] = -70000.0
    value[0, 0] = np.inf  # inf is not counted: it travels as it is
    arrays = {"m.lora_B.weight": value, "m.lora_A.weight": np.ones(3, np.float32)}
    sent = {k: np.zeros_like(v) for k, v in arrays.items()} if reference else None
    with pytest.raises(TransportError) as error:
        encode_arrays(arrays, transport="float16", reference=sent)
    message = str(error.value)
    assert "\n" not in message and "'m.lora_B.weight'" in message
    assert "70000" in message and 'transport-dtype "bfloat16"' in message
    with pytest.raises(TransportError, match="65519"):
        to_float16(np.array([65519.0], np.float32), key="k")  # rounds to 65504, yet
    # an upload is its difference: large weights that barely moved travel fine
    big = {"w": np.full(3, 1e6, np.float32)}
    moved = {"w": big["w"] + np.float32(0.5)}
    back = decode_arrays(
        encode_arrays(moved, transport="float16", reference=big),
        transport="float16",
        reference=big,
    )
    np.testing.assert_array_equal(back["w"], moved["w"])


def _arrays():
    return {
        "m.lora_A.weight": RNG.standard_normal((8, 64)).astype(np.float32),
        "m.lora_B.weight": RNG.standard_normal((64, 8)).astype(np.float32),
        "token-weight/slot0": np.array([3.0]),  # float64: travels as it is
    }


@pytest.mark.parametrize("transport", SIXTEEN_BITS)
def test_encode_declares_the_16_bit_dtype_and_halves_the_bytes(transport):
    arrays = _arrays()
    record = encode_arrays(arrays, transport=transport)
    assert record["m.lora_A.weight"].dtype == transport
    assert record["m.lora_A.weight"].numpy().dtype == WIRE[transport]
    assert record["token-weight/slot0"].dtype == "float64"
    full = to_record(arrays)
    for key in ("m.lora_A.weight", "m.lora_B.weight"):
        half = ArrayRecord({key: record[key]}).count_bytes()
        assert half < 0.55 * ArrayRecord({key: full[key]}).count_bytes()
    # the declaration survives Flower's serialization of the Array
    array = record["m.lora_A.weight"]
    inflated = Array.inflate(array.deflate(), children=array.children)
    assert inflated.dtype == transport
    decoded = decode_arrays(ArrayRecord({"k": inflated}), transport=transport)
    np.testing.assert_allclose(
        decoded["k"], arrays["m.lora_A.weight"], rtol=HALF_ULP[transport]
    )
    back = decode_arrays(record, transport=transport)
    assert {k: v.dtype for k, v in back.items()} == {
        k: v.dtype for k, v in arrays.items()
    }


def test_float32_transport_is_today_s_record_bit_for_bit():
    arrays = _arrays()
    record, today = encode_arrays(arrays, transport="float32"), to_record(arrays)
    assert {k: (v.dtype, v.data) for k, v in record.items()} == {
        k: (v.dtype, v.data) for k, v in today.items()
    }
    decoded = decode_arrays(today, transport="float32")
    for key, value in to_numpy(today).items():
        np.testing.assert_array_equal(decoded[key], value)
        assert decoded[key].dtype == value.dtype


@pytest.mark.parametrize(
    ("sent_as", "read_as"),
    [
        ("float32", "bfloat16"),
        ("bfloat16", "float32"),
        ("float32", "float16"),
        ("float16", "float32"),
        ("bfloat16", "float16"),
        ("float16", "bfloat16"),
    ],
)
def test_declared_dtype_mismatch_is_refused_in_one_line(sent_as, read_as):
    record = encode_arrays(_arrays(), transport=sent_as)
    with pytest.raises(TransportError) as error:
        decode_arrays(record, transport=read_as)
    message = str(error.value)
    assert "\n" not in message and "m.lora_A.weight" in message
    assert (
        f"arrived as {sent_as}" in message and f"transport-dtype='{read_as}'" in message
    )


@pytest.mark.parametrize("transport", SIXTEEN_BITS)
def test_16_bit_declaration_with_other_data_is_refused(transport):
    liar = Array(
        dtype=transport,
        shape=(2,),
        stype="numpy.ndarray",
        data=to_record({"x": np.zeros(2, np.float32)})["x"].data,
    )
    with pytest.raises(TransportError, match=f"declares {transport} .* holds float32"):
        decode_arrays(ArrayRecord({"x": liar}), transport=transport)
    # float16 data declared bfloat16, or the reverse: the wire dtype must match
    other = encode_arrays({"x": np.zeros(2, np.float32)}, transport=transport)["x"]
    wrong = "float16" if transport == "bfloat16" else "bfloat16"
    fake = Array(dtype=wrong, shape=(2,), stype="numpy.ndarray", data=other.data)
    with pytest.raises(TransportError, match=f"declares {wrong} .* holds"):
        decode_arrays(ArrayRecord({"x": fake}), transport=wrong)


@pytest.mark.parametrize("transport", SIXTEEN_BITS)
def test_upload_is_the_update_against_what_arrived(transport):
    sent = {"w": (RNG.standard_normal((32, 16)) * 0.1).astype(np.float32)}
    received = decode_arrays(
        encode_arrays(sent, transport=transport), transport=transport
    )
    assert not np.array_equal(received["w"], sent["w"])  # the global was rounded
    # a client that does not move: the server sees no update at all
    unchanged = encode_arrays(received, transport=transport, reference=received)
    back = decode_arrays(unchanged, transport=transport, reference=sent)
    np.testing.assert_array_equal(back["w"], sent["w"])
    # a small update arrives with an error relative to the update, not the weights
    # (plus, in float16, the absolute error of an update below 2^-14)
    update = (RNG.standard_normal((32, 16)) * 1e-4).astype(np.float32)
    trained = {"w": received["w"] + update}
    back = decode_arrays(
        encode_arrays(trained, transport=transport, reference=received),
        transport=transport,
        reference=sent,
    )
    # 2 half ulps: the update's rounding and that of received + update in float32
    atol = 2 * SUBNORMAL_ERROR[transport] or 1e-9
    np.testing.assert_allclose(
        back["w"] - sent["w"], update, rtol=2 * HALF_ULP[transport], atol=atol
    )
    # an array the client was not sent (EWC's first Fisher) travels whole
    fisher = {"f": np.full((3,), 1e-6, np.float32)}
    back = decode_arrays(
        encode_arrays(fisher, transport=transport, reference=received),
        transport=transport,
        reference=sent,
    )
    np.testing.assert_allclose(
        back["f"],
        fisher["f"],
        rtol=HALF_ULP[transport],
        atol=SUBNORMAL_ERROR[transport],
    )


def test_run_config_key_defaults_to_float32_and_is_validated():
    assert RunConfig().transport_dtype == "float32"
    for transport in SIXTEEN_BITS:
        config = RunConfig.from_mapping({"transport-dtype": transport})
        assert config.transport_dtype == transport
    with pytest.raises(ConfigError, match=r"^transport-dtype='fp8' is not allowed"):
        RunConfig.from_mapping({"transport-dtype": "fp8"})


# --- the strategy end to end (FakeGrid), as a 16-bit ClientApp would answer ---


def _handler16(update, wire="bfloat16", upload_as=None):
    """Clients that decode, move by ``update(client)`` and encode like the app.

    They read ``wire`` and answer in ``upload_as`` (default: ``wire``).
    """

    def handler(node, message):
        client = NODES[node]
        if message.metadata.message_type == "query":
            content = RecordDict(
                {
                    "arrays": ArrayRecord({"identity-token": Array(TOKENS[client])}),
                    "metrics": MetricRecord({"num-examples": SIZES[client]}),
                }
            )
            return Message(content=content, reply_to=message)
        received = decode_arrays(message.content["arrays"], transport=wire)
        trained = {k: v + update(client) for k, v in received.items()}
        metrics = {
            "num-examples": SIZES[client],
            "subspace": int(message.content["config"]["subspace"]),
        }
        answer_as = upload_as or wire
        arrays = encode_arrays(trained, transport=answer_as, reference=received)
        content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)})
        return Message(content=content, reply_to=message)

    return handler


def _strategy(transport, optimizer="fedadam"):
    policy = RoundPolicy(
        clients_per_round=8, seed=0, max_update_norm=100.0, transport_dtype=transport
    )
    spec = ServerOptimizerSpec(optimizer, lr=0.1)
    return Disco(
        federation=Federation(NODES, policy, spec),
        num_subspaces=4,
        tau=0.9,
        token_dim=4,
        # values 16 bits cannot hold: the global's rounding is visible
        init_subspace=lambda slot: {
            k: np.full(s, 0.1 + slot, np.float32) for k, s in SHAPES.items()
        },
    )


def _handler(transport, update):
    if transport == "float32":
        return _float32_handler(update)
    return _handler16(update, wire=transport)


@pytest.mark.parametrize("wire", SIXTEEN_BITS)
def test_clients_that_do_not_move_give_the_float32_global_bit_for_bit(wire):
    # FedAdam would turn a spurious update current - bf16(current) into a full step
    finals = []
    for transport in ("float32", wire):
        strategy = _strategy(transport)
        grid = FakeGrid(list(NODES), _handler(transport, lambda c: np.float32(0.0)))
        for server_round in (1, 2):
            run_round(strategy, grid, server_round=server_round)
        assert not strategy.rejected
        finals.append(strategy.current)
    assert finals[0].keys() == finals[1].keys()
    for key, value in finals[0].items():
        np.testing.assert_array_equal(finals[1][key], value, err_msg=key)


@pytest.mark.parametrize("wire", SIXTEEN_BITS)
def test_16_bit_round_tracks_the_float32_round(wire):
    def update(client):
        return np.float32(1e-3 * (client + 1))

    results = {}
    for transport in ("float32", wire):
        strategy = _strategy(transport, optimizer="fedavg")
        grid = FakeGrid(list(NODES), _handler(transport, update))
        record, _ = run_round(strategy, grid)
        results[transport] = {k: v.numpy() for k, v in record.items()}
    # off by a rounding of the updates (<= 8e-3 x 2^-9 in bfloat16, x 2^-11 in
    # float16), not of the weights (0.1 ... 1.1 x 2^-9 >= 2e-4 in bfloat16; float16
    # rounds 0.1 by 2.4e-5)
    atol = {"bfloat16": 2e-5, "float16": 4e-6}[wire]
    for key, value in results["float32"].items():
        np.testing.assert_allclose(results[wire][key], value, rtol=0, atol=atol)


def _float32_handler(update):
    inner = _handler16(update)

    def handler(node, message):
        if message.metadata.message_type == "query":
            return inner(node, message)
        received = to_numpy(message.content["arrays"])
        trained = {k: v + update(NODES[node]) for k, v in received.items()}
        metrics = {
            "num-examples": SIZES[NODES[node]],
            "subspace": int(message.content["config"]["subspace"]),
        }
        content = RecordDict(
            {"arrays": to_record(trained), "metrics": MetricRecord(metrics)}
        )
        return Message(content=content, reply_to=message)

    return handler


@pytest.mark.parametrize(
    ("wire", "upload_as"),
    [("bfloat16", "float32"), ("float16", "float32"), ("float16", "bfloat16")],
)
def test_upload_in_another_dtype_is_rejected_with_the_reason(wire, upload_as):
    strategy = _strategy(wire)
    handler = _handler16(lambda c: 0.0, wire=wire, upload_as=upload_as)
    with pytest.raises(RoundFailedError, match="0 valid uploads"):
        run_round(strategy, FakeGrid(list(NODES), handler))
    reasons = {r["reason"] for r in strategy.rejected}
    assert all(f"transport-dtype='{wire}'" in r for r in reasons), reasons
    assert {r["kind"] for r in strategy.rejected} == {"invalid"}


@pytest.mark.parametrize("wire", SIXTEEN_BITS)
@pytest.mark.parametrize("kind", ["nan", "norm", "shape", "dtype"])
def test_corrupted_16_bit_uploads_are_rejected_as_invalid(kind, wire):
    def handler(node, message):
        reply = _handler16(lambda c: np.float32(0.0), wire=wire)(node, message)
        if message.metadata.message_type == "query" or NODES[node] != 3:
            return reply
        received = decode_arrays(message.content["arrays"], transport=wire)
        bad = corrupt(received, kind)
        reply.content["arrays"] = encode_arrays(bad, transport=wire, reference=received)
        return reply

    strategy = _strategy(wire)
    run_round(strategy, FakeGrid(list(NODES), handler))
    assert [(r["client"], r["kind"]) for r in strategy.rejected] == [(3, "invalid")]

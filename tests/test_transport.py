"""16-bit transport: bfloat16 bits, encoding, declared dtype, no spurious update."""

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
    TransportError,
    decode_arrays,
    encode_arrays,
    from_bfloat16_bits,
    to_bfloat16_bits,
)

RNG = np.random.default_rng(0)


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


def _arrays():
    return {
        "m.lora_A.weight": RNG.standard_normal((8, 64)).astype(np.float32),
        "m.lora_B.weight": RNG.standard_normal((64, 8)).astype(np.float32),
        "token-weight/slot0": np.array([3.0]),  # float64: travels as it is
    }


def test_encode_declares_bfloat16_and_halves_the_bytes():
    arrays = _arrays()
    record = encode_arrays(arrays, transport="bfloat16")
    assert record["m.lora_A.weight"].dtype == "bfloat16"
    assert record["m.lora_A.weight"].numpy().dtype == np.uint16
    assert record["token-weight/slot0"].dtype == "float64"
    full = to_record(arrays)
    for key in ("m.lora_A.weight", "m.lora_B.weight"):
        half = ArrayRecord({key: record[key]}).count_bytes()
        assert half < 0.55 * ArrayRecord({key: full[key]}).count_bytes()
    # the declaration survives Flower's serialization of the Array
    array = record["m.lora_A.weight"]
    inflated = Array.inflate(array.deflate(), children=array.children)
    assert inflated.dtype == "bfloat16"
    decoded = decode_arrays(ArrayRecord({"k": inflated}), transport="bfloat16")
    np.testing.assert_allclose(decoded["k"], arrays["m.lora_A.weight"], rtol=2.0**-8)
    back = decode_arrays(record, transport="bfloat16")
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
    ("sent_as", "read_as"), [("float32", "bfloat16"), ("bfloat16", "float32")]
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


def test_bfloat16_declaration_with_other_data_is_refused():
    liar = Array(
        dtype="bfloat16",
        shape=(2,),
        stype="numpy.ndarray",
        data=to_record({"x": np.zeros(2, np.float32)})["x"].data,
    )
    with pytest.raises(TransportError, match="declares bfloat16 .* holds float32"):
        decode_arrays(ArrayRecord({"x": liar}), transport="bfloat16")


def test_upload_is_the_update_against_what_arrived():
    sent = {"w": (RNG.standard_normal((32, 16)) * 0.1).astype(np.float32)}
    received = decode_arrays(
        encode_arrays(sent, transport="bfloat16"), transport="bfloat16"
    )
    assert not np.array_equal(received["w"], sent["w"])  # the global was rounded
    # a client that does not move: the server sees no update at all
    unchanged = encode_arrays(received, transport="bfloat16", reference=received)
    back = decode_arrays(unchanged, transport="bfloat16", reference=sent)
    np.testing.assert_array_equal(back["w"], sent["w"])
    # a small update arrives with an error relative to the update, not the weights
    update = (RNG.standard_normal((32, 16)) * 1e-4).astype(np.float32)
    trained = {"w": received["w"] + update}
    back = decode_arrays(
        encode_arrays(trained, transport="bfloat16", reference=received),
        transport="bfloat16",
        reference=sent,
    )
    np.testing.assert_allclose(back["w"] - sent["w"], update, rtol=2.0**-7, atol=1e-9)
    # an array the client was not sent (EWC's first Fisher) travels whole
    fisher = {"f": np.full((3,), 1e-6, np.float32)}
    back = decode_arrays(
        encode_arrays(fisher, transport="bfloat16", reference=received),
        transport="bfloat16",
        reference=sent,
    )
    np.testing.assert_allclose(back["f"], fisher["f"], rtol=2.0**-8)


def test_run_config_key_defaults_to_float32_and_is_validated():
    assert RunConfig().transport_dtype == "float32"
    config = RunConfig.from_mapping({"transport-dtype": "bfloat16"})
    assert config.transport_dtype == "bfloat16"
    with pytest.raises(ConfigError, match=r"^transport-dtype='fp8' is not allowed"):
        RunConfig.from_mapping({"transport-dtype": "fp8"})


# --- the strategy end to end (FakeGrid), as a bfloat16 ClientApp would answer ---


def _bf16_handler(update, transport="bfloat16"):
    """Clients that decode, move by ``update(client)`` and encode like the app."""

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
        received = decode_arrays(message.content["arrays"], transport="bfloat16")
        trained = {k: v + update(client) for k, v in received.items()}
        metrics = {
            "num-examples": SIZES[client],
            "subspace": int(message.content["config"]["subspace"]),
        }
        arrays = encode_arrays(trained, transport=transport, reference=received)
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
        # values bfloat16 cannot hold: the global's rounding is visible
        init_subspace=lambda slot: {
            k: np.full(s, 0.1 + slot, np.float32) for k, s in SHAPES.items()
        },
    )


def test_clients_that_do_not_move_give_the_float32_global_bit_for_bit():
    # FedAdam would turn a spurious update current - bf16(current) into a full step
    finals = []
    for transport in ("float32", "bfloat16"):
        strategy = _strategy(transport)
        handler = _bf16_handler if transport == "bfloat16" else _float32_handler
        grid = FakeGrid(list(NODES), handler(lambda client: np.float32(0.0)))
        for server_round in (1, 2):
            run_round(strategy, grid, server_round=server_round)
        assert not strategy.rejected
        finals.append(strategy.current)
    assert finals[0].keys() == finals[1].keys()
    for key, value in finals[0].items():
        np.testing.assert_array_equal(finals[1][key], value, err_msg=key)


def test_bfloat16_round_tracks_the_float32_round():
    def update(client):
        return np.float32(1e-3 * (client + 1))

    results = {}
    for transport in ("float32", "bfloat16"):
        strategy = _strategy(transport, optimizer="fedavg")
        handler = _bf16_handler if transport == "bfloat16" else _float32_handler
        record, _ = run_round(strategy, FakeGrid(list(NODES), handler(update)))
        results[transport] = {k: v.numpy() for k, v in record.items()}
    # off by a rounding of the updates (<= 8e-3 * 2^-9), not of the weights
    # (0.1 ... 1.1 x 2^-9 >= 2e-4)
    for key, value in results["float32"].items():
        np.testing.assert_allclose(results["bfloat16"][key], value, rtol=0, atol=2e-5)


def _float32_handler(update):
    inner = _bf16_handler(update)

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


def test_float32_upload_to_a_bfloat16_server_is_rejected_with_the_reason():
    strategy = _strategy("bfloat16")
    grid = FakeGrid(list(NODES), _bf16_handler(lambda c: 0.0, transport="float32"))
    with pytest.raises(RoundFailedError, match="0 valid uploads"):
        run_round(strategy, grid)
    reasons = {r["reason"] for r in strategy.rejected}
    assert all("transport-dtype='bfloat16'" in r for r in reasons), reasons
    assert {r["kind"] for r in strategy.rejected} == {"invalid"}


@pytest.mark.parametrize("kind", ["nan", "norm", "shape", "dtype"])
def test_corrupted_bfloat16_uploads_are_rejected_as_invalid(kind):
    def handler(node, message):
        reply = _bf16_handler(lambda c: np.float32(0.0))(node, message)
        if message.metadata.message_type == "query" or NODES[node] != 3:
            return reply
        received = decode_arrays(message.content["arrays"], transport="bfloat16")
        bad = corrupt(received, kind)
        reply.content["arrays"] = encode_arrays(
            bad, transport="bfloat16", reference=received
        )
        return reply

    strategy = _strategy("bfloat16")
    run_round(strategy, FakeGrid(list(NODES), handler))
    assert [(r["client"], r["kind"]) for r in strategy.rejected] == [(3, "invalid")]

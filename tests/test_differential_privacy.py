"""Client-level DP: clipping, seeded noise, accounting, budget, resume; local DP."""

import json
import zlib

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.privacy_accountant import NeighboringRelation
from dp_accounting.rdp import RdpAccountant
from fake_grid import FakeGrid
from test_disco_strategy import (
    NODES,
    PROJ,
    SHAPES,
    SIZES,
    honest,
    init,
    make_handler,
    run_round,
)

from fcit_flower import config as config_module
from fcit_flower.checkpoint import CheckpointStore
from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.inprocess import run_inprocess
from fcit_flower.methods.registry import get_method
from fcit_flower.privacy import (
    PrivacySpec,
    add_noise,
    clip_upload,
    local_seed,
    privatize_locally,
    update_norm,
)
from fcit_flower.protocol import subspace_arrays
from fcit_flower.run_state import RunState
from fcit_flower.strategies import dp_calibration, privacy_ledger
from fcit_flower.strategies.continual import Federation, StrategyState
from fcit_flower.strategies.disco import Disco
from fcit_flower.strategies.privacy_ledger import PrivacyBudgetError, PrivacyLedger
from fcit_flower.strategies.server_optim import ServerOptimizerSpec
from fcit_flower.strategies.uploads import RoundPolicy


def spec(**changes):
    values = dict(
        mode="central",
        clip=1.0,
        noise=1.0,
        delta=1e-5,
        max_epsilon=0.0,
        noise_seed=7,
        population=10,
        sample_size=5,
    )
    return PrivacySpec(**{**values, **changes})


# --- clipping and noise ------------------------------------------------------


@pytest.mark.parametrize("scale", [0.0, 0.1, 1.0, 30.0])
def test_clipped_update_norm_is_at_most_clip_and_keeps_direction(scale):
    rng = np.random.default_rng(0)
    reference = {
        "a": rng.normal(size=(4, 3)).astype(np.float32),
        "b": rng.normal(size=5).astype(np.float32),
    }
    update = {k: scale * rng.normal(size=v.shape) for k, v in reference.items()}
    upload = {k: (reference[k] + update[k]).astype(np.float32) for k in reference}
    before = update_norm(upload, reference)
    clipped, scaled = clip_upload(upload, reference, clip=1.0)
    after = update_norm(clipped, reference)
    assert scaled == (before > 1.0)
    assert after <= 1.0 * (1 + 1e-12)
    if before > 1.0:
        assert after == pytest.approx(1.0, rel=1e-12)
        for key in reference:  # one factor for every array: direction kept
            np.testing.assert_allclose(
                clipped[key] - reference[key],
                (upload[key] - reference[key].astype(np.float64)) / before,
                rtol=1e-9,
                atol=1e-12,
            )
    else:  # small updates pass unchanged
        for key in reference:
            np.testing.assert_array_equal(clipped[key], upload[key])


def test_noise_std_matches_and_is_seeded():
    zeros = {"w": np.zeros((400, 500), np.float32)}
    noisy = add_noise(zeros, std=0.25, seed=[1, 2, 3, 4])["w"]
    assert noisy.std() == pytest.approx(0.25, rel=0.01)  # 200k draws, seeded
    assert abs(noisy.mean()) < 0.01
    again = add_noise(zeros, std=0.25, seed=[1, 2, 3, 4])["w"]
    np.testing.assert_array_equal(noisy, again)
    other = add_noise(zeros, std=0.25, seed=[1, 2, 3, 5])["w"]
    assert not np.array_equal(noisy, other)


def _disco(privacy):
    policy = RoundPolicy(clients_per_round=8, seed=0, max_update_norm=100.0)
    return Disco(
        federation=Federation(NODES, policy, ServerOptimizerSpec(), privacy=privacy),
        num_subspaces=4,
        tau=0.9,
        token_dim=4,
        init_subspace=init,
    )


def test_disco_subspace_is_unweighted_mean_of_clipped_updates_plus_seeded_noise():
    # Clients 0-3 share subspace 0, 4-7 subspace 1; every client moves every
    # tensor of its subspace and the projector to (client + 1), with sample
    # counts 10..80 that DP must ignore.
    clip, z = 2.0, 0.5
    privacy = spec(clip=clip, noise=z, population=8, sample_size=8)
    strategy = _disco(privacy)
    record, _ = run_round(strategy, FakeGrid(list(NODES), make_handler(honest)))
    arrays = {k: v.numpy() for k, v in record.items()}
    proj_key = next(iter(PROJ))

    def clipped_delta(client, slot):
        # What the client was sent: its subspace (init = slot) and the projector (1).
        delta = {k: np.full(s, client + 1.0 - slot) for k, s in SHAPES.items()}
        delta[proj_key] = np.full((2, 2), client + 1.0 - 1.0)
        norm = np.sqrt(sum(float(np.sum(v**2)) for v in delta.values()))
        return {k: v * min(1.0, clip / norm) for k, v in delta.items()}

    def noise(group, shapes, count):
        rng = np.random.default_rng([7, 0, 1, zlib.crc32(group.encode())])
        std = z * clip / count
        return {k: std * rng.standard_normal(shapes[k]) for k in sorted(shapes)}

    for slot, clients in ((0, range(4)), (1, range(4, 8))):
        deltas = [clipped_delta(c, slot) for c in clients]
        drawn = noise(f"slot{slot}", SHAPES, 4)
        got = subspace_arrays(arrays, slot)
        for key in SHAPES:
            mean = np.mean([d[key] for d in deltas], axis=0)
            want = (slot + mean + drawn[key]).astype(np.float32)
            np.testing.assert_allclose(got[key], want, rtol=1e-6, err_msg=key)
    every = [clipped_delta(c, 0 if c < 4 else 1) for c in range(8)]
    drawn = noise("projector", {proj_key: (2, 2)}, 8)[proj_key]
    mean = np.mean([d[proj_key] for d in every], axis=0)
    np.testing.assert_allclose(
        arrays[proj_key], (1.0 + mean + drawn).astype(np.float32), rtol=1e-6
    )
    entry = strategy.privacy.rounds[0]
    assert entry["clients"] == {"projector": 8, "slot0": 4, "slot1": 4}
    assert entry["clipped"] == 8  # every update is longer than 2 (client 0: 12**0.5)
    assert entry["uploads"] == 8


def test_dp_off_never_enters_the_private_path(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("DP code ran with dp = off")

    monkeypatch.setattr(privacy_ledger, "RdpAccountant", fail)
    for name in ("clip", "noised", "record", "check_budget"):
        monkeypatch.setattr(PrivacyLedger, name, fail)
    strategy = _disco(None)
    record, _ = run_round(strategy, FakeGrid(list(NODES), make_handler(honest)))
    # the sample-weighted average of before
    w0 = np.average([1, 2, 3, 4], weights=[SIZES[c] for c in range(4)])
    got = subspace_arrays({k: v.numpy() for k, v in record.items()}, 0)
    np.testing.assert_allclose(got["m.lora_A.weight"], w0)
    assert "privacy" not in strategy.state().meta


# --- accounting --------------------------------------------------------------


def _reference_epsilon(*, population, sample_size, z, rounds, delta):
    """dp-accounting's own RDP accountant, called directly."""
    accountant = RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    event = dp_event.SampledWithoutReplacementDpEvent(
        population, sample_size, dp_event.GaussianDpEvent(z / 2)
    )
    accountant.compose(event, rounds)
    return accountant.get_epsilon(delta)


def _ledger_after(privacy, rounds, stage_rounds=1):
    ledger = PrivacyLedger(privacy)
    for r in range(rounds):
        ledger.record(
            stage=r // stage_rounds,
            server_round=r % stage_rounds + 1,
            clipped=0,
            uploads=privacy.sample_size,
        )
    return ledger


@pytest.mark.parametrize(
    ("population", "sample_size", "z", "rounds"),
    [(10, 5, 1.0, 3), (100, 10, 2.0, 20), (4, 4, 3.0, 2)],
)
def test_epsilon_equals_dp_accountings_own(population, sample_size, z, rounds):
    privacy = spec(noise=z, population=population, sample_size=sample_size)
    ledger = _ledger_after(privacy, rounds)
    want = _reference_epsilon(
        population=population, sample_size=sample_size, z=z, rounds=rounds, delta=1e-5
    )
    assert ledger.epsilon() == pytest.approx(want, rel=1e-12)
    assert ledger.rounds[-1]["epsilon"] == ledger.epsilon()


def test_epsilon_of_full_participation_is_below_the_gaussian_hand_bound():
    # Every site in every round (q = 1): T Gaussian releases of sensitivity 2C and
    # noise zC, i.e. RDP T a / (2 m^2) with m = z / 2; the classic conversion at
    # the best real order gives eps <= T/(2m^2) + sqrt(2 T log(1/delta)) / m, and
    # dp-accounting's (a grid of orders, a tighter conversion) lies just below.
    z, rounds, delta = 4.0, 3, 1e-5
    m = z / 2
    hand = rounds / (2 * m**2) + np.sqrt(2 * rounds * np.log(1 / delta)) / m
    ledger = _ledger_after(spec(noise=z, population=4, sample_size=4), rounds)
    assert 0.8 * hand < ledger.epsilon() <= hand


def test_epsilon_per_stage_in_the_report():
    privacy = spec()
    ledger = _ledger_after(privacy, 4, stage_rounds=2)
    report = ledger.report()
    assert [s["rounds"] for s in report["per_stage"]] == [2, 2]
    two = _reference_epsilon(population=10, sample_size=5, z=1.0, rounds=2, delta=1e-5)
    four = _reference_epsilon(population=10, sample_size=5, z=1.0, rounds=4, delta=1e-5)
    assert report["per_stage"][0]["epsilon"] == pytest.approx(two)
    assert report["per_stage"][1]["epsilon"] == pytest.approx(four)
    assert report["per_stage"][1]["stage_epsilon"] == pytest.approx(two)
    assert report["epsilon"] == pytest.approx(four)
    json.dumps(report)  # goes into metrics.json


def test_noise_for_epsilon_is_the_smallest_noise_within_the_target():
    privacy, target, rounds = spec(), 2.0, 4
    noise = dp_calibration.noise_for_epsilon(privacy, epsilon=target, rounds=rounds)
    spent = _ledger_after(spec(noise=noise), rounds).epsilon()
    assert spent <= target
    # 0.2% less noise spends more than the target: the bisection found the edge
    less = _ledger_after(spec(noise=noise * 0.998), rounds).epsilon()
    assert less > target
    assert dp_calibration.planned_epsilon(spec(noise=noise), rounds=rounds) == spent


def test_noise_for_epsilon_refuses_what_it_cannot_calibrate():
    with pytest.raises(ValueError, match="no update noise"):
        dp_calibration.noise_for_epsilon(spec(mode="off"), epsilon=1.0, rounds=2)
    with pytest.raises(ValueError, match="must be > 0"):
        dp_calibration.noise_for_epsilon(spec(), epsilon=0.0, rounds=2)


def test_dp_noise_command_prints_the_calibrated_noise(capsys):
    from fcit_flower.cli import main

    overrides = "num-clients=6 clients-per-round=3 num-stages=2 rounds-per-stage=2"
    assert main(["dp-noise", "--epsilon", "4", "--run-config", overrides]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "dp='central': 4 rounds, 3 of 6 sites per round, dp-delta=1e-05"
    noise = float(lines[1].split("dp-noise=")[1])  # 4 digits, rounded up
    privacy = spec(population=6, sample_size=3, noise=noise)  # the printed value
    assert dp_calibration.planned_epsilon(privacy, rounds=4) <= 4.0
    privacy = spec(population=6, sample_size=3, noise=noise * 0.997)
    assert dp_calibration.planned_epsilon(privacy, rounds=4) > 4.0
    assert main(["dp-noise", "--epsilon", "inf"]) == 2
    assert "--epsilon 'inf'" in capsys.readouterr().err


def test_budget_stops_before_the_round_that_would_exceed_it():
    unlimited = [_ledger_after(spec(), r).epsilon() for r in (1, 2, 3)]
    budget = (unlimited[1] + unlimited[2]) / 2
    ledger = PrivacyLedger(spec(max_epsilon=budget))
    for server_round in (1, 2):
        ledger.check_budget(stage=0, server_round=server_round, available=10)
        ledger.record(stage=0, server_round=server_round, clipped=0, uploads=5)
    with pytest.raises(PrivacyBudgetError) as caught:
        ledger.check_budget(stage=0, server_round=3, available=10)
    message = str(caught.value)
    assert "stage 1 round 3" in message and f"{budget:g}" in message
    assert f"{unlimited[1]:.4g}" in message and "\n" not in message
    assert ledger.epsilon() == pytest.approx(unlimited[1])  # nothing composed


def test_ledger_state_round_trip_is_exact():
    ledger = _ledger_after(spec(noise_seed=0), 3)
    assert ledger.noise_seed != 0  # a secret seed was drawn
    restored = PrivacyLedger(spec(noise_seed=0))
    restored.load_state(json.loads(json.dumps(ledger.state())))
    assert restored.noise_seed == ledger.noise_seed
    assert restored.epsilon() == ledger.epsilon()
    assert restored.report() == ledger.report()


# --- configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("dp", "on", "dp='on' is not allowed"),
        ("dp-clip", 0.0, "dp-clip=0.0 must be > 0"),
        ("dp-noise", -1.0, "dp-noise=-1.0 must be > 0"),
        ("dp-delta", 1.0, "dp-delta=1.0 must lie in (0, 1)"),
        ("dp-max-epsilon", -2.0, "dp-max-epsilon=-2.0 must be >= 0"),
    ],
)
def test_bad_dp_values_name_key_and_value(key, value, words):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_mapping({"dp": "central", key: value})
    assert words in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("method", ["ewc", "mtl"])
def test_methods_without_dp_refuse_it(method):
    config = RunConfig(method=method, dp="central")
    with pytest.raises(ConfigError, match=f"not supported by method='{method}'"):
        get_method(method).check_config(config)


def test_dp_off_is_the_default():
    assert RunConfig().dp == "off" and "central" in config_module.DP_MODES
    assert PrivacySpec.from_config(RunConfig()) is None


def test_checkpoints_older_than_the_dp_keys_still_resume(tmp_path):
    config = RunConfig(results_dir=str(tmp_path), run_name="old", resume=True)
    run = RunState(config, 0.0)
    run.save(StrategyState({"global/w": np.zeros(2, np.float32)}, {}), end=True)
    checkpoint = run.store.latest()
    meta = dict(checkpoint.meta)  # as written before the dp-* keys existed
    meta["config"] = {k: v for k, v in meta["config"].items() if not k.startswith("dp")}
    checkpoint.path.unlink()
    run.store.save(checkpoint.arrays, meta, stage=0, server_round=0, end=True)

    class Loaded:
        def load_state(self, arrays, meta):
            self.arrays = arrays

    loaded = Loaded()
    run.resume_into(loaded)  # the missing keys count as their defaults
    assert "global/w" in loaded.arrays
    with pytest.raises(ConfigError, match="dp: 'off' -> 'central'"):
        RunState(config.replace(dp="central"), 0.0).resume_into(Loaded())


# --- a whole run -------------------------------------------------------------

RUN = {
    "method": "disco",
    "num-clients": 4,
    "clients-per-round": 2,
    "rounds-per-stage": 1,
    "num-stages": 2,
    "train-size": 24,
    "test-size": 5,
    "batch-size": 2,
    "dp": "central",
    "dp-clip": 0.5,
    "dp-noise": 1.0,
    "export": "off",
}


def test_dp_run_resumed_mid_run_is_bit_exact_and_budget_stops(tmp_path):
    # The noise seed is the run's secret (dp-noise-seed = 0): resume must take it
    # from the checkpoint.
    config = {**RUN, "results-dir": str(tmp_path), "run-name": "dp"}
    run_inprocess(config)
    run_dir = tmp_path / "dp"
    store = CheckpointStore(run_dir / "checkpoints")
    final = store.latest().arrays
    whole = json.loads((run_dir / "metrics.json").read_text())
    privacy = whole["privacy"]
    assert [r["round"] for r in privacy["per_round"]] == [1, 1]
    assert [s["stage"] for s in privacy["per_stage"]] == [0, 1]
    want = _reference_epsilon(population=4, sample_size=2, z=1.0, rounds=2, delta=1e-5)
    assert privacy["epsilon"] == pytest.approx(want, rel=1e-12)
    for path in store.files():
        if path.name.endswith(("-s1-r1.npz", "-s1-r1-end.npz")):
            path.unlink()
    run_inprocess({**config, "resume": True})
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["resumed_from"][0].endswith("-s0-r1-end.npz")
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert resumed["privacy"] == privacy
    again = store.latest().arrays
    assert final.keys() == again.keys()
    for key in final:
        np.testing.assert_array_equal(final[key], again[key], err_msg=key)

    # A budget between one round's epsilon and two: stage 2 never starts.
    one = privacy["per_round"][0]["epsilon"]
    budget = (one + privacy["epsilon"]) / 2
    stopped = {**config, "run-name": "budget", "dp-max-epsilon": budget}
    with pytest.raises(PrivacyBudgetError, match="stage 2 round 1 would exceed"):
        run_inprocess(stopped)
    names = [
        p.name for p in CheckpointStore(tmp_path / "budget" / "checkpoints").files()
    ]
    assert names[-1].endswith("-s0-r1-end.npz")


# --- local DP ----------------------------------------------------------------


def test_local_dp_clips_then_noises_with_std_z_c_and_keeps_dtypes():
    received = {"w": np.zeros((300, 400), np.float32), "b": np.ones(7, np.float32)}
    upload = {"w": np.full((300, 400), 0.5, np.float32), "b": np.ones(7, np.float32)}
    out = privatize_locally(upload, received, clip=0.2, noise=1.5, seed=[3, 1, 1, 0, 0])
    assert {k: v.dtype for k, v in out.items()} == {"w": np.float32, "b": np.float32}
    delta = out["w"] - received["w"]
    # the clipped update (norm 0.2 over 120k entries) is negligible next to the noise
    assert delta.std() == pytest.approx(1.5 * 0.2, rel=0.01)
    again = privatize_locally(
        upload, received, clip=0.2, noise=1.5, seed=[3, 1, 1, 0, 0]
    )
    np.testing.assert_array_equal(out["w"], again["w"])
    fresh = [
        privatize_locally(upload, received, clip=0.2, noise=1.5, seed=None)["b"]
        for _ in range(2)
    ]
    assert not np.array_equal(*fresh)  # no seed: fresh entropy every time
    assert local_seed(0, 1, 2, 3) is None and local_seed(5, 1, 2) == [5, 1, 2]


def test_local_dp_server_adds_no_noise_and_accounts_without_amplification():
    privacy = spec(mode="local", noise=2.0, population=8, sample_size=8)
    strategy = _disco(privacy)
    for server_round in (1, 2, 3):
        record, _ = run_round(
            strategy,
            FakeGrid(list(NODES), make_handler(honest)),
            server_round=server_round,
        )
    # the server's aggregate is the plain sample-weighted average of the uploads
    w0 = np.average([1, 2, 3, 4], weights=[SIZES[c] for c in range(4)])
    got = subspace_arrays({k: v.numpy() for k, v in record.items()}, 0)
    np.testing.assert_allclose(got["m.lora_A.weight"], w0)
    accountant = RdpAccountant(
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    accountant.compose(dp_event.GaussianDpEvent(2.0 / 2), 3)
    assert strategy.privacy.epsilon() == pytest.approx(accountant.get_epsilon(1e-5))
    assert strategy.privacy.report()["mode"] == "local"


def test_local_dp_turns_the_update_norm_check_off():
    config = RunConfig(dp="local", max_update_norm=10.0)
    assert RoundPolicy.from_config(config).max_update_norm == 0.0
    assert RoundPolicy.from_config(RunConfig()).max_update_norm == 10.0


def test_local_dp_run_uploads_only_noised_updates(tmp_path):
    from flwr.app import Context, RecordDict
    from test_message_privacy import RecordingGrid

    from fcit_flower.client_app import app as client_app
    from fcit_flower.server_app import main

    config = {
        **RUN,
        "method": "finetune",
        "num-stages": 1,
        "dp": "local",
        "dp-clip": 0.01,
        "dp-noise": 2.0,
        "dp-noise-seed": 11,
        "results-dir": str(tmp_path),
        "run-name": "local",
    }
    grid = RecordingGrid(client_app, config["num-clients"], config)
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config
    )
    main(grid, context)
    train = [m for m in grid.messages if m.metadata.message_type == "train"]
    sent = {m.metadata.dst_node_id: m for m in train if "config" in m.content}
    replies = [m for m in train if "metrics" in m.content]
    assert len(replies) == 2  # one round, two clients
    for reply in replies:
        request = sent[reply.metadata.src_node_id]
        down = {k: v.numpy() for k, v in request.content["arrays"].items()}
        up = {k: v.numpy() for k, v in reply.content["arrays"].items()}
        delta = np.concatenate([(up[k] - down[k]).ravel() for k in up])
        assert delta.std() == pytest.approx(2.0 * 0.01, rel=0.05)
    metrics = json.loads((tmp_path / "local" / "metrics.json").read_text())
    assert metrics["privacy"]["mode"] == "local"
    assert metrics["privacy"]["per_round"][0]["epsilon"] > 0

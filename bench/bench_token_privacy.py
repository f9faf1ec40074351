"""How much identity-token noise can DISCO's routing take? Routing vs token-noise.

For each ``token-noise`` level z (``token-clip`` fixed) and noise seed, the real
DISCO ServerApp strategy asks the real ClientApps (in process, the embedded
mini-FCIT benchmark's client data, the default MiniLM identity encoder) for their
identity tokens, stage by stage, exactly as a run does before training
(``Disco.admit``: the sampled clients of each round, greedy matching at ``tau``);
no model is trained. The clients clip and noise their tokens
(``privatize_token``, seeded by ``dp-noise-seed`` = the bench seed).

Reported per scenario and z, mean +- std over seeds:

- routing accuracy: ``routing.json``'s (a client is right when its slot's majority
  task is its own; singleton slots count as right, so it flatters fragmentation);
- same-task pairs together: of the client pairs (any stages) with the same task,
  the fraction routed to one subspace; different-task pairs apart: likewise;
- subspaces opened, and clients forced into a full cache (overflow);
- epsilon at delta = 1e-5 of one token release (Gaussian, multiplier z / 2) and of
  the run's releases (one per stage, as the ledger counts them), without updates.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord
from flwr.supercore.task_identity import TaskIdentity

from bench.common import record_rows, table_header
from fcit_flower.client_app import app as client_app
from fcit_flower.config import RunConfig
from fcit_flower.inprocess import InProcessGrid
from fcit_flower.privacy import PrivacySpec
from fcit_flower.protocol import STAGE
from fcit_flower.runtime import identity_encoder
from fcit_flower.strategies.continual import Federation
from fcit_flower.strategies.disco import Disco, routing_report
from fcit_flower.strategies.privacy_ledger import PrivacyLedger
from fcit_flower.strategies.server_optim import ServerOptimizerSpec
from fcit_flower.strategies.uploads import RoundPolicy
from fcit_flower.tasks.schedule import make_schedule

DELTA = 1e-5


def route(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The routing log of every stage's token discovery under ``values``."""
    config = RunConfig.from_mapping(values)
    schedule = make_schedule(config)
    grid = InProcessGrid(client_app, config.num_clients, values)
    nodes = {node: node - 1 for node in grid.get_node_ids()}
    strategy = Disco(
        federation=Federation(
            nodes, RoundPolicy.from_config(config), ServerOptimizerSpec()
        ),
        num_subspaces=config.num_subspaces,
        tau=config.tau,
        token_dim=identity_encoder(config).dimension,
        init_subspace=lambda slot: {},  # no training: subspaces are not needed
        max_token_norm=0.0,
        client_tasks=schedule.client_tasks,
    )
    for stage in range(schedule.num_stages):
        for server_round in range(1, config.rounds_per_stage + 1):
            # Samples the round's clients and routes the newcomers; the TRAIN
            # messages it returns are not sent.
            strategy.configure_train(
                server_round, ArrayRecord(), ConfigRecord({STAGE: stage}), grid
            )
    assert not strategy.rejected, strategy.rejected
    return strategy.routing


def pair_scores(routing: list[dict[str, Any]]) -> tuple[float, float]:
    """Fractions of same-task pairs sharing a slot, different-task pairs apart."""
    same, apart = [], []
    for a, b in itertools.combinations(routing, 2):
        together = a["slot"] == b["slot"]
        if a["tasks"] == b["tasks"]:
            same.append(together)
        else:
            apart.append(not together)
    return float(np.mean(same)), float(np.mean(apart))


def epsilons(z: float, releases: int, population: int) -> tuple[float, float]:
    """Epsilon at ``DELTA`` of one token release and of ``releases`` of them."""
    if z == 0:
        return float("inf"), float("inf")
    spec = PrivacySpec(
        mode="off",
        clip=1.0,
        noise=1.0,
        delta=DELTA,
        max_epsilon=0.0,
        noise_seed=1,
        population=population,
        sample_size=population,
        token_noise=z,
    )
    out = []
    for count in (1, releases):
        ledger = PrivacyLedger(spec)
        for stage in range(count):
            ledger.release_tokens(stage=stage, server_round=1, positions=[0])
        out.append(ledger.epsilon())
    return out[0], out[1]


def spread(values: list[float], digits: int = 2) -> str:
    """``mean +- std`` of ``values``."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", default="0,0.01,0.03,0.1,0.3,1,3")
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scenarios", default="hom,het")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    rows = table_header(
        "scenario",
        "token-noise z",
        "routing accuracy",
        "same-task pairs together",
        "different-task pairs apart",
        "subspaces opened",
        "overflows",
        "eps / release",
        "eps / run (8 stages)",
    )
    for scenario in args.scenarios.split(","):
        for z in (float(v) for v in args.noise.split(",")):
            started = time.perf_counter()
            accuracy, together, apart, opened, overflow = [], [], [], [], []
            seeds = range(1, args.seeds + 1) if z else range(1, 2)  # z = 0: no noise
            for seed in seeds:
                values: dict[str, Any] = {"method": "disco", "scenario": scenario}
                if z:
                    values.update(
                        {
                            "token-noise": z,
                            "token-clip": args.clip,
                            "dp-noise-seed": seed,
                        }
                    )
                routing = route(values)
                accuracy.append(
                    float(routing_report(routing, [], {})["routing_accuracy"])
                )
                pairs = pair_scores(routing)
                together.append(pairs[0])
                apart.append(pairs[1])
                opened.append(float(sum(e["opened"] for e in routing)))
                overflow.append(float(sum(e["overflow"] for e in routing)))
            stages = len({e["stage"] for e in routing})
            one, run = epsilons(z, stages, RunConfig().num_clients)
            rows.append(
                f"| {scenario} | {z:g} | {spread(accuracy)} | {spread(together)} | "
                f"{spread(apart)} | {spread(opened, 1)} | {spread(overflow, 1)} | "
                f"{one:.4g} | {run:.4g} |"
            )
            print(rows[-1], f"({time.perf_counter() - started:.0f} s)", flush=True)
    config = RunConfig()
    note = (
        f"\n\nDefault run-config (method disco, {config.num_clients} clients, "
        f"{config.clients_per_round} per round, {config.rounds_per_stage} rounds per "
        f"stage, E = {config.num_subspaces}, tau = {config.tau}), token-clip = "
        f"{args.clip:g}, {args.seeds} noise seeds (z = 0: one run, no noise); "
        "MiniLM tokens (384-d means of unit-norm features)."
    )
    title = "Identity-token noise vs DISCO routing (token-noise, token-clip)"
    record_rows(title, [*rows, note], enabled=not args.no_record)


if __name__ == "__main__":
    main()

"""Privacy accounting of a run: Flower's RdpAccountant, one event per round.

What is accounted (README "Privacy"): the unit is a site (client-level DP), and a
round releases, for every group, the sum of its clients' clipped updates plus
Gaussian noise of std ``z * C`` (:mod:`fcit_flower.privacy`). A site
feeds at most one DISCO subspace per round (and the projector, under the same clip),
so a round is one Gaussian release of the whole vector of group sums, whatever the
number of subspaces: one event per round.

Sampling. The accountant assumes what the sampler does
(:func:`~fcit_flower.strategies.sampling.sample_clients`): a uniformly random
subset of exactly ``clients-per-round`` of ``num-clients`` sites, without
replacement, fresh each round. That is Flower's ``without-replacement`` sampling,
which dp-accounting analyses with the *replace-one* neighbouring relation (Wang,
Balle, Kasiviswanathan, "Subsampled Renyi Differential Privacy and Analytical
Moments Accountant", AISTATS 2019, Thm. 27): the number of sites is public and a
neighbouring federation has one site's data replaced. Replacing a site's data moves
the vector of group sums by at most ``2 C`` (its clipped update leaves, another
enters, maybe into another subspace), so the event's noise multiplier is ``z / 2``.
The DP-FedAvg textbook figure (multiplier ``z``, Poisson sampling, add/remove one
site) would assume a sampler Flower's and ours are not.

Local DP (``dp = "local"``): every upload is itself a Gaussian release (std
``z * C`` on an update clipped to ``C``) that the server sees together with who was
sampled, so there is no amplification by sampling: one Gaussian event of multiplier
``z / 2`` (replace-one, as above) per round, counted for every site (an upper bound
for a site not sampled every round).

Why not Flower's ``DifferentialPrivacyServerSideFixedClipping`` wrapper: its
accounted path takes only a ``FedAvg`` whose ``aggregate_train`` is Flower's own
(and no amplification), while every strategy here overrides it (upload checks,
per-group averages, server optimizers). So the strategies use Flower's clipping
helpers per group and this ledger drives Flower's accountant directly.

Identity tokens (``token-noise`` = z_t > 0, DISCO): a site clips its token to
``token-clip`` and adds noise of std ``z_t * token-clip`` itself
(:func:`~fcit_flower.privacy.privatize_token`), so one release is a Gaussian
event of multiplier ``z_t / 2`` (replace-one: the token moves by up to twice the
clip). No amplification: tokens are asked of the sites the server picked, which
it knows, and over a stage every site may be asked. A site is asked once per stage
(again only when its reply failed); the ledger composes, per stage, as many token
events as the site asked most often in that stage (an upper bound for every other
site). Token events compose with the update events in the same RDP accountant,
so ``epsilon`` covers both. With ``dp = "off"`` only token events are composed;
the tokens are still accounted and reported (a user who turns token noise on
wants its epsilon; the updates are then not protected and the report says so).

Not accounted: unnoised identity tokens (``token-noise = 0``), the slot each site
is routed to and so the counts ``n_g`` (they depend on the tokens; with noised
tokens they are post-processing of accounted releases), the clients' training
metrics and sample counts, and whether an update was clipped.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.common import log
from flwr.serverapp import RdpAccountant
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)

from fcit_flower.privacy import (
    Arrays,
    PrivacySpec,
    add_noise,
    clip_upload,
    group_seed,
    noise_std,
)
from fcit_flower.strategies.token_releases import TokenReleases
from fcit_flower.strategies.uploads import Upload

# Replacing one site's data moves the sum of clipped updates by up to 2 C.
REPLACE_ONE_SENSITIVITY = 2.0
ACCOUNTING = {
    "central": "rdp, sampling without replacement, replace-one site",
    "local": "rdp, no amplification, every round counted for every site",
    "off": "rdp, identity tokens only (updates not protected)",
}
TOKEN_ACCOUNTING = (
    "one Gaussian event (multiplier token-noise / 2, no amplification) per token "
    "release of the site asked most often in each stage"
)


class PrivacyBudgetError(PrivacyBudgetExhausted):
    """The next round would spend more than ``dp-max-epsilon``."""


def accountant_config(spec: PrivacySpec) -> PrivacyConfig:
    """Flower's accounting model of a run (see the module docstring)."""
    if spec.mode in (
        "local",
        "off",
    ):  # Flower pairs no-amplification with add-or-remove;
        # a plain Gaussian's RDP is the same under either relation at one multiplier
        sampling, relation = (
            SamplingMethod.NO_AMPLIFICATION,
            NeighboringRelation.ADD_OR_REMOVE_ONE,
        )
    else:
        sampling, relation = (
            SamplingMethod.WITHOUT_REPLACEMENT,
            NeighboringRelation.REPLACE_ONE,
        )
    return PrivacyConfig(
        target_delta=spec.delta,
        population_size=spec.population,
        neighboring_relation=relation,
        sampling_method=sampling,
        max_epsilon=spec.max_epsilon or None,
    )


def round_event(spec: PrivacySpec) -> GaussianPrivacyEvent:
    """One round's release: multiplier ``z / 2``, ``clients-per-round`` sampled."""
    return GaussianPrivacyEvent(
        noise_multiplier=spec.noise / REPLACE_ONE_SENSITIVITY,
        sample_size=spec.sample_size,
        population_size=spec.population,
    )


def token_event(spec: PrivacySpec) -> GaussianPrivacyEvent:
    """One identity-token release: multiplier ``z_t / 2``, no amplification.

    ``sample_size = population``: under the central accountant's sampling
    without replacement a sample of everyone is the plain Gaussian (q = 1).
    """
    return GaussianPrivacyEvent(
        noise_multiplier=spec.token_noise / REPLACE_ONE_SENSITIVITY,
        sample_size=spec.population,
        population_size=spec.population,
    )


class PrivacyLedger:
    """The run's accountant and noise seed; the noise and epsilon of every round.

    Parameters
    ----------
    spec : PrivacySpec
        The run's ``dp-*`` keys.
    """

    def __init__(self, spec: PrivacySpec) -> None:
        self.spec = spec
        self.accountant = RdpAccountant(accountant_config(spec))
        # A secret seed unless one is configured: every site can read the
        # run-config, and noise it can regenerate protects nothing.
        self.noise_seed = spec.noise_seed or secrets.randbits(63)
        self.rounds: list[dict[str, Any]] = []
        self._released: dict[str, int] = {}  # group -> clients, this round
        self.tokens = TokenReleases()

    def epsilon(self) -> float:
        """Epsilon at ``dp-delta`` spent so far (0 before the first release)."""
        if not self.accountant.num_releases:
            return 0.0
        return self.accountant.get_epsilon(self.spec.delta)

    def check_budget(self, *, stage: int, server_round: int, available: int) -> None:
        """Refuse a round whose release would spend more than ``dp-max-epsilon``.

        Raises
        ------
        PrivacyBudgetError
            Naming the round, epsilon so far and the budget.
        """
        if self.spec.mode != "off" and available < self.spec.population:
            log(
                WARNING,
                "dp: %d of num-clients=%d sites are connected; epsilon assumes "
                "sampling from all of them and is too low for this round",
                available,
                self.spec.population,
            )
        self._check(stage=stage, server_round=server_round, token_events=0)

    def _projected_epsilon(self, token_events: int) -> float:
        """Epsilon after ``token_events`` more token events and the round's release."""
        projected = RdpAccountant(accountant_config(self.spec))
        projected.load_state_dict(self.accountant.state_dict())
        if token_events:
            projected.compose(token_event(self.spec), count=token_events)
        if self.spec.mode != "off":
            projected.compose(round_event(self.spec))
        if not projected.num_releases:
            return 0.0
        return projected.get_epsilon(self.spec.delta)

    def _check(
        self, *, stage: int, server_round: int, token_events: int, what: str = ""
    ) -> None:
        budget = self.spec.max_epsilon
        if budget and self._projected_epsilon(token_events) > budget:
            raise PrivacyBudgetError(
                f"privacy budget: stage {stage + 1} round {server_round}{what} would "
                f"exceed dp-max-epsilon={budget:g} (epsilon so far "
                f"{self.epsilon():.4g} at dp-delta={self.spec.delta:g})"
            )

    def check_tokens(
        self, *, stage: int, server_round: int, positions: list[int]
    ) -> None:
        """Refuse a token query that, with the round after it, exceeds the budget.

        Raises
        ------
        PrivacyBudgetError
            Naming the round, epsilon so far and the budget.
        """
        events = self.tokens.events(stage=stage, positions=positions)
        self._check(
            stage=stage,
            server_round=server_round,
            token_events=events,
            what=f" with {len(positions)} identity tokens",
        )

    def release_tokens(
        self, *, stage: int, server_round: int, positions: list[int]
    ) -> None:
        """Compose the token releases of ``positions`` (sites that replied)."""
        events = self.tokens.add(stage=stage, positions=positions)
        if events:
            self.accountant.compose(token_event(self.spec), count=events)
        log(
            INFO,
            "dp: stage %d round %d: %d noised identity tokens (%d events); "
            "epsilon %.4g at delta %g",
            stage + 1,
            server_round,
            len(positions),
            events,
            self.epsilon(),
            self.spec.delta,
        )

    def clip(
        self, uploads: list[Upload], sent: Callable[[int], Arrays]
    ) -> tuple[list[Upload], int]:
        """Each upload clipped against what its client was ``sent``, weight 1.

        Unweighted: a sample-weighted mean would let one site move a group by
        more than ``C / n`` (the bound the noise is calibrated to) and would
        publish every site's sample count. Also returns how many were scaled down.
        """
        out, scaled = [], 0
        for upload in uploads:
            arrays, was_scaled = clip_upload(
                upload.arrays, sent(upload.position), clip=self.spec.clip
            )
            out.append(upload._replace(arrays=arrays, weight=1.0))
            scaled += was_scaled
        return out, scaled

    def noised(
        self, averaged: Arrays, *, group: str, count: int, stage: int, server_round: int
    ) -> dict[str, np.ndarray]:
        """A group's mean of ``count`` clipped uploads plus noise of std ``z C / n``.

        Seeded by (noise seed, stage, round, group): a resumed run draws the same.
        """
        self._released[group] = count
        seed = group_seed(
            noise_seed=self.noise_seed,
            stage=stage,
            server_round=server_round,
            group=group,
        )
        std = noise_std(noise=self.spec.noise, clip=self.spec.clip, count=count)
        return add_noise(averaged, std=std, seed=seed)

    def record(
        self, *, stage: int, server_round: int, clipped: int, uploads: int
    ) -> None:
        """Compose the round's release; remember epsilon and the group sizes."""
        if self.spec.mode != "off":  # dp = off: only identity tokens are noised
            self.accountant.compose(round_event(self.spec))
        entry = {
            "stage": stage,
            "round": server_round,
            "epsilon": self.epsilon(),
            # central: sites per group; local: the uploads (noised by the sites)
            "clients": dict(sorted(self._released.items())) or {"all": uploads},
            "clipped": clipped,
            "uploads": uploads,
        }
        if self.spec.token_noise:
            entry["token_events"] = self.tokens.take_pending()
        self.rounds.append(entry)
        self._released = {}
        clipped_part = {
            "central": f"{clipped} of {uploads} updates clipped to {self.spec.clip:g}",
            "local": f"{uploads} locally noised updates",
            "off": f"{uploads} updates without DP (dp=off)",
        }[self.spec.mode]
        log(
            INFO,
            "dp: stage %d round %d: %s; epsilon %.4g at delta %g",
            stage + 1,
            server_round,
            clipped_part,
            self.epsilon(),
            self.spec.delta,
        )

    def report(self) -> dict[str, Any]:
        """The ``privacy`` section of ``metrics.json``: per round and per stage.

        Per stage: ``epsilon`` spent by the run up to the stage's end (what is
        learnt about a site), and ``stage_epsilon`` of the stage's rounds alone
        (what is learnt about a site's data of that stage: a client trains on
        its stage's data only, and earlier models are already public to it).
        """
        stages: dict[int, list[dict[str, Any]]] = {}
        for entry in self.rounds:
            stages.setdefault(entry["stage"], []).append(entry)
        per_stage = []
        for stage, entries in sorted(stages.items()):
            alone = RdpAccountant(accountant_config(self.spec))
            if self.spec.mode != "off":
                alone.compose(round_event(self.spec), count=len(entries))
            tokens = sum(e.get("token_events", 0) for e in entries)
            if tokens:
                alone.compose(token_event(self.spec), count=tokens)
            per_stage.append(
                {
                    "stage": stage,
                    "rounds": len(entries),
                    "epsilon": entries[-1]["epsilon"],
                    "stage_epsilon": (
                        alone.get_epsilon(self.spec.delta)
                        if alone.num_releases
                        else 0.0
                    ),
                }
            )
        updates = self.spec.mode != "off"
        report: dict[str, Any] = {
            "mode": self.spec.mode,
            "clip": self.spec.clip if updates else None,
            "noise_multiplier": self.spec.noise if updates else None,
            "delta": self.spec.delta,
            "max_epsilon": self.spec.max_epsilon or None,
            "accounting": ACCOUNTING[self.spec.mode],
            "epsilon": self.epsilon(),
            "per_stage": per_stage,
            "per_round": self.rounds,
        }
        if self.spec.token_noise:
            report["token_clip"] = self.spec.token_clip
            report["token_noise_multiplier"] = self.spec.token_noise
            report["token_accounting"] = TOKEN_ACCOUNTING
        return report

    def state(self) -> dict[str, Any]:
        """JSON state for checkpoints (the accountant's own, the seed, the rounds)."""
        return {
            "accountant": self.accountant.state_dict(),
            "noise_seed": self.noise_seed,
            "rounds": self.rounds,
            "tokens": self.tokens.state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned (tokens: absent before token noise)."""
        self.accountant.load_state_dict(state["accountant"])
        self.noise_seed = int(state["noise_seed"])
        self.rounds = list(state["rounds"])
        self.tokens = TokenReleases.from_state(state.get("tokens", {}))

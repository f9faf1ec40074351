"""Where a run stands: progress counters, checkpoints, and the resume point.

The ServerApp keeps one :class:`RunState`. Its :meth:`RunState.round_done` is the
hook every strategy calls once a round is aggregated (a round checkpoint);
:meth:`RunState.save` with ``end=True`` writes the stage-end one. With
``resume = true``, :meth:`RunState.resume_into` loads the newest good checkpoint
into the strategy and continues its counters.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from logging import INFO, WARNING

from flwr.common import log

from fcit_flower.checkpoint import (
    CheckpointStore,
    absolute_paths,
    difference_details,
)
from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.strategies.continual import ContinualFedAvg, StrategyState


@dataclass
class Progress:
    """Where a run stands: what a checkpoint records besides the strategy state."""

    stage: int = 0  # the stage being trained (0-based)
    rounds_done: int = 0  # its rounds already aggregated
    stages_done: int = 0  # stages trained (and evaluated, except MTL's inner ones)
    rows: list[list[float]] = field(default_factory=list)  # accuracy after each stage
    strict_rows: list[list[float]] = field(default_factory=list)  # strict reading
    phrasing_scores: list[dict[str, dict[str, float]]] = field(default_factory=list)
    stage_seconds: list[float] = field(default_factory=list)
    elapsed: float = 0.0  # wall seconds accounted so far, across resumes
    resumed_from: list[str] = field(default_factory=list)


class RunState:
    """A run's progress, its checkpoint store and its wall clock.

    Parameters
    ----------
    config : RunConfig
        The run's config (saved in every checkpoint).
    started : float
        ``time.monotonic()`` when the run started.
    """

    def __init__(self, config: RunConfig, started: float) -> None:
        self.config = config
        self.store = CheckpointStore(
            config.run_dir / "checkpoints", keep=config.checkpoint_keep
        )
        self.progress = Progress()
        self._clock = started  # start of the time not yet added to progress.elapsed

    def tick(self) -> None:
        """Add the wall time since the last tick to ``progress.elapsed``."""
        now = time.monotonic()
        self.progress.elapsed += now - self._clock
        self._clock = now

    def save(self, state: StrategyState, *, end: bool) -> None:
        """Write the strategy state and the progress counters as one checkpoint."""
        meta = {
            "config": absolute_paths(self.config.to_mapping()),
            "progress": asdict(self.progress),
            "strategy": state.meta,
        }
        self.store.save(
            state.arrays,
            meta,
            stage=self.progress.stage,
            server_round=self.progress.rounds_done,
            end=end,
        )

    def round_done(self, stage: int, server_round: int, state: StrategyState) -> None:
        """The strategies' round-end hook: count the round, checkpoint it."""
        self.progress.rounds_done = server_round
        self.tick()
        self.save(state, end=False)

    def begin_stage(self, stage: int) -> int:
        """Enter ``stage`` (unless resuming inside it); the rounds it still needs."""
        if self.progress.stage != stage:
            self.progress.stage, self.progress.rounds_done = stage, 0
        return self.config.rounds_per_stage - self.progress.rounds_done

    def stage_trained(self, stage: int) -> None:
        """Count every round of ``stage`` as done."""
        self.progress.rounds_done = self.config.rounds_per_stage
        self.progress.stages_done = stage + 1

    def stage_seconds(self, started: float) -> None:
        """Record the wall seconds of the stage that started at ``started``."""
        self.progress.stage_seconds.append(round(time.monotonic() - started, 2))

    def start(self, strategy: ContinualFedAvg) -> None:
        """Fresh run: delete old checkpoints; ``resume``: continue from the last one."""
        if self.config.resume:
            self.resume_into(strategy)
        else:
            self.store.clear()

    def resume_into(self, strategy: ContinualFedAvg) -> None:
        """Load the last good checkpoint into ``strategy`` and its counters here.

        Without a usable checkpoint the run starts fresh (with a warning).

        Raises
        ------
        ConfigError
            If the checkpoint was written by a run with another configuration.
        """
        checkpoint = self.store.latest(warn=lambda message: log(WARNING, "%s", message))
        if checkpoint is None:
            log(
                WARNING,
                "resume: no usable checkpoint in %s; starting fresh",
                self.store.directory,
            )
            return
        # Keys newer than the checkpoint ran as their defaults (dp: off).
        saved = {**RunConfig().to_mapping(), **checkpoint.meta["config"]}
        details = difference_details(saved, self.config.to_mapping())
        if details:
            raise ConfigError(
                f"cannot resume from {checkpoint.path}: run-config differs ({details})"
            )
        strategy.load_state(checkpoint.arrays, checkpoint.meta["strategy"])
        self.progress = Progress(**checkpoint.meta["progress"])
        self.progress.resumed_from.append(checkpoint.path.name)
        log(
            INFO,
            "resume: %s (stage %d, %d rounds done, %d stages evaluated)",
            checkpoint.path.name,
            self.progress.stage + 1,
            self.progress.rounds_done,
            len(self.progress.rows),
        )

"""Progress lines a person can trust: done/total, elapsed and ETA, at a steady pace.

A long job (base pre-training, a Flower run) reports through a :class:`Heartbeat`:
it is told how far the job is (:meth:`Heartbeat.advance`) and asked whether a line is
due (:meth:`Heartbeat.due`); a line is due when ``interval_s`` have passed since the
last one, so a reader of a log file or pipe never waits longer than that. The clock
is injected, so the pace is tested with a fake clock, never with sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


def duration(seconds: float) -> str:
    """A duration as a person says it.

    Parameters
    ----------
    seconds : float
        The duration (negative counts as 0).

    Returns
    -------
    str
        ``"42 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"``.
    """
    whole = max(int(round(seconds)), 0)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Heartbeat:
    """How far a job is, and whether it is time to say so.

    Parameters
    ----------
    interval_s : float
        Longest silence between two lines.
    clock : callable, optional
        Seconds from a monotonic origin; :func:`time.monotonic` by default.
    """

    def __init__(self, *, interval_s: float, clock: Clock | None = None) -> None:
        self.interval_s = interval_s
        self.clock = clock or time.monotonic
        self.started = self.last_line = self.clock()
        self.done = 0
        self.total = 0

    def advance(self, *, done: int, total: int) -> None:
        """Record how far the job is.

        Parameters
        ----------
        done, total : int
            Units finished, and units in all (0: not known yet).
        """
        self.done, self.total = done, total

    @property
    def elapsed(self) -> float:
        """Seconds since the job started."""
        return self.clock() - self.started

    def eta(self) -> float | None:
        """Seconds left at the pace so far; None before the first unit is done."""
        if self.done <= 0 or self.total <= 0:
            return None
        return self.elapsed / self.done * max(self.total - self.done, 0)

    def due(self) -> bool:
        """Whether ``interval_s`` have passed since the last line."""
        return self.clock() - self.last_line >= self.interval_s

    def line(self, what: str) -> str:
        """``what: done/total, elapsed, ETA`` (and mark the line as said).

        Parameters
        ----------
        what : str
            The job and where it is (``"disco s0: stage 2/8 round 1/3"``).

        Returns
        -------
        str
            The progress line.
        """
        self.last_line = self.clock()
        eta = self.eta()
        counted = f"{self.done}/{self.total}, " if self.total else ""
        left = "ETA unknown yet" if eta is None else f"ETA {duration(eta)}"
        return f"{what}: {counted}{duration(self.elapsed)} elapsed, {left}"

"""Progress of a run derived from its ServerApp log lines (tqdm bar, with ETA).

The ServerApp logs ``stage k/n: training, R rounds`` and ``stage k/n: evaluating``,
and Flower's strategy logs ``[ROUND r/R]``. :class:`RunProgress` turns those lines
into one bar per run: one unit per round plus one per evaluation, so tqdm's ETA is
an estimate of the time left in the run. The same parser serves both paths:

- ``fcit-flower compare`` follows each ``flwr run`` log (:class:`ProgressStream`);
- an in-process run attaches :func:`attach_log_progress` to Flower's logger.

The bar is drawn only on a terminal. With a non-TTY stream (CI, files, pipes) a run
prints a plain line instead, at least every 30 s: where it is, done/total units,
elapsed time and ETA (:class:`fcit_flower.heartbeat.Heartbeat`).
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fcit_flower.heartbeat import Clock, Heartbeat

STAGE_LINE = re.compile(r"stage (\d+)/(\d+): (training|evaluating)(?:, (\d+) rounds)?")
ROUND_LINE = re.compile(r"\[ROUND (\d+)/(\d+)\]")
AFTER_LINE = re.compile(r"after stage (\d+):")
DONE_LINE = re.compile(r"FCIT run \S+ done")
START_LINE = re.compile(r"FCIT run \S+: ")


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def terminal_size(stream: Any) -> tuple[int, int]:
    """(columns, lines) of the terminal behind ``stream``; (100, 24) for unknown.

    A pseudo-terminal without a size (``script`` in CI, some IDEs) reports 0 x 0,
    with which tqdm draws nothing at all.
    """
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 100, 24
    return size.columns or 100, size.lines or 24


class RunProgress:
    """One run's progress bar, advanced by the run's log lines.

    Parameters
    ----------
    label : str
        Shown before the bar (e.g. ``"disco s0"``).
    stream : TextIO
        Where the bar is drawn.
    enabled : bool, optional
        Draw the bar; default: only when ``stream`` is a terminal.
    heartbeat_s : float
        Without a bar, print a progress line at least this often (0: never).
    clock : callable, optional
        Monotonic seconds; tests pass a fake one.
    ticking : bool
        Check every second from a background thread whether a line is due, so
        a long round without log lines is not a silence (tests call :meth:`tick`).
    """

    def __init__(
        self,
        label: str,
        stream: TextIO,
        enabled: bool | None = None,
        *,
        heartbeat_s: float = 30.0,
        clock: Clock | None = None,
        ticking: bool = True,
    ):
        self.enabled = is_terminal(stream) if enabled is None else enabled
        columns, lines = terminal_size(stream)
        self.bar = tqdm(
            total=1,
            desc=label,
            file=stream,
            disable=not self.enabled,
            ncols=columns,
            nrows=lines,
            leave=True,
            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
        )
        self.stream = stream
        self.label = label
        self.stages = 0
        self.rounds = 0
        self.stage = 0
        self.where = "starting Flower"
        self.beat = Heartbeat(interval_s=heartbeat_s, clock=clock)
        self.lines = not self.enabled and heartbeat_s > 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if self.lines and ticking:
            threading.Thread(target=self._tick_until_closed, daemon=True).start()

    def feed(self, line: str) -> None:
        """Advance the bar if ``line`` marks a stage, round or evaluation."""
        if match := STAGE_LINE.search(line):
            stage, stages, phase, rounds = match.groups()
            self.stage, self.stages = int(stage), int(stages)
            if rounds is not None:
                self.rounds = int(rounds)
            if phase == "training":
                self._move(0, f"stage {stage}/{stages}")
            else:
                self._move(self.rounds, f"stage {stage}/{stages} evaluating")
        elif match := ROUND_LINE.search(line):
            current, total = int(match.group(1)), int(match.group(2))
            self.rounds = total
            self._move(
                current - 1,
                f"stage {self.stage}/{self.stages} round {current}/{total}",
            )
        elif (match := AFTER_LINE.search(line)) and self.stages:
            self.stage = int(match.group(1))
            self._move(self.rounds + 1, f"stage {self.stage}/{self.stages} done")
        elif DONE_LINE.search(line):
            self._set(self.bar.total, "done")
        elif START_LINE.search(line):  # the ServerApp loads data and base model
            with self._lock:
                self.where = "preparing data and model"

    def _move(self, offset: int, text: str) -> None:
        per_stage = self.rounds + 1
        self.bar.total = max(self.stages * per_stage, 1)
        self._set((self.stage - 1) * per_stage + offset, text)

    def _set(self, position: int, text: str) -> None:
        self.bar.set_description_str(f"{self.label}: {text}", refresh=False)
        self.bar.update(max(position - self.bar.n, 0))
        self.bar.refresh()
        with self._lock:
            self.where = text
            self.beat.advance(done=position, total=int(self.bar.total or 0))
        self.tick()

    def tick(self) -> None:
        """Without a bar: print a progress line if none was printed for a while."""
        with self._lock:
            if not (self.lines and self.beat.due()):
                return
            line = self.beat.line(f"{self.label}: {self.where}")
        self.stream.write(line + "\n")
        self.stream.flush()

    def _tick_until_closed(self) -> None:
        while not self._stop.wait(1.0):
            self.tick()

    def write(self, line: str) -> None:
        """Print a log line above the bar (or plainly when there is no bar)."""
        if self.enabled:
            self.bar.write(line.rstrip("\n"), file=self.bar.fp)
        else:
            self.stream.write(line.rstrip("\n") + "\n")

    def close(self) -> None:
        """Leave the bar as it is on the screen; stop the progress lines."""
        self._stop.set()
        self.bar.close()


class ProgressStream:
    """A text sink for ``run_simulation_app(stream_to=...)`` that drives a bar.

    Parameters
    ----------
    progress : RunProgress
        The bar to advance.
    echo : bool
        Also print every log line (above the bar).
    shown : callable, optional
        What to print of a log line: the line, another text, or None to leave it
        out (known harmless noise); every line still drives the progress.
    """

    def __init__(
        self,
        progress: RunProgress,
        echo: bool,
        *,
        shown: Callable[[str], str | None] | None = None,
    ):
        self.progress = progress
        self.echo = echo
        self.shown = shown
        self._pending = ""

    def write(self, text: str) -> int:
        """Take log text; act on each complete line."""
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self.progress.feed(line)
            shown = line if self.shown is None else self.shown(line)
            if self.echo and shown is not None:
                self.progress.write(shown)
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered beyond an incomplete line."""

    def isatty(self) -> bool:
        """The sink is not a terminal itself."""
        return False


class _LogProgressHandler(logging.Handler):
    """Feeds Flower's log records to a :class:`RunProgress`; detaches when done."""

    def __init__(self, progress: RunProgress, redirect: Any):
        super().__init__(level=logging.INFO)
        self.progress = progress
        self.redirect = redirect

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.progress.feed(message)
        if DONE_LINE.search(message):
            self.detach()

    def detach(self) -> None:
        logger = logging.getLogger("flwr")
        logger.removeHandler(self)
        self.progress.close()
        if self.redirect is not None:
            self.redirect.__exit__(None, None, None)
            self.redirect = None


def attach_log_progress(
    label: str, stream: TextIO | None = None, enabled: bool | None = None
) -> RunProgress | None:
    """Show a bar for a run in this process, fed by Flower's logger.

    Only on a terminal (or with ``enabled=True``); then Flower's console logs are
    printed above the bar. The bar detaches itself when the run logs its end, and a
    new call replaces a bar left over from a run that failed.

    Parameters
    ----------
    label : str
        Shown before the bar.
    stream : TextIO, optional
        Where to draw; default ``sys.stderr``.
    enabled : bool, optional
        Force the bar on or off; default: only on a terminal.

    Returns
    -------
    RunProgress or None
        The bar, or None when progress is off.
    """
    stream = sys.stderr if stream is None else stream
    logger = logging.getLogger("flwr")
    for handler in list(logger.handlers):
        if isinstance(handler, _LogProgressHandler):
            handler.detach()
    if not (is_terminal(stream) if enabled is None else enabled):
        return None
    redirect = logging_redirect_tqdm(loggers=[logger])
    redirect.__enter__()
    progress = RunProgress(label, stream, enabled=True)
    logger.addHandler(_LogProgressHandler(progress, redirect))
    return progress

"""Progress lines at a steady pace, tested with a fake clock (never with sleeps)."""

import io
import logging

from fcit_flower.heartbeat import Heartbeat, duration
from fcit_flower.models import tiny
from fcit_flower.report.progress import ProgressStream, RunProgress


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_duration_reads_like_a_person_would_say_it():
    assert duration(42.4) == "42 s"
    assert duration(185) == "3 min 05 s"
    assert duration(3720) == "1 h 02 min"
    assert duration(-3) == "0 s"


def test_a_line_is_due_every_interval_with_done_total_elapsed_and_eta():
    clock = FakeClock()
    beat = Heartbeat(interval_s=30.0, clock=clock)
    assert not beat.due()
    clock.now += 29.9
    assert not beat.due()
    clock.now += 0.1
    assert beat.due()
    assert beat.line("job") == "job: 30 s elapsed, ETA unknown yet"
    assert not beat.due()  # the line resets the interval
    beat.advance(done=10, total=40)
    clock.now += 30.0  # 60 s for 10 of 40 units: 180 s left
    assert beat.line("job") == "job: 10/40, 1 min 00 s elapsed, ETA 3 min 00 s"


def test_pretraining_logs_steps_of_total_with_eta(caplog):
    clock = FakeClock()
    progress = tiny._Progress(100, clock=clock)
    with caplog.at_level(logging.INFO, logger=tiny.log.name):
        for _ in range(10):  # within 20 s: silent
            progress.step(2.5)
        assert caplog.messages == []
        clock.now += 20.0
        progress.step(2.0)
        for _ in range(89):
            progress.step(1.0)
    first, last = caplog.messages
    assert first == (
        "base pre-training steps: 11/100, 20 s elapsed, ETA 2 min 42 s, loss 2.000"
    )
    assert last.startswith("base pre-training steps: 100/100, 20 s elapsed, ETA 0 s")


LOG = [
    "INFO :      FCIT run disco-s0: disco, hom, task, beta=1",
    "INFO :      stage 1/3: training, 2 rounds",
    "INFO :      [ROUND 1/2]",
    "INFO :      [ROUND 2/2]",
    "INFO :      stage 1/3: evaluating",
    "INFO :      after stage 1: imagenet-r=10.0",
    "INFO :      stage 2/3: training, 2 rounds",
    "INFO :      [ROUND 1/2]",
]


def test_without_a_terminal_a_run_prints_a_line_at_least_every_30_s():
    clock, pipe = FakeClock(), io.StringIO()
    progress = RunProgress("disco s0", pipe, clock=clock, ticking=False)
    assert not progress.enabled
    progress.tick()
    assert pipe.getvalue() == ""  # nothing to say yet
    clock.now += 31.0  # Flower and Ray start: no log line, still a progress line
    progress.tick()
    assert pipe.getvalue() == (
        "disco s0: starting Flower: 31 s elapsed, ETA unknown yet\n"
    )
    progress.feed(LOG[0])  # the ServerApp has started: it prepares
    clock.now += 30.0
    progress.tick()
    assert pipe.getvalue().splitlines()[-1] == (
        "disco s0: preparing data and model: 1 min 01 s elapsed, ETA unknown yet"
    )
    for line in LOG[1:]:
        progress.feed(line)
    clock.now += 29.0
    progress.tick()
    assert pipe.getvalue().count("\n") == 2  # 29 s since the last line
    clock.now += 1.0
    progress.tick()
    last = pipe.getvalue().splitlines()[-1]
    # 3 of 9 units (3 stages x (2 rounds + evaluation)) in 91 s: 182 s left
    assert (
        last == "disco s0: stage 2/3 round 1/2: 3/9, 1 min 31 s elapsed, ETA 3 min 02 s"
    )
    progress.close()


def test_no_progress_lines_when_progress_is_off_or_a_bar_is_drawn():
    clock, pipe = FakeClock(), io.StringIO()
    off = RunProgress("x", pipe, enabled=False, heartbeat_s=0.0, clock=clock)
    clock.now += 600.0
    off.tick()
    off.close()
    assert pipe.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = RunProgress("x", screen, clock=clock, ticking=False)
    clock.now += 600.0
    bar.tick()
    assert "elapsed" not in screen.getvalue()  # the bar shows its own ETA
    bar.close()


def test_hidden_log_lines_still_drive_the_progress():
    clock, pipe = FakeClock(), io.StringIO()
    progress = RunProgress("x", pipe, clock=clock, ticking=False)
    sink = ProgressStream(progress, echo=True, shown=lambda line: None)
    sink.write("\n".join(LOG) + "\n")
    assert pipe.getvalue() == ""
    assert progress.beat.done == 3 and progress.beat.total == 9

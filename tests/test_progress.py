"""Progress bars from ServerApp log lines: drawn on a terminal, silent otherwise."""

import io
import logging
import os
import pty
import subprocess
import sys

from fcit_flower.report.progress import (
    ProgressStream,
    RunProgress,
    _LogProgressHandler,
    attach_log_progress,
)

LOG = [
    "INFO :      FCIT run disco-s0: disco, hom, task, beta=1",
    "INFO :      stage 1/3: training, 2 rounds",
    "INFO :      [ROUND 1/2]",
    "INFO :      DKO: client 0 (imagenet-r) -> subspace 0 (cos 0.000, new)",
    "INFO :      [ROUND 2/2]",
    "INFO :      stage 1/3: evaluating",
    "INFO :      after stage 1: imagenet-r=10.0",
    "INFO :      stage 2/3: training, 2 rounds",
    "INFO :      [ROUND 1/2]",
]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_on_a_terminal_shows_stage_round_and_eta():
    screen = Terminal()
    progress = RunProgress("disco s0", screen)
    assert progress.enabled
    for line in LOG:
        progress.feed(line)
    assert progress.bar.total == 9  # 3 stages x (2 rounds + evaluation)
    assert progress.bar.n == 3  # stage 1 done (3 units), stage 2 round 1 started
    text = screen.getvalue()
    assert "disco s0" in text
    assert "stage 1/3 round 2/2" in text and "stage 1/3 evaluating" in text
    assert "stage 2/3 round 1/2" in text
    assert "<" in text.rsplit("\r", 1)[-1]  # "[elapsed<remaining]": the ETA
    progress.feed("INFO :      FCIT run disco-s0 done: Last 1.00 Avg 2.00 BWT 0.00")
    assert progress.bar.n == 9


def test_no_bar_without_a_terminal():
    pipe = io.StringIO()
    progress = RunProgress("disco s0", pipe)
    assert not progress.enabled
    for line in LOG:
        progress.feed(line)
    progress.close()
    assert pipe.getvalue() == ""


def test_stream_echoes_log_lines_above_the_bar():
    screen = Terminal()
    sink = ProgressStream(RunProgress("x", screen), echo=True)
    sink.write("\n".join(LOG[:3]) + "\n[ROUND 2")  # split line: held back
    assert "[ROUND 1/2]" in screen.getvalue()
    assert "round 2/2" not in screen.getvalue()
    sink.write("/2]\n")
    assert "round 2/2" in screen.getvalue()
    quiet = Terminal()
    ProgressStream(RunProgress("x", quiet), echo=False).write("\n".join(LOG) + "\n")
    assert "DKO" not in quiet.getvalue() and "round 1/2" in quiet.getvalue()


def _handlers():
    logger = logging.getLogger("flwr")
    return [h for h in logger.handlers if isinstance(h, _LogProgressHandler)]


def test_in_process_bar_follows_flower_logger_and_detaches():
    from flwr.common import log

    assert attach_log_progress("run", stream=io.StringIO()) is None
    assert _handlers() == []
    screen = Terminal()
    progress = attach_log_progress("run", stream=screen)
    assert progress is not None and len(_handlers()) == 1
    log(logging.INFO, "stage 1/2: training, 1 rounds")
    log(logging.INFO, "[ROUND 1/1]")
    assert "stage 1/2 round 1/1" in screen.getvalue()
    log(logging.INFO, "FCIT run x done: Last 0.00 Avg 0.00 BWT 0.00 (/tmp)")
    assert _handlers() == []


SCRIPT = """
import sys
from fcit_flower.report.progress import ProgressStream, RunProgress
sink = ProgressStream(RunProgress("disco s0", sys.stderr), echo=False)
sink.write(sys.stdin.read())
sink.progress.close()
"""


def _run_script(stderr):
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        input="\n".join(LOG) + "\n",
        text=True,
        stderr=stderr,
        stdout=subprocess.DEVNULL,
        timeout=60,
        check=True,
    )


def test_real_terminal_gets_a_bar_and_a_pipe_gets_nothing():
    parent, child = pty.openpty()  # a terminal of size 0 x 0, as `script` makes
    try:
        _run_script(child)
        os.close(child)
        output = b""
        while True:
            try:
                chunk = os.read(parent, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(parent)
    text = output.decode()
    assert "disco s0: stage 2/3 round 1/2" in text and "%|" in text
    assert _run_script(subprocess.PIPE).stderr == ""

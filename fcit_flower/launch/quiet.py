"""Known harmless third-party noise, left out of what our commands print.

Each entry is an exact message seen in a ``fcit-flower compare`` run (Flower 1.42,
torch 2.13, transformers 5, Ray 2) that asks nothing of the user. Only our entry
points use this module, and only without ``--verbose``: importing the package
changes no filter, and our own warnings are never in the lists.

- :func:`quiet_this_process` filters Python warnings and log records in the
  command's own process;
- :class:`LogNoise` edits the lines of a Flower run's log before they are echoed
  (the log comes from other processes: the ServerApp, Ray's ClientApp actors).
"""

from __future__ import annotations

import logging
import os
import re
import warnings

# Python warnings: (category, exact start of the message).
HARMLESS_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (
        DeprecationWarning,
        "`torch.jit.script_method` is deprecated. Please switch to `torch.compile` "
        "or `torch.export`.",
    ),
    (
        FutureWarning,
        "`is_gradient_checkpointing` is deprecated and will be removed in v6. "
        "Use `is_activation_checkpointing` instead.",
    ),
    (
        FutureWarning,
        "Tip: In future versions of Ray, Ray will no longer override accelerator "
        "visible devices env var",
    ),
)

# Log messages (exact start): bitsandbytes without the optional `kernels` package,
# and Flower's advice for plain `flwr run` users (our launch sets every value).
HARMLESS_MESSAGES: tuple[str, ...] = (
    "Failed to load CPU gemm_4bit_forward from kernels-community",
    "Since flwr 1.32, default simulated SuperNodes changed from 10 to 2.",
    "To change federation size, use the following command:",
    "flwr federation simulation-config ",
    "fraction_evaluate is set to 0.0. Federated evaluation will be skipped.",
    "├── ConfigRecord (evaluate): (empty!)",
    "Manually terminating ClientAppActor",
    # `flwr log` and the SuperExec: where the log comes from, how the app got there
    "Using SuperLink: ",
    "Starting logstream for run_id",
    "Successfully installed fcit-flower to ",
    # transformers' progress bar while it loads the (tiny) base, once per process
    "Loading weights:",
)

# Flower ends each stage's Strategy.start() with lines that read like the end of the
# run; a run has one such block per stage.
RELABELLED: tuple[tuple[str, str], ...] = (
    ("Strategy execution finished in", "This stage's rounds finished in"),
    ("Final results:", "Flower's summary of this stage (the run goes on):"),
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAY_ACTOR = re.compile(r"^\(\w+ pid=\d+\) ?")
_LEVEL = re.compile(r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s*:\s+")
_WARNING_LINE = re.compile(r"^\S+:\d+: (\w+): (.*)$")


def _is_harmless_warning(category: str, message: str) -> bool:
    return any(
        kind.__name__ == category and message.startswith(text)
        for kind, text in HARMLESS_WARNINGS
    )


class LogNoise:
    """Edit a Flower run's log line by line: drop known noise, relabel summaries.

    A dropped Python warning takes the source line printed under it along.

    Parameters
    ----------
    plain : bool
        Also remove the terminal colour codes (for a file or a pipe).
    """

    def __init__(self, *, plain: bool = False) -> None:
        self.plain = plain
        self._source_line_next = False

    def __call__(self, line: str) -> str | None:
        """What to show of one log line.

        Parameters
        ----------
        line : str
            A line of the run's log, as ``flwr log`` streams it.

        Returns
        -------
        str or None
            The line (relabelled, or without colour codes where asked), or None
            to leave it out.
        """
        plain = _RAY_ACTOR.sub("", _ANSI.sub("", line.rstrip("\n")))
        if self._source_line_next:
            self._source_line_next = False
            if plain.startswith("  "):
                return None
        if match := _WARNING_LINE.match(plain):
            if _is_harmless_warning(*match.groups()):
                self._source_line_next = True
                return None
        message = _LEVEL.sub("", plain).strip()
        if any(message.startswith(text) for text in HARMLESS_MESSAGES):
            return None
        if self.plain:
            line = _ANSI.sub("", line)
        for old, new in RELABELLED:
            if message.startswith(old):
                return line.replace(old, new, 1)
        return line


class _HarmlessRecords(logging.Filter):
    """Drops log records whose message starts with a harmless one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(text) for text in HARMLESS_MESSAGES)


def quiet_this_process() -> None:
    """Hide the known harmless warnings and log records in this process.

    Called by a command's entry point after logging is configured: warnings are
    filtered by category and exact message, records at the root logger's handlers
    (where third-party records end up). Also turns off Hugging Face progress bars,
    here and in the Flower processes started from here (they inherit the
    environment).
    """
    for category, text in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(text), category=category)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _HarmlessRecords) for f in handler.filters):
            handler.addFilter(_HarmlessRecords())  # once, however often it is called
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

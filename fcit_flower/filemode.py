"""File modes that follow the umask, for files and directories made by ``tempfile``.

``tempfile.mkstemp`` creates 0600 files and ``mkdtemp`` 0700 directories whatever
the umask. Results and caches are built that way (then renamed into place, so a
crash never leaves half a file), and would stay private: :func:`follow_umask` gives
them the mode an ordinary ``open`` or ``mkdir`` would have (0644 / 0755 under the
usual umask 022).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where the system allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is set and restored
    at once.

    Returns
    -------
    int
        The umask (``0o022`` usually).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(target: Path | int) -> None:
    """Give ``target`` (a path, or an open file descriptor) the umask's mode.

    Parameters
    ----------
    target : Path or int
        A file or directory made by ``tempfile``; an ``int`` is a descriptor of a
        regular file.
    """
    mask = current_umask()
    if isinstance(target, int):
        os.fchmod(target, 0o666 & ~mask)
        return
    directory = stat.S_ISDIR(os.stat(target).st_mode)
    os.chmod(target, (0o777 if directory else 0o666) & ~mask)

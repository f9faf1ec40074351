"""Stopping the SuperLink a plain `flwr run` leaves behind, and nothing else."""

import subprocess
import sys
import time

import psutil

from fcit_flower.launch.local_superlink import (
    is_managed_superlink,
    managed_log_file,
    stop_managed_superlinks,
)


def _ended(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # dead, not yet reaped
    except psutil.NoSuchProcess:
        return True


def test_only_flowers_managed_superlink_is_recognised(tmp_path):
    home = tmp_path / ".flwr"
    log = home / "local-superlink" / "superlink.log"
    managed = ["flower-superlink", "--insecure", "--simulation", "--log-file", str(log)]
    assert managed_log_file(home) == log
    assert is_managed_superlink(managed, log_file=log)
    assert is_managed_superlink(
        ["/v/bin/python3", "/v/bin/flower-superlink", "--log-file", str(log)],
        log_file=log,
    )
    # compare's private SuperLink: no managed log file
    ours = [
        "/v/bin/flower-superlink",
        "--simulation",
        "--database",
        "/tmp/fcit-flwr-x/s.db",
    ]
    assert not is_managed_superlink(ours, log_file=log)
    other_home = [
        "flower-superlink",
        "--log-file",
        "/elsewhere/local-superlink/superlink.log",
    ]
    assert not is_managed_superlink(other_home, log_file=log)
    assert not is_managed_superlink(["tail", "--log-file", str(log)], log_file=log)


def test_the_managed_superlink_and_its_children_are_stopped(tmp_path):
    # A stand-in named flower-superlink that starts a child, as the real one
    # starts flower-superexec.
    fake = tmp_path / "flower-superlink"
    fake.write_text(
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "time.sleep(600)\n"
    )
    log = managed_log_file(tmp_path)
    superlink = subprocess.Popen(
        [sys.executable, str(fake), "--log-file", str(log)], start_new_session=True
    )
    bystander = subprocess.Popen(
        [sys.executable, str(fake), "--log-file", str(tmp_path / "other.log")],
        start_new_session=True,
    )
    try:
        parent = psutil.Process(superlink.pid)
        children = []
        for _ in range(3000):  # its child starts within a moment
            if children := parent.children():
                break
            time.sleep(0.01)
        child = children[0]
        assert stop_managed_superlinks(flwr_home=tmp_path, grace_s=5.0) == [
            superlink.pid
        ]
        assert superlink.wait(timeout=30) is not None
        assert _ended(child)
        assert bystander.poll() is None  # another FLWR_HOME: untouched
    finally:
        for process in (superlink, bystander):
            if process.poll() is None:
                psutil.Process(process.pid).kill()
                process.wait()

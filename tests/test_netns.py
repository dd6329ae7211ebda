"""The outer no-egress guard: the suite runs in a network namespace whose only interface is
loopback (tests/netns_run.sh, used by `make test`). Proved by reading what the kernel says to a
child process started the way the worker is, never by trying to send anything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, require_or_skip

WRAPPER = ROOT / "tests" / "netns_run.sh"

CHILD = r"""
import json, os
from pathlib import Path
import ragsite  # what the worker imports first: offline switches and the Python guard
from core import egress

def lines(path):
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return None

def namespace(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None

dev = lines("/proc/net/dev")
print(json.dumps({
    "interfaces": sorted(line.split(":")[0].strip() for line in dev[2:]),
    "sys_class_net": sorted(os.listdir("/sys/class/net")),
    "ipv4_routes": lines("/proc/net/route")[1:],
    "ipv6_route_devices": sorted({line.split()[-1] for line in lines("/proc/net/ipv6_route")}),
    "netns": namespace("self"),
    "init_netns": namespace(1),
    "python_guard": egress.is_installed(),
}))
"""


def test_a_child_started_like_the_worker_sees_only_loopback_and_no_route_beyond():
    if os.environ.get("RAG_NETNS") != "loopback-only":
        require_or_skip(
            "not inside the loopback-only network namespace: run the suite through "
            "tests/netns_run.sh (make test)"
        )

    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env={**os.environ, "RAG_EGRESS_GUARD": "1", "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["interfaces"] == ["lo"], seen
    assert seen["sys_class_net"] == ["lo"], seen
    assert seen["ipv4_routes"] == [], seen  # the main table: no default route, no gateway
    assert seen["ipv6_route_devices"] == ["lo"], seen
    assert seen["python_guard"] is True
    if seen["init_netns"] is not None:  # the machine's own namespace, where the interfaces are
        assert seen["netns"] != seen["init_netns"]


def _bin_without_unshare(tmp_path: Path) -> Path:
    """A PATH with the shell tools the wrapper needs, and no `unshare`."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("bash", "tail", "cut", "tr", "sort", "cat", "env"):
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    return folder


def test_without_a_namespace_the_wrapper_says_so_loudly_and_fails_under_ci(tmp_path):
    folder = _bin_without_unshare(tmp_path)
    env = {"PATH": str(folder), "PY": sys.executable, "HOME": str(tmp_path)}

    in_ci = subprocess.run(
        ["bash", str(WRAPPER), "--version"],
        env={**env, "CI": "true"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    local = subprocess.run(
        ["bash", str(WRAPPER), "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert in_ci.returncode == 1
    assert "NO NETWORK NAMESPACE" in in_ci.stderr
    assert "CI=true" in in_ci.stderr
    assert "pytest" not in in_ci.stdout  # the suite did not run
    assert local.returncode == 0, local.stderr
    assert "NO NETWORK NAMESPACE" in local.stderr
    assert "pytest" in local.stdout + local.stderr  # ran with the Python guard only


def _interfaces_of(pid: int) -> list[str]:
    """The interfaces of the network namespace process `pid` lives in, as the kernel lists them."""
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines)


def test_the_real_worker_process_lives_in_the_loopback_only_namespace(worker):
    if os.environ.get("RAG_NETNS") != "loopback-only":
        require_or_skip(
            "not inside the loopback-only network namespace: run the suite through "
            "tests/netns_run.sh (make test)"
        )
    pid = worker.process.pid
    assert worker.process.poll() is None, "the worker is not running"

    assert _interfaces_of(pid) == ["lo"]
    assert Path(f"/proc/{pid}/net/route").read_text().splitlines()[1:] == []
    assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")

"""Parsing in a child process with a memory and a wall-clock limit, so a parser bomb fails alone.

A lean helper process (no Django, no embedding model) imports the parsers once; for each file it
forks a child that caps its address space (RLIMIT_AS: the helper's own size plus the memory
budget) and its CPU time, parses, and writes the result as JSON. The helper kills a child that
runs past the wall-clock limit. A parent that dies takes the helper with it (end of its stdin),
and the helper's children with it (parent-death signal).

Why not multiprocessing: Celery's prefork workers are daemonic, and daemonic processes may not
start multiprocessing children; and forking the worker itself would copy the embedding model's
memory into the child, so its address-space limit would measure the model, not the parser.

Run as `python -m ingestion.sandbox` it is the helper; `parse_isolated` is the caller's side.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
# The helper must answer within the parse limit plus this (its own start included).
_GRACE_SECONDS = 120
# Exit status of a child that ran out of memory (a MemoryError it could still report).
_EXIT_MEMORY = 3

_lock = threading.Lock()
_helper: _Helper | None = None


class SandboxUnavailable(RuntimeError):
    """The helper process could not be started: not the file's fault, so not a ParseError."""


def parse_isolated(path: Path, content_type: str, memory_mb: int, timeout_s: float):
    """Parse `path` in a child process; returns a ParsedDocument or raises ParseError (including
    "needs more than N MB" and "took longer than N s")."""
    from ingestion.parsing import ParseError

    with _lock, tempfile.TemporaryDirectory(prefix="rag-parse-") as scratch:
        result = Path(scratch) / "result.json"
        request = {
            "path": str(path),
            "content_type": content_type,
            "memory_bytes": memory_mb * 2**20,
            "timeout": timeout_s,
            "result": str(result),
        }
        for attempt in (1, 2):
            helper = _running_helper()
            try:
                reply = helper.ask(request, timeout_s + _GRACE_SECONDS)
                break
            except TimeoutError as exc:
                _stop_helper()
                raise ParseError(f"Parsing took longer than {timeout_s:g} s; stopped.") from exc
            except (OSError, ValueError) as exc:
                # The helper itself died (killed from outside): start another, once.
                _stop_helper()
                if attempt == 2:
                    raise SandboxUnavailable(f"the parsing helper stopped: {exc}") from exc
            except BaseException:
                # Interrupted while waiting (the task's soft time limit, a signal): the helper's
                # late reply must never be read as the answer for the next file.
                _stop_helper()
                raise
        return _outcome(reply, result, memory_mb, timeout_s)


def _outcome(reply: dict, result: Path, memory_mb: int, timeout_s: float):
    from ingestion.parsing import ParseError, parsed_from_dict

    if reply.get("timeout"):
        raise ParseError(f"Parsing took longer than {timeout_s:g} s; stopped.")
    if reply.get("code") == _EXIT_MEMORY:
        raise ParseError(f"The file needs more than {memory_mb} MB of memory to parse; stopped.")
    try:
        outcome = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        outcome = None
    if reply.get("code") == 0 and outcome is not None:
        if outcome["status"] == "ok":
            return parsed_from_dict(outcome["parsed"])
        raise ParseError(outcome["message"])
    # Killed by a signal or died without a word: a C library crashed, or the memory limit hit
    # somewhere that could not raise MemoryError.
    how = f"signal {reply['signal']}" if reply.get("signal") else f"exit status {reply.get('code')}"
    raise ParseError(
        f"The parser stopped abnormally ({how}) on this file: damaged, or it needs more than "
        f"{memory_mb} MB of memory to parse."
    )


def helper_pid() -> int | None:
    """The helper's process id while it runs (for tests and diagnostics)."""
    helper = _helper
    return helper.process.pid if helper is not None and helper.alive() else None


class _Helper:
    def __init__(self) -> None:
        env = {
            **os.environ,
            # One thread per numeric library: the parser needs none, and threads inflate the
            # address space the memory limit is measured against.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.owner = os.getpid()
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "ingestion.sandbox"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            hello = self._read(_GRACE_SECONDS)
        except (TimeoutError, ValueError) as exc:
            self.stop()
            raise SandboxUnavailable(f"the parsing helper did not start: {exc}") from exc
        self.baseline_bytes = int(hello.get("baseline", 0))

    def alive(self) -> bool:
        return self.process.poll() is None

    def ask(self, request: dict, timeout: float) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        return self._read(timeout)

    def _read(self, timeout: float) -> dict:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no answer in {timeout:g} s")
        line = self.process.stdout.readline()
        if not line:
            raise ValueError(f"the helper exited (status {self.process.poll()})")
        return json.loads(line)

    def stop(self) -> None:
        if self.owner != os.getpid():
            return  # inherited across a fork: the owner stops it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def _running_helper() -> _Helper:
    global _helper
    # A helper started before this process was forked (a Celery pool) belongs to the parent.
    if _helper is None or _helper.owner != os.getpid() or not _helper.alive():
        if _helper is not None and _helper.owner == os.getpid():
            _helper.stop()
        _helper = _Helper()
    return _helper


def _stop_helper() -> None:
    global _helper
    if _helper is not None:
        _helper.stop()
        _helper = None


atexit.register(_stop_helper)


# --- the helper process ----------------------------------------------------------------------
def _address_space_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _child(request: dict, baseline: int) -> None:
    """Runs in the forked child: limit, parse, write the result, exit. Never returns."""
    import resource

    from ingestion.parsing import ParseError, parse_here, parsed_to_dict

    code = 0
    try:
        _die_with_parent()
        limit = baseline + int(request["memory_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        cpu = int(request["timeout"]) + 5  # a backstop should the helper itself be stopped
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        try:
            parsed = parse_here(Path(request["path"]), request["content_type"])
            outcome: dict[str, Any] = {"status": "ok", "parsed": parsed_to_dict(parsed)}
        except ParseError as exc:
            outcome = {"status": "error", "message": str(exc)}
        Path(request["result"]).write_text(json.dumps(outcome), encoding="utf-8")
    except MemoryError:
        code = _EXIT_MEMORY
    except BaseException:  # noqa: BLE001 (anything else: the parent reports an abnormal stop)
        code = 4
    finally:
        sys.stdout.flush()
        os._exit(code)


# Libraries that parser dependencies import when present but parsing never uses (unstructured's
# tokenizer imports spaCy, which imports thinc, which imports torch when it is installed).
# Marked missing here, so the helper stays small and the memory limit measures the parser.
_NOT_IMPORTED = ("torch", "tensorflow", "jax", "cupy", "mxnet", "sentence_transformers")


def _serve(replies: IO[str]) -> None:
    for name in _NOT_IMPORTED:
        sys.modules[name] = None  # type: ignore[assignment]  (import raises ImportError)
    # Everything the parsers might need, imported once here so each child starts warm.
    import ragsite.offline  # noqa: F401  (telemetry off, egress guard under tests)
    from ingestion import parsing

    parsing.preload()
    _die_with_parent()
    baseline = _address_space_bytes()
    replies.write(json.dumps({"baseline": baseline}) + "\n")
    replies.flush()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request, baseline)
        deadline = time.monotonic() + float(request["timeout"])
        reply: dict[str, Any] = {}
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                if os.WIFSIGNALED(status):
                    reply = {"signal": os.WTERMSIG(status)}
                else:
                    reply = {"code": os.WEXITSTATUS(status)}
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                reply = {"timeout": True}
                break
            time.sleep(0.02)
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    # Replies go on a private copy of stdout; stdout itself points at stderr, so whatever a
    # parser library prints cannot corrupt the replies.
    reply_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    _serve(reply_stream)

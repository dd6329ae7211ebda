"""The secret key and the first admin password are never readable by others, not even for the
moment between writing a file and chmod-ing it: with a umask that lets everyone read new files,
every state of those files that the process could be seen in (at each audited system call,
PEP 578) is 0600.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Records, at every audit event, the mode of each file in a folder whose name contains a word.
WATCHER = textwrap.dedent(
    """
    import os, stat, sys

    def watch(folder, word, seen):
        busy = []

        def hook(event, args):
            if busy or not os.path.isdir(folder):
                return
            busy.append(1)  # the calls below raise audit events of their own
            try:
                for name in os.listdir(folder):
                    if word in name:
                        try:
                            mode = stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
                        except FileNotFoundError:
                            continue
                        seen.append((event, name, mode))
            finally:
                busy.pop()

        sys.addaudithook(hook)
    """
)


def test_the_secret_key_file_is_private_from_its_creation(tmp_path):
    data_dir = tmp_path / "var"
    script = WATCHER + textwrap.dedent(
        f"""
        os.umask(0)
        seen = []
        watch({str(data_dir)!r}, "secret_key", seen)
        from ragsite import bootstrap
        bootstrap.prepare()  # what every entry point does first: it generates the key file
        from django.conf import settings
        key = settings.SECRET_KEY
        assert key == open({str(data_dir / "secret_key")!r}).read().strip()
        for event, name, mode in seen:
            print(event, name, oct(mode))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "DJANGO_"))}
    env.update(
        RAG_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="ragsite.settings",
        # This keeps the embedded server out of it: only the files are prepared.
        DATABASE_URL="postgresql://nobody@/nothing?host=/nonexistent",
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]

    observed = [line.split() for line in done.stdout.splitlines()]
    assert any(name == "secret_key" for _, name, _ in observed)  # the finished file was seen
    assert [o for o in observed if o[2] != "0o600"] == []
    assert (data_dir / "secret_key").stat().st_mode & 0o777 == 0o600


_seen: list[tuple[str, str, int]] = []
_watching: list[Path] = []
_busy: list[int] = []


def _hook(event: str, args: tuple) -> None:
    # Installed once per test session (audit hooks cannot be removed); idle unless a test watches.
    if not _watching or _busy:
        return
    _busy.append(1)
    try:
        folder = _watching[0]
        if folder.is_dir():
            for path in folder.iterdir():
                if "admin_password" in path.name:
                    try:
                        _seen.append((event, path.name, path.stat().st_mode & 0o777))
                    except FileNotFoundError:
                        continue
    finally:
        _busy.pop()


@pytest.fixture
def watched(tmp_path):
    if not getattr(sys, "_ragsite_private_file_hook", False):
        sys.addaudithook(_hook)
        sys._ragsite_private_file_hook = True
    folder = tmp_path / "var"
    folder.mkdir()
    old_umask = os.umask(0)
    _seen.clear()
    _watching.append(folder)
    yield folder
    _watching.clear()
    os.umask(old_umask)


@pytest.mark.django_db
def test_the_first_admin_password_is_private_from_its_creation(watched, settings):
    from ingestion.management.commands.serve import Command

    settings.DATA_DIR = watched
    login = Command()._ensure_admin()
    _watching.clear()

    password = (watched / "admin_password").read_text()
    assert password in login  # the first start shows it
    assert any(name == "admin_password" for _, name, _ in _seen)
    assert [s for s in _seen if s[2] != 0o600] == []
    assert Command()._ensure_admin().count(password) == 0  # later starts do not

"""Files only their owner may read (the secret key, the first admin password).

They are created with mode 0600 and written completely before anyone can see them: never a file
written world-readable and chmod-ed afterwards, whatever the umask.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_private_file(path: Path, text: str) -> bool:
    """Create `path` holding `text`, readable by its owner only from the first instant.

    Returns False, leaving the file alone, if it already exists: two processes starting at once
    (the web server and a worker) end up with the one file the first of them made.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken the owner's bits too
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # A hard link never replaces an existing file, and the file appears whole.
            os.link(draft, path)
        except FileExistsError:
            return False
        except OSError:
            # A file system without hard links: create the file itself, still exclusive and 0600.
            return _create_directly(path, text)
        return True
    finally:
        draft.unlink(missing_ok=True)


def _create_directly(path: Path, text: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return True

"""mypy with a baseline: the errors the code had when types were first checked are listed in
mypy-baseline.txt, and only an error not on that list fails `make lint`.

    tools/mypy_baseline.py check    run mypy (its configuration: pyproject.toml), fail on new errors
    tools/mypy_baseline.py update   run mypy and write its errors as the new baseline

An error is matched by file, message and code, not by line number, so edits above it do not make
it new; the same message twice in a file needs two entries. Errors fixed since the baseline are
listed too, so the baseline can be shrunk with `make mypy-baseline`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "mypy-baseline.txt"
# path:line: error: message  [code]   (a column, when shown, follows the line)
ERROR = re.compile(r"^(?P<path>[^:\s]+\.pyi?):\d+(?::\d+)?: error: (?P<message>.*)$")
# Messages that quote line numbers ("defined on line 12") would move with the code too.
LINE_IN_MESSAGE = re.compile(r"\bon line \d+")
HEADER = (
    "# mypy errors that `make lint` tolerates, matched by file and message (not line).\n"
    "# Regenerate with `make mypy-baseline` once errors are fixed; never to hide new ones.\n"
)


def normalise(output: str) -> list[str]:
    """The error lines of mypy's output as baseline entries: `path: message  [code]`."""
    entries = []
    for line in output.splitlines():
        match = ERROR.match(line.strip())
        if match:
            message = LINE_IN_MESSAGE.sub("on line N", match["message"])
            entries.append(f"{match['path']}: {message}")
    return entries


def read_baseline(path: Path = BASELINE) -> list[str]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def compare(current: list[str], baseline: list[str]) -> tuple[list[str], list[str]]:
    """(new errors, baseline entries no longer seen), each as a sorted list with repeats."""
    now, before = Counter(current), Counter(baseline)
    return sorted((now - before).elements()), sorted((before - now).elements())


def run_mypy(args: list[str]) -> tuple[int, str]:
    mypy = [sys.executable, "-m", "mypy", "--no-error-summary", "--no-pretty", *args]
    done = subprocess.run(mypy, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
    return done.returncode, done.stdout + done.stderr


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"check", "update"}:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    code, output = run_mypy(args)
    current = normalise(output)
    # 0: clean, 1: type errors; anything else (2: a crash, a bad configuration) is never baselined.
    if code not in (0, 1) or (code == 1 and not current):
        print(output, file=sys.stderr)
        print(f"mypy failed to run (exit {code})", file=sys.stderr)
        return code or 2
    if command == "update":
        BASELINE.write_text(HEADER + "".join(f"{e}\n" for e in sorted(current)), encoding="utf-8")
        print(f"{BASELINE.name}: {len(current)} errors")
        return 0
    new, fixed = compare(current, read_baseline())
    if fixed:
        print(f"{len(fixed)} baseline errors are gone; `make mypy-baseline` drops them:")
        print("".join(f"  {e}\n" for e in fixed), end="")
    if new:
        print(f"{len(new)} new mypy errors (not in {BASELINE.name}):", file=sys.stderr)
        new_set = set(new)
        for line in output.splitlines():
            if normalise(line) and normalise(line)[0] in new_set:
                print(line, file=sys.stderr)
        return 1
    print(f"mypy: no new errors ({len(current)} known in {BASELINE.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Every regular expression that sees user or document text runs in linear time.

The patterns are collected from the source (every `re.*` call in ragsite/, ingestion/ and
retrieval/), so a new one is checked without anyone remembering to add it. Each is fed long runs
of Unicode whitespace between brackets, `<`, `[` and punctuation, handmade and drawn by
hypothesis, at sizes n and 8n: a linear pattern takes about 8 times as long, a quadratic one 64
times. This is the one timing check in the suite: best of three runs, and a generous bound.
"""

from __future__ import annotations

import ast
import gc
import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval import prompts

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ragsite", "ingestion", "retrieval")
RE_FUNCTIONS = {"compile", "sub", "subn", "match", "search", "findall", "finditer", "split"}
RE_FUNCTIONS |= {"fullmatch"}
# Where each function takes its flags when they are passed by position.
FLAGS_POSITION = {"compile": 1, "sub": 4, "subn": 4, "split": 3}
FLAGS_POSITION |= dict.fromkeys(["match", "search", "findall", "finditer", "fullmatch"], 2)

# A linear pattern scales by ~8 from n to 8n, a quadratic one by ~64.
MAX_RATIO = 30
# Below this, a measurement is timer noise and scheduling, not the pattern's cost.
NOISE_FLOOR_S = 0.005

WHITESPACE = [" ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\u200b", "\x0b\x0c"]
MIXED = " \t\u2003\u3000\u00a0"  # one run cycling through these
TRIGGERS = ["", "<", "</", "< /", "<|", "[", "[1", "[1,", "[1 ,", ".", "!", "a", "a.", "/", ","]
TAILS = ["", "x", "A", "[", "<", "]", "/", "1", "passage"]


@dataclass(frozen=True)
class Found:
    where: str  # file:line
    pattern: re.Pattern
    # Only ever used anchored (match/fullmatch at the start of a string): then that is what must
    # be linear. Anything else is checked the strictest way, scanning the whole text.
    anchored: bool = False


def _flags(node: ast.expr | None) -> int:
    """re flags written as `re.I`, `re.IGNORECASE | re.M` and the like."""
    if node is None:
        return 0
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return int(getattr(re, node.attr))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _flags(node.left) | _flags(node.right)
    raise AssertionError(f"cannot read regex flags {ast.unparse(node)}")


ANCHORED = {"match", "fullmatch"}


def _uses(tree: ast.Module) -> dict[str, set[str]]:
    """For each module-level name bound to `re.compile(...)`: the methods called on it."""
    compiled = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and node.value.func.attr == "compile"
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    uses: dict[str, set[str]] = {name: set() for name in compiled}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in uses:
            uses[node.id].add("?")  # any mention; narrowed below for method calls
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in uses
        ):
            uses[node.value.id].add(node.attr)
    return uses


def _is_anchored(tree: ast.Module, uses: dict[str, set[str]], call: ast.Call) -> bool:
    if call.func.attr in ANCHORED:  # type: ignore[union-attr]
        return True
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.value is call:
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            # Every mention of the name is a .match/.fullmatch call (the bare Name node of
            # each attribute access adds one "?", which the attributes account for).
            return bool(names) and all(
                uses[name] - {"?"} and uses[name] - {"?"} <= ANCHORED for name in names
            )
    return False


def collect_patterns() -> tuple[list[Found], list[str]]:
    """(patterns, problems): every `re.<function>(...)` call in our packages, compiled; a call
    whose pattern is not a string literal is a problem (this test could not check it)."""
    found: list[Found] = []
    problems: list[str] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            uses = _uses(tree)
            for node in ast.walk(tree):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "re"
                    and node.func.attr in RE_FUNCTIONS
                ):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                argument = node.args[0] if node.args else None
                if not (isinstance(argument, ast.Constant) and isinstance(argument.value, str)):
                    problems.append(f"{where}: the pattern is not a string literal")
                    continue
                flags_node = next((k.value for k in node.keywords if k.arg == "flags"), None)
                position = FLAGS_POSITION[node.func.attr]
                if flags_node is None and len(node.args) > position:
                    flags_node = node.args[position]
                found.append(
                    Found(
                        where,
                        re.compile(argument.value, _flags(flags_node)),
                        _is_anchored(tree, uses, node),
                    )
                )
    return found, problems


PATTERNS, PROBLEMS = collect_patterns()


def _run(chars: str, length: int) -> str:
    return chars * length


def handmade_pieces(length: int) -> list[str]:
    """Every trigger, then a run of `length` of each kind of whitespace, then a tail (in turn)."""
    runs = [*WHITESPACE, MIXED]
    tails = itertools.cycle(TAILS)
    return [
        trigger + _run(space, length) + next(tails)
        for trigger, space in itertools.product(TRIGGERS, runs)
    ]


def handmade_text(length: int) -> str:
    return "".join(handmade_pieces(length))


def _best(fn: Callable[[str], object], text: str, repeats: int, tries: int = 3) -> float:
    # CPU time of this thread, not wall time: on a busy machine a long run is shared with other
    # processes and a short one is not, which would skew the ratio towards "quadratic".
    best = math.inf
    for _ in range(tries):
        started = time.thread_time()
        for _ in range(repeats):
            fn(text)
        best = min(best, time.thread_time() - started)
    return best


def growth(fn: Callable[[str], object], make: Callable[[int], str], n: int) -> tuple[float, float]:
    """(time(8n) / time(n), time(8n)): each the best of three, with enough repeats of the small
    case to be measurable. Stops early once a run of the large case is within bounds."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        small, large = make(n), make(8 * n)
        started = time.thread_time()
        fn(small)
        once = time.thread_time() - started
        repeats = max(1, min(200, math.ceil(0.005 / max(once, 1e-7))))
        t_small = _best(fn, small, repeats)
        t_large = math.inf
        for _ in range(3):
            t_large = min(t_large, _best(fn, large, repeats, tries=1))
            if t_large / t_small < MAX_RATIO or t_large < NOISE_FLOOR_S:
                break
        return t_large / t_small, t_large
    finally:
        if gc_was_enabled:
            gc.enable()


def scan(pattern: re.Pattern) -> Callable[[str], object]:
    # finditer over the whole text is the work of findall, sub and split, the costliest use.
    return lambda text: sum(1 for _ in pattern.finditer(text))


def anchored(pattern: re.Pattern) -> Callable[[list[str]], object]:
    # A pattern only used with match/fullmatch: once at the start of each piece, both ways.
    return lambda pieces: [(pattern.match(p), pattern.fullmatch(p)) for p in pieces]


def assert_linear(fn: Callable[[str], object], make: Callable[[int], str], n: int, what: str):
    ratio, large = growth(fn, make, n)
    assert ratio < MAX_RATIO or large < NOISE_FLOOR_S, (
        f"{what}: 8x the input took {ratio:.0f}x the time ({large:.2f}s): not linear"
    )


def test_every_regex_in_the_code_is_found_and_checkable():
    assert not PROBLEMS, "Write these patterns as literals so this test can check them:\n" + (
        "\n".join(PROBLEMS)
    )
    # The inventory is not empty by accident (a moved package, a changed walk).
    where = {found.where.split(":")[0] for found in PATTERNS}
    assert "retrieval/prompts.py" in where
    assert "ingestion/chunking.py" in where


@pytest.mark.parametrize("found", PATTERNS, ids=lambda found: found.where)
def test_each_regex_is_linear_on_long_whitespace_runs(found: Found):
    what = f"{found.where} {found.pattern!r}"
    if found.anchored:
        assert_linear(anchored(found.pattern), handmade_pieces, 1000, what)
    else:
        assert_linear(scan(found.pattern), handmade_text, 1000, what)


@pytest.mark.parametrize("found", PATTERNS, ids=lambda found: found.where)
def test_each_regex_is_linear_in_the_length_of_repeated_text(found: Found):
    if found.anchored:
        pytest.skip("used anchored: the runs test covers it")
    unit = handmade_text(3)
    assert_linear(
        scan(found.pattern),
        lambda count: unit * count,
        2,
        f"{found.where} {found.pattern!r}",
    )


@pytest.mark.parametrize(
    "fn",
    [prompts.strip_markers, prompts.neutralise],
    ids=lambda fn: fn.__name__,
)
def test_the_prompt_text_functions_are_linear(fn: Callable[[str], str]):
    assert_linear(fn, handmade_text, 1000, f"prompts.{fn.__name__}")


# A piece of text: a short token, or (a char, None) standing for a run of that char of length n.
_TOKENS = st.sampled_from(
    ["<", "</", "/", "|", "[", "]", "1", ",", ".", "!", "?", "a", "A", "(", '"', "passage", "ü"]
)
_RUNS = st.sampled_from([*WHITESPACE, MIXED, "ab", "1,"]).map(lambda char: (char, None))
_SHAPES = st.lists(st.one_of(_TOKENS, _RUNS), min_size=1, max_size=6).filter(
    lambda parts: any(isinstance(part, tuple) for part in parts)
)


def _shape_text(parts: list, length: int) -> str:
    return "".join(_run(part[0], length) if isinstance(part, tuple) else part for part in parts)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(parts=_SHAPES)
def test_every_regex_is_linear_on_random_mixes_of_whitespace_and_brackets(parts: list):
    # All patterns in one measurement: a quadratic one dominates the sum at 8n.
    scanned = [found.pattern for found in PATTERNS if not found.anchored]
    anchored = [found.pattern for found in PATTERNS if found.anchored]

    def run_all(text: str) -> None:
        for pattern in scanned:
            for _ in pattern.finditer(text):
                pass
        for pattern in anchored:
            pattern.match(text)
            pattern.fullmatch(text)
        prompts.strip_markers(text)
        prompts.neutralise(text)

    # Repeated so that each measurement holds many runs (more work, steadier timings).
    assert_linear(
        run_all, lambda length: _shape_text(parts, length) * 20, 500, f"the patterns on {parts!r}"
    )

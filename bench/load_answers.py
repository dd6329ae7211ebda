"""Load benchmark: many streamed answers at once, through each way of asking, against the real
ASGI server (uvicorn serving ragsite.asgi, one process, as `make run` starts it).

    .venv/bin/python bench/load_answers.py [--sizes 100,200,500] [--model-delay 3]

Everything stays on loopback and is thrown away: a fresh embedded PostgreSQL under a temporary
data dir (migrated, one user, one collection with one small document, one API key), a stand-in
OpenAI-compatible model (an asyncio server in its own process, so it is never the bottleneck:
it waits --model-delay seconds, then streams --model-pieces pieces --model-piece-delay apart),
and the server. For each size N and each surface, N streamed answers start at once:

  web     the chat page's POST /ask/ (session cookie + CSRF token), server-sent events
  api     POST /api/v1/ask with stream=true (API key)
  openai  POST /api/v1/openai/chat/completions with stream=true (API key)

It prints one table: answers completed, failures by HTTP status (or `stream` for an error event
in a 200 stream, `timeout`, `conn` for a refused or broken connection), time to first token
p50/p95 as the client sees it (the stand-in's own delay included), `model->client` p50/p95 (from
the moment the stand-in sent an answer's first piece, which carries its clock time, to the moment
the client read it: what the site adds to the model's first token) and the run's wall time.

The rate limits are lifted for this throwaway server only: it runs with RAG_API_RATE="" and
RAG_ASK_RATE="" (empty: no limit), so the one load user is never answered 429. Nothing else is
changed from the defaults except what --pool-size sets (RAG_DB_POOL_SIZE). Each request, each run
and the whole benchmark have a deadline: the script stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What is the Zephyr project budget for 2027?"
DOCUMENT = (
    "# Zephyr report\n\n## Budget\n\nThe Zephyr project budget for 2027 is 4.2 million euros.\n\n"
    "## Staff\n\nThe Zephyr project employs twelve engineers in Lyon.\n"
)
ANSWER = "The Zephyr budget for 2027 is 4.2 million euros, as the report says [1]."
SURFACES = ("web", "api", "openai")
MODEL_STAMP = re.compile(r"\(t=(\d+\.\d+)\)")
PASSWORD = "a-long-load-password"  # a throwaway user on a throwaway database
REQUEST_TIMEOUT = 120.0  # one answer, start to end
RUN_TIMEOUT = 300.0  # one size on one surface


# --- the stand-in model: OpenAI's chat completions, asyncio, no threads --------------------------


def _model_settings() -> tuple[float, float, int]:
    return (
        float(os.environ.get("LOAD_MODEL_DELAY", "3")),
        float(os.environ.get("LOAD_MODEL_PIECE_DELAY", "0.02")),
        int(os.environ.get("LOAD_MODEL_PIECES", "20")),
    )


def _pieces(count: int) -> list[str]:
    """ANSWER cut into `count` pieces (about)."""
    size = max(1, -(-len(ANSWER) // max(count, 1)))
    return [ANSWER[i : i + size] for i in range(0, len(ANSWER), size)]


async def model_app(scope, receive, send) -> None:
    """An ASGI app: GET …/models lists one model; POST …/chat/completions answers ANSWER, after
    LOAD_MODEL_DELAY seconds, streamed in LOAD_MODEL_PIECES pieces LOAD_MODEL_PIECE_DELAY apart."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"].rstrip("/")
    if path.endswith("/models"):
        await _json(send, {"object": "list", "data": [{"id": "load-model", "object": "model"}]})
        return
    if not path.endswith("/chat/completions"):
        await _json(send, {"error": {"message": "not found"}}, status=404)
        return
    request = json.loads(body or b"{}")
    delay, piece_delay, pieces = _model_settings()
    await asyncio.sleep(delay)
    base = {"id": "chatcmpl-load", "object": "chat.completion.chunk", "model": "load-model"}
    if not request.get("stream"):
        message = {"role": "assistant", "content": ANSWER}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        await _json(send, {**base, "object": "chat.completion", "choices": [choice]})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )

    async def event(delta: dict, finish: str | None = None) -> None:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        data = json.dumps({**base, "choices": [choice]})
        await send(
            {"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True}
        )

    await event({"role": "assistant", "content": ""})
    await event({"content": f"(t={time.time():.3f}) "})  # when the model's first piece left
    for index, piece in enumerate(_pieces(pieces)):
        if index and piece_delay:
            await asyncio.sleep(piece_delay)
        await event({"content": piece})
    await event({}, "stop")
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _json(send, payload: dict, status: int = 200) -> None:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


# --- processes ----------------------------------------------------------------------------------


def serve(
    app: str, env: dict[str, str], log: Path, *, app_dir: Path = ROOT
) -> tuple[subprocess.Popen, str]:
    """uvicorn serving `app` on a loopback socket bound here and handed over (--fd): nothing else
    can take the port meanwhile. Returns the process and its URL once it answers HTTP."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    with listener:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--app-dir",
                str(app_dir),
                "--fd",
                str(listener.fileno()),
                "--no-access-log",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "5",
            ],
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=[listener.fileno()],
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
                probe.sendall(
                    b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                if probe.recv(16).startswith(b"HTTP/"):
                    return process, url
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"{app} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def serve_model(log: Path, *, delay: float, piece_delay: float = 0.02, pieces: int = 20):
    env = {
        **os.environ,
        "LOAD_MODEL_DELAY": str(delay),
        "LOAD_MODEL_PIECE_DELAY": str(piece_delay),
        "LOAD_MODEL_PIECES": str(pieces),
    }
    return serve("load_answers:model_app", env, log, app_dir=Path(__file__).resolve().parent)


def raise_file_limit() -> None:
    """Each answer holds a socket in the client, two in the server and one in the stand-in."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard)
        )


# --- the client ---------------------------------------------------------------------------------


@dataclass
class Target:
    """Where and as whom to ask: the site's URL, an API key, the collection, and for the web
    surface a signed-in session (cookies) with its CSRF token."""

    url: str
    api_key: str
    collection_id: int
    username: str
    password: str = PASSWORD
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""


@dataclass
class Outcome:
    status: int | str  # the HTTP status, or "timeout" / "conn"
    first_token: float | None = None  # seconds from sending to the first token
    first_token_at: float | None = None  # its clock time
    model_first_at: float | None = None  # the clock time the stand-in sent its first piece
    completed: bool = False
    stream_error: bool = False

    @property
    def failure(self) -> str | None:
        if self.completed:
            return None
        if self.status == 200:
            return "stream" if self.stream_error else "incomplete"
        return str(self.status)


@dataclass
class RunResult:
    surface: str
    size: int
    outcomes: list[Outcome]
    seconds: float

    @property
    def completed(self) -> int:
        return sum(o.completed for o in self.outcomes)

    @property
    def failures(self) -> Counter:
        return Counter(f for o in self.outcomes if (f := o.failure))

    @property
    def server_errors(self) -> int:
        return sum(
            n for status, n in self.failures.items() if status.isdigit() and int(status) >= 500
        )

    def first_token(self, fraction: float) -> float | None:
        return _percentile([o.first_token for o in self.outcomes], fraction)

    def model_to_client(self, fraction: float) -> float | None:
        """From the stand-in sending an answer's first piece to the client reading it."""
        return _percentile(
            [
                o.first_token_at - o.model_first_at
                for o in self.outcomes
                if o.first_token_at is not None and o.model_first_at is not None
            ],
            fraction,
        )


def _percentile(values: list, fraction: float) -> float | None:
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def sign_in(client, target: Target) -> None:
    """A browser's sign-in: the login page's CSRF cookie, then the form."""
    page = await client.get(target.url + "/accounts/login/")
    token = page.cookies.get("csrftoken") or client.cookies.get("csrftoken")
    response = await client.post(
        target.url + "/accounts/login/",
        data={
            "username": target.username,
            "password": target.password,
            "csrfmiddlewaretoken": token,
        },
        headers={"Referer": target.url + "/accounts/login/"},
    )
    if response.status_code != 302 or "sessionid" not in client.cookies:
        raise RuntimeError(f"sign-in failed: {response.status_code} {response.text[:300]}")
    target.cookies = {
        "sessionid": client.cookies["sessionid"],
        "csrftoken": client.cookies["csrftoken"],
    }
    target.csrf = client.cookies["csrftoken"]


def _request(surface: str, target: Target) -> dict:
    if surface == "web":
        return {
            "url": target.url + "/ask/",
            "data": {"question": QUESTION, "collection": str(target.collection_id)},
            "headers": {
                "Accept": "text/event-stream",
                "X-CSRFToken": target.csrf,
                "Referer": target.url + "/",
            },
        }
    headers = {"Authorization": f"Bearer {target.api_key}", "Accept": "text/event-stream"}
    if surface == "api":
        body = {"question": QUESTION, "stream": True, "collection": target.collection_id}
        return {"url": target.url + "/api/v1/ask", "json": body, "headers": headers}
    body = {
        "model": "ragsite",
        "stream": True,
        "collection": target.collection_id,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    return {"url": target.url + "/api/v1/openai/chat/completions", "json": body, "headers": headers}


async def ask_once(client, surface: str, target: Target, start: asyncio.Event) -> Outcome:
    """One streamed answer: its status, when its first token came, whether it ended well."""
    import httpx

    request = _request(surface, target)
    await start.wait()
    began = time.perf_counter()
    outcome = Outcome(status="conn")
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            async with client.stream("POST", **request) as response:
                outcome.status = response.status_code
                if response.status_code != 200:
                    await response.aread()
                    return outcome
                event = ""
                text_so_far = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                        continue
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        outcome.completed = not outcome.stream_error
                        continue
                    payload = json.loads(data)
                    text = ""
                    if surface == "openai":
                        if "error" in payload:
                            outcome.stream_error = True
                        choice = (payload.get("choices") or [{}])[0]
                        text = (choice.get("delta") or {}).get("content") or ""
                    elif event == "token":
                        text = payload.get("text", "")
                    elif event == "error":
                        outcome.stream_error = True
                    elif event == "done":
                        outcome.completed = not outcome.stream_error
                    if text and outcome.first_token is None:
                        outcome.first_token = time.perf_counter() - began
                        outcome.first_token_at = time.time()
                    if text and outcome.model_first_at is None:
                        text_so_far += text
                        if stamp := MODEL_STAMP.search(text_so_far):
                            outcome.model_first_at = float(stamp.group(1))
    except TimeoutError:
        outcome.status = "timeout"
        outcome.completed = False
    except httpx.HTTPError:
        if outcome.status == 200:
            outcome.stream_error = True
        outcome.completed = False
    return outcome


async def run_surface(surface: str, size: int, target: Target) -> RunResult:
    """`size` streamed answers on `surface`, all sent at once."""
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=30.0)
    # The web surface's session travels as the client's cookies (signed in once, then reused).
    async with httpx.AsyncClient(limits=limits, timeout=timeout, cookies=target.cookies) as client:
        if surface == "web" and not target.cookies:
            await sign_in(client, target)
        start = asyncio.Event()
        tasks = [asyncio.create_task(ask_once(client, surface, target, start)) for _ in range(size)]
        await asyncio.sleep(0.05)  # every request built and waiting
        began = time.perf_counter()
        start.set()
        try:
            async with asyncio.timeout(RUN_TIMEOUT):
                outcomes = await asyncio.gather(*tasks)
        except TimeoutError:
            for task in tasks:
                task.cancel()
            outcomes = [
                t.result() if t.done() and not t.cancelled() else Outcome("timeout") for t in tasks
            ]
        return RunResult(surface, size, list(outcomes), time.perf_counter() - began)


def run_load(target: Target, surfaces, sizes, *, pause: float = 1.0) -> list[RunResult]:
    results = []
    for size in sizes:
        for surface in surfaces:
            results.append(asyncio.run(run_surface(surface, size, target)))
            print(format_row(results[-1]), flush=True)
            time.sleep(pause)
    return results


def _seconds(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


HEADER = (
    f"{'surface':<8} {'N':>5} {'completed':>10} {'failures':<22} "
    f"{'ttft p50':>9} {'ttft p95':>9} {'model->client p50/p95':>22} {'total s':>8}"
)


def format_row(result: RunResult) -> str:
    failures = ", ".join(f"{k}: {v}" for k, v in sorted(result.failures.items())) or "none"
    lag = f"{_seconds(result.model_to_client(0.5))} / {_seconds(result.model_to_client(0.95))}"
    return (
        f"{result.surface:<8} {result.size:>5} {result.completed:>6}/{result.size:<4}"
        f"{failures:<22} {_seconds(result.first_token(0.5)):>9} "
        f"{_seconds(result.first_token(0.95)):>9} {lag:>22} {result.seconds:>8.1f}"
    )


def print_table(results: list[RunResult]) -> None:
    print(HEADER)
    for result in results:
        print(format_row(result))


# --- the throwaway site ---------------------------------------------------------------------------


def prepare_site(data_dir: Path) -> dict:
    """Migrate a fresh embedded database under `data_dir` and fill it: one user, one collection
    everyone may read with one document, one API key. In this process: its connections are
    closed again before the load starts."""
    os.environ.pop("DATABASE_URL", None)
    os.environ["RAG_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connections

    from core import apikeys
    from ingestion import pipeline, services
    from ingestion.models import Collection
    from ragsite import bootstrap

    bootstrap.prepare()
    call_command("migrate", verbosity=0)
    user = User.objects.create_user("load", password=PASSWORD)
    collection = Collection.objects.create(name="Zephyr", visibility=Collection.Visibility.EVERYONE)
    source = data_dir / "zephyr.md"
    source.write_text(DOCUMENT, encoding="utf-8")
    registered = services.register_path(collection, source, user, enqueue=False)
    pipeline.ingest(registered.document.pk)
    _, key = apikeys.create_key(user, "load benchmark")
    connections.close_all()
    return {"username": user.username, "collection_id": collection.pk, "api_key": key}


def site_env(data_dir: Path, model_url: str, pool_size: int | None) -> dict[str, str]:
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(data_dir),
        "RAG_LLM_BASE_URL": model_url + "/v1",
        "RAG_LLM_MODEL": "load-model",
        "RAG_LLM_API_KEY": "",
        "RAG_LLM_TIMEOUT": str(REQUEST_TIMEOUT),
        "RAG_API_RATE": "",  # no rate limits on this throwaway server (see the docstring)
        "RAG_ASK_RATE": "",
        "CELERY_BROKER_URL": "filesystem://",
        "RAG_BROKER_DIR": str(data_dir / "broker"),
        "RAG_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DATABASE_URL", None)
    if pool_size is not None:
        env["RAG_DB_POOL_SIZE"] = str(pool_size)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="100,200,500", help="concurrent answers, comma-separated"
    )
    parser.add_argument("--surfaces", default=",".join(SURFACES))
    parser.add_argument(
        "--model-delay", type=float, default=3.0, help="stand-in's seconds to first token"
    )
    parser.add_argument("--model-piece-delay", type=float, default=0.02)
    parser.add_argument("--model-pieces", type=int, default=20)
    parser.add_argument(
        "--pool-size", type=int, default=None, help="RAG_DB_POOL_SIZE of the server"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args, _ = parser.parse_known_args()  # `make bench` passes every benchmark the same arguments
    sizes = [int(n) for n in args.sizes.split(",") if n.strip()]
    surfaces = [s.strip() for s in args.surfaces.split(",") if s.strip()]
    raise_file_limit()
    data_dir = Path(tempfile.mkdtemp(prefix="ragsite-load-"))
    if not args.keep:
        # Registered first, so it runs last: after the embedded server has stopped.
        atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    started = time.perf_counter()
    site = prepare_site(data_dir)
    print(f"site ready in {time.perf_counter() - started:.0f}s (data dir {data_dir})", flush=True)
    model, model_url = serve_model(
        data_dir / "model.log",
        delay=args.model_delay,
        piece_delay=args.model_piece_delay,
        pieces=args.model_pieces,
    )
    server = None
    try:
        server, url = serve(
            "ragsite.asgi:application",
            site_env(data_dir, model_url, args.pool_size),
            data_dir / "server.log",
        )
        target = Target(url, site["api_key"], site["collection_id"], site["username"])
        run_load(target, surfaces, [1], pause=0)  # warm-up: the server loads its embedding model
        print(
            f"\n{len(sizes)} sizes x {len(surfaces)} surfaces; stand-in model: first token after "
            f"{args.model_delay:g}s, then {args.model_pieces} pieces {args.model_piece_delay:g}s apart",
            flush=True,
        )
        results = run_load(target, surfaces, sizes)
        print()
        print_table(results)
        log = (data_dir / "server.log").read_text()
        if "Traceback" in log:
            print("\nserver log (tail):\n" + log[-3000:])
        return 0
    finally:
        if server is not None:
            stop(server)
        stop(model)


if __name__ == "__main__":
    sys.exit(main())

"""The knowledge base over the Model Context Protocol: streamable HTTP at /mcp, for agents.

An HTTP layer like retrieval.api: four tools (search, ask, list_collections, get_document) that
call the same services and permission rules as the REST API, as the owner of the bearer API key
(`Authorization: Bearer rsk_…`) presented with every request, with exactly that user's rights.

Served by the official `mcp` SDK, stateless (every request authenticated on its own, no session
to hijack), mounted in front of Django by ragsite.asgi. `application` is the ASGI app: it
checks the Host header against ALLOWED_HOSTS and the key (401 without a live one) before the
SDK sees the request. The ORM is synchronous: each request gets its own thread-sensitive
context (one worker thread, as Django gives each request), where every tool's database work
runs and whose connections are given back when the request ends. The REST API's rate limits
apply (per user: the general one to every request, a 429; the answer budget to `ask`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.db import close_old_connections
from django.http import HttpRequest
from django.http.request import split_domain_port, validate_host
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations
from rest_framework.exceptions import APIException

from core import apikeys
from core.audit import Via
from core.models import ApiKey
from ingestion.models import Chunk, Document
from ingestion.permissions import readable_collections, readable_documents
from retrieval import answering, services
from retrieval.api.common import ApiRateThrottle, AskRateThrottle
from retrieval.limits import MAX_QUESTION_CHARS
from retrieval.rendering import sanitize_answer
from retrieval.search import Passage

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PATH = "/mcp"
REQUEST_SCOPE = "ragsite.request"  # where the gate leaves the caller (request.user) for the tools
MAX_LIMIT = 50  # passages per search, as the REST API
DEFAULT_LIMIT = 8
NO_COLLECTION = "No such collection."
NO_PASSAGE = "No such passage."

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
# ask keeps the question and answer in the user's conversations (nothing is overwritten).
WRITES_HISTORY = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)

server: MCPServer = MCPServer(
    name="ragsite",
    title="ragsite knowledge base",
    instructions=(
        "Search and ask questions over the organisation's documents that the API key's owner "
        "may read. Cite passages by their document title and page. `search` finds passages, "
        "`ask` writes an answer with numbered citations, `get_document` reads one passage in "
        "full, `list_collections` names the collections to narrow a search to."
    ),
)


# --- who is asking ------------------------------------------------------------------------------


def _caller(ctx: Context) -> HttpRequest:
    """This request as Django sees a caller: `.user` is the key's owner (the gate checked the key;
    without one no tool runs), META the client's address for the audit log and rate limits."""
    request = getattr(ctx.request_context.request, "scope", {}).get(REQUEST_SCOPE)
    if not isinstance(request, HttpRequest):  # unreachable through the gate: refuse, never guess
        raise ToolError("Not authenticated.")
    return request


def _user(ctx: Context) -> User:
    user = _caller(ctx).user
    if not isinstance(user, User):
        raise ToolError("Not authenticated.")
    return user


def _in_thread(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """`fn` run in the request's thread-sensitive worker thread (the ORM is synchronous)."""
    return sync_to_async(fn, thread_sensitive=True)


def _allowed(throttle: ApiRateThrottle, request: HttpRequest) -> bool:
    """A DRF throttle asked about a plain HttpRequest: it reads only `.user` and META (the web
    chat asks AskRateThrottle the same way)."""
    return throttle.allow_request(request, None)  # type: ignore[arg-type]


def _question(text: str, what: str) -> str:
    text = text.strip()
    if not text:
        raise ToolError(f"The {what} is empty.")
    if len(text) > MAX_QUESTION_CHARS:
        raise ToolError(f"The {what} is limited to {MAX_QUESTION_CHARS} characters.")
    if "\x00" in text:
        raise ToolError(f"The {what} contains a NUL character.")
    return text


def _readable_collection(user: User, collection_id: int | None) -> int | None:
    """Unknown and unreadable collections get the same answer: nothing confirms that someone
    else's collection exists."""
    if collection_id is None:
        return None
    if not readable_collections(user).filter(pk=collection_id).exists():
        raise ToolError(NO_COLLECTION)
    return collection_id


# --- tools --------------------------------------------------------------------------------------


def _passage(passage: Passage) -> dict[str, Any]:
    return {
        "chunk_id": passage.chunk_id,
        "document_id": passage.document_id,
        "collection_id": passage.collection_id,
        "document_title": passage.document_title,
        "heading": passage.heading,
        "page_start": passage.page_start,
        "page_end": passage.page_end,
        "score": passage.score,
        "text": passage.text,
    }


def _search(
    request: HttpRequest, query: str, collection_id: int | None, limit: int
) -> dict[str, Any]:
    user = request.user
    assert isinstance(user, User)
    collection = _readable_collection(user, collection_id)
    try:
        passages = services.search_passages(
            user,
            query,
            via=Via.MCP,
            request=request,
            limit=limit,
            collection_ids=None if collection is None else [collection],
        )
    except APIException as exc:  # search unavailable or too slow: a message fit for a person
        raise ToolError(str(exc.detail)) from None
    return {"passages": [_passage(p) for p in passages]}


@server.tool(annotations=READ_ONLY)
async def search(
    query: str, ctx: Context, collection_id: int | None = None, limit: int = DEFAULT_LIMIT
) -> dict[str, Any]:
    """Find the passages of the documents you may read that best match `query` (hybrid keyword
    and semantic search). Each passage has its text and its source: document, heading, pages,
    and a `chunk_id` for get_document. `collection_id` (from list_collections) narrows the
    search to one collection; `limit` is 1 to 50 passages."""
    query = _question(query, "query")
    if not 1 <= limit <= MAX_LIMIT:
        raise ToolError(f"limit is 1 to {MAX_LIMIT}.")
    return await _in_thread(_search)(_caller(ctx), query, collection_id, limit)


def _ask(request: HttpRequest, question: str, collection_id: int | None) -> dict[str, Any]:
    user = request.user
    assert isinstance(user, User)
    collection = _readable_collection(user, collection_id)
    throttle = AskRateThrottle()  # one answer budget per user, shared with the API and the web
    if not _allowed(throttle, request):
        wait = math.ceil(throttle.wait() or 1)
        raise ToolError(f"Too many questions: try again in {wait} seconds.")
    try:
        answer = answering.answer(user, question, collection_id=collection, via=Via.MCP)
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    if answer.error is not None:
        raise ToolError(answer.error.text)
    return {
        # Sanitised as for API clients: they render the Markdown (no images, no outside links).
        "answer": sanitize_answer(answer.text),
        "outcome": answer.outcome,
        "citations": [asdict(citation) for citation in answer.citations],
        "conversation_id": answer.conversation_id,
    }


@server.tool(annotations=WRITES_HISTORY)
async def ask(question: str, ctx: Context, collection_id: int | None = None) -> dict[str, Any]:
    """Answer `question` from the documents you may read, with numbered citations: each [n] in
    the answer is the citation with that `number` (document, page, heading, snippet,
    `chunk_id`). `outcome` is `answered` or `no_answer` (nothing relevant was found). The
    question and answer are kept in your conversation history, like the web chat's."""
    question = _question(question, "question")
    return await _in_thread(_ask)(_caller(ctx), question, collection_id)


def _collections(user: User) -> dict[str, Any]:
    ready = Document.Status.READY
    rows = readable_collections(user).order_by("name")
    return {
        "collections": [
            {
                "id": collection.pk,
                "name": collection.name,
                "description": collection.description,
                "documents": collection.documents.filter(status=ready).count(),
            }
            for collection in rows
        ]
    }


@server.tool(annotations=READ_ONLY)
async def list_collections(ctx: Context) -> dict[str, Any]:
    """The document collections you may read: id (for search and ask), name, description and how
    many documents are ready to search."""
    return await _in_thread(_collections)(_user(ctx))


def _document(user: User, chunk_id: int) -> dict[str, Any]:
    # The permission rule is part of the lookup: a passage of a document the user may not read
    # (or not yet ready) is "no such passage", exactly like one that does not exist.
    chunk = (
        Chunk.objects.select_related("document", "document__collection")
        .filter(
            pk=chunk_id,
            document__in=readable_documents(user),
            document__status=Document.Status.READY,
        )
        .first()
    )
    if chunk is None:
        raise ToolError(NO_PASSAGE)
    document = chunk.document
    return {
        "document": {
            "id": document.pk,
            "title": document.title or document.original_name,
            "file_name": document.original_name,
            "content_type": document.content_type,
            "collection_id": document.collection_id,
            "collection": document.collection.name,
            "pages": document.page_count,
            "passages": document.chunk_count,
            "updated_at": document.updated_at.isoformat(),
        },
        "passage": {
            "chunk_id": chunk.pk,
            "ordinal": chunk.ordinal,
            "heading": chunk.heading,
            "page_start": chunk.page_start,
            "page_end": chunk.page_end,
            "text": chunk.text,
        },
    }


@server.tool(annotations=READ_ONLY)
async def get_document(chunk_id: int, ctx: Context) -> dict[str, Any]:
    """One passage in full, by the `chunk_id` that search and ask's citations give, with its
    document's metadata (title, file name, collection, pages)."""
    return await _in_thread(_document)(_user(ctx), chunk_id)


# --- the HTTP gate ------------------------------------------------------------------------------

# Stateless and JSON: every POST is answered on its own, with one JSON body. The SDK's DNS
# rebinding check (a localhost-only allow list by default) gives way to Django's ALLOWED_HOSTS,
# checked by the gate below; a bearer key is no ambient credential a rebound page could use.
sdk_app = server.streamable_http_app(
    streamable_http_path=PATH,
    stateless_http=True,
    json_response=True,
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


def _django_request(scope: Scope) -> HttpRequest:
    """A bare HttpRequest with the client's address, for the audit log and the rate limits."""
    request = HttpRequest()
    client = scope.get("client")
    if client:
        request.META["REMOTE_ADDR"] = client[0]
    forwarded = _header(scope, b"x-forwarded-for")
    if forwarded is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded.decode("latin-1")
    return request


def authenticate(scope: Scope, request: HttpRequest) -> ApiKey | None:
    """The live API key the request presents as `Authorization: Bearer rsk_…`, its use recorded;
    None for none, a malformed header, or an unknown, revoked or deactivated one."""
    header = _header(scope, b"authorization")
    if header is None:
        return None
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        return None
    try:
        plaintext = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    key = apikeys.verify_key(plaintext)
    if key is not None:
        apikeys.record_use(key, request, via=Via.MCP)
    return key


def _begin(scope: Scope) -> tuple[HttpRequest | None, float | None]:
    """The caller (None: no live key), and how long to wait when over the API's rate limit."""
    close_old_connections()  # as Django does when a request starts
    request = _django_request(scope)
    key = authenticate(scope, request)
    if key is None:
        return None, None
    request.user = key.user
    throttle = ApiRateThrottle()  # the REST API's budget: one per user, whatever the key
    if not _allowed(throttle, request):
        return request, throttle.wait() or 1
    return request, None


def _host_allowed(scope: Scope) -> bool:
    host = (_header(scope, b"host") or b"").decode("latin-1")
    domain, _port = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # Django's own default under DEBUG
    return bool(domain) and validate_host(domain, allowed)


async def _refuse(
    send: Send, status: int, code: str, message: str, retry_after: float | None = None
) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="mcp"'))
    if retry_after is not None:
        headers.append((b"retry-after", str(math.ceil(retry_after)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """/mcp: Host and API key checked, then the SDK's streamable HTTP app, all in one
    thread-sensitive context (the request's own worker thread for the ORM). Other scopes
    (lifespan: it starts the SDK's session manager) go to the SDK's app as they are."""
    if scope["type"] != "http":
        await sdk_app(scope, receive, send)
        return
    if not _host_allowed(scope):
        await _refuse(send, 400, "bad_host", "The Host header is not one this site serves.")
        return
    async with ThreadSensitiveContext():
        request, wait = await _in_thread(_begin)(scope)
        try:
            if request is None:
                await _refuse(
                    send,
                    401,
                    "not_authenticated",
                    "An API key is required: 'Authorization: Bearer rsk_…' (a live key).",
                )
                return
            if wait is not None:
                await _refuse(send, 429, "throttled", "Too many requests.", retry_after=wait)
                return
            await sdk_app({**scope, REQUEST_SCOPE: request}, receive, send)
        finally:
            await _in_thread(close_old_connections)()  # as Django does when a request ends


def is_mcp_path(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")

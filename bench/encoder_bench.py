"""The two local encoders side by side in one run: torch (sentence-transformers, fp32) and the
int8 ONNX Runtime export (RAG_EMBEDDING_BACKEND=onnx-int8), on the same documents.

- raw encode: chunks/s of each encoder on the same chunk texts, batched as ingestion batches them
  (best of --rounds, the two taking turns, so a busy machine colours both alike);
- end to end: pipeline.ingest of the same documents (parse, chunk, embed, store) with each;
- agreement: cosine of the ONNX vectors to torch's, per chunk (the passages' export) and per
  dev-set question (alone, as search embeds a question: the questions' export).

Corpus: the dev set's HTML pages. Runs in-process against the configured database, in scratch
collections deleted afterwards. The ONNX export is built (or found in the cache) before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

import django  # noqa: E402

from ragsite import bootstrap  # noqa: E402

bootstrap.prepare()  # the embedded database, as every entry point starts it
django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402

from ingestion import embedding, pipeline, services  # noqa: E402
from ingestion.chunking import embedding_text  # noqa: E402
from ingestion.models import Chunk, Collection  # noqa: E402
from ingestion.onnx_encoder import cpu_count  # noqa: E402

DEV = ROOT.parent / "shared" / "eval" / "dev"
BACKENDS = ("torch", "onnx-int8")


def use(backend: str) -> None:
    settings.RAG_EMBEDDING_BACKEND = backend


def encode(backend: str, texts: list[str]) -> np.ndarray:
    use(backend)
    return embedding.embed_texts(texts)


def embed_question(backend: str, text: str) -> np.ndarray:
    use(backend)
    return embedding.embed_query(text)


def ingest(pages: list[Path], backend: str) -> dict:
    """pipeline.ingest of every page with `backend`; the seconds and the chunk texts made."""
    use(backend)
    collection = Collection.objects.create(name=f"bench-encoder-{backend}-{time.time_ns()}")
    try:
        started = time.perf_counter()
        results = []
        for path in pages:
            document = services.register_path(collection, path, enqueue=False).document
            results.append(pipeline.ingest(document.pk))
        seconds = time.perf_counter() - started
        rows = Chunk.objects.filter(document__collection=collection).order_by(
            "document_id", "ordinal"
        )
        texts = [embedding_text(*row) for row in rows.values_list("title", "heading", "text")]
        return {
            "seconds": seconds,
            "failed": sum(r.status != "ready" for r in results),
            "texts": texts,
        }
    finally:
        for document in collection.documents.all():
            services.delete_document(document)
        collection.delete()


def questions() -> list[str]:
    found = []
    for name in ("questions.jsonl", "questions-hard.jsonl"):
        path = DEV / name
        if path.is_file():
            found += [
                json.loads(line)["question"] for line in path.read_text().splitlines() if line
            ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=int, default=40, help="HTML pages to ingest with each")
    parser.add_argument("--rounds", type=int, default=2, help="raw encode rounds per encoder")
    args = parser.parse_args()
    pages = sorted((DEV / "corpus").glob("*.html"))[: args.html]
    if not pages:
        sys.exit(f"no corpus at {DEV / 'corpus'}")
    if settings.RAG_EMBEDDING_URL:
        sys.exit("RAG_EMBEDDING_URL is set: this compares the local encoders; unset it")

    import onnxruntime

    # Both loaded (the ONNX one exported if its cache is cold) before any clock starts.
    started = time.perf_counter()
    onnx = embedding.get_onnx_encoder("passages")
    onnx.session  # noqa: B018
    embedding.get_onnx_encoder("questions").session  # noqa: B018
    ready = "built" if onnx.built else "found in the cache"
    print(
        f"encoder benchmark: {cpu_count()} CPUs, model {settings.RAG_EMBEDDING_MODEL}; "
        f"onnxruntime {onnxruntime.__version__} ({onnx.threads or cpu_count()} threads), "
        f"export {ready} ({time.perf_counter() - started:.1f}s): {onnx.path.name}"
    )
    embedding.get_model()
    for backend in BACKENDS:
        encode(backend, ["warm up"])

    ingested = {backend: ingest(pages, backend) for backend in BACKENDS}
    texts = ingested["torch"]["texts"]
    if ingested["onnx-int8"]["texts"] != texts:
        print("  note: the two runs made different chunks; raw encode uses torch's")

    best = dict.fromkeys(BACKENDS, float("inf"))
    vectors = {}
    for _ in range(max(1, args.rounds)):
        for backend in BACKENDS:
            started = time.perf_counter()
            vectors[backend] = encode(backend, texts)
            best[backend] = min(best[backend], time.perf_counter() - started)

    raw = {backend: len(texts) / best[backend] for backend in BACKENDS}
    end_to_end = {backend: len(texts) / ingested[backend]["seconds"] for backend in BACKENDS}
    failed = sum(ingested[backend]["failed"] for backend in BACKENDS)
    print(f"  {len(pages)} pages, {len(texts)} chunks ({failed} documents failed)")
    print(f"  {'':<34} {'torch':>10} {'onnx-int8':>10} {'onnx/torch':>11}")
    for label, figures in (
        ("raw encode, chunks/s", raw),
        ("ingest end to end, chunks/s", end_to_end),
    ):
        print(
            f"  {label:<34} {figures['torch']:>10.1f} {figures['onnx-int8']:>10.1f} "
            f"{figures['onnx-int8'] / figures['torch']:>10.2f}x"
        )
    print(
        f"  {'end to end / raw encode':<34} {end_to_end['torch'] / raw['torch']:>10.2f} "
        f"{end_to_end['onnx-int8'] / raw['onnx-int8']:>10.2f}"
    )
    print(
        f"  {'end to end vs raw torch':<34} {'':>10} "
        f"{end_to_end['onnx-int8'] / raw['torch']:>10.2f}x"
    )

    cosine = (vectors["onnx-int8"] * vectors["torch"]).sum(axis=1)
    asked = questions()
    agreement = (
        f"  cosine onnx-int8 to torch: chunks min {cosine.min():.4f} mean {cosine.mean():.4f}"
    )
    if asked:
        alone = np.vstack([embed_question("onnx-int8", q) for q in asked])
        reference = np.vstack([embed_question("torch", q) for q in asked])
        by_question = (alone * reference).sum(axis=1)
        agreement += (
            f"; {len(asked)} questions min {by_question.min():.4f} mean {by_question.mean():.4f}"
        )
    print(agreement)


if __name__ == "__main__":
    main()

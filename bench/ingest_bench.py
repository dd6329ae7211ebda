"""Ingestion throughput on real documents, next to raw SentenceTransformer.encode on the same
chunk texts: the ratio is what parsing, chunking and storing add on top of the embedding itself.

Corpus: the dev set's HTML pages (../shared/eval/dev/corpus) and PDFs typeset from their text.
Runs in-process against the configured database, in a scratch collection deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

import django  # noqa: E402

from ragsite import bootstrap  # noqa: E402

bootstrap.prepare()  # the embedded database, as every entry point starts it
django.setup()

from ingestion import embedding, pipeline, services  # noqa: E402
from ingestion.chunking import embedding_text  # noqa: E402
from ingestion.models import Chunk, Collection  # noqa: E402

CORPUS = ROOT.parent / "shared" / "eval" / "dev" / "corpus"


def typeset_pdfs(pages: list[Path], folder: Path) -> list[Path]:
    """PDFs of real text: each HTML page's text, typeset by fpdf2 over as many pages as it needs."""
    import lxml.html
    from fpdf import FPDF

    pdfs = []
    for page in pages:
        text = lxml.html.fromstring(page.read_bytes()).text_content()
        text = "\n".join(line.strip() for line in text.splitlines() if line.strip())
        pdf = FPDF()
        pdf.add_page()
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(0, 5, text.encode("latin-1", "replace").decode("latin-1"))
        path = folder / f"{page.stem}.pdf"
        pdf.output(str(path))
        pdfs.append(path)
    return pdfs


def run(files: list[Path], label: str) -> dict:
    collection = Collection.objects.create(name=f"bench-{label}-{time.time_ns()}")
    try:
        embedding.get_model()  # loaded once per process, as in a worker: not part of the timing
        started = time.perf_counter()
        results = []
        for path in files:
            document = services.register_path(collection, path, enqueue=False).document
            results.append(pipeline.ingest(document.pk))
        seconds = time.perf_counter() - started
        chunks = list(
            Chunk.objects.filter(document__collection=collection).values_list(
                "title", "heading", "text"
            )
        )
        texts = [embedding_text(*chunk) for chunk in chunks]
        encode_started = time.perf_counter()
        embedding.get_model().encode(texts, batch_size=32, show_progress_bar=False)
        encode_seconds = time.perf_counter() - encode_started
        return {
            "label": label,
            "documents": len(files),
            "failed": sum(r.status != "ready" for r in results),
            "chunks": len(chunks),
            "pages": sum(r.pages or 0 for r in results),
            "seconds": seconds,
            "encode_seconds": encode_seconds,
        }
    finally:
        for document in collection.documents.all():
            services.delete_document(document)
        collection.delete()


def report(result: dict) -> None:
    chunks_per_s = result["chunks"] / result["seconds"]
    encode_per_s = result["chunks"] / result["encode_seconds"]
    pages = f"{result['pages'] / result['seconds']:.1f} pages/s" if result["pages"] else "no pages"
    print(
        f"ingest {result['label']:<5} {result['documents']:>3} docs ({result['failed']} failed), "
        f"{result['chunks']:>5} chunks, {result['pages']:>4} pages in {result['seconds']:6.1f}s: "
        f"{chunks_per_s:6.1f} chunks/s, {pages}, "
        f"{result['documents'] / result['seconds']:.2f} docs/s"
    )
    print(
        f"       raw SentenceTransformer.encode on the same {result['chunks']} chunk texts: "
        f"{encode_per_s:6.1f} chunks/s  -> pipeline overhead x{encode_per_s / chunks_per_s:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=int, default=100, help="HTML pages to ingest")
    parser.add_argument("--pdf", type=int, default=20, help="PDFs to typeset and ingest")
    args = parser.parse_args()
    pages = sorted(CORPUS.glob("*.html"))
    if not pages:
        sys.exit(f"no corpus at {CORPUS}")
    print(
        f"ingestion benchmark: {os.cpu_count()} CPUs, embedding model {embedding.settings.RAG_EMBEDDING_MODEL}"
    )
    report(run(pages[: args.html], "html"))
    with tempfile.TemporaryDirectory() as folder:
        report(run(typeset_pdfs(pages[: args.pdf], Path(folder)), "pdf"))


if __name__ == "__main__":
    main()

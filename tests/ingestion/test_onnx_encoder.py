"""The int8 ONNX encoder: built from the packaged weights into a cache (never downloaded; the
suite's egress guard fails any connection), rebuilt when the cached file is damaged, reused when
it is sound, and within cosine 0.98 of torch on varied texts, long ones truncated alike: passages
through the faster export, questions through the closer one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from ingestion import embedding
from ingestion.onnx_encoder import PASSAGES, QUESTIONS, OnnxEncoder, cache_key, cache_path

LONG = " ".join(
    f"Paragraph {i}: the selector module waits until file objects are ready for reading or "
    "writing, on whichever mechanism the platform offers, epoll, kqueue or select."
    for i in range(40)
)  # about 1,000 word pieces: past the model's 256, so truncation must match torch's
TEXTS = [
    "How do I read a file line by line?",
    "shutil.copytree(src, dst, dirs_exist_ok=True) copies a whole directory tree.",
    "| Option | Default | Meaning |\n| timeout | 30 | seconds before the call fails |",
    "def parse(text: str) -> list[int]:\n    return [int(x) for x in text.split(',')]",
    "La bibliothèque standard gère les dates et les heures. 日期和时间的处理",
    "2026-11-30 17:25:01 ERROR worker[4242]: connection refused (errno 111)",
    LONG,
]
QUERIES = ["ok", "asyncio", "which exception does json.loads raise on bad input?"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> OnnxEncoder:
    """One export for the module, made over a damaged file left where the cache would be."""
    cache_dir = tmp_path_factory.mktemp("data") / "models" / "onnx"
    cache_dir.mkdir(parents=True)
    model_dir = embedding.resolve_model_path(settings.RAG_EMBEDDING_MODEL)
    cache_path(model_dir, cache_dir).write_bytes(b"\x08\x07not an onnx model, cut short")
    encoder = OnnxEncoder(model_dir, cache_dir, threads=2)
    encoder.encode(["warm up"])
    return encoder


@pytest.fixture(scope="module")
def built_for_questions(built) -> OnnxEncoder:
    """The questions' export, beside the passages' in the same cache folder."""
    encoder = OnnxEncoder(built.model_dir, built.cache_dir, threads=2, recipe=QUESTIONS)
    encoder.encode(["warm up"])
    return encoder


def test_a_damaged_cache_file_is_rebuilt(built):
    assert built.built
    assert built.path.stat().st_size > 1_000_000
    assert not list(built.cache_dir.glob(".export-*"))  # the scratch folder went with the rename


def test_a_sound_cache_file_is_reused_not_exported_again(built):
    before = built.path.stat()

    again = OnnxEncoder(built.model_dir, built.cache_dir, threads=1)
    vectors = again.encode(TEXTS[:2])

    assert not again.built
    after = built.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert np.allclose(vectors, built.encode(TEXTS[:2]), atol=1e-5)


def test_vectors_stay_within_cosine_098_of_torch(built, built_for_questions):
    torch_model = embedding.get_model()
    reference = torch_model.encode(TEXTS + QUERIES, normalize_embeddings=True)

    # Passages in batches of mixed lengths, as ingestion sends them; a question alone, as search.
    vectors = np.vstack(
        [
            built.encode(TEXTS, batch_size=3),
            *(built_for_questions.encode([q]) for q in QUERIES),
        ]
    )

    assert vectors.shape == (len(TEXTS + QUERIES), settings.RAG_EMBEDDING_DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    cosine = (vectors * reference).sum(axis=1)
    assert cosine.min() >= 0.98, dict(zip(TEXTS + QUERIES, cosine.round(4), strict=True))


def test_the_two_exports_are_different_files_and_the_questions_one_is_closer_on_a_word(
    built, built_for_questions
):
    assert built.recipe == PASSAGES
    assert built_for_questions.path != built.path
    assert built_for_questions.path.parent == built.path.parent
    reference = embedding.get_model().encode(["ok"], normalize_embeddings=True)[0]
    # The reason for two exports: a one-word question is where int8 feed-forward outputs stray.
    closer = float(built_for_questions.encode(["ok"])[0] @ reference)
    faster = float(built.encode(["ok"])[0] @ reference)
    assert closer > faster


def test_long_texts_are_cut_where_torch_cuts_them(built):
    assert built.max_seq_length == embedding.get_model().max_seq_length == 256
    # LONG runs far past 256 word pieces: what follows them changes nothing.
    assert np.allclose(built.encode([LONG]), built.encode([LONG + " A different end."]), atol=1e-6)


def test_the_backend_setting_routes_passages_queries_and_token_counts(
    built, built_for_questions, settings
):
    settings.RAG_EMBEDDING_BACKEND = "onnx-int8"
    settings.RAG_EMBEDDING_URL = ""
    settings.DATA_DIR = built.cache_dir.parent.parent  # where the module's export lies
    embedding.get_onnx_encoder.cache_clear()
    try:
        query = embedding.embed_query(TEXTS[0])
        passages = embedding.embed_texts(TEXTS[:3])
        # Each found its export and made none.
        assert not embedding.get_onnx_encoder("passages").built
        assert not embedding.get_onnx_encoder("questions").built
        assert embedding.count_tokens(LONG) == len(
            embedding.get_model().tokenizer(LONG, add_special_tokens=False)["input_ids"]
        )
        assert embedding.max_tokens() == 256
    finally:
        embedding.get_onnx_encoder.cache_clear()
    assert np.allclose(query, built_for_questions.encode([TEXTS[0]])[0], atol=1e-5)
    assert np.allclose(passages, built.encode(TEXTS[:3]), atol=1e-5)


def test_the_cache_key_follows_the_model_files_not_their_readme(tmp_path: Path):
    model = tmp_path / "model"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "config.json").write_text('{"hidden_size": 384}')
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (model / "README.md").write_text("about the model")
    first = cache_key(model)

    (model / "README.md").write_text("about the model, reworded")
    assert cache_key(model) == first
    (model / "model.safetensors").write_bytes(b"weightz")
    assert cache_key(model) != first
    assert cache_path(model, tmp_path).name.startswith(f"{tmp_path.name}-")
    assert cache_key(model, QUESTIONS) != cache_key(model, PASSAGES)


def test_export_onnx_command_finds_the_exports_already_there(built, built_for_questions, settings):
    from io import StringIO

    from django.core.management import call_command

    settings.DATA_DIR = built.cache_dir.parent.parent
    embedding.get_onnx_encoder.cache_clear()
    out = StringIO()
    try:
        call_command("export_onnx", stdout=out)
    finally:
        embedding.get_onnx_encoder.cache_clear()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"already exported: {built.path}")
    assert lines[1].startswith(f"already exported: {built_for_questions.path}")

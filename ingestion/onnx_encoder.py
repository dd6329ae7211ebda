"""The embedding model under ONNX Runtime, int8: the packaged weights exported once (torch's
TorchScript exporter), quantised dynamically, cached under the data dir and encoded like torch.
Two exports of the same weights: a faster one for passages and a closer one for questions
(`Recipe`).

The cache file is named by a hash of the model's files, onnxruntime's version and this recipe's
version, so a changed model or runtime exports again; it is written to a temporary file and
renamed into place under a lock, so two processes starting at once neither corrupt it nor both
export it. A file that does not load (truncated, damaged) is rebuilt. Nothing is downloaded: the
export reads the model directory only. Encoding is the contract of `embedding.embed_texts`: the
model's own tokenizer truncating at the same word-piece limit, mean pooling over the attention
mask, L2-normalised rows.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Bumped when the export or quantisation recipe changes: cached files of an older recipe are
# then left alone and a new one is built.
RECIPE = "ts-opset17-eager-matmul-qint8-per-channel-2"
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# What the model is made of: a change to any of them changes the vectors.
_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


class OnnxExportError(RuntimeError):
    pass


@dataclass(frozen=True)
class Recipe:
    """Which of the model's matrix products are quantised, per use. The feed-forward output
    projections take the widest-ranging input of any (after GELU), which one int8 scale per
    tensor represents worst; every other MatMul is int8 in both."""

    name: str
    float_feed_forward_outputs: bool


# Passages, batched by ingestion: every MatMul int8. On the dev passages 2.2-2.5x torch's raw
# encode speed on 2 cores (1.7-1.9x with the feed-forward outputs float), cosine >= 0.985 to torch.
PASSAGES = Recipe("passages", float_feed_forward_outputs=False)
# A question, embedded alone when someone searches: a one-word question ("ok") fell to cosine
# 0.974 with every MatMul int8, 0.985 with the feed-forward outputs float. One question costs
# milliseconds either way, so questions get the closer export.
QUESTIONS = Recipe("questions", float_feed_forward_outputs=True)


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, which a container's cpuset narrows)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def model_files(model_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in model_dir.rglob("*")
        if path.is_file()
        and path.suffix in _MODEL_FILE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(model_dir).parts)
        and path.name != "README.md"
    )


def cache_key(model_dir: Path, recipe: Recipe = PASSAGES) -> str:
    """A hash of the model's files (names and bytes), onnxruntime's version and the recipe."""
    import onnxruntime

    digest = hashlib.sha256(f"{RECIPE}\0{recipe}\0onnxruntime {onnxruntime.__version__}\0".encode())
    for path in model_files(model_dir):
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cache_path(model_dir: Path, cache_dir: Path, recipe: Recipe = PASSAGES) -> Path:
    # A packaged model's directory is called "model": its package names it better.
    name = model_dir.parent.name if model_dir.name == "model" else model_dir.name
    return cache_dir / f"{name}-{recipe.name}-{cache_key(model_dir, recipe)[:20]}.int8.onnx"


def max_seq_length(model_dir: Path, tokenizer) -> int:
    """The word-piece limit sentence-transformers applies: sentence_bert_config.json's
    max_seq_length, within the tokenizer's and the position table's own limits."""
    limits = [int(tokenizer.model_max_length)]
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("max_seq_length")
        if value:
            limits.append(int(value))
    model_config = model_dir / "config.json"
    if model_config.is_file():
        value = json.loads(model_config.read_text()).get("max_position_embeddings")
        if value:
            limits.append(int(value))
    return min(limits)


@contextmanager
def _export_lock(target: Path) -> Iterator[None]:
    """One exporter at a time per cache file, across processes (an flock, released on exit or
    death of the holder)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """quantize_dynamic logs every tensor it skips, and a hint about static quantisation, on the
    root logger: noise in a worker's log. Its errors still pass."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def export_int8(model_dir: Path, target: Path, recipe: Recipe = PASSAGES) -> None:
    """Export the model's transformer to ONNX, quantise its weights to int8 by `recipe` and move
    the result to `target` in one rename. Needs torch and transformers; reads only `model_dir`."""
    started = time.monotonic()
    try:
        _export_int8(model_dir, target, recipe)
    except Exception as exc:
        raise OnnxExportError(f"exporting {model_dir} to ONNX int8 failed: {exc}") from exc
    logger.info(
        "exported %s to ONNX int8 at %s in %.1fs", model_dir, target, time.monotonic() - started
    )


def _export_int8(model_dir: Path, target: Path, recipe: Recipe) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    # Eager attention traces to plain MatMul/Softmax; SDPA's shortcuts are data-dependent.
    model = AutoModel.from_pretrained(
        str(model_dir), local_files_only=True, attn_implementation="eager"
    ).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    # Two texts of different lengths: the traced graph sees padding and a real mask.
    sample = tokenizer(
        ["an example", "a longer example of a sentence"], padding=True, return_tensors="pt"
    )
    names = [name for name in INPUT_NAMES if name in sample]
    dynamic = {name: {0: "batch", 1: "tokens"} for name in [*names, "token_embeddings"]}
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as scratch:
        fp32 = Path(scratch) / "model.onnx"
        int8 = Path(scratch) / "model.int8.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
            torch.onnx.export(
                LastHiddenState(model),
                tuple(sample[name] for name in names),
                str(fp32),
                input_names=names,
                output_names=["token_embeddings"],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
        # Per output channel: with one scale per weight tensor some dev passages fell to cosine
        # 0.81 to torch. The word-embedding table (a Gather) stays float: quantising it costs
        # accuracy and gains no speed. The feed-forward outputs: see Recipe.
        with _quiet_quantizer():
            quantize_dynamic(
                str(fp32),
                str(int8),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=(
                    _feed_forward_outputs(fp32) if recipe.float_feed_forward_outputs else []
                ),
            )
        with int8.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(int8, target)


def _feed_forward_outputs(graph_file: Path) -> list[str]:
    """The MatMul nodes of each layer's feed-forward output projection (BERT's naming, which
    torch's exporter keeps: ".../layer.N/output/dense/MatMul"; attention's is ".../attention/
    output/dense/MatMul")."""
    import onnx

    graph = onnx.load(str(graph_file), load_external_data=False).graph
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and node.name.endswith("/output/dense/MatMul")
        and "/attention/" not in node.name
    ]


@dataclass
class OnnxEncoder:
    """An int8 ONNX session of the model in `model_dir` quantised by `recipe`, built on first use
    into `cache_dir`."""

    model_dir: Path
    cache_dir: Path
    threads: int = 0  # intra-op threads; 0: this process's CPU count
    recipe: Recipe = PASSAGES
    built: bool = False  # whether this encoder exported the model (False: reused the cache)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._session = None

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)

    @cached_property
    def max_seq_length(self) -> int:
        return max_seq_length(self.model_dir, self.tokenizer)

    @cached_property
    def path(self) -> Path:
        return cache_path(self.model_dir, self.cache_dir, self.recipe)

    @property
    def session(self):
        with self._lock:
            if self._session is None:
                self._session = self._open_or_build()
        return self._session

    def _open_or_build(self):
        session = self._try_open()
        if session is None:
            with _export_lock(self.path):
                session = self._try_open()  # another process may have built it meanwhile
                if session is None:
                    export_int8(self.model_dir, self.path, self.recipe)
                    self.built = True
                    session = self._open()
        return session

    def _try_open(self):
        if not self.path.is_file():
            return None
        try:
            return self._open()
        except Exception as exc:  # onnxruntime raises its own types for a damaged file
            logger.warning("cached ONNX model %s does not load (%s); rebuilding it", self.path, exc)
            return None

    def _open(self):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads or cpu_count()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        return onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )

    @property
    def dimension(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Normalised mean-pooled embeddings, one float32 row per text, in the given order."""
        session = self.session
        dimension = self.dimension
        inputs = [item.name for item in session.get_inputs()]
        result = np.zeros((len(texts), dimension), dtype=np.float32)
        # Longest first, as sentence-transformers batches: texts of a batch pad to similar lengths.
        order = np.argsort([-len(text) for text in texts], kind="stable")
        batch_size = max(1, batch_size)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation="longest_first",
                max_length=self.max_seq_length,
                return_tensors="np",
            )
            feed = {name: np.asarray(encoded[name], dtype=np.int64) for name in inputs}
            tokens = session.run(None, feed)[0]
            mask = feed["attention_mask"][..., None].astype(np.float32)
            pooled = (tokens * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            result[rows] = pooled / np.where(norms == 0, 1, norms)
        return result

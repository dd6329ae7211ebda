"""Chunk step: parsed blocks become passages that fit the embedding model's token budget.

Chunks never cross a section boundary, carry their heading path and page span, and overlap
their neighbours within a section by whole sentences.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ingestion.parsing import Block, ParsedDocument

HEADING_SEPARATOR = " > "
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n+")


@dataclass(frozen=True)
class ChunkDraft:
    text: str
    heading: str
    page_start: int | None
    page_end: int | None
    token_count: int


@dataclass(frozen=True)
class _Unit:
    text: str
    page: int | None
    tokens: int


def embedding_text(title: str, heading: str, text: str) -> str:
    """What the embedder sees: the passage with its document title and heading path in front."""
    parts = heading.split(HEADING_SEPARATOR) if heading else []
    if title and parts and parts[0].strip().casefold() == title.strip().casefold():
        # The title is usually the page's first heading too: say it once, keep tokens for text.
        parts = parts[1:]
    context = HEADING_SEPARATOR.join(part for part in (title, *parts) if part)
    return f"{context}\n{text}" if context else text


def chunk_document(
    parsed: ParsedDocument,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap_tokens: int,
    model_max_tokens: int,
) -> list[ChunkDraft]:
    """Split `parsed` into chunks of at most `max_tokens` (and within `model_max_tokens` once the
    title and heading path are prepended for embedding)."""
    drafts: list[ChunkDraft] = []
    for heading, blocks in _sections(parsed.blocks):
        prefix_tokens = count_tokens(embedding_text(parsed.title, heading, "")) + 2
        budget = max(min(max_tokens, model_max_tokens - prefix_tokens), 32)
        units = [unit for block in blocks for unit in _units(block, count_tokens, budget)]
        drafts.extend(_pack(units, heading, budget, min(overlap_tokens, budget // 3)))
    return drafts


def _sections(blocks: list[Block]) -> list[tuple[str, list[Block]]]:
    """Group consecutive non-heading blocks under the heading path in force above them."""
    stack: list[tuple[int, str]] = []
    sections: list[tuple[str, list[Block]]] = []
    current: list[Block] = []

    def flush() -> None:
        if current:
            sections.append((HEADING_SEPARATOR.join(text for _, text in stack), list(current)))
            current.clear()

    for block in blocks:
        if block.kind == "heading":
            flush()
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, block.text.replace("\n", " ")[:200]))
        else:
            current.append(block)
    flush()
    return sections


def _units(block: Block, count_tokens: Callable[[str], int], budget: int) -> list[_Unit]:
    """A block as one unit when it fits the budget, else its sentences (long ones cut by words)."""
    text = f"- {block.text}" if block.kind == "list" else block.text
    tokens = count_tokens(text)
    if tokens <= budget:
        return [_Unit(text, block.page, tokens)]
    units = []
    for sentence in filter(None, (s.strip() for s in _SENTENCE_END.split(text))):
        sentence_tokens = count_tokens(sentence)
        if sentence_tokens <= budget:
            units.append(_Unit(sentence, block.page, sentence_tokens))
            continue
        words = sentence.split()
        # Word pieces per word vary; cut by a conservative word count, then re-measure.
        step = max(int(len(words) * budget / sentence_tokens * 0.9), 1)
        for start in range(0, len(words), step):
            piece = " ".join(words[start : start + step])
            units.append(_Unit(piece, block.page, count_tokens(piece)))
    return units


def _pack(units: list[_Unit], heading: str, budget: int, overlap: int) -> list[ChunkDraft]:
    drafts: list[ChunkDraft] = []
    window: list[_Unit] = []
    fresh = 0  # units in the window not yet emitted in an earlier chunk

    def emit() -> None:
        pages = [u.page for u in window if u.page is not None]
        drafts.append(
            ChunkDraft(
                text="\n".join(u.text for u in window),
                heading=heading,
                page_start=min(pages) if pages else None,
                page_end=max(pages) if pages else None,
                token_count=sum(u.tokens for u in window),
            )
        )

    for unit in units:
        if window and sum(u.tokens for u in window) + unit.tokens > budget:
            emit()
            # Carry whole trailing units, up to `overlap` tokens, into the next chunk.
            carried: list[_Unit] = []
            for previous in reversed(window):
                if sum(u.tokens for u in carried) + previous.tokens > overlap:
                    break
                carried.insert(0, previous)
            while carried and sum(u.tokens for u in carried) + unit.tokens > budget:
                carried.pop(0)
            window, fresh = carried, 0
        window.append(unit)
        fresh += 1
    if window and fresh:
        emit()
    return drafts

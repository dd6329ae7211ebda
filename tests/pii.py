"""Generated documents full of personal data, for the redaction tests: seeded, so every run makes
the same ones, and without a Faker dependency (small lists, real check digits).

`document(rng)` returns the text and the values it holds by entity type (Presidio's names), so a
test can check what survived redaction. IBANs carry valid mod-97 check digits and card numbers a
valid Luhn digit: Presidio checks both, as a real document's would pass.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

FIRST_NAMES = (
    "Maria", "James", "Aisha", "Lukas", "Chen", "Olivia", "Mateo", "Priya", "Sven", "Fatima",
    "Thomas", "Elena", "Kwame", "Sophie", "Hiroshi", "Amelia", "Rafael", "Ingrid", "Daniel",
    "Yasmin", "Patrick", "Chloe", "Andrzej", "Nadia", "William", "Laura", "Omar", "Hannah",
    "Giovanni", "Emma",
)  # fmt: skip
LAST_NAMES = (
    "Schneider", "Okafor", "Lindqvist", "Fernandez", "Nakamura", "Kowalski", "Brennan", "Rossi",
    "Haddad", "Novak", "Thompson", "Dubois", "Mensah", "Patel", "Johansson", "Moreau", "Walsh",
    "Castillo", "Becker", "Murphy", "Andersen", "Costa", "Whitfield", "Petrova", "Gallagher",
    "Ramirez", "Hoffmann", "Clarke", "Bianchi", "Sullivan",
)  # fmt: skip
DOMAINS = ("example.org", "mail.example.co.uk", "firma-beispiel.de", "uni-example.edu", "corp.io")

# Country, then the BBAN as (kind, length) runs: "n" digits, "a" upper-case letters.
IBAN_FORMATS = {
    "DE": (("n", 18),),
    "GB": (("a", 4), ("n", 14)),
    "NL": (("a", 4), ("n", 10)),
    "FR": (("n", 23),),
    "ES": (("n", 20),),
    "IT": (("a", 1), ("n", 10), ("n", 12)),
}

# Each sentence names the entity types of its fields in order; {p}/{q} are people.
PERSONAL = (
    ("Please contact {p} ({email}) about the renewal of the contract.", ("PERSON", "EMAIL_ADDRESS")),
    ("{p} can be reached on {phone} during office hours.", ("PERSON", "PHONE_NUMBER")),
    ("Refunds are paid to IBAN {iban}, held by {p}.", ("IBAN_CODE", "PERSON")),
    ("The card {card} belonging to {p} was charged twice in May.", ("CREDIT_CARD", "PERSON")),
    ("Logins from {ip} were blocked after {p} reported the laptop stolen.", ("IP_ADDRESS", "PERSON")),
    ("Meeting notes: {p} and {q} agreed to share the draft by Friday.", ("PERSON", "PERSON")),
    ("For questions write to {email} or call {phone}.", ("EMAIL_ADDRESS", "PHONE_NUMBER")),
    ("Dear {p}, your request was approved by {q} yesterday.", ("PERSON", "PERSON")),
    ("Salary for {p} goes to account {iban} from next month.", ("PERSON", "IBAN_CODE")),
    ("The VPN gateway {ip} is managed by {p}, phone {phone}.", ("IP_ADDRESS", "PERSON", "PHONE_NUMBER")),
    ("Expenses were paid with card number {card}.", ("CREDIT_CARD",)),
    ("Signed: {p}, Head of Procurement.", ("PERSON",)),
)  # fmt: skip
# Policy prose with places, dates, amounts and reference numbers: none of it is personal data.
NEUTRAL = (
    "Travel must be booked at least 14 days in advance.",
    "The office in Berlin is closed on 3 October 2025.",
    "Invoices above 5,000 EUR need a second approval.",
    "Version 2.4 of the handbook replaces the edition of March 2023.",
    "Purchase order 2024-118 covers 12 laptops for the Madrid team.",
    "Remote work is allowed up to three days per week.",
    "The data retention period for backups is 90 days.",
    "Requests are answered within five working days.",
)
FIELDS = {
    "PERSON": "p",
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "IBAN_CODE": "iban",
    "CREDIT_CARD": "card",
    "IP_ADDRESS": "ip",
}


@dataclass
class Document:
    text: str
    values: dict[str, list[str]] = field(default_factory=dict)  # entity type → values, in order


def iban(rng: random.Random) -> str:
    """A valid IBAN (ISO 13616 check digits), written in groups of four or in one run."""
    country = rng.choice(sorted(IBAN_FORMATS))
    bban = "".join(
        "".join(
            rng.choice(string.digits if kind == "n" else string.ascii_uppercase) for _ in range(n)
        )
        for kind, n in IBAN_FORMATS[country]
    )
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    compact = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return compact
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def luhn_complete(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 0:  # these are doubled once the check digit is appended
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return digits + str((10 - total % 10) % 10)


def card(rng: random.Random) -> str:
    """A Visa or Mastercard number with a valid Luhn digit, in groups or in one run."""
    prefix = rng.choice(("4", "51", "52", "53", "54", "55"))
    body = prefix + "".join(rng.choice(string.digits) for _ in range(15 - len(prefix)))
    number = luhn_complete(body)
    separator = rng.choice((" ", "-", ""))
    return separator.join(number[i : i + 4] for i in range(0, 16, 4))


def phone(rng: random.Random) -> str:
    """A number in a format of one of the regions Presidio looks for (US, UK, DE, FR)."""
    kind = rng.randrange(6)
    if kind == 0:
        return f"({rng.choice(('212', '415', '617', '312'))}) 555-{rng.randrange(100, 200):04d}"
    if kind == 1:
        return f"+1 {rng.choice(('202', '646', '503'))} 555 {rng.randrange(100, 200):04d}"
    if kind == 2:
        return f"+44 20 7946 {rng.randrange(0, 1000):04d}"
    if kind == 3:
        return f"+44 7400 {rng.randrange(100000, 999999)}"
    if kind == 4:
        return f"+49 30 {rng.randrange(1000000, 9999999)}"
    return f"+33 1 {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)}"


def ip(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return f"{rng.choice((10, 172, 192, 203))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    return f"2001:db8:{rng.randrange(1, 0xFFFF):x}::{rng.randrange(1, 0xFFFF):x}"


def email(rng: random.Random, first: str, last: str) -> str:
    local = rng.choice((f"{first}.{last}", f"{first[0]}.{last}", f"{first}{rng.randrange(10, 99)}"))
    return f"{local.lower()}@{rng.choice(DOMAINS)}"


def value_of(kind: str, rng: random.Random, first: str, last: str) -> str:
    if kind == "EMAIL_ADDRESS":
        return email(rng, first, last)
    return {"PHONE_NUMBER": phone, "IBAN_CODE": iban, "CREDIT_CARD": card, "IP_ADDRESS": ip}[kind](
        rng
    )


def document(rng: random.Random, sentences: int = 6) -> Document:
    """A few personal sentences among neutral ones; each person appears once by full name, and
    no two people of one document share a first or last name (a surviving name is one person's)."""
    firsts = rng.sample(FIRST_NAMES, 3 * sentences)
    lasts = rng.sample(LAST_NAMES, 3 * sentences)
    people = iter(zip(firsts, lasts, strict=True))
    doc = Document("")
    parts = []
    for template, kinds in rng.sample(PERSONAL, sentences):
        fields: dict[str, str] = {}
        person_fields = iter(("p", "q"))
        for kind in kinds:
            first, last = next(people)
            if kind == "PERSON":
                value = f"{first} {last}"
                fields[next(person_fields)] = value
            else:
                value = value_of(kind, rng, first, last)
                fields[FIELDS[kind]] = value
            doc.values.setdefault(kind, []).append(value)
        parts.append(template.format(**fields))
        if rng.random() < 0.6:
            parts.append(rng.choice(NEUTRAL))
    doc.text = " ".join(parts)
    return doc


def documents(seed: int, count: int) -> list[Document]:
    rng = random.Random(seed)
    return [document(rng) for _ in range(count)]

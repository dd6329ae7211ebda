"""The citation marker, defined once: prompts ask the model for it, answering maps it to the
passages cited, rendering turns it into links."""

from __future__ import annotations

import re

# [3] or [1, 4]. Up to three digits: no prompt holds a thousand passages, and a bounded number
# keeps the pattern linear on hostile input.
CITATION_MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")

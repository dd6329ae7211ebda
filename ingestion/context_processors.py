"""The page frame (top bar) every HTML page shares, as a template context processor.

Here, not in core, because whether the Console link shows is a question for ingestion's
permissions; views no longer assemble the frame themselves.
"""

from __future__ import annotations

from django.http import HttpRequest

from ingestion.permissions import can_create_collections, managed_collections

# Which top-bar entry a URL belongs to, by its namespace or name; the chat otherwise.
_NAV_BY_NAME = {
    "keys": "keys",
    "revoke_key": "keys",
    "quality": "console",
    "quality_run": "console",
}


def frame(request: HttpRequest) -> dict:
    match = getattr(request, "resolver_match", None)
    if match is not None and match.namespace == "console":
        nav = "console"
    else:
        nav = _NAV_BY_NAME.get(match.url_name if match else "", "chat")
    user = getattr(request, "user", None)

    def show_console_link() -> bool:  # called by the template only where the top bar shows
        if user is None or not user.is_authenticated:
            return False
        return can_create_collections(user) or managed_collections(user).exists()

    return {"nav": nav, "show_console_link": show_console_link}

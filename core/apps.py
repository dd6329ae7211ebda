from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every other app uses: the audit log, API keys, egress rules, API error shapes, the
    page frame. The bottom layer: core imports no other app of this project."""

    name = "core"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core import sso  # noqa: F401  (registers the SSO settings check)

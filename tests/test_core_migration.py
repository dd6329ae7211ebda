"""Upgrading a database from before the core app: API keys and audit rows stay, their tables get
core's names, and a permission granted on the old content type ("change API keys") keeps its
holder."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("retrieval", "0003_evalrun"), ("core", None)]


def migrate(targets):
    """Migrate to `targets` ((app, None): none of that app) and return the models as they were
    there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


@pytest.mark.django_db(transaction=True)
def test_keys_audit_rows_and_granted_permissions_survive_the_move_to_core():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = migrate(BEFORE)
    try:
        User = old.get_model("auth", "User")
        ContentType = old.get_model("contenttypes", "ContentType")
        Permission = old.get_model("auth", "Permission")
        ApiKey = old.get_model("retrieval", "ApiKey")
        AuditEvent = old.get_model("retrieval", "AuditEvent")
        admin = User.objects.create(username="keyadmin", is_staff=True)
        # The test database has them already (moved back by core 0001's reverse); a database
        # from before the move has them as Django created them then.
        key_type, _ = ContentType.objects.get_or_create(app_label="retrieval", model="apikey")
        change, _ = Permission.objects.get_or_create(
            codename="change_apikey", content_type=key_type, defaults={"name": "Can change api key"}
        )
        admin.user_permissions.add(change)
        ApiKey.objects.create(user=admin, name="tool", prefix="rsk_abcdefgh", key_hash="0" * 64)
        AuditEvent.objects.create(action="upload", username="keyadmin", via="web")

        new = migrate(latest)

        assert new.get_model("core", "ApiKey").objects.get().name == "tool"
        assert new.get_model("core", "AuditEvent").objects.get().action == "upload"
        tables = connection.introspection.table_names()
        assert "core_apikey" in tables
        assert "retrieval_apikey" not in tables
        moved = new.get_model("contenttypes", "ContentType").objects.get(pk=key_type.pk)
        assert (moved.app_label, moved.model) == ("core", "apikey")
        from django.contrib.auth.models import User as LiveUser

        assert LiveUser.objects.get(username="keyadmin").has_perm("core.change_apikey")
    finally:
        migrate(latest)

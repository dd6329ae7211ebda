"""API keys and the audit log move from retrieval to core.

The rows stay where they are: this migration only takes the models into core's state, renames
the two tables to core's names, and moves their content types (so permissions granted on them,
e.g. "change API keys", keep their holders). retrieval 0004 drops them from retrieval's state.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MOVED = ["apikey", "auditevent"]


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="retrieval", model__in=MOVED).update(app_label="core")


def move_content_types_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="core", model__in=MOVED).update(app_label="retrieval")


ACTIONS = [
    ("ask", "Asked a question"),
    ("search", "Searched"),
    ("upload", "Uploaded a document"),
    ("delete", "Deleted a document"),
    ("download", "Downloaded a document"),
    ("reingest", "Re-ingested documents"),
    ("api_key_created", "Created an API key"),
    ("api_key_revoked", "Revoked an API key"),
    ("api_key_used", "Used an API key"),
    ("collection_created", "Created a collection"),
    ("audit_export", "Exported the audit log"),
]
VIA = [
    ("web", "Web UI"),
    ("api", "REST API"),
    ("admin", "Django admin"),
    ("cli", "manage.py"),
    ("system", "ragsite itself"),
]


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("retrieval", "0003_evalrun"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiKey",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("name", models.CharField(max_length=100)),
                        ("prefix", models.CharField(db_index=True, max_length=16)),
                        ("key_hash", models.CharField(max_length=64, unique=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("last_used_at", models.DateTimeField(blank=True, null=True)),
                        ("revoked_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "user",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="api_keys",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={"ordering": ["-created_at"], "db_table": "retrieval_apikey"},
                ),
                migrations.CreateModel(
                    name="AuditEvent",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("at", models.DateTimeField(auto_now_add=True, db_index=True)),
                        ("username", models.CharField(blank=True, max_length=150)),
                        (
                            "action",
                            models.CharField(choices=ACTIONS, db_index=True, max_length=30),
                        ),
                        ("via", models.CharField(blank=True, choices=VIA, max_length=20)),
                        ("question", models.TextField(blank=True)),
                        ("document_ids", models.JSONField(blank=True, default=list)),
                        ("detail", models.JSONField(blank=True, default=dict)),
                        ("ip", models.GenericIPAddressField(blank=True, null=True)),
                        (
                            "user",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={"ordering": ["-at", "-id"], "db_table": "retrieval_auditevent"},
                ),
            ],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
        # Real renames, now that core owns the tables.
        migrations.AlterModelTable(name="apikey", table=None),
        migrations.AlterModelTable(name="auditevent", table=None),
    ]

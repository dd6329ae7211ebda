"""API keys and the audit log now belong to core (core 0001 took their tables): drop them from
retrieval's state only, the tables and rows stay."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("retrieval", "0003_evalrun"),
        ("core", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="ApiKey"),
                migrations.DeleteModel(name="AuditEvent"),
            ],
        ),
    ]

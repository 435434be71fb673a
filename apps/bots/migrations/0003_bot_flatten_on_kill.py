from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("bots", "0002_bot_vault_token_accessor"),
    ]

    operations = [
        migrations.AddField(
            model_name="bot",
            name="flatten_on_kill",
            field=models.BooleanField(default=False, editable=False),
        ),
    ]

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("bots", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="bot",
            name="vault_token_accessor",
            field=models.CharField(blank=True, editable=False, max_length=100),
        ),
    ]

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("killswitch", "0007_kill_run_restart_and_paper"),
    ]

    operations = [
        migrations.AddField(
            model_name="killrun",
            name="attempts",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="killrun",
            name="claim",
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.AddField(
            model_name="killrun",
            name="executor",
            field=models.CharField(blank=True, max_length=120),
        ),
        migrations.AddField(
            model_name="killrun",
            name="heartbeat_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="killrun",
            name="takeovers",
            field=models.JSONField(default=list),
        ),
    ]

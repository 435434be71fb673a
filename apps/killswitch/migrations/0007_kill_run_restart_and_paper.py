from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("killswitch", "0006_alerts_and_key_rejections_moved_out"),
    ]

    operations = [
        migrations.AddField(
            model_name="killrun",
            name="bots_stopped",
            field=models.JSONField(default=list),
        ),
        migrations.AddField(
            model_name="killrun",
            name="paper_orders_cancelled",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="killrun",
            name="workers_stopped",
            field=models.PositiveIntegerField(default=0),
        ),
    ]

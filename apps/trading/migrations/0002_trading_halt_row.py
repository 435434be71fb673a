from django.db import migrations


def create_halt_row(apps, schema_editor):  # type: ignore[no-untyped-def]
    # The gate share-locks this row before every order; it must exist from the start.
    TradingHalt = apps.get_model("trading", "TradingHalt")
    TradingHalt.objects.get_or_create(pk=1, defaults={"active": False})


class Migration(migrations.Migration):
    dependencies = [("trading", "0001_initial")]

    operations = [migrations.RunPython(create_halt_row, migrations.RunPython.noop)]

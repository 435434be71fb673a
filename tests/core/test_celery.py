import pytest

from botconsole.celery import app


def test_celery_accepts_and_sends_json_only() -> None:
    # A pickle payload from the broker would run code inside a worker holding exchange keys.
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"
    assert app.conf.event_serializer == "json"


def test_tasks_go_to_the_control_queue_by_default() -> None:
    assert app.conf.task_default_queue == "control"


@app.task(name="tests.core.connection_in_use")
def _connection_in_use() -> int:
    from django.db import connection

    return id(connection.connection)


@pytest.mark.django_db
def test_an_eager_task_leaves_the_callers_connection_and_transaction_alone() -> None:
    """Workers close a broken or transaction-holding connection around each task (apps.core.workers); a task run
    with apply() runs in the caller's process, inside the caller's transaction, which must survive it."""
    from django.db import connection, transaction

    import apps.core.workers  # noqa: F401  (connects the handlers a worker runs around each task)

    with transaction.atomic():
        connection.ensure_connection()
        before = id(connection.connection)
        assert _connection_in_use.apply().get() == before
        assert connection.in_atomic_block
        assert not connection.closed_in_transaction
        with connection.cursor() as cursor:  # the caller's connection still answers inside its transaction
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)

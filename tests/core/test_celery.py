from botconsole.celery import app


def test_celery_accepts_and_sends_json_only() -> None:
    # A pickle payload from the broker would run code inside a worker holding exchange keys.
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"
    assert app.conf.event_serializer == "json"


def test_tasks_go_to_the_control_queue_by_default() -> None:
    assert app.conf.task_default_queue == "control"

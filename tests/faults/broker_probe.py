"""A Celery app of its own, without Django, running the consumer every botconsole worker runs
(apps.core.workers.BrokerLossConsumer): tests/faults/test_valkey.py starts a worker of it on a private Valkey.

    PROBE_BROKER_URL=redis://... python -m celery -A tests.faults.broker_probe worker -P solo
"""

from __future__ import annotations

import os

from celery import Celery

# Not the current app: the test process that imports this keeps sending botconsole's tasks to botconsole's app.
app = Celery("broker-probe", broker=os.environ.get("PROBE_BROKER_URL", "memory://"), set_as_current=False)
app.conf.worker_consumer = "apps.core.workers:BrokerLossConsumer"
app.conf.broker_connection_retry_on_startup = True
app.conf.accept_content = ["json"]
app.conf.task_serializer = "json"
app.conf.task_ignore_result = True


@app.task(name="broker_probe.ping")
def ping(n: int) -> None:
    print(f"PROBE RAN {n}", flush=True)

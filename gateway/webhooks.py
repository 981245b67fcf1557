"""``callback_url``: its delivery enqueued beside the job (vetted in ``gateway.routes.analyze``).

The delivery
is an rq job (``dispatcher.webhooks.deliver``, by path) that depends on the analysis job
with failure allowed, so rq starts it once the job has ended, whatever the outcome.
"""

from __future__ import annotations

from rq import Queue
from rq.job import Dependency, Job, Retry

from dfd.settings import Settings
from dfd.states import Priority

DELIVER_FUNC = "dispatcher.webhooks.deliver"
DELIVER_BATCH_FUNC = "dispatcher.webhooks.deliver_batch"


def delivery_retry(settings: Settings) -> Retry | None:
    if settings.webhook_retries < 1:
        return None
    intervals = [
        int(round(settings.webhook_backoff_s * 2**i)) for i in range(settings.webhook_retries)
    ]
    return Retry(max=settings.webhook_retries, interval=intervals)


def enqueue_delivery(
    queue: Queue, after: list[Job], func: str, args: tuple[str, str], settings: Settings
) -> Job:
    """Enqueue ``func(*args)`` to run once every job in ``after`` has ended."""
    return queue.enqueue(
        func,
        *args,
        depends_on=Dependency(jobs=after, allow_failure=True),
        retry=delivery_retry(settings),
        job_timeout=int(settings.webhook_timeout_s * 3) + 10,
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.failure_ttl_s,
        description=f"webhook for {args[0]}",
    )


def delivery_queue_name() -> str:
    return Priority.HIGH.value  # deliveries are short: served before any analysis

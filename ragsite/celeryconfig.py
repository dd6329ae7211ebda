"""Celery configuration derived from Django settings: late acks, prefetch 1, JSON, time limits.

A worker killed mid-task leaves its message unacknowledged, so the broker redelivers it.
"""

from django.conf import settings

broker_url = settings.CELERY_BROKER_URL
if broker_url.startswith("filesystem://"):
    # kombu's filesystem transport: one folder is both the inbox and the outbox of the queue.
    _queue_dir = settings.BROKER_DIR
    _queue_dir.mkdir(parents=True, exist_ok=True)
    broker_transport_options = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "control_folder": str(_queue_dir / "control"),  # default: ./control in the working dir
        "store_processed": False,
        "polling_interval": settings.BROKER_POLL_SECONDS,
    }
else:
    # Redis: an unacknowledged message goes back to the queue after this many seconds.
    broker_transport_options = {"visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT}

task_default_queue = settings.CELERY_QUEUE
broker_connection_retry_on_startup = True
task_ignore_result = True
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_serializer = "json"
accept_content = ["json"]
task_time_limit = settings.CELERY_TASK_TIME_LIMIT
# The soft limit (SoftTimeLimitExceeded in the task: the document fails with the reason) comes
# first; the hard one kills the pool process, and the task's on_failure ends the document. A soft
# limit above the hard one would postpone the hard one to the soft one's time.
task_soft_time_limit = max(
    settings.CELERY_TASK_TIME_LIMIT - 60, settings.CELERY_TASK_TIME_LIMIT * 0.9
)
worker_hijack_root_logger = False
worker_max_memory_per_child = 3_000_000  # KiB: a worker bloated by a huge document restarts
beat_schedule_filename = str(settings.DATA_DIR / "celerybeat-schedule")
beat_schedule = {
    "purge-expired": {"task": "retrieval.tasks.purge_expired", "schedule": 3600.0},
}

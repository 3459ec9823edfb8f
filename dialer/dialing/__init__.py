"""Sending calls: the Originate payload (`payload`), per-trunk pacing (`pacing`), the dispatch
tick that turns due contacts into attempts (`dispatch`), the exactly-once send (`originate`),
and the Celery application and tasks that run them (`celery_app`, `tasks`)."""

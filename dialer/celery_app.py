"""`celery -A dialer.celery_app worker|beat`: the Celery application at the path operators'
unit files and compose services name (it lives in `dialer.dialing.celery_app`). An entry
point, like `dialer.__main__`: nothing imports it."""

from dialer.dialing.celery_app import app as app

"""WSGI entry point, for servers that speak only WSGI (gunicorn with threads)."""

import os

from django.core.wsgi import get_wsgi_application

from ragsite import bootstrap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
bootstrap.prepare()  # the data dir, the secret key, the embedded database: before any connection
application = get_wsgi_application()

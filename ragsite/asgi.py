"""ASGI entry point: uvicorn serves this, so many streamed answers run at once."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
application = get_asgi_application()

"""WSGI entry point for both pools; the role comes from DJANGO_SETTINGS_MODULE (deploy/gunicorn_*.py)."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from cqrs_site.core.hosts import AllowedHosts
from cqrs_site.core.telemetry import Instrumented

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cqrs_site.settings.write")

application = get_wsgi_application()

if settings.CQRS_ROLE == "read":
    from reads.fastpath import CacheHits

    # Cache hits are answered below Django (reads/fastpath.py); everything else reaches it.
    application = CacheHits(application)
elif settings.CQRS_ROLE == "write":
    from writes.fastpath import Reactions, installable

    if installable():
        # Likes and dislikes are counted below Django (writes/fastpath.py); all else reaches it.
        application = Reactions(application)
    from cqrs_site.core.bodies import ChunkedBodies

    application = ChunkedBodies(application)

# Before anything reads the request: a Host this API does not serve is refused, in both pools.
application = AllowedHosts(application, settings.ALLOWED_HOSTS)

# Outermost: the request id, request metrics and the access log, for hits as for the rest.
application = Instrumented(application, role=settings.CQRS_ROLE)

from django.apps import AppConfig
from django.conf import settings


class WritesConfig(AppConfig):
    name = "writes"
    verbose_name = "MongoDB records"

    def ready(self) -> None:
        from .documents import mongo_connect

        # Registers the client only; pymongo connects on first use, i.e. after gunicorn forks.
        mongo_connect(
            settings.MONGODB_URI,
            serverSelectionTimeoutMS=settings.MONGODB_TIMEOUT_MS,
            socketTimeoutMS=settings.MONGODB_SOCKET_TIMEOUT_MS,
            maxPoolSize=settings.MONGODB_MAX_POOL_SIZE,
        )

from django.apps import AppConfig
from django.conf import settings


class WritesConfig(AppConfig):
    name = "writes"
    verbose_name = "API clients"  # its admin: the API tokens (in the SQL database, not MongoDB)

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from .authentication import token_forget
        from .documents import mongo_connect
        from .tokens import ApiToken

        post_delete.connect(token_forget, sender=ApiToken, dispatch_uid="writes.token_forget")

        # Registers the client only; pymongo connects on first use, i.e. after gunicorn forks.
        mongo_connect(
            settings.MONGODB_URI,
            serverSelectionTimeoutMS=settings.MONGODB_TIMEOUT_MS,
            socketTimeoutMS=settings.MONGODB_SOCKET_TIMEOUT_MS,
            maxPoolSize=settings.MONGODB_MAX_POOL_SIZE,
            w=int(settings.MONGODB_WRITE_CONCERN) if settings.MONGODB_WRITE_CONCERN.isdigit() else "majority",
            journal=True,
        )

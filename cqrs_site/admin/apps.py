from django.contrib.admin.apps import AdminConfig
from django.db.models.signals import post_migrate


class CqrsAdminConfig(AdminConfig):
    """Django's admin, whose default site also shows the MongoDB records (cqrs_site/admin/sites.py)."""

    default_site = "cqrs_site.admin.sites.MongoAdminSite"

    def ready(self) -> None:
        super().ready()
        from . import records  # noqa: F401  (registers the users' and posts' admins)

        post_migrate.connect(_mongo_permissions, sender=self)


def _mongo_permissions(sender, using="default", **kwargs) -> None:
    """After `migrate`: view/change/delete permissions for the MongoDB records, as Django makes
    for its models, so they are granted to staff users and groups the same way."""
    from django.contrib import admin

    admin.site.mongo_permissions(using)

from django.contrib.admin.apps import AdminConfig


class CqrsAdminConfig(AdminConfig):
    """Django's admin, whose default site also shows the MongoDB records (cqrs_site/admin/sites.py)."""

    default_site = "cqrs_site.admin.sites.MongoAdminSite"

    def ready(self) -> None:
        super().ready()
        from . import records  # noqa: F401  (registers the users' and posts' admins)

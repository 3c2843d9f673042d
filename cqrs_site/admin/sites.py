"""The admin site (as django.contrib.admin.sites): Django's own, with a "MongoDB records" section
beside its apps (same login, index and sidebar), a limit on failed logins, and a clear 503 when
MongoDB is down."""

import unicodedata

from django.conf import settings
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.urls import path, reverse
from pymongo.errors import PyMongoError

from cqrs_site.core.errors import Unavailable
from cqrs_site.core.ratelimit import FixedWindow
from cqrs_site.core.telemetry import client_address

from .options import APP_NAME, MongoAdmin
from .permissions import APP_LABEL, permissions_create


def login_name(raw: str) -> str:
    """The username as Django's login compares it: stripped (the form's CharField) and
    NFKC-normalized (its UsernameField), so " admin", "admin\t" and its full-width spelling are all
    "admin"; and case-folded, which merges the buckets of names a case-insensitive database
    would take for one (on a case-sensitive one it only merges names that differ by case)."""
    return unicodedata.normalize("NFKC", raw.strip()).casefold()[:150]


class MongoAdminSite(AdminSite):
    """The admin site, with a "MongoDB records" section beside Django's own apps."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._mongo: dict[str, MongoAdmin] = {}

    def register_mongo(self, admin_class: type[MongoAdmin]) -> None:
        self._mongo[admin_class.slug] = admin_class(self)

    def get_urls(self) -> list:
        from django.urls import include

        mongo = [path(f"{APP_LABEL}/", self.admin_view(self.mongo_index), name=f"{APP_LABEL}_index")]
        mongo += [path(f"{APP_LABEL}/{slug}/", include(admin.get_urls())) for slug, admin in self._mongo.items()]
        # Before Django's own: its last pattern is a catch-all.
        return mongo + super().get_urls()

    def get_app_list(self, request, app_label=None) -> list[dict]:
        apps = super().get_app_list(request, app_label)
        if self._mongo and app_label in (None, APP_LABEL) and self.has_permission(request):
            mongo = self._mongo_app(request)
            if mongo["models"]:
                apps.append(mongo)
        return sorted(apps, key=lambda app: app["name"].lower())

    def _mongo_app(self, request) -> dict:
        """The section of the collections this user may see (cqrs_site/admin/options.py
        `permitted`: Django's permissions, as for models)."""
        models = [
            {
                "name": admin.verbose_name_plural.capitalize(),
                "object_name": admin.slug.capitalize(),
                "perms": {
                    "add": False,
                    "change": admin.permitted(request, "change"),
                    "delete": admin.permitted(request, "delete"),
                    "view": True,
                },
                "admin_url": reverse(admin.url_name("changelist")),
                "add_url": None,
                "view_only": not admin.permitted(request, "change"),
            }
            for admin in self._mongo.values()
            if admin.permitted(request, "view")
        ]
        return {
            "name": APP_NAME,
            "app_label": APP_LABEL,
            "app_url": reverse(f"admin:{APP_LABEL}_index"),
            "has_module_perms": True,
            "models": sorted(models, key=lambda model: model["name"]),
        }

    def login(self, request, extra_context=None):
        """Django's login page, with failed attempts limited per username and client address
        (cqrs_site/core/ratelimit.py): after ADMIN_LOGIN_FAILURES_LIMIT failures within a window
        of ADMIN_LOGIN_WINDOW_SECONDS, 429 until it ends, even with the right password; the
        same account from another address is not affected. Not limited while Redis is down."""
        if request.method != "POST":
            return super().login(request, extra_context)
        failures = FixedWindow("admin-login", settings.ADMIN_LOGIN_FAILURES_LIMIT, settings.ADMIN_LOGIN_WINDOW_SECONDS)
        identity = f"{login_name(request.POST.get('username', ''))}@{client_address(request)}"
        verdict = failures.peek(identity)
        if not verdict.allowed:
            response = HttpResponse(
                "Too many failed logins for this account from this address; try again later.",
                status=429,
                content_type="text/plain; charset=utf-8",
            )
            response["Retry-After"] = str(max(int(verdict.retry_after), 1))
            return response
        response = super().login(request, extra_context)
        if response.status_code == 200:  # the form again: wrong credentials
            failures.hit(identity)
        return response

    def mongo_index(self, request):
        if not self._mongo_app(request)["models"]:
            raise PermissionDenied("You may not view any MongoDB records.")
        return self.app_index(request, APP_LABEL)

    def mongo_permissions(self, using: str = "default") -> None:
        """After `migrate` (cqrs_site/admin/apps.py): the permissions of the MongoDB records."""
        permissions_create(self._mongo.values(), using)

    def admin_view(self, view, cacheable=False):
        """Django's wrapper (staff only, CSRF, no caching), plus a clear 503 when MongoDB is down."""

        def guarded(request, *args, **kwargs):
            try:
                return view(request, *args, **kwargs)
            except PyMongoError as exc:
                return HttpResponse(
                    f"MongoDB is not available, so the records cannot be shown or changed now: {exc}",
                    status=503,
                    content_type="text/plain; charset=utf-8",
                    headers={"Retry-After": str(Unavailable.retry_after_seconds)},
                )

        guarded.__name__ = getattr(view, "__name__", "view")
        return super().admin_view(guarded, cacheable)

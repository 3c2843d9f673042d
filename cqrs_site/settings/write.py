"""Write role: the write API (token auth) and the admin."""

from .base import *  # noqa: F403
from .base import BASE_DIR, INSTALLED_APPS, RUN_DIR, env, flag, positive

CQRS_ROLE = "write"
ROOT_URLCONF = "cqrs_site.urls_write"
INSTALLED_APPS = [
    # Django's admin, whose site also lists the MongoDB records (cqrs_site/admin/).
    "cqrs_site.admin.apps.CqrsAdminConfig",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # The API's OpenAPI schema and Swagger UI (cqrs_site/openapi.py), its assets served locally.
    "drf_spectacular",
    "drf_spectacular_sidecar",
    *INSTALLED_APPS,
]
MIDDLEWARE = [
    "cqrs_site.core.telemetry.route_label",
    "django.middleware.security.SecurityMiddleware",
    # The admin's CSS and JS, served by the write pool itself (no separate web server to run).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# A CSRF refusal outside the admin answers in the API's JSON shape (cqrs_site/handlers.py).
CSRF_FAILURE_VIEW = "cqrs_site.handlers.csrf_failure"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "cqrs_site" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
APPEND_SLASH = False

# `make up` runs collectstatic into STATIC_ROOT, which WhiteNoise serves; tests set
# WHITENOISE_USE_FINDERS to serve from the installed apps instead.
STATIC_ROOT = env.str("DJANGO_STATIC_ROOT", str(RUN_DIR / "static"))
WHITENOISE_USE_FINDERS = flag("WHITENOISE_USE_FINDERS", False)

# Failed admin logins per client address (Redis-counted); then 429 until the window ends.
ADMIN_LOGIN_FAILURES_LIMIT = env.int("ADMIN_LOGIN_FAILURES_LIMIT", 10, validate=positive)
ADMIN_LOGIN_WINDOW_SECONDS = env.int("ADMIN_LOGIN_WINDOW_SECONDS", 900, validate=positive)

SPECTACULAR_SETTINGS = {
    "TITLE": "CQRS posts API",
    "DESCRIPTION": (
        "Users, posts and their like/dislike counters. Reads are served from a cache kept in step by "
        "events; every answer carries its `version` (also as ETag). After a write, send its version as "
        "`X-Min-Version` to read at least that version back. Every error has the shape "
        '`{"error": {"code", "message", "fields"?}}`. Writes need `Authorization: Token <key>`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "cqrs_site.openapi.closed_request_bodies",
    ],
}

"""The Django admin over MongoDB records.

Django's admin knows ORM models only, and users and posts live in MongoDB. `MongoAdmin` gives a
document collection the admin's change list, change form and delete confirmation, in the
admin's own markup and CSS, querying MongoDB one page at a time (a filtered count, then
sort/skip/limit). It changes records only through the write services, so an admin's edit
raises the version, emits its event and the cache follows, exactly like an API call.
`MongoAdminSite` adds these pages to the normal admin site: same login, index and sidebar.

This lives in cqrs_site, not in writes, because it composes both sides: the write services and
the read cache's inspector (writes must not import reads).
"""

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin import AdminSite
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.core.paginator import Paginator
from django.db import DatabaseError
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST
from django_redis import get_redis_connection
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from cqrs_site.errors import Conflict, NotFound
from reads.consistency import cache_inspect, cache_refresh
from writes.documents import object_id

APP_LABEL = "mongodb"
MATCH_NOTHING = {"_id": {"$exists": False}}
APP_NAME = "MongoDB records"
PAGE_VAR, ORDER_VAR, SEARCH_VAR = "p", "o", "q"


@dataclass(frozen=True)
class Column:
    """A change-list column: `name` is a key of the row (see MongoAdmin.row)."""

    name: str
    label: str
    sort: str | None = None  # the MongoDB field it sorts by; None: not sortable
    link: bool = False  # the link to the record's change page


@dataclass(frozen=True)
class Choice:
    display: str
    query_string: str
    selected: bool


class InvalidFilter(ValueError):
    """A filter parameter that cannot be read; the message says what to send instead."""


class ListFilter:
    """A sidebar filter: its parameters, its choices (links), and the MongoDB condition it adds."""

    title = ""
    parameters: tuple[str, ...] = ()
    form_fields: tuple[tuple[str, str, str], ...] = ()  # (parameter, label, input type) of a free-form input

    def choices(self, changelist: "ChangeList") -> list[Choice]:
        raise NotImplementedError

    def condition(self, values: dict[str, str]) -> dict:
        """The MongoDB condition for these parameter values; InvalidFilter when one is unreadable."""
        raise NotImplementedError


class ChoicesFilter(ListFilter):
    """One parameter, a few named choices; the first (no parameter) is the default."""

    def __init__(self, parameter: str, title: str, choices: list[tuple[str | None, str, dict]]) -> None:
        self.title, self.parameters, self._choices = title, (parameter,), choices

    def choices(self, changelist: "ChangeList") -> list[Choice]:
        current = changelist.params.get(self.parameters[0])
        return [
            Choice(display, changelist.query_string({self.parameters[0]: value}), value == current)
            for value, display, _condition in self._choices
        ]

    def condition(self, values: dict[str, str]) -> dict:
        current = values.get(self.parameters[0])
        for value, _display, condition in self._choices:
            if value == current:
                return condition
        raise InvalidFilter(f"{self.title}: {current!r} is not one of the choices.")


class DateRangeFilter(ListFilter):
    """Today, the past 7 days, this month, this year, or any range (`<field>__gte` / `__lt`)."""

    def __init__(self, field: str, title: str) -> None:
        self.field, self.title = field, title
        self.parameters = (f"{field}__gte", f"{field}__lt")
        self.form_fields = ((self.parameters[0], "From", "date"), (self.parameters[1], "Before", "date"))

    def presets(self) -> list[tuple[str, date | None, date | None]]:
        today = datetime.now(UTC).date()
        month = today.replace(day=1)
        return [
            ("Any date", None, None),
            ("Today", today, today + timedelta(days=1)),
            ("Past 7 days", today - timedelta(days=7), today + timedelta(days=1)),
            ("This month", month, (month + timedelta(days=32)).replace(day=1)),
            ("This year", today.replace(month=1, day=1), today.replace(year=today.year + 1, month=1, day=1)),
        ]

    def choices(self, changelist: "ChangeList") -> list[Choice]:
        since, before = (changelist.params.get(name) for name in self.parameters)
        result = []
        for display, start, end in self.presets():
            values = (start.isoformat() if start else None, end.isoformat() if end else None)
            query = changelist.query_string(dict(zip(self.parameters, values, strict=True)))
            result.append(Choice(display, query, values == (since, before)))
        return result

    def condition(self, values: dict[str, str]) -> dict:
        bounds = {}
        for operator, name in zip(("$gte", "$lt"), self.parameters, strict=True):
            if values.get(name):
                try:
                    day = date.fromisoformat(values[name])
                except ValueError:
                    raise InvalidFilter(f"{self.title}: {values[name]!r} is not a date (YYYY-MM-DD).") from None
                bounds[operator] = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return {self.field: bounds} if bounds else {}


class ChangeList:
    """One change-list request: its parameters, MongoDB query, order and page."""

    def __init__(self, request, admin: "MongoAdmin") -> None:
        self.request, self.admin = request, admin
        self.params = {key: value for key, value in request.GET.items() if value != ""}
        self.search = self.params.get(SEARCH_VAR, "").strip()
        self.errors: list[str] = []
        self.query = self._query()
        self.filtered = bool(self.search or self.has_active_filters)
        self.order_field, self.ascending = self._order()

    def query_string(self, changes: dict[str, str | None], *, keep_page: bool = False) -> str:
        params = dict(self.params)
        if not keep_page:
            params.pop(PAGE_VAR, None)
        for key, value in changes.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = value
        return "?" + urlencode(params)

    def _query(self) -> dict:
        conditions = []
        if self.search and self.admin.search_fields:
            # A $regex string, not a compiled pattern: SecantusDB matches nothing for BSON regex
            # objects. Escaped, so the search is for the text as typed.
            pattern = {"$regex": _regex_escape(self.search), "$options": "i"}
            conditions.append({"$or": [{field: pattern} for field in self.admin.search_fields]})
        for list_filter in self.admin.list_filters:
            try:
                conditions.append(list_filter.condition(self.params))
            except InvalidFilter as exc:
                self.errors.append(str(exc))
                conditions.append(MATCH_NOTHING)  # as Django's admin: a bad filter shows no records
        conditions = [condition for condition in conditions if condition]
        if not conditions:
            return {}
        return conditions[0] if len(conditions) == 1 else {"$and": conditions}

    def _order(self) -> tuple[str, bool]:
        sortable = {column.sort for column in self.admin.columns if column.sort}
        requested = self.params.get(ORDER_VAR, self.admin.ordering)
        field = requested.removeprefix("-")
        if field not in sortable:
            field, requested = self.admin.ordering.removeprefix("-"), self.admin.ordering
        return field, not requested.startswith("-")

    @property
    def has_filters(self) -> bool:
        return bool(self.admin.list_filters)

    @property
    def has_active_filters(self) -> bool:
        return any(name in self.params for f in self.admin.list_filters for name in f.parameters)

    def headers(self) -> list[dict]:
        headers = []
        for column in self.admin.columns:
            header = {"text": column.label, "sortable": bool(column.sort), "classes": [f"column-{column.name}"]}
            if column.sort:
                header["classes"].append("sortable")
                sorted_here = column.sort == self.order_field
                header["sorted"] = sorted_here
                header["ascending"] = self.ascending if sorted_here else True
                if sorted_here:
                    header["classes"] += ["sorted", "ascending" if self.ascending else "descending"]
                    flipped = column.sort if not self.ascending else f"-{column.sort}"
                    header["url_primary"] = header["url_toggle"] = self.query_string({ORDER_VAR: flipped})
                    header["url_remove"] = self.query_string({ORDER_VAR: None})
                else:
                    header["url_primary"] = self.query_string({ORDER_VAR: column.sort})
            header["class_attrib"] = format_html(' class="{}"', " ".join(header["classes"]))
            headers.append(header)
        return headers


def _regex_escape(text: str) -> str:
    """Escape regex metacharacters (re.escape also escapes spaces and dashes, harmless but noisy)."""
    return "".join("\\" + char if char in r"\^$.|?*+()[]{}" else char for char in text)


class MongoResults:
    """The sliceable, countable page source Django's Paginator wants, over one MongoDB query."""

    def __init__(self, collection, query: dict, sort: list[tuple[str, int]], projection: dict | None) -> None:
        self.collection, self.query, self.sort, self.projection = collection, query, sort, projection

    def count(self) -> int:
        if not self.query:
            return self.collection.estimated_document_count()
        return self.collection.count_documents(self.query)

    def __getitem__(self, window: slice) -> list[dict]:
        start, stop = window.start or 0, window.stop
        cursor = self.collection.find(self.query, self.projection).sort(self.sort).skip(start)
        return list(cursor.limit(stop - start) if stop is not None else cursor)


class MongoAdmin:
    """The admin of one MongoDB collection. Subclasses say what to show and how to change it."""

    slug = ""  # URL segment and object name, e.g. "posts"
    verbose_name = ""
    verbose_name_plural = ""
    aggregate = ""  # the aggregate name of its events and cache entries (writes/events.py)
    columns: tuple[Column, ...] = ()
    ordering = "-created_at"
    search_fields: tuple[str, ...] = ()
    search_help_text = ""
    list_filters: tuple[ListFilter, ...] = ()
    list_per_page = 100
    projection: dict | None = None
    form_class: type[forms.Form] | None = None  # None: read-only
    deletable = False

    def __init__(self, site: "MongoAdminSite") -> None:
        self.site = site

    # --- what subclasses provide ---------------------------------------------------------------
    def collection(self):
        raise NotImplementedError

    def row(self, raw: dict) -> dict:
        """A change-list row: a value for each column's name."""
        raise NotImplementedError

    def rows(self, raws: list[dict]) -> list[dict]:
        """The rows of one page; override to fetch what they refer to in one query."""
        return [self.row(raw) for raw in raws]

    def detail_rows(self, raw: dict) -> list[tuple[str, str, object]]:
        """(field name, label, value) of every field of the record, for its change page."""
        raise NotImplementedError

    def title_of(self, raw: dict) -> str:
        return str(raw["_id"])

    def is_live(self, raw: dict) -> bool:
        return True

    def save(self, doc_id: str, changes: dict, expected_version: int) -> dict:
        raise NotImplementedError

    def delete(self, doc_id: str, expected_version: int | None) -> dict:
        raise NotImplementedError

    # --- URLs ----------------------------------------------------------------------------------
    def url_name(self, view: str) -> str:
        return f"admin:{APP_LABEL}_{self.slug}_{view}"

    def get_urls(self) -> list:
        wrap, prefix = self.site.admin_view, f"{APP_LABEL}_{self.slug}"
        return [
            path("", wrap(self.changelist_view), name=f"{prefix}_changelist"),
            path("<str:doc_id>/change/", wrap(self.change_view), name=f"{prefix}_change"),
            path("<str:doc_id>/delete/", wrap(self.delete_view), name=f"{prefix}_delete"),
            path("<str:doc_id>/cache/refresh/", wrap(require_POST(self.cache_refresh_view)), name=f"{prefix}_cache"),
        ]

    def context(self, request, **extra) -> dict:
        return {
            **self.site.each_context(request),
            "app_label": APP_LABEL,
            "app_name": APP_NAME,
            "app_url": reverse("admin:mongodb_index"),
            "model_name": self.slug,
            "verbose_name": self.verbose_name,
            "verbose_name_plural": self.verbose_name_plural,
            "changelist_url": reverse(self.url_name("changelist")),
            **extra,
        }

    def _get(self, doc_id: str) -> dict:
        oid = object_id(doc_id)
        raw = self.collection().find_one({"_id": oid}) if oid else None
        if raw is None:
            raise Http404(f"No {self.verbose_name} has the id {doc_id!r}.")
        return raw

    # --- views ---------------------------------------------------------------------------------
    def changelist_view(self, request):
        if request.method == "POST":
            return self.delete_selected(request)
        changelist = ChangeList(request, self)
        for error in changelist.errors:
            messages.error(request, error)
        direction = 1 if changelist.ascending else -1
        results = MongoResults(
            self.collection(),
            changelist.query,
            [(changelist.order_field, direction), ("_id", direction)],
            self.projection,
        )
        paginator = Paginator(results, self.list_per_page)
        page = paginator.get_page(request.GET.get(PAGE_VAR))
        rows = []
        raws = list(page.object_list)
        for raw, values in zip(raws, self.rows(raws), strict=True):
            change_url = reverse(self.url_name("change"), args=[str(raw["_id"])])
            cells = [(column, values[column.name]) for column in self.columns]
            rows.append({"id": str(raw["_id"]), "cells": cells, "change_url": change_url, "title": self.title_of(raw)})
        return render(
            request,
            "admin/mongo/change_list.html",
            self.context(
                request,
                title=f"Select {self.verbose_name} to change",
                cl=changelist,
                headers=changelist.headers(),
                rows=rows,
                page=page,
                paginator=paginator,
                pages=[
                    (
                        n,
                        None
                        if n == paginator.ELLIPSIS
                        else changelist.query_string({PAGE_VAR: str(n)}, keep_page=False),
                    )
                    for n in paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1)
                ],
                result_count=paginator.count,
                full_count=results.collection.estimated_document_count() if changelist.filtered else None,
                filters=[
                    {
                        "filter": f,
                        "choices": f.choices(changelist),
                        "fields": [(field, changelist.params.get(field[0], "")) for field in f.form_fields],
                    }
                    for f in self.list_filters
                ],
                clear_filters_url=changelist.query_string({n: None for f in self.list_filters for n in f.parameters}),
                search_fields=self.search_fields,
                search_help_text=self.search_help_text,
                deletable=self.deletable,
            ),
        )

    def change_view(self, request, doc_id: str):
        raw = self._get(doc_id)
        editable = self.form_class is not None and self.is_live(raw)
        form = None
        if editable:
            initial = {name: raw.get(name) for name in self.form_class.base_fields}
            form = self.form_class(request.POST if request.method == "POST" else None, initial=initial)
            if request.method == "POST" and form.is_valid():
                saved = self._save(request, raw, form)
                if saved is not None:
                    return saved
        elif request.method == "POST":
            messages.error(request, f"This {self.verbose_name} cannot be changed.")
            return HttpResponseRedirect(request.path)
        rows = []
        for name, label, value in self.detail_rows(raw):
            field = form[name] if form is not None and name in form.fields else None
            rows.append({"name": name, "label": label, "value": value, "field": field})
        return render(
            request,
            "admin/mongo/change_form.html",
            self.context(
                request,
                title=f"Change {self.verbose_name}" if editable else f"View {self.verbose_name}",
                subtitle=self.title_of(raw),
                original=self.title_of(raw),
                doc_id=doc_id,
                version=raw["version"],
                form=form,
                rows=rows,
                editable=editable,
                deletable=self.deletable and self.is_live(raw),
                delete_url=reverse(self.url_name("delete"), args=[doc_id]),
                cache_refresh_url=reverse(self.url_name("cache"), args=[doc_id]),
                cache=self._cache_panel(doc_id),
            ),
        )

    def _save(self, request, raw: dict, form: forms.Form):
        doc_id = str(raw["_id"])
        changed = {name: form.cleaned_data[name] for name in form.changed_data}
        if not changed:
            messages.info(request, "No fields changed.")
            return HttpResponseRedirect(request.path)
        expected = _int_or_none(request.POST.get("version"))
        try:
            state = self.save(doc_id, changed, raw["version"] if expected is None else expected)
        except Conflict as exc:
            form.add_error(None, exc.message)
            return None
        except NotFound:
            messages.error(request, f"This {self.verbose_name} was deleted meanwhile.")
            return HttpResponseRedirect(reverse(self.url_name("changelist")))
        title = self.title_of({**raw, **changed})
        self._log(request, doc_id, title, CHANGE, [{"changed": {"fields": sorted(changed)}}])
        messages.success(
            request,
            format_html(
                "The {} “{}” was changed successfully (version {}).", self.verbose_name, title, state["version"]
            ),
        )
        if "_continue" in request.POST:
            return HttpResponseRedirect(request.path)
        return HttpResponseRedirect(reverse(self.url_name("changelist")))

    def delete_view(self, request, doc_id: str):
        raw = self._get(doc_id)
        if not (self.deletable and self.is_live(raw)):
            raise Http404(f"This {self.verbose_name} cannot be deleted.")
        if request.method == "POST":
            try:
                self.delete(doc_id, _int_or_none(request.POST.get("version")))
            except Conflict as exc:
                messages.error(request, exc.message)
                return HttpResponseRedirect(reverse(self.url_name("change"), args=[doc_id]))
            except NotFound:
                messages.info(request, f"This {self.verbose_name} was already deleted.")
                return HttpResponseRedirect(reverse(self.url_name("changelist")))
            self._log(request, doc_id, self.title_of(raw), DELETION, [])
            messages.success(
                request, format_html("The {} “{}” was deleted successfully.", self.verbose_name, self.title_of(raw))
            )
            return HttpResponseRedirect(reverse(self.url_name("changelist")))
        return self._delete_confirmation(request, [raw], version=raw["version"], original=self.title_of(raw))

    def delete_selected(self, request):
        """The change list's bulk action: a confirmation page, then one write per record."""
        if request.POST.get("action") != "delete_selected" or not self.deletable:
            messages.warning(request, "No action selected.")
            return HttpResponseRedirect(request.get_full_path())
        ids = [oid for oid in map(object_id, request.POST.getlist("_selected_action")) if oid is not None]
        if not ids:
            messages.warning(
                request, "Items must be selected in order to perform actions on them. No items have been changed."
            )
            return HttpResponseRedirect(request.get_full_path())
        records = [raw for raw in self.collection().find({"_id": {"$in": ids}}) if self.is_live(raw)]
        if request.POST.get("post") == "yes":
            deleted = 0
            for raw in records:
                try:
                    self.delete(str(raw["_id"]), None)
                except NotFound:
                    continue  # deleted meanwhile: nothing to do
                deleted += 1
                self._log(request, str(raw["_id"]), self.title_of(raw), DELETION, [])
            noun = self.verbose_name if deleted == 1 else self.verbose_name_plural
            messages.success(request, f"Successfully deleted {deleted} {noun}.")
            return HttpResponseRedirect(request.get_full_path())
        return self._delete_confirmation(request, records, selected=[str(raw["_id"]) for raw in records], bulk=True)

    def _delete_confirmation(self, request, records: list[dict], **extra):
        listed = [
            {"title": self.title_of(raw), "url": reverse(self.url_name("change"), args=[str(raw["_id"])])}
            for raw in records
        ]
        return render(
            request,
            "admin/mongo/delete_confirmation.html",
            self.context(request, title="Are you sure?", records=listed, **extra),
        )

    def cache_refresh_view(self, request, doc_id: str):
        self._get(doc_id)
        try:
            entries = cache_refresh(aggregate=self.aggregate, doc_id=doc_id)
        except RedisError as exc:
            messages.error(request, f"Redis did not answer, the cache entry was not refreshed: {exc}")
        else:
            summary = ", ".join(
                f"{e.key} {e.state} at version {e.cached.version if e.cached else '-'}" for e in entries
            )
            messages.success(request, f"Cache refreshed from MongoDB: {summary}.")
        return HttpResponseRedirect(reverse(self.url_name("change"), args=[doc_id]))

    def _cache_panel(self, doc_id: str) -> dict:
        try:
            return {"entries": cache_inspect(aggregate=self.aggregate, doc_id=doc_id), "error": None}
        except RedisError as exc:
            return {"entries": [], "error": f"Redis did not answer: {exc}"}

    def _log(self, request, doc_id: str, title: str, action: int, change: list) -> None:
        """Record the action in the admin's history ("Recent actions"); the write itself is done."""
        try:
            LogEntry.objects.create(
                user_id=request.user.pk,
                content_type=None,
                object_id=doc_id,
                object_repr=f"{self.verbose_name.capitalize()}: {title}"[:200],
                action_flag=action,
                change_message=json.dumps(change),
            )
        except DatabaseError:
            pass  # the history is a convenience; the record's own version and events are the audit trail


def _client_address(request) -> str:
    """The client's address: the last X-Forwarded-For entry is the one HAProxy added."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    return forwarded.rsplit(",", 1)[-1].strip() or request.META.get("REMOTE_ADDR", "unknown")


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


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
            apps.append(self._mongo_app())
        return sorted(apps, key=lambda app: app["name"].lower())

    def _mongo_app(self) -> dict:
        models = [
            {
                "name": admin.verbose_name_plural.capitalize(),
                "object_name": admin.slug.capitalize(),
                "perms": {
                    "add": False,
                    "change": admin.form_class is not None,
                    "delete": admin.deletable,
                    "view": True,
                },
                "admin_url": reverse(admin.url_name("changelist")),
                "add_url": None,
                "view_only": admin.form_class is None,
            }
            for admin in self._mongo.values()
        ]
        return {
            "name": APP_NAME,
            "app_label": APP_LABEL,
            "app_url": reverse(f"admin:{APP_LABEL}_index"),
            "has_module_perms": True,
            "models": sorted(models, key=lambda model: model["name"]),
        }

    def login(self, request, extra_context=None):
        """Django's login page, with failed attempts per client address limited in Redis: after
        ADMIN_LOGIN_FAILURES_LIMIT failures within ADMIN_LOGIN_WINDOW_SECONDS, 429 until the
        window ends (even with the right password). Not limited while Redis is down."""
        if request.method != "POST":
            return super().login(request, extra_context)
        key = f"{settings.CQRS_CACHE_PREFIX}:admin-login-failures:{_client_address(request)}"
        client = get_redis_connection("default")
        try:
            failures, wait = int(client.get(key) or 0), client.ttl(key)
        except RedisError:
            failures, wait = 0, 0
        if failures >= settings.ADMIN_LOGIN_FAILURES_LIMIT:
            response = HttpResponse(
                "Too many failed logins from this address; try again later.",
                status=429,
                content_type="text/plain; charset=utf-8",
            )
            response["Retry-After"] = str(max(wait, 1))
            return response
        response = super().login(request, extra_context)
        failed = response.status_code == 200  # the form again: wrong credentials
        try:
            if failed:
                if client.incr(key) == 1:  # the window starts with the first failure
                    client.expire(key, settings.ADMIN_LOGIN_WINDOW_SECONDS)
            else:
                client.delete(key)
        except RedisError:
            pass
        return response

    def mongo_index(self, request):
        return self.app_index(request, APP_LABEL)

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
                )

        guarded.__name__ = getattr(view, "__name__", "view")
        return super().admin_view(guarded, cacheable)

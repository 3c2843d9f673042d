"""The admin of one MongoDB collection (as django.contrib.admin.options.ModelAdmin): its change
list, change form and delete confirmation, in the admin's own markup and CSS, querying MongoDB
one page at a time. It changes records only through the write services, so an admin's edit
raises the version, emits its event and the cache follows, exactly like an API call.

It lives in cqrs_site (the assembly), not in writes, because it composes both sides: the write
services and the read cache's inspector (writes must not import reads).
"""

import json

from django import forms
from django.contrib import messages
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.db import DatabaseError
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST
from redis.exceptions import RedisError

from cqrs_site.core.errors import Conflict, NotFound
from reads.consistency import cache_inspect, cache_refresh
from writes.aggregates import AGGREGATES
from writes.documents import object_id

from .changelist import ChangeList, Column
from .filters import ListFilter
from .permissions import APP_LABEL, RecordPermissions

APP_NAME = "MongoDB records"


class MongoAdmin(RecordPermissions):
    """The admin of one MongoDB collection. Subclasses say what to show and how to change it."""

    slug = ""  # URL segment and object name, e.g. "posts"
    verbose_name = ""
    verbose_name_plural = ""
    aggregate = ""  # the aggregate of its records (writes/aggregates.py): its events and cache entries
    columns: tuple[Column, ...] = ()
    ordering = "-created_at"
    search_fields: tuple[str, ...] = ()
    search_help_text = ""
    list_filters: tuple[ListFilter, ...] = ()
    list_per_page = 100
    projection: dict | None = None
    form_class: type[forms.Form] | None = None  # None: read-only
    deletable = False

    def __init__(self, site) -> None:
        self.site = site

    # --- what subclasses provide ---------------------------------------------------------------
    def collection(self):
        return AGGREGATES[self.aggregate].collection()

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
        self.require(request, "view")
        if request.method == "POST":
            return self.delete_selected(request)
        changelist = ChangeList(request, self)
        for error in changelist.errors:
            messages.error(request, error)
        return render(
            request,
            "admin/mongo/change_list.html",
            self.context(
                request,
                title=f"Select {self.verbose_name} to change",
                **changelist.page_context(),
                search_fields=self.search_fields,
                search_help_text=self.search_help_text,
                deletable=self.permitted(request, "delete"),
            ),
        )

    def change_view(self, request, doc_id: str):
        self.require(request, "view")
        raw = self._get(doc_id)
        editable = self.permitted(request, "change") and self.is_live(raw)
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
                deletable=self.permitted(request, "delete") and self.is_live(raw),
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
        self.require(request, "delete")
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
        if request.POST.get("action") != "delete_selected" or not self.permitted(request, "delete"):
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
        self.require(request, "view")
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


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None

"""One change-list request over a MongoDB collection (as django.contrib.admin.views.main):
its parameters, query, order and page, and the paginator's view of the collection."""

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.urls import reverse
from django.utils.html import format_html

from .filters import MATCH_NOTHING, InvalidFilter

if TYPE_CHECKING:
    from .options import MongoAdmin

PAGE_VAR, ORDER_VAR, SEARCH_VAR = "p", "o", "q"


@dataclass(frozen=True)
class Column:
    """A change-list column: `name` is a key of the row (see MongoAdmin.row)."""

    name: str
    label: str
    sort: str | None = None  # the MongoDB field it sorts by; None: not sortable
    link: bool = False  # the link to the record's change page


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

    def page_context(self) -> dict:
        """What the change-list template shows: one page of rows, the pages, filters and counts."""
        direction = 1 if self.ascending else -1
        results = MongoResults(
            self.admin.collection(),
            self.query,
            [(self.order_field, direction), ("_id", direction)],
            self.admin.projection,
        )
        paginator = Paginator(results, self.admin.list_per_page)
        page = paginator.get_page(self.request.GET.get(PAGE_VAR))
        raws = list(page.object_list)
        rows = []
        for raw, values in zip(raws, self.admin.rows(raws), strict=True):
            rows.append(
                {
                    "id": str(raw["_id"]),
                    "cells": [(column, values[column.name]) for column in self.admin.columns],
                    "change_url": reverse(self.admin.url_name("change"), args=[str(raw["_id"])]),
                    "title": self.admin.title_of(raw),
                }
            )
        elided = paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1)
        filters = self.admin.list_filters
        return {
            "cl": self,
            "headers": self.headers(),
            "rows": rows,
            "page": page,
            "paginator": paginator,
            "pages": [(n, None if n == paginator.ELLIPSIS else self.query_string({PAGE_VAR: str(n)})) for n in elided],
            "result_count": paginator.count,
            "full_count": results.collection.estimated_document_count() if self.filtered else None,
            "filters": [
                {
                    "filter": f,
                    "choices": f.choices(self),
                    "fields": [(field, self.params.get(field[0], "")) for field in f.form_fields],
                }
                for f in filters
            ],
            "clear_filters_url": self.query_string({n: None for f in filters for n in f.parameters}),
        }

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

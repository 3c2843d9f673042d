"""The MongoDB records in the admin: users (read-only) and posts (edit and delete)."""

from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from writes import services
from writes.aggregates import POST_AGGREGATE, USER_AGGREGATE

from .changelist import Column
from .filters import Choice, ChoicesFilter, DateRangeFilter, InvalidFilter, ListFilter
from .options import MongoAdmin


class AuthorFilter(ListFilter):
    """Posts by one author, chosen by username (a link in each row, or typed in the sidebar)."""

    title = "author"
    parameters = ("author",)
    form_fields = (("author", "Username", "text"),)

    def choices(self, changelist) -> list[Choice]:
        current = changelist.params.get("author")
        choices = [Choice("All", changelist.query_string({"author": None}), current is None)]
        if current:
            choices.append(Choice(current, changelist.query_string({"author": current}), True))
        return choices

    def condition(self, values: dict[str, str]) -> dict:
        username = values.get("author")
        if not username:
            return {}
        author = USER_AGGREGATE.collection().find_one({"username": username}, {"_id": 1})
        if author is None:
            raise InvalidFilter(f"author: no user is named {username!r}.")
        return {"user_id": author["_id"]}


class PostForm(forms.Form):
    """What an admin may change, within the Document's rules (as the API's serializers)."""

    title = forms.CharField(
        **POST_AGGREGATE.rules("title"), strip=False, widget=forms.TextInput(attrs={"class": "vTextField"})
    )
    content = forms.CharField(
        **POST_AGGREGATE.rules("content"), strip=False, widget=forms.Textarea(attrs={"class": "vLargeTextField"})
    )

    def clean(self):
        cleaned = super().clean()
        for name in ("title", "content"):
            if name in cleaned and not cleaned[name].strip():
                self.add_error(name, "This field may not be blank.")
        return cleaned


def _when(value, *, seconds: bool = True) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M") if value else "-"


class UserAdmin(MongoAdmin):
    slug = "users"
    verbose_name, verbose_name_plural = "user", "users"
    aggregate = USER_AGGREGATE.name
    columns = (
        Column("username", "username", sort="username", link=True),
        Column("id", "id"),
        Column("created_at", "created", sort="created_at"),
        Column("version", "version", sort="version"),
        Column("posts", "posts"),
    )
    search_fields = ("username",)
    search_help_text = "Search by username (any part, any case)."
    list_filters = (DateRangeFilter("created_at", "created"),)
    projection = {"outbox": 0}

    def title_of(self, raw: dict) -> str:
        return raw.get("username", str(raw.get("_id")))

    def _posts_link(self, raw: dict):
        url = reverse("admin:mongodb_posts_changelist") + "?" + urlencode({"author": raw["username"]})
        return format_html('<a href="{}">posts</a>', url)

    def row(self, raw: dict) -> dict:
        return {
            "username": raw["username"],
            "id": str(raw["_id"]),
            "created_at": _when(raw["created_at"], seconds=False),
            "version": raw["version"],
            "posts": self._posts_link(raw),
        }

    def detail_rows(self, raw: dict) -> list:
        return [
            ("id", "id", str(raw["_id"])),
            ("username", "username", raw["username"]),
            ("created_at", "created", _when(raw["created_at"])),
            ("version", "version", raw["version"]),
            ("outbox", "events not yet sent", len(raw.get("outbox", []))),
            ("posts", "posts", self._posts_link(raw)),
        ]


class PostAdmin(MongoAdmin):
    slug = "posts"
    verbose_name, verbose_name_plural = "post", "posts"
    aggregate = POST_AGGREGATE.name
    columns = (
        Column("title", "title", sort="title", link=True),
        Column("author", "author"),
        Column("like_count", "likes", sort="like_count"),
        Column("dislike_count", "dislikes", sort="dislike_count"),
        Column("created_at", "created", sort="created_at"),
        Column("updated_at", "updated", sort="updated_at"),
        Column("version", "version", sort="version"),
    )
    search_fields = ("title", "content")
    search_help_text = "Search in title and content (any part, any case)."
    list_filters = (
        ChoicesFilter(
            "status",
            "status",
            [(None, "Live", {"deleted": False}), ("deleted", "Deleted", {"deleted": True}), ("all", "All", {})],
        ),
        AuthorFilter(),
        DateRangeFilter("created_at", "created"),
    )
    projection = {"content": 0, "outbox": 0}
    form_class = PostForm
    deletable = True

    def title_of(self, raw: dict) -> str:
        return raw.get("title") or f"post {raw.get('_id')}"

    def is_live(self, raw: dict) -> bool:
        return not raw.get("deleted", False)

    def _authors(self, rows: list[dict]) -> dict:
        ids = list({raw["user_id"] for raw in rows if raw.get("user_id")})
        users = USER_AGGREGATE.collection().find({"_id": {"$in": ids}}, {"username": 1})
        return {u["_id"]: u["username"] for u in users}

    def _author_link(self, user_id, username: str | None):
        if username is None:
            return str(user_id)
        url = reverse("admin:mongodb_posts_changelist") + "?" + urlencode({"author": username})
        return format_html('<a href="{}" title="Show only the posts of {}">{}</a>', url, username, username)

    def rows(self, raws: list[dict]) -> list[dict]:
        authors = self._authors(raws)  # one query per page, not one per row
        return [self.row(raw, authors) for raw in raws]

    def row(self, raw: dict, authors: dict | None = None) -> dict:
        authors = authors if authors is not None else self._authors([raw])
        title = raw["title"] if not raw.get("deleted") else format_html("{} <em>(deleted)</em>", raw["title"])
        return {
            "title": title,
            "author": self._author_link(raw["user_id"], authors.get(raw["user_id"])),
            "like_count": raw["like_count"],
            "dislike_count": raw["dislike_count"],
            "created_at": _when(raw["created_at"], seconds=False),
            "updated_at": _when(raw["updated_at"], seconds=False),
            "version": raw["version"],
        }

    def detail_rows(self, raw: dict) -> list:
        authors = self._authors([raw])
        return [
            ("id", "id", str(raw["_id"])),
            ("author", "author", self._author_link(raw["user_id"], authors.get(raw["user_id"]))),
            ("title", "title", raw["title"]),
            ("content", "content", raw["content"]),
            ("like_count", "likes", raw["like_count"]),
            ("dislike_count", "dislikes", raw["dislike_count"]),
            ("created_at", "created", _when(raw["created_at"])),
            ("updated_at", "updated", _when(raw["updated_at"])),
            ("version", "version", raw["version"]),
            ("deleted", "deleted", "yes" if raw.get("deleted") else "no"),
            ("outbox", "events not yet sent", len(raw.get("outbox", []))),
        ]

    def save(self, doc_id: str, changes: dict, expected_version: int) -> dict:
        return services.post_update(post_id=doc_id, expected_version=expected_version, **changes)

    def delete(self, doc_id: str, expected_version: int | None) -> dict:
        return services.post_delete(post_id=doc_id, expected_version=expected_version)


admin.site.register_mongo(UserAdmin)
admin.site.register_mongo(PostAdmin)

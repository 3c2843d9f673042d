"""The admin over MongoDB records, through Django's test client against the real servers."""

import re
from datetime import UTC, datetime

import pytest
from django.contrib.admin.models import LogEntry

from cqrs_site.core.codec import post_key
from reads.cache import cache_get
from tests.conftest import eventually
from writes import services
from writes.documents import Post, object_id

POSTS = "/admin/mongodb/posts/"
USERS = "/admin/mongodb/users/"


EVERY_PERMISSION = ("view_post", "change_post", "delete_post", "view_user")


def staff_user(django_user_model, username: str, *codenames: str):
    """A staff user granted these permissions on the MongoDB records (mongodb.<codename>)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username, password="secret-pass-1", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="mongodb", codename__in=codenames))
    return user


@pytest.fixture
def staff(db, client, django_user_model):
    client.force_login(staff_user(django_user_model, "operator", *EVERY_PERMISSION))
    return client


@pytest.fixture
def author():
    return services.user_create(username="author")


def row_titles(response) -> list[str]:
    return re.findall(r'<th class="field-title"><a href="[^"]+">([^<]*)</a>', response.content.decode())


def change_url(post: dict) -> str:
    return f"{POSTS}{post['id']}/change/"


def stored(post: dict) -> dict:
    return Post._get_collection().find_one({"_id": object_id(post["id"])})


def test_the_index_lists_the_mongodb_records_beside_djangos_own(db, client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="secret-pass-1"))
    page = client.get("/admin/").content.decode()
    assert "MongoDB records" in page and "Authentication and Authorization" in page
    # One section of that name: the API tokens (SQL) are in their own.
    assert page.count(">MongoDB records<") == 1 and ">API clients<" in page
    assert f'href="{POSTS}"' in page and f'href="{USERS}"' in page
    assert "MongoDB records administration" in client.get("/admin/mongodb/").content.decode()


@pytest.mark.parametrize("url", ["/admin/", POSTS, USERS, "/admin/mongodb/"])
def test_anonymous_visitors_are_sent_to_the_login_page(db, client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_active_non_staff_and_inactive_staff_do_not_get_in(db, client, django_user_model, author):
    post = services.post_create(user_id=author["id"], title="Keep", content="C")
    for user in (
        django_user_model.objects.create_user("member", password="x", is_staff=False),
        django_user_model.objects.create_user("former", password="x", is_staff=True, is_active=False),
    ):
        client.force_login(user)
        assert client.get(POSTS).status_code == 302
        response = client.post(change_url(post), {"title": "Hacked", "content": "C", "version": "1", "_save": "1"})
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert stored(post)["title"] == "Keep" and stored(post)["version"] == 1


def test_the_change_list_pages_through_mongodb_with_counts(staff, author):
    for n in range(120):
        services.post_create(user_id=author["id"], title=f"post {n:03d}", content="c")
    first = staff.get(POSTS)
    assert first.status_code == 200
    assert len(row_titles(first)) == 100 and row_titles(first)[0] == "post 119"  # newest first
    assert "120 posts" in first.content.decode()
    second = staff.get(POSTS + "?p=2")
    assert row_titles(second) == [f"post {n:03d}" for n in range(19, -1, -1)]
    assert '<span class="this-page">2</span>' in second.content.decode()


def test_the_change_list_sorts_by_a_column_both_ways(staff, author):
    posts = [services.post_create(user_id=author["id"], title=t, content="c") for t in ("b", "c", "a")]
    services.post_react(post_id=posts[1]["id"], reaction="like")
    assert row_titles(staff.get(POSTS + "?o=title")) == ["a", "b", "c"]
    assert row_titles(staff.get(POSTS + "?o=-title")) == ["c", "b", "a"]
    assert row_titles(staff.get(POSTS + "?o=-like_count"))[0] == "c"
    assert row_titles(staff.get(POSTS + "?o=outbox")) == ["a", "c", "b"]  # not a column: the default order


def test_search_finds_text_in_title_or_content_as_typed(staff, author):
    services.post_create(user_id=author["id"], title="Hello World", content="plain")
    services.post_create(user_id=author["id"], title="other", content="says hello.*")
    services.post_create(user_id=author["id"], title="unrelated", content="nothing")
    assert sorted(row_titles(staff.get(POSTS, {"q": "HELLO"}))) == ["Hello World", "other"]
    found = staff.get(POSTS, {"q": "hello.*"})
    assert row_titles(found) == ["other"]  # the text, not a pattern
    assert "1 result (" in found.content.decode() and "3 total" in found.content.decode()
    users = staff.get(USERS, {"q": "AUTH"}).content.decode()
    assert ">author</a>" in users


def test_filters_by_author_created_date_and_status(staff, author):
    other = services.user_create(username="other")
    mine = services.post_create(user_id=author["id"], title="mine", content="c")
    services.post_create(user_id=other["id"], title="theirs", content="c")
    old = services.post_create(user_id=other["id"], title="old", content="c")
    Post._get_collection().update_one(
        {"_id": object_id(old["id"])}, {"$set": {"created_at": datetime(2020, 5, 1, tzinfo=UTC)}}
    )
    gone = services.post_create(user_id=author["id"], title="gone", content="c")
    services.post_delete(post_id=gone["id"])

    assert row_titles(staff.get(POSTS, {"author": "author"})) == ["mine"]
    assert row_titles(staff.get(POSTS, {"created_at__gte": "2020-01-01", "created_at__lt": "2021-01-01"})) == ["old"]
    assert "old" not in row_titles(staff.get(POSTS, {"created_at__gte": datetime.now(UTC).date().isoformat()}))
    assert re.findall(
        r'field-title"><a [^>]+>(\w+) <em>', staff.get(POSTS, {"status": "deleted"}).content.decode()
    ) == ["gone"]
    assert len(row_titles(staff.get(POSTS, {"status": "all"}))) + 1 == 4  # the deleted one is marked, not plain
    assert mine["id"] in staff.get(POSTS).content.decode()
    unknown = staff.get(POSTS, {"author": "nobody"}, follow=True)
    assert row_titles(unknown) == [] and "no user is named" in unknown.content.decode()
    bad = staff.get(POSTS, {"created_at__gte": "yesterday"})
    assert row_titles(bad) == [] and "is not a date" in bad.content.decode()


def test_the_change_page_shows_every_field_and_edits_only_title_and_content(staff, author):
    post = services.post_create(user_id=author["id"], title="Before", content="Body")
    page = staff.get(change_url(post)).content.decode()
    for label in ("Id:", "Author:", "Likes:", "Dislikes:", "Created:", "Updated:", "Version:"):
        assert label in page
    assert 'name="title"' in page and 'name="content"' in page
    assert 'name="like_count"' not in page and 'name="version" value="1"' in page

    response = staff.post(
        change_url(post), {"title": "After", "content": "Body", "like_count": "999", "version": "1", "_save": "1"}
    )
    assert response.status_code == 302 and response["Location"] == POSTS
    record = stored(post)
    assert (record["title"], record["like_count"], record["version"]) == ("After", 0, 2)
    entry = LogEntry.objects.get(object_id=post["id"])
    assert entry.is_change() and "title" in entry.change_message


def test_an_edit_from_a_stale_form_is_refused_and_changes_nothing(staff, author):
    post = services.post_create(user_id=author["id"], title="Original", content="Body")
    services.post_update(post_id=post["id"], title="Someone else's")
    response = staff.post(change_url(post), {"title": "Mine", "content": "Body", "version": "1", "_save": "1"})
    assert response.status_code == 200 and "changed since version 1" in response.content.decode()
    assert (stored(post)["title"], stored(post)["version"]) == ("Someone else's", 2)


@pytest.mark.parametrize(
    "title,content,error",
    [("", "Body", "required"), ("   ", "Body", "may not be blank"), ("x" * 201, "B", "at most 200")],
)
def test_invalid_edits_show_the_error_and_change_nothing(staff, author, title, content, error):
    post = services.post_create(user_id=author["id"], title="Valid", content="Body")
    response = staff.post(change_url(post), {"title": title, "content": content, "version": "1", "_save": "1"})
    assert response.status_code == 200 and error in response.content.decode()
    assert stored(post)["version"] == 1 and stored(post)["title"] == "Valid"


def test_saving_an_unchanged_form_writes_nothing(staff, author):
    post = services.post_create(user_id=author["id"], title="Same", content="Body")
    response = staff.post(change_url(post), {"title": "Same", "content": "Body", "version": "1", "_continue": "1"})
    assert response["Location"] == change_url(post) and stored(post)["version"] == 1


def test_an_admin_edit_reaches_the_public_read_api(staff, api_client, author, consumer):
    consumer.wait_ready()
    post = services.post_create(user_id=author["id"], title="Cached", content="Body")
    assert api_client.get(f"/api/posts/{post['id']}").json()["title"] == "Cached"  # now in Redis
    staff.post(change_url(post), {"title": "Edited", "content": "Body", "version": "1", "_save": "1"})
    eventually(lambda: api_client.get(f"/api/posts/{post['id']}").json()["title"] == "Edited", timeout=1.0)
    assert api_client.get(f"/api/posts/{post['id']}")["X-Cache"] == "hit"


def test_delete_asks_for_confirmation_then_deletes_through_the_service(staff, api_client, author):
    post = services.post_create(user_id=author["id"], title="Doomed", content="Body")
    confirm = staff.get(f"{POSTS}{post['id']}/delete/")
    assert confirm.status_code == 200 and "Are you sure" in confirm.content.decode()
    assert stored(post)["deleted"] is False
    response = staff.post(f"{POSTS}{post['id']}/delete/", {"post": "yes", "version": "1"})
    assert response.status_code == 302 and stored(post)["deleted"] is True and stored(post)["version"] == 2
    assert api_client.get(f"/api/posts/{post['id']}").status_code == 404
    assert "Doomed" not in row_titles(staff.get(POSTS))
    assert LogEntry.objects.get(object_id=post["id"]).is_deletion()


def test_the_bulk_delete_action_confirms_then_deletes_the_selection(staff, author):
    posts = [services.post_create(user_id=author["id"], title=f"p{n}", content="c") for n in range(3)]
    selection = {"action": "delete_selected", "_selected_action": [posts[0]["id"], posts[2]["id"]]}
    confirm = staff.post(POSTS, selection)
    assert confirm.status_code == 200 and "p0" in confirm.content.decode() and "p2" in confirm.content.decode()
    assert not any(stored(p)["deleted"] for p in posts)
    done = staff.post(POSTS, {**selection, "post": "yes"}, follow=True)
    assert "Successfully deleted 2 posts." in done.content.decode()
    assert [stored(p)["deleted"] for p in posts] == [True, False, True]


def test_the_cache_panel_shows_both_versions_and_refreshes_the_entry(staff, author):
    post = services.post_create(user_id=author["id"], title="T", content="C")
    page = staff.get(change_url(post)).content.decode()
    assert page.count('class="cache-state">not cached') == 2
    response = staff.post(f"{POSTS}{post['id']}/cache/refresh/", follow=True)
    assert "Cache refreshed from MongoDB" in response.content.decode()
    assert cache_get(post_key(post["id"])).version == 1
    assert response.content.decode().count('class="cached-version">1<') == 2
    services.post_delete(post_id=post["id"])
    staff.post(f"{POSTS}{post['id']}/cache/refresh/")
    assert staff.get(change_url(post)).content.decode().count('class="cache-state">tombstone') == 2
    assert staff.get(f"{POSTS}{post['id']}/cache/refresh/").status_code == 405


def test_users_are_read_only_and_a_deleted_post_cannot_be_edited(staff, author):
    page = staff.get(f"{USERS}{author['id']}/change/").content.decode()
    assert "View user" in page and 'name="username"' not in page and "deletelink" not in page
    post = services.post_create(user_id=author["id"], title="T", content="C")
    services.post_delete(post_id=post["id"])
    staff.post(change_url(post), {"title": "Back", "content": "C", "version": "2", "_save": "1"})
    assert stored(post)["title"] == "T" and stored(post)["version"] == 2
    assert staff.get(f"{POSTS}{post['id']}/delete/").status_code == 404


def test_unknown_or_malformed_ids_are_404(staff):
    assert staff.get(f"{POSTS}{'0' * 24}/change/").status_code == 404
    assert staff.get(f"{POSTS}not-an-id/change/").status_code == 404
    assert staff.get(f"{USERS}nope/change/").status_code == 404


def test_admin_writes_need_the_csrf_token(db, django_user_model, author):
    from django.test import Client

    post = services.post_create(user_id=author["id"], title="Guarded", content="C")
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user(django_user_model, "strict", *EVERY_PERMISSION))
    form = {"title": "Forged", "content": "C", "version": "1", "_save": "1"}
    assert client.post(change_url(post), form).status_code == 403
    assert client.post(f"{POSTS}{post['id']}/delete/", {"post": "yes"}).status_code == 403
    assert (stored(post)["title"], stored(post)["deleted"]) == ("Guarded", False)
    page = client.get(change_url(post)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post(change_url(post), {**form, "csrfmiddlewaretoken": token}).status_code == 302
    assert stored(post)["title"] == "Forged"


def test_failed_logins_are_limited_per_client_address(db, client, django_user_model, settings):
    settings.ADMIN_LOGIN_FAILURES_LIMIT = 3
    settings.CQRS_TRUSTED_PROXIES = ["127.0.0.1"]  # the test client's address stands for HAProxy's
    django_user_model.objects.create_user("guarded", password="right-password-1", is_staff=True)
    wrong = {"username": "guarded", "password": "wrong", "next": "/admin/"}
    attacker = {"HTTP_X_FORWARDED_FOR": "203.0.113.7"}
    assert [client.post("/admin/login/", wrong, **attacker).status_code for _ in range(3)] == [200] * 3
    blocked = client.post("/admin/login/", {**wrong, "password": "right-password-1"}, **attacker)
    assert blocked.status_code == 429 and 1 <= int(blocked["Retry-After"]) <= settings.ADMIN_LOGIN_WINDOW_SECONDS
    assert "_auth_user_id" not in client.session
    other = client.post("/admin/login/", {**wrong, "password": "right-password-1"}, HTTP_X_FORWARDED_FOR="198.51.100.2")
    assert other.status_code == 302 and client.session["_auth_user_id"]


def test_the_mongodb_records_have_djangos_permissions(db):
    from django.contrib.auth.models import Permission

    found = set(Permission.objects.filter(content_type__app_label="mongodb").values_list("codename", flat=True))
    assert found == set(EVERY_PERMISSION)  # users are read-only: no change or delete to grant


def test_a_staff_user_without_permissions_sees_no_records(db, client, django_user_model, author):
    post = services.post_create(user_id=author["id"], title="Hidden", content="C")
    client.force_login(staff_user(django_user_model, "nobody"))
    assert "MongoDB records" not in client.get("/admin/").content.decode()
    for url in (POSTS, USERS, "/admin/mongodb/", change_url(post), f"{POSTS}{post['id']}/delete/"):
        assert client.get(url).status_code == 403, url
    assert client.post(change_url(post), {"title": "Hacked", "content": "C", "version": "1"}).status_code == 403
    assert client.post(f"{POSTS}{post['id']}/cache/refresh/").status_code == 403
    assert stored(post)["title"] == "Hidden"


def test_view_permission_gives_read_only_pages(db, client, django_user_model, author):
    post = services.post_create(user_id=author["id"], title="Read only", content="C")
    client.force_login(staff_user(django_user_model, "viewer", "view_post"))
    index = client.get("/admin/").content.decode()
    assert f'href="{POSTS}"' in index and f'href="{USERS}"' not in index
    assert client.get(USERS).status_code == 403
    listing = client.get(POSTS)
    assert listing.status_code == 200 and "Read only" in listing.content.decode()
    assert 'name="action"' not in listing.content.decode()  # no bulk delete to offer
    page = client.get(change_url(post)).content.decode()
    assert "View post" in page and 'name="title"' not in page and "/delete/" not in page
    response = client.post(change_url(post), {"title": "Changed", "content": "C", "version": "1", "_save": "1"})
    assert response.status_code == 302 and stored(post)["title"] == "Read only"
    assert client.get(f"{POSTS}{post['id']}/delete/").status_code == 403
    bulk = client.post(POSTS, {"action": "delete_selected", "_selected_action": [post["id"]], "post": "yes"})
    assert bulk.status_code == 302 and stored(post)["deleted"] is False


def test_change_without_delete_edits_but_cannot_delete(db, client, django_user_model, author):
    post = services.post_create(user_id=author["id"], title="Editable", content="C")
    client.force_login(staff_user(django_user_model, "editor", "change_post"))  # change implies view
    assert client.get(POSTS).status_code == 200
    response = client.post(change_url(post), {"title": "Edited", "content": "C", "version": "1", "_save": "1"})
    assert response.status_code == 302 and stored(post)["title"] == "Edited"
    assert client.post(f"{POSTS}{post['id']}/delete/", {"post": "yes", "version": "2"}).status_code == 403
    assert stored(post)["deleted"] is False

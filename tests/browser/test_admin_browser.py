"""The admin in a real browser (Debian's Chromium, headless, driven by Playwright) through HAProxy:
log in, find a post by search, change its title, and read the new title from the public API."""

import shutil
import time
from pathlib import Path

import pytest

from tests.stackctl import stack_start, stack_stop

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts" / "browser"
USERNAME, PASSWORD = "browser-admin", "a-long-test-password-7"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = stack_start(
        tmp_path_factory.mktemp("browser-stack"),
        own_servers=False,
        group_suffix="-browser",
        READ_INSTANCES="1",
        CONSUMERS="1",
        DJANGO_SUPERUSER_USERNAME=USERNAME,
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    yield running
    stack_stop(running)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make install` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def log_in(page, stack, username: str, password: str) -> None:
    page.goto(stack.url + "/admin/")
    assert "/admin/login/" in page.url  # not logged in: the login page
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")


def test_an_admin_finds_a_post_changes_its_title_and_the_public_api_follows(stack, page):
    user = stack.writer.post(stack.url + "/api/users", json={"username": "browsed"}).json()
    posts = [
        stack.writer.post(
            stack.url + "/api/posts", json={"user_id": user["id"], "title": f"Filler {n}", "content": "c"}
        ).json()
        for n in range(130)
    ]
    target = stack.writer.post(
        stack.url + "/api/posts", json={"user_id": user["id"], "title": "Needle in the haystack", "content": "x"}
    ).json()
    assert stack.reader.get(f"{stack.url}/api/posts/{target['id']}").json()["title"] == "Needle in the haystack"

    log_in(page, stack, USERNAME, PASSWORD)
    assert page.locator("#site-name").inner_text() == "Django administration"
    page.click("text=MongoDB records")
    page.click("#content-main >> text=Posts")
    page.wait_for_url("**/admin/mongodb/posts/")  # the click only starts the navigation
    page.wait_for_selector("p.paginator")
    assert page.locator("#result_list tbody tr").count() == 100  # the first of two pages
    assert f"{len(posts) + 1} posts" in page.locator("p.paginator").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin-posts-change-list.png"))

    page.fill("#searchbar", "needle")
    page.press("#searchbar", "Enter")
    page.wait_for_url("**/admin/mongodb/posts/?q=needle")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    rows.locator("th.field-title a").click()
    page.wait_for_url(f"**/admin/mongodb/posts/{target['id']}/change/")
    assert page.locator("#id_title").input_value() == "Needle in the haystack"
    assert page.locator(".field-version .readonly").inner_text() == "1"
    page.screenshot(path=str(ARTIFACTS / "admin-post-change-form.png"), full_page=True)

    page.fill("#id_title", "Found and renamed")
    page.click("input[name=_continue]")
    page.wait_for_selector("ul.messagelist li.success")
    assert "changed successfully (version 2)" in page.locator("ul.messagelist").inner_text()
    assert page.locator(".field-version .readonly").inner_text() == "2"

    # The public API through HAProxy (an edge hit from Redis, or the read pool), within a second of the save.
    deadline = time.monotonic() + 1.0
    while (answer := stack.reader.get(f"{stack.url}/api/posts/{target['id']}")).json()["title"] != "Found and renamed":
        assert time.monotonic() < deadline, f"a second after the save, the read API still answers {answer.json()}"
        time.sleep(0.02)
    assert answer.headers["X-Served-By"] in ("edge", "read-pool") and answer.json()["version"] == 2
    page.reload()
    assert page.locator(".cache-state").first.inner_text() == "cached"
    assert page.locator(".cached-version").first.inner_text() == "2"
    page.screenshot(path=str(ARTIFACTS / "admin-post-after-edit.png"), full_page=True)


def test_a_wrong_password_stays_on_the_login_page(stack, page):
    log_in(page, stack, USERNAME, "not-the-password")
    assert "/admin/login/" in page.url
    assert "Please enter the correct username and password" in page.locator(".errornote").inner_text()
    page.goto(stack.url + "/admin/mongodb/posts/")
    assert "/admin/login/" in page.url


def test_the_swagger_ui_lists_every_operation_and_tries_one_against_the_api(stack, page):
    user = stack.writer.post(stack.url + "/api/users", json={"username": "documented"}).json()
    page.goto(stack.url + "/api/docs/")
    operations = page.locator(".opblock")
    operations.first.wait_for()
    schema = stack.reader.get(stack.url + "/api/schema/?format=json").json()
    methods = {"get", "post", "put", "patch", "delete"}
    in_schema = sum(1 for operations_of in schema["paths"].values() for method in operations_of if method in methods)
    assert operations.count() == in_schema == 11  # every path and method of the schema
    page.locator(".opblock-get", has_text="/api/users/{user_id}").first.locator(".opblock-summary").click()
    page.click("text=Try it out")
    page.fill("input[placeholder=user_id]", user["id"])
    page.click("text=Execute")
    answer = page.locator(".live-responses-table tbody .response-col_status").first
    answer.wait_for()
    assert answer.inner_text().strip() == "200"
    assert user["username"] in page.locator(".live-responses-table .microlight").first.inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=False)

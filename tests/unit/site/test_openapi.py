"""The OpenAPI description (cqrs_site/openapi.py) documents exactly what the write pool's URLs serve."""

import re

from django.urls import URLPattern
from drf_spectacular.generators import SchemaGenerator

from cqrs_site import urls_write

WRITE_METHODS = ("post", "put", "patch", "delete")


def served() -> dict[str, set[str]]:
    """Path -> methods, from the real URLconf."""
    routes = {}
    for pattern in urls_write.urlpatterns:
        view = getattr(pattern, "callback", None)
        if not isinstance(pattern, URLPattern) or not hasattr(view, "write_view"):
            continue
        methods = {"get"} if view.read_view else set()
        if view.write_view is not None:
            methods |= {m for m in WRITE_METHODS if hasattr(view.write_view.view_class, m)}
        routes["/" + re.sub(r"<str:(\w+)>", r"{\1}", str(pattern.pattern))] = methods
    return routes


def documented() -> dict:
    return SchemaGenerator(urlconf="cqrs_site.openapi").get_schema(request=None, public=True)


def test_every_served_path_and_method_is_documented_and_nothing_else():
    schema = documented()
    assert {path: set(operations) for path, operations in schema["paths"].items()} == served()


def test_every_operation_documents_its_errors_in_the_one_error_shape():
    for path, operations in documented()["paths"].items():
        for method, operation in operations.items():
            errors = {code: answer for code, answer in operation["responses"].items() if int(code) >= 400}
            assert "503" in errors, (path, method)
            # Everything but the two creations names a record that may not exist.
            assert ("404" in errors) == (path not in ("/api/users", "/api/posts")), (path, method)
            for code, answer in errors.items():
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", (path, method, code)


def test_reads_need_no_token_and_writes_do():
    for operations in documented()["paths"].values():
        for method, operation in operations.items():
            if method == "get":
                assert operation.get("security") in (None, [], [{}]) and "401" not in operation["responses"]
            else:
                assert operation["security"] == [{"tokenAuth": []}] and "401" in operation["responses"]

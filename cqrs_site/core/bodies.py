"""Request bodies sent with `Transfer-Encoding: chunked`, for the write pool.

Django reads a body only as far as CONTENT_LENGTH says, and a chunked request has none: its
body read as empty ("This field is required" for a POST that carried it). gunicorn de-chunks
the stream and ends it where the body ends (`wsgi.input_terminated`), so here such a body is
read, up to one byte past DATA_UPLOAD_MAX_MEMORY_SIZE (the parser then answers 413), and handed
on with its length, as if the client had sent Content-Length.
"""

import io

from django.conf import settings


class ChunkedBodies:
    """WSGI middleware (see the module)."""

    def __init__(self, application) -> None:
        self.application = application

    def __call__(self, environ, start_response):
        if (
            "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
            and not environ.get("CONTENT_LENGTH")
            and environ.get("wsgi.input_terminated")
        ):
            body = environ["wsgi.input"].read(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
        return self.application(environ, start_response)

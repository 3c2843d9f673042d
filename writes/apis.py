"""The write API: thin views that validate input, call one service and answer with the new state.

Every answer carries the new `version` in its body and as the ETag, so a client can ask the
read API for at least that version (X-Min-Version) and get its own write back. A PATCH or
DELETE with `If-Match` applies only to the version(s) it names (412 otherwise), and every POST
takes an Idempotency-Key (writes/idempotency.py).
"""

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from cqrs_site.core.errors import InvalidInput, PreconditionFailed
from cqrs_site.core.http import ANY, entity_tags, etag_for, is_version

from . import services
from .answers import Answer, post_changed, post_created, post_reacted, user_created
from .idempotency import idempotent
from .serializers import PostCreateInput, PostUpdateInput, UserCreateInput


def answer_response(answer: Answer) -> Response:
    return Response(answer.body, status=answer.status, headers=answer.headers)


def validated(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def if_match(request) -> list[int] | None:
    """The versions If-Match names (RFC 9110 13.1.1), or None when it is absent or `*` (any
    current post: a write needs a live one anyway). Strong comparison: a weak tag names none."""
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == ANY:
        return None
    tags = entity_tags(raw)
    if tags is None:
        raise InvalidInput(
            'If-Match must be entity tags as this API gives them out in ETag, such as "3".',
            fields={"If-Match": ["malformed"]},
        )
    return [int(tag) for weak, tag in tags if not weak and is_version(tag)]


def conditional(change, request, **arguments) -> dict:
    """Run a service that takes `expected_version`, with If-Match's versions: 412 when the post
    is at none of them."""
    versions = if_match(request)
    try:
        return change(expected_version=versions, **arguments)
    except services.VersionConflict as exc:
        if versions is None:
            raise
        raise PreconditionFailed(
            f"If-Match: the post is at version {exc.current_version}, not the one you named. Read it again "
            "and decide whether your change still applies.",
            fields={"If-Match": [f"current version {exc.current_version}"]},
            current_version=exc.current_version,
        ) from None


class UserCreateApi(APIView):
    @idempotent(user_created)
    def post(self, request):
        return answer_response(user_created(services.user_create(**validated(UserCreateInput, request))))


class PostCreateApi(APIView):
    @idempotent(post_created)
    def post(self, request):
        return answer_response(post_created(services.post_create(**validated(PostCreateInput, request))))


class PostDetailApi(APIView):
    def patch(self, request, post_id: str):
        arguments = validated(PostUpdateInput, request)
        return answer_response(post_changed(conditional(services.post_update, request, post_id=post_id, **arguments)))

    def delete(self, request, post_id: str):
        state = conditional(services.post_delete, request, post_id=post_id)
        return Response(status=status.HTTP_204_NO_CONTENT, headers={"ETag": etag_for(state["version"])})


class PostReactApi(APIView):
    reaction = ""

    @idempotent(post_reacted)
    def post(self, request, post_id: str):
        return answer_response(post_reacted(services.post_react(post_id=post_id, reaction=self.reaction)))

"""The write API: thin views that validate input, call one service and answer with the new state.

Every answer carries the new `version` in its body and as the ETag, so a client can ask the
read API for at least that version (X-Min-Version) and get its own write back.
"""

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from cqrs_site.core.http import etag_for

from . import services
from .aggregates import post_reactions
from .serializers import PostCreateInput, PostUpdateInput, UserCreateInput


def validated(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def written(body: dict, *, code: int = status.HTTP_200_OK) -> Response:
    return Response(body, status=code, headers={"ETag": etag_for(body["version"])})


class UserCreateApi(APIView):
    def post(self, request):
        return written(services.user_create(**validated(UserCreateInput, request)), code=status.HTTP_201_CREATED)


class PostCreateApi(APIView):
    def post(self, request):
        return written(services.post_create(**validated(PostCreateInput, request)), code=status.HTTP_201_CREATED)


class PostDetailApi(APIView):
    def patch(self, request, post_id: str):
        return written(services.post_update(post_id=post_id, **validated(PostUpdateInput, request)))

    def delete(self, request, post_id: str):
        state = services.post_delete(post_id=post_id)
        return Response(status=status.HTTP_204_NO_CONTENT, headers={"ETag": etag_for(state["version"])})


class PostReactApi(APIView):
    reaction = ""

    def post(self, request, post_id: str):
        return written(post_reactions(services.post_react(post_id=post_id, reaction=self.reaction)))

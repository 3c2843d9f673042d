from django.urls import path

from . import apis

app_name = "reads"

urlpatterns = [
    path("users", apis.create_only),
    path("posts", apis.create_only),
    path("users/<str:user_id>", apis.user_detail, name="user-detail"),
    path("users/<str:user_id>/posts", apis.user_posts, name="user-posts"),
    path("posts/<str:post_id>", apis.post_detail, name="post-detail"),
    path("posts/<str:post_id>/likes", apis.post_likes, name="post-likes"),
]

import pytest


@pytest.fixture(params=["update_and_read_back", "find_and_modify"])
def post_changes(request, settings):
    """A test on both ways a post's change is applied (writes/changes.py): the embedded stand-in's,
    which the local profile sets, and MongoDB's, the production default."""
    settings.MONGODB_POST_CHANGES = request.param
    return request.param

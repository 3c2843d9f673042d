from cqrs_site.core.codec import value_decode, value_text


def test_a_value_as_the_apply_script_is_handed_it_decodes_back_to_its_version_and_body():
    body = '{"title":"café","n":1}'.encode()
    assert value_text(7, body) == '7:{"title":"café","n":1}'
    assert value_decode(value_text(7, body).encode()) == (7, body)
    assert value_decode(value_text(3, None).encode()) == (3, None)  # a tombstone: an empty body

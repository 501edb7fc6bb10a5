"""KMS tags group: create/batch/delete tags of a key, list a key's tags, list
the project's tags, filter keys by tags (resource_instances)."""

import uuid

from huaweicloudsdkkms.v2 import (
    BatchCreateKmsTagsRequest,
    BatchCreateKmsTagsRequestBody,
    CreateKmsTagRequest,
    CreateKmsTagRequestBody,
    DeleteTagRequest,
    ListKmsByTagsRequest,
    ListKmsByTagsRequestBody,
    ListKmsTagsRequest,
    ShowKmsTagsRequest,
    Tag,
    TagItem,
)

from conftest import expect_error, expect_raw_error, expect_raw_ok, unique


def add_tag(kms, key_id, k, v=None):
    return kms.create_kms_tag(
        CreateKmsTagRequest(key_id=key_id, body=CreateKmsTagRequestBody(tag=TagItem(key=k, value=v)))
    )


def batch(kms, key_id, action, tags):
    return kms.batch_create_kms_tags(
        BatchCreateKmsTagsRequest(
            key_id=key_id,
            body=BatchCreateKmsTagsRequestBody(tags=[TagItem(key=k, value=v) for k, v in tags], action=action),
        )
    )


def tags_of(kms, key_id):
    r = kms.show_kms_tags(ShowKmsTagsRequest(key_id=key_id))
    return {t.key: t.value for t in (r.tags or [])}, r.exist_tags_num


def by_tags(kms, **fields):
    return kms.list_kms_by_tags(
        ListKmsByTagsRequest(resource_instances="resource_instances", body=ListKmsByTagsRequestBody(**fields))
    )


def test_create_show_delete(kms, key):
    add_tag(kms, key, "env", "prod")
    add_tag(kms, key, "empty", "")
    tags, n = tags_of(kms, key)
    assert tags == {"env": "prod", "empty": ""}
    assert n == 2
    kms.delete_tag(DeleteTagRequest(key_id=key, key="env"))
    assert tags_of(kms, key) == ({"empty": ""}, 1)


def test_create_tag_overwrites_value(kms, key):
    # ASSUMPTION: adding an existing tag key replaces its value (Huawei's
    # TMS semantics) rather than failing.
    add_tag(kms, key, "team", "a")
    add_tag(kms, key, "team", "b")
    assert tags_of(kms, key) == ({"team": "b"}, 1)


def test_show_wire_types(mesh, kms, key):
    add_tag(kms, key, "wire", "1")
    body = expect_raw_ok(mesh.raw("GET", f"/v1.0/{{project}}/kms/{key}/tags"))
    assert body["existTagsNum"] == 1
    assert body["tags"] == [{"key": "wire", "value": "1"}]


def test_tag_key_with_space_and_slash(kms, key):
    """§2.1: the client escapes every reserved character of a path
    parameter, "/" included (DELETE .../tags/a%20b%2Fc)."""
    add_tag(kms, key, "a b/c", "v")
    add_tag(kms, key, "a b", "w")
    kms.delete_tag(DeleteTagRequest(key_id=key, key="a b/c"))
    assert tags_of(kms, key)[0] == {"a b": "w"}
    add_tag(kms, key, "ключ", "значение")
    kms.delete_tag(DeleteTagRequest(key_id=key, key="ключ"))
    assert tags_of(kms, key)[0] == {"a b": "w"}


def test_batch_create_and_delete(kms, key):
    batch(kms, key, "create", [("k1", "v1"), ("k2", "v2"), ("k3", "")])
    assert tags_of(kms, key) == ({"k1": "v1", "k2": "v2", "k3": ""}, 3)
    batch(kms, key, "delete", [("k1", "v1"), ("k3", None)])
    assert tags_of(kms, key) == ({"k2": "v2"}, 1)


def test_tag_validation(kms, key):
    # An empty key breaks the length rule (1..36): KMS.0411.
    expect_error(lambda: add_tag(kms, key, ""), "KMS.0411")
    expect_error(lambda: add_tag(kms, key, "a=b"), "KMS.0406")
    expect_error(lambda: add_tag(kms, key, "bad*"), "KMS.0406")
    expect_error(lambda: add_tag(kms, key, "k" * 37), "KMS.0411")
    expect_error(lambda: add_tag(kms, key, "ok", "v" * 44), "KMS.0410")
    expect_error(lambda: add_tag(kms, key, "ok", "<v>"), "KMS.0405")
    expect_error(lambda: add_tag(kms, key, "ok", "a\\b"), "KMS.0405")
    assert add_tag(kms, key, "k" * 36, "v" * 43) is not None
    # The SDK omits an unset tag object entirely.
    expect_error(
        lambda: kms.create_kms_tag(CreateKmsTagRequest(key_id=key, body=CreateKmsTagRequestBody())), "KMS.0204"
    )


def test_batch_validation(kms, key):
    expect_error(lambda: batch(kms, key, "create", []), "KMS.0401")
    expect_error(lambda: batch(kms, key, "update", [("a", "b")]), "KMS.0404")
    expect_error(lambda: batch(kms, key, "create", [("", "b")]), "KMS.0411")
    expect_error(lambda: batch(kms, key, "create", [("a>b", "b")]), "KMS.0406")
    expect_error(
        lambda: kms.batch_create_kms_tags(
            BatchCreateKmsTagsRequest(key_id=key, body=BatchCreateKmsTagsRequestBody(tags=[TagItem(key="a")]))
        ),
        "KMS.0204",
    )


def test_too_many_tags(kms, key):
    # Quota: 20 tags per key (edge default).
    batch(kms, key, "create", [(f"t{i}", str(i)) for i in range(20)])
    expect_error(lambda: add_tag(kms, key, "one-more", "x"), "KMS.0409")
    assert tags_of(kms, key)[1] == 20


def test_delete_missing_tag(kms, key):
    expect_error(lambda: kms.delete_tag(DeleteTagRequest(key_id=key, key="absent")), "KMS.0416")


def test_tags_of_bad_or_unknown_key(kms):
    missing = str(uuid.uuid4())
    expect_error(lambda: add_tag(kms, missing, "a", "b"), "KMS.0207")
    expect_error(lambda: tags_of(kms, missing), "KMS.0207")
    expect_error(lambda: add_tag(kms, "not-a-key", "a", "b"), "KMS.0205")
    expect_error(lambda: batch(kms, missing, "create", [("a", "b")]), "KMS.0207")


def test_encoded_slash_in_key_id_segment(mesh, key):
    """§2.1: route on the raw path split at "/", then decode each segment:
    an encoded "/" inside the key_id segment is part of an (invalid) key id,
    not a path separator."""
    resp = mesh.raw("GET", f"/v1.0/{{project}}/kms/{key}%2Fx/tags")
    expect_raw_error(resp, "KMS.0205")


def test_list_project_tags(kms, key):
    k = unique("ptag")
    add_tag(kms, key, k, "v1")
    r = kms.list_kms_tags(ListKmsTagsRequest())
    found = {t.key: sorted(t.values or []) for t in (r.tags or [])}
    assert found.get(k) == ["v1"]


def test_filter_and_count_by_tags(mesh, kms):
    label = unique("sel")
    k1, k2, k3 = mesh.new_key(), mesh.new_key(), mesh.new_key()
    add_tag(kms, k1, label, "x")
    add_tag(kms, k2, label, "y")
    add_tag(kms, k3, label + "-other", "x")

    r = by_tags(kms, action="filter", tags=[Tag(key=label, values=["x", "y"])], limit="10", offset="0")
    assert sorted(res.resource_id for res in r.resources) == sorted([k1, k2])
    assert r.total_count == 2
    res = next(res for res in r.resources if res.resource_id == k1)
    assert res.resource_detail.key_id == k1
    assert {t.key: t.value for t in res.tags} == {label: "x"}
    assert res.resource_name is not None

    r = by_tags(kms, action="filter", tags=[Tag(key=label, values=["y"])])
    assert [res.resource_id for res in r.resources] == [k2]

    r = by_tags(kms, action="count", tags=[Tag(key=label, values=[])])
    assert r.total_count == 2

    page = by_tags(kms, action="filter", tags=[Tag(key=label, values=[])], limit="1", offset="1")
    assert len(page.resources) == 1 and page.total_count == 2


def test_filter_validation(kms):
    expect_error(lambda: by_tags(kms, action="nope"), "KMS.0404")
    expect_error(lambda: by_tags(kms, action="filter", limit="0"), "KMS.1601")
    expect_error(lambda: by_tags(kms, action="filter", limit="1001"), "KMS.1601")
    # ASSUMPTION: of the two "Invalid offset." codes, the tag group's KMS.0417.
    expect_error(lambda: by_tags(kms, action="filter", offset="-1"), "KMS.0417")
    expect_error(lambda: by_tags(kms, action="filter", tags=[Tag(key="", values=["x"])]), "KMS.0411")
    expect_error(lambda: by_tags(kms, action="filter", tags=[Tag(key="a*", values=["x"])]), "KMS.0406")
    expect_error(
        lambda: by_tags(kms, action="filter", tags=[Tag(key=f"k{i}", values=["x"]) for i in range(11)]),
        "KMS.0407",
    )


def test_resource_instances_literal_only(mesh):
    """The `{resource_instances}` path segment only matches its literal."""
    resp = mesh.raw("POST", "/v1.0/{project}/kms/other_things/action", {"action": "count"})
    expect_raw_error(resp, "KMS.0201")


def test_readonly_can_read_not_write(mesh, kms, key):
    add_tag(kms, key, "ro", "1")
    ro = mesh.kms("a_readonly")
    assert tags_of(ro, key)[0] == {"ro": "1"}
    expect_error(lambda: add_tag(ro, key, "x", "y"), "KMS.0307")
    expect_error(lambda: ro.delete_tag(DeleteTagRequest(key_id=key, key="ro")), "KMS.0307")


def test_filter_by_resource_name(mesh, kms):
    """`matches` with key resource_name selects keys whose alias contains the value."""
    stem = unique("named")
    k = mesh.new_key(key_alias=stem + "-one")
    label = unique("m")
    add_tag(kms, k, label, "x")
    r = by_tags(kms, action="filter", matches=[TagItem(key="resource_name", value=stem)])
    assert [res.resource_id for res in r.resources] == [k]
    assert r.resources[0].resource_name == stem + "-one"
    r = by_tags(
        kms, action="filter", tags=[Tag(key=label, values=[])], matches=[TagItem(key="resource_name", value="zz-none")]
    )
    assert r.total_count == 0 and not r.resources


def test_filter_tag_and_match_rules(kms):
    f = lambda **kw: by_tags(kms, action="filter", **kw)  # noqa: E731
    # Keys unique; values of one key unique and at most 10.
    expect_error(lambda: f(tags=[Tag(key="a", values=["x"]), Tag(key="a", values=["y"])]), "KMS.0412")
    expect_error(lambda: f(tags=[Tag(key="a", values=[str(i) for i in range(11)])]), "KMS.0413")
    expect_error(lambda: f(tags=[Tag(key="a", values=["x", "x"])]), "KMS.0414")
    expect_error(lambda: f(tags=[Tag(values=["x"])]), "KMS.0414")
    # matches: only resource_name, once, with a non-empty value.
    expect_error(lambda: f(matches=[TagItem(key="owner", value="x")]), "KMS.0403")
    expect_error(lambda: f(matches=[TagItem(key="resource_name", value="")]), "KMS.0402")
    expect_error(lambda: f(matches=[TagItem(key="resource_name", value="v" * 256)]), "KMS.0402")
    expect_error(
        lambda: f(matches=[TagItem(key="resource_name", value="a"), TagItem(key="resource_name", value="b")]),
        "KMS.0415",
    )
    # count takes no offset.
    expect_error(lambda: by_tags(kms, action="count", offset="0"), "KMS.0418")


def test_batch_duplicate_key(kms, key):
    expect_error(lambda: batch(kms, key, "create", [("a", "1"), ("a", "2")]), "KMS.0412")

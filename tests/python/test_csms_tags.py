"""CSMS secret tags through the official client: per-secret create / list /
delete (paths use the secret ID), batch create/delete, the project's tag
summary and resource_instances filter / count."""

import pytest
from huaweicloudsdkcsms.v1 import (
    BatchCreateOrDeleteTagsRequest,
    BatchCreateOrDeleteTagsRequestBody,
    CreateSecretTagRequest,
    CreateSecretTagRequestBody,
    DeleteSecretRequest,
    DeleteSecretTagRequest,
    ListProjectSecretsTagsRequest,
    ListResourceInstancesRequest,
    ListResourceInstancesRequestBody,
    ListSecretTagsRequest,
    Tag,
    TagItem,
    TagMatches,
)

from conftest import expect_error, new_secret, unique

MISSING_ID = "0d0466b0-e727-4d9c-b35d-f84bb474a37f"


def add_tag(csms, sid, key, value=None):
    csms.create_secret_tag(CreateSecretTagRequest(secret_id=sid, body=CreateSecretTagRequestBody(tag=TagItem(key=key, value=value))))


def tags_of(csms, sid):
    r = csms.list_secret_tags(ListSecretTagsRequest(secret_id=sid))
    return {t.key: t.value for t in r.tags}


def batch(csms, sid, action, tags):
    csms.batch_create_or_delete_tags(
        BatchCreateOrDeleteTagsRequest(
            secret_id=sid,
            body=BatchCreateOrDeleteTagsRequestBody(action=action, tags=[TagItem(key=k, value=v) for k, v in tags]),
        )
    )


def instances(csms, action="filter", **kw):
    return csms.list_resource_instances(
        ListResourceInstancesRequest(resource_instances="resource_instances", body=ListResourceInstancesRequestBody(action=action, **kw))
    )


def test_tag_lifecycle(csms):
    s = new_secret(csms)
    assert tags_of(csms, s.id) == {}
    add_tag(csms, s.id, "env", "prod")
    add_tag(csms, s.id, "team a:b", "x/y:z=1+2@d.e")
    add_tag(csms, s.id, "empty", "")
    add_tag(csms, s.id, "ключ", "значение")
    assert tags_of(csms, s.id) == {"env": "prod", "team a:b": "x/y:z=1+2@d.e", "empty": "", "ключ": "значение"}
    # One value per key: setting it again replaces it.
    add_tag(csms, s.id, "env", "dev")
    assert tags_of(csms, s.id)["env"] == "dev"
    # The key is percent-encoded in the path (space, colon, Cyrillic).
    csms.delete_secret_tag(DeleteSecretTagRequest(secret_id=s.id, key="team a:b"))
    csms.delete_secret_tag(DeleteSecretTagRequest(secret_id=s.id, key="ключ"))
    assert tags_of(csms, s.id) == {"env": "dev", "empty": ""}
    expect_error(lambda: csms.delete_secret_tag(DeleteSecretTagRequest(secret_id=s.id, key="team a:b")), "CSMS.0005")
    # "/" is outside the key grammar.
    expect_error(lambda: csms.delete_secret_tag(DeleteSecretTagRequest(secret_id=s.id, key="a/b")), "CSMS.0002")


def test_tags_by_name_are_not_found(csms):
    s = new_secret(csms)
    # Tag paths take the secret ID; a name is no ID.
    expect_error(lambda: tags_of(csms, s.name), "CSMS.0005")
    expect_error(lambda: tags_of(csms, MISSING_ID), "CSMS.0005")
    expect_error(lambda: add_tag(csms, MISSING_ID, "k", "v"), "CSMS.0005")


@pytest.mark.parametrize(
    "key,value",
    [("", "v"), ("k" * 129, "v"), ("a/b", "v"), ("_sys_x", "v"), (" lead", "v"), ("trail ", "v"), ("bad*key", "v"), ("k", "v" * 256), ("k", "bad*value")],
    ids=["empty", "long-key", "slash-key", "sys", "leading-space", "trailing-space", "key-char", "long-value", "value-char"],
)
def test_invalid_tag(csms, key, value):
    s = new_secret(csms)
    expect_error(lambda: add_tag(csms, s.id, key, value), "CSMS.0002")
    assert tags_of(csms, s.id) == {}


def test_tag_quota(csms):
    s = new_secret(csms)
    batch(csms, s.id, "create", [(f"k{i}", "v") for i in range(20)])
    assert len(tags_of(csms, s.id)) == 20
    with pytest.raises(Exception) as ei:
        add_tag(csms, s.id, "k20", "v")
    assert ei.value.status_code == 400 and ei.value.error_code.startswith("CSMS."), ei.value
    # Re-setting an existing key is no new tag.
    add_tag(csms, s.id, "k0", "w")


def test_batch_create_delete(csms):
    s = new_secret(csms)
    batch(csms, s.id, "create", [("a", "1"), ("b", "2"), ("c", "3")])
    assert tags_of(csms, s.id) == {"a": "1", "b": "2", "c": "3"}
    batch(csms, s.id, "delete", [("a", None), ("c", "3")])
    assert tags_of(csms, s.id) == {"b": "2"}
    expect_error(lambda: batch(csms, s.id, "rename", [("b", "2")]), "CSMS.0002")
    # All or nothing: one bad tag, nothing applied.
    expect_error(lambda: batch(csms, s.id, "create", [("ok", "1"), ("_sys_no", "2")]), "CSMS.0002")
    assert tags_of(csms, s.id) == {"b": "2"}


def test_project_tags(csms):
    k = unique("ptag")
    s1, s2 = new_secret(csms), new_secret(csms)
    add_tag(csms, s1.id, k, "one")
    add_tag(csms, s2.id, k, "two")
    add_tag(csms, s2.id, k + "-b", "x")
    tags = {t.key: sorted(t.values) for t in csms.list_project_secrets_tags(ListProjectSecretsTagsRequest()).tags}
    assert tags[k] == ["one", "two"]
    assert tags[k + "-b"] == ["x"]
    csms.delete_secret(DeleteSecretRequest(secret_name=s2.name))
    tags = {t.key: sorted(t.values) for t in csms.list_project_secrets_tags(ListProjectSecretsTagsRequest()).tags}
    assert tags[k] == ["one"]
    assert k + "-b" not in tags


def test_resource_instances_filter_and_count(csms):
    k = unique("ri")
    names = []
    for i, v in enumerate(["red", "red", "blue", "green"]):
        s = new_secret(csms, name=f"{k}-{i}")
        add_tag(csms, s.id, k, v)
        names.append(s.name)
    untagged = new_secret(csms, name=f"{k}-x")

    r = instances(csms, tags=[Tag(key=k, values=["red"])], limit="100")
    assert r.total_count == 2
    assert sorted(x.resource_name for x in r.resources) == names[:2]
    one = r.resources[0]
    assert one.resource_id == one.resource_detail.id
    assert one.resource_detail.name == one.resource_name
    assert {(t.key, t.value) for t in one.tags} == {(k, "red")}
    assert one.sys_tags == []

    # OR within a key's values; empty values = any value.
    assert instances(csms, tags=[Tag(key=k, values=["red", "green"])]).total_count == 3
    assert instances(csms, tags=[Tag(key=k, values=[])], limit="100").total_count == 4

    # count: only the total.
    c = instances(csms, action="count", tags=[Tag(key=k, values=[])])
    assert c.total_count == 4
    assert not c.resources

    # Paging with limit/offset.
    p1 = instances(csms, tags=[Tag(key=k, values=[])], limit="3", offset="0")
    p2 = instances(csms, tags=[Tag(key=k, values=[])], limit="3", offset="3")
    assert (len(p1.resources), len(p2.resources), p1.total_count, p2.total_count) == (3, 1, 4, 4)
    assert len({x.resource_id for x in p1.resources + p2.resources}) == 4

    # Fuzzy match on the name (finds the untagged one too).
    m = instances(csms, matches=[TagMatches(key="resource_name", value=k)], limit="100")
    assert sorted(x.resource_name for x in m.resources) == sorted(names + [untagged.name])


@pytest.mark.parametrize(
    "kw",
    [
        {"action": "explode"},
        {"action": "filter", "limit": "0"},
        {"action": "filter", "limit": "1001"},
        {"action": "filter", "offset": "-1"},
        {"action": "filter", "matches": [TagMatches(key="other", value="x")]},
        {"action": "filter", "tags": [Tag(key=f"k{i}", values=[]) for i in range(11)]},
    ],
    ids=["action", "limit0", "limit-big", "offset", "match-key", "11-tags"],
)
def test_resource_instances_invalid(csms, kw):
    kw = dict(kw)  # shared by both store parametrisations
    action = kw.pop("action")
    expect_error(lambda: instances(csms, action=action, **kw), "CSMS.0002")


def test_resource_instances_other_literal(mesh):
    from conftest import expect_raw_error

    expect_raw_error(mesh.raw("POST", "/v1/{project}/csms/resource_instance/action", {"action": "count"}), "CSMS.0003")

"""KMS aliases group: update-key-alias, update-key-description and the alias
resources (create, list, delete, associate)."""

import uuid

from huaweicloudsdkkms.v2 import (
    AssociateAliasRequest,
    AssociateAliasRequestBody,
    CreateAliasRequest,
    CreateAliasRequestBody,
    DeleteAliasRequest,
    DeleteAliasRequestBody,
    DeleteKeyRequest,
    ListAliasesRequest,
    ScheduleKeyDeletionRequestBody,
    UpdateKeyAliasRequest,
    UpdateKeyAliasRequestBody,
    UpdateKeyDescriptionRequest,
    UpdateKeyDescriptionRequestBody,
)

from conftest import describe, expect_error, expect_raw_ok, unique


def update_alias(kms, key_id, alias):
    return kms.update_key_alias(UpdateKeyAliasRequest(body=UpdateKeyAliasRequestBody(key_id=key_id, key_alias=alias)))


def update_description(kms, key_id, text):
    return kms.update_key_description(
        UpdateKeyDescriptionRequest(body=UpdateKeyDescriptionRequestBody(key_id=key_id, key_description=text))
    )


def create_alias(kms, key_id, alias):
    return kms.create_alias(CreateAliasRequest(body=CreateAliasRequestBody(key_id=key_id, alias=alias)))


def list_aliases(kms, key_id=None, **q):
    """The aliases of one ListAliasResponseBody (the client wraps the
    document in a one-element list)."""
    r = kms.list_aliases(ListAliasesRequest(key_id=key_id, **q))
    body = r.body[0] if isinstance(r.body, list) else r.body
    return body


def alias_names(kms, key_id=None):
    return [a.alias for a in (list_aliases(kms, key_id).aliases or [])]


def new_alias():
    return "alias/" + unique("al")


# ---------------------------------------------------------------- key_alias / description


def test_update_key_alias(kms, key):
    alias = unique("renamed")
    r = update_alias(kms, key, alias)
    assert (r.key_info.key_id, r.key_info.key_alias) == (key, alias)
    assert describe(kms, key).key_alias == alias


def test_update_key_alias_errors(mesh, kms, key):
    for bad in ["bad alias", "x" * 256, "ä"]:
        expect_error(lambda: update_alias(kms, key, bad), "KMS.1101")
    taken = describe(kms, mesh.new_key()).key_alias
    expect_error(lambda: update_alias(kms, key, taken), "KMS.1104")
    expect_error(lambda: update_alias(kms, key, None), "KMS.0204")
    expect_error(lambda: update_alias(kms, str(uuid.uuid4()), unique()), "KMS.0207")
    expect_error(lambda: update_alias(kms, "bad", unique()), "KMS.0205")


def test_update_key_alias_default_suffix_refused(kms, key):
    # ASSUMPTION: a customer key may not take a service-default alias
    # ("<service>/default", §2.7): KMS.1101 (invalid key_alias).
    expect_error(lambda: update_alias(kms, key, "obs/default"), "KMS.1101")


def test_update_description(kms, key):
    r = update_description(kms, key, "new text")
    assert (r.key_info.key_id, r.key_info.key_description) == (key, "new text")
    assert describe(kms, key).key_description == "new text"
    update_description(kms, key, "")
    assert describe(kms, key).key_description == ""
    expect_error(lambda: update_description(kms, key, "d" * 256), "KMS.1103")
    expect_error(lambda: update_description(kms, key, None), "KMS.0204")


def test_update_pending_deletion_key(kms, key):
    kms.delete_key(DeleteKeyRequest(body=ScheduleKeyDeletionRequestBody(key_id=key, pending_days="7")))
    # §6: not allowed for keys pending deletion → KMS.0210.
    expect_error(lambda: update_alias(kms, key, unique()), "KMS.0210")
    expect_error(lambda: update_description(kms, key, "x"), "KMS.0210")


# ---------------------------------------------------------------- alias resources


def test_alias_lifecycle(mesh, kms, key):
    alias = new_alias()
    r = create_alias(kms, key, alias)
    assert (r.key_id, r.alias) == (key, alias)
    assert r.alias_urn and r.domain_id
    assert alias in alias_names(kms, key)
    assert alias in alias_names(kms)

    other = mesh.new_key()
    r = kms.associate_alias(AssociateAliasRequest(body=AssociateAliasRequestBody(alias=alias, target_key_id=other)))
    assert (r.key_id, r.alias) == (other, alias)
    assert alias not in alias_names(kms, key)
    assert alias in alias_names(kms, other)

    kms.delete_alias(DeleteAliasRequest(body=DeleteAliasRequestBody(aliases=[alias], key_id=other)))
    assert alias not in alias_names(kms, other)
    assert alias not in alias_names(kms)


def test_list_aliases_wire_types(mesh, kms, key):
    create_alias(kms, key, new_alias())
    body = expect_raw_ok(mesh.raw("GET", "/v1.0/{project}/kms/aliases", query=[("key_id", key)]))
    if isinstance(body, list):
        body = body[0]
    assert isinstance(body["page_info"]["current_count"], int)
    assert body["page_info"]["current_count"] == len(body["aliases"]) == 1


def test_list_aliases_pagination(kms, key):
    created = {new_alias() for _ in range(3)}
    for a in created:
        create_alias(kms, key, a)
    seen, marker = [], None
    for _ in range(5):
        page = list_aliases(kms, key, limit="2", marker=marker)
        seen += [a.alias for a in page.aliases]
        marker = page.page_info.next_marker
        if not marker:
            break
    assert sorted(seen) == sorted(created)


def test_create_alias_errors(kms, key):
    alias = new_alias()
    create_alias(kms, key, alias)
    expect_error(lambda: create_alias(kms, key, alias), "KMS.1104")
    expect_error(lambda: create_alias(kms, key, "alias/has space"), "KMS.1101")
    expect_error(lambda: create_alias(kms, key, None), "KMS.0204")
    expect_error(lambda: create_alias(kms, None, new_alias()), "KMS.0204")
    expect_error(lambda: create_alias(kms, str(uuid.uuid4()), new_alias()), "KMS.0207")
    expect_error(lambda: create_alias(kms, "bad", new_alias()), "KMS.0205")


def test_associate_alias_errors(kms, key):
    alias = new_alias()
    create_alias(kms, key, alias)
    assoc = lambda a, k: kms.associate_alias(  # noqa: E731
        AssociateAliasRequest(body=AssociateAliasRequestBody(alias=a, target_key_id=k))
    )
    expect_error(lambda: assoc(alias, str(uuid.uuid4())), "KMS.0207")
    expect_error(lambda: assoc(alias, None), "KMS.0204")
    # ASSUMPTION: an alias resource that does not exist is an invalid alias (KMS.1101).
    expect_error(lambda: assoc(new_alias(), key), "KMS.1101")


def test_delete_alias_errors(kms, key):
    expect_error(
        lambda: kms.delete_alias(DeleteAliasRequest(body=DeleteAliasRequestBody(key_id=key))), "KMS.0204"
    )
    # ASSUMPTION: deleting an alias the key does not have is KMS.1101.
    expect_error(
        lambda: kms.delete_alias(DeleteAliasRequest(body=DeleteAliasRequestBody(aliases=[new_alias()], key_id=key))),
        "KMS.1101",
    )


def test_readonly_can_list_not_create(mesh, kms, key):
    alias = new_alias()
    create_alias(kms, key, alias)
    ro = mesh.kms("a_readonly")
    assert alias in alias_names(ro, key)
    expect_error(lambda: create_alias(ro, key, new_alias()), "KMS.0307")
    expect_error(lambda: update_alias(ro, key, unique()), "KMS.0307")

"""KMS grants group: create-grant, list-grants, revoke-grant, retire-grant,
list-retirable-grants."""

import re
import uuid

from huaweicloudsdkkms.v2 import (
    CancelGrantRequest,
    CancelSelfGrantRequest,
    CreateGrantRequest,
    CreateGrantRequestBody,
    ListGrantsRequest,
    ListGrantsRequestBody,
    ListRetirableGrantsRequest,
    ListRetirableGrantsRequestBody,
    RevokeGrantRequestBody,
)

from conftest import expect_error, expect_raw_error, expect_raw_ok, unique

GRANT_RE = re.compile(r"^[0-9a-fA-F]{64}$")
GRANTEE = "0123456789abcdef0123456789abcdef"


def create(kms, key_id, ops=("encrypt-data", "decrypt-data"), grantee=GRANTEE, **fields):
    return kms.create_grant(
        CreateGrantRequest(
            body=CreateGrantRequestBody(
                key_id=key_id, grantee_principal=grantee, operations=list(ops) if ops else None, **fields
            )
        )
    ).grant_id


def grants_of(kms, key_id, **fields):
    return kms.list_grants(ListGrantsRequest(body=ListGrantsRequestBody(key_id=key_id, **fields)))


def revoke(kms, key_id, grant_id):
    return kms.cancel_grant(CancelGrantRequest(body=RevokeGrantRequestBody(key_id=key_id, grant_id=grant_id)))


def retire(kms, key_id, grant_id):
    return kms.cancel_self_grant(
        CancelSelfGrantRequest(body=RevokeGrantRequestBody(key_id=key_id, grant_id=grant_id))
    )


def retirable(kms, **fields):
    return kms.list_retirable_grants(ListRetirableGrantsRequest(body=ListRetirableGrantsRequestBody(**fields)))


def test_create_list_revoke(mesh, kms, key):
    name = unique("grant")
    gid = create(kms, key, name=name, grantee_principal_type="user")
    assert GRANT_RE.match(gid)
    r = grants_of(kms, key)
    assert r.total == 1 and r.truncated == "false"
    g = r.grants[0]
    assert (g.key_id, g.grant_id, g.grantee_principal, g.name) == (key, gid, GRANTEE, name)
    assert sorted(g.operations) == ["decrypt-data", "encrypt-data"]
    assert g.grantee_principal_type == "user"
    assert g.issuing_principal == mesh.accounts["a_full"]["user_id"]
    assert g.creation_date.isdigit()
    revoke(kms, key, gid)
    assert grants_of(kms, key).total == 0
    expect_error(lambda: revoke(kms, key, gid), "KMS.2501")


def test_list_grants_pagination_and_types(mesh, kms, key):
    ids = {create(kms, key) for _ in range(3)}
    seen, marker = [], None
    for _ in range(4):
        r = grants_of(kms, key, limit="2", marker=marker)
        seen += [g.grant_id for g in r.grants]
        if r.truncated == "false":
            break
        marker = r.next_marker
    assert sorted(seen) == sorted(ids)
    body = expect_raw_ok(mesh.raw("POST", "/v1.0/{project}/kms/list-grants", {"key_id": key, "limit": 1}))
    assert body["truncated"] == "true" and isinstance(body["total"], int) and body["total"] == 3
    expect_error(lambda: grants_of(kms, key, limit="0"), "KMS.1601")


def test_retire_by_retiring_principal(mesh, kms, key):
    me = mesh.accounts["a_full"]["user_id"]
    gid = create(kms, key, retiring_principal=me)
    assert gid in [g.grant_id for g in retirable(kms).grants]
    retire(kms, key, gid)
    assert grants_of(kms, key).total == 0
    assert gid not in [g.grant_id for g in retirable(kms).grants]


def test_retire_by_grantee_with_token(mesh, kms, key):
    """Another user of project A (authenticated by X-Auth-Token): as grantee
    it may retire a grant; list-retirable-grants shows the grants that name
    it as retiring principal (as AWS's ListRetirableGrants does)."""
    other = mesh.info["users"]["a_other"]
    token = mesh.tokens["a_other_user"]
    as_grantee = create(kms, key, grantee=other)
    as_retiree = create(kms, key, retiring_principal=other)
    body = expect_raw_ok(mesh.token_request("POST", "/v1.0/{project}/kms/list-retirable-grants", token, {}))
    assert [g["grant_id"] for g in body["grants"]] == [as_retiree]
    assert body["truncated"] == "false" and body["total"] == 1
    for gid in (as_grantee, as_retiree):
        expect_raw_ok(
            mesh.token_request("POST", "/v1.0/{project}/kms/retire-grant", token, {"key_id": key, "grant_id": gid})
        )
    assert grants_of(kms, key).total == 0


def test_retire_by_unrelated_user(mesh, kms, key):
    """Neither grantee, retiring principal nor creator: no access (KMS.0306)."""
    gid = create(kms, key)
    resp = mesh.token_request(
        "POST", "/v1.0/{project}/kms/retire-grant", mesh.tokens["a_other_user"], {"key_id": key, "grant_id": gid}
    )
    expect_raw_error(resp, "KMS.0306")
    assert grants_of(kms, key).total == 1


def test_create_grant_validation(kms, key):
    expect_error(lambda: create(kms, key, ops=["create-grant"]), "KMS.2401")
    expect_error(lambda: create(kms, key, ops=None), "KMS.0204")
    expect_error(lambda: create(kms, key, grantee=None), "KMS.0204")
    expect_error(lambda: create(kms, key, grantee="not valid!"), "KMS.2402")
    expect_error(lambda: create(kms, key, grantee="u" * 65), "KMS.2402")
    expect_error(lambda: create(kms, str(uuid.uuid4())), "KMS.0207")
    expect_error(lambda: create(kms, "bad"), "KMS.0205")
    # ASSUMPTION: an operation name outside the enumeration → KMS.0308.
    expect_error(lambda: create(kms, key, ops=["encrypt-data", "sign"]), "KMS.0308")
    assert GRANT_RE.match(create(kms, key, ops=["create-grant", "describe-key"]))


def test_revoke_and_retire_errors(mesh, kms, key):
    gid = create(kms, key)
    other_key = mesh.new_key()
    expect_error(lambda: revoke(kms, key, "not-a-grant"), "KMS.2501")
    expect_error(lambda: revoke(kms, key, "ab" * 32), "KMS.2501")
    expect_error(lambda: retire(kms, key, "ab" * 32), "KMS.2501")
    expect_error(lambda: revoke(kms, other_key, gid), "KMS.2502")
    expect_error(lambda: retire(kms, other_key, gid), "KMS.2502")
    expect_error(lambda: revoke(kms, key, None), "KMS.0204")
    expect_error(lambda: revoke(kms, str(uuid.uuid4()), gid), "KMS.0207")


def test_readonly_lists_but_cannot_grant(mesh, kms, key):
    gid = create(kms, key)
    ro = mesh.kms("a_readonly")
    assert [g.grant_id for g in grants_of(ro, key).grants] == [gid]
    expect_error(lambda: create(ro, key), "KMS.0307")
    expect_error(lambda: revoke(ro, key, gid), "KMS.0307")


def test_grant_wire_shape(mesh, key):
    body = expect_raw_ok(
        mesh.raw(
            "POST",
            "/v1.0/{project}/kms/create-grant",
            {"key_id": key, "grantee_principal": GRANTEE, "operations": ["describe-key", "encrypt-data"]},
        )
    )
    assert GRANT_RE.match(body["grant_id"])
    # operations must be an array of strings.
    expect_raw_error(
        mesh.raw(
            "POST",
            "/v1.0/{project}/kms/create-grant",
            {"key_id": key, "grantee_principal": GRANTEE, "operations": "describe-key"},
        ),
        "KMS.0202",
    )

"""Authentication and tenancy: X-Auth-Token (raw requests, the SDK does not
speak tokens), SDK-HMAC-SHA256 failures, read-only role, project isolation."""

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkkms.v2 import (
    CreateAliasRequest,
    CreateAliasRequestBody,
    CreateGrantRequest,
    CreateGrantRequestBody,
    CreateKmsTagRequest,
    CreateKmsTagRequestBody,
    DecryptDataRequest,
    DecryptDataRequestBody,
    EncryptDataRequest,
    EncryptDataRequestBody,
    ListAliasesRequest,
    ListGrantsRequest,
    ListGrantsRequestBody,
    ListKeyDetailRequest,
    ListKeysRequest,
    ListKeysRequestBody,
    ListKmsByTagsRequest,
    ListKmsByTagsRequestBody,
    ListKmsTagsRequest,
    OperateKeyRequestBody,
    ShowKmsTagsRequest,
    Tag,
    TagItem,
)

from conftest import expect_error, expect_raw_error, expect_raw_ok, plaintext, unique

LIST_KEYS = "/v1.0/{project}/kms/list-keys"


# ---------------------------------------------------------------- X-Auth-Token


def test_valid_token(mesh, shared_key):
    body = expect_raw_ok(mesh.token_request("POST", LIST_KEYS, mesh.tokens["a_valid"], {"limit": "1000"}))
    assert shared_key in body["keys"]
    body = expect_raw_ok(
        mesh.token_request("POST", "/v1.0/{project}/kms/describe-key", mesh.tokens["a_valid"], {"key_id": shared_key})
    )
    assert body["key_info"]["key_id"] == shared_key


def test_valid_token_can_write(mesh):
    body = expect_raw_ok(
        mesh.token_request("POST", "/v1.0/{project}/kms/create-key", mesh.tokens["a_valid"], {"key_alias": unique("tok")})
    )
    assert body["key_info"]["key_id"]


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 5000])
def test_null_or_garbage_token(mesh, token):
    expect_raw_error(mesh.token_request("POST", LIST_KEYS, token, {}), "KMS.0301")


def test_token_bad_signature(mesh):
    expect_raw_error(mesh.token_request("POST", LIST_KEYS, mesh.tokens["a_bad_signature"], {}), "KMS.0302")


def test_token_expired(mesh):
    expect_raw_error(mesh.token_request("POST", LIST_KEYS, mesh.tokens["a_expired"], {}), "KMS.0303")


def test_token_obt(mesh):
    expect_raw_error(mesh.token_request("POST", LIST_KEYS, mesh.tokens["a_obt"], {}), "KMS.0304")


def test_token_without_project(mesh):
    expect_raw_error(mesh.token_request("POST", LIST_KEYS, mesh.tokens["no_project"], {}), "KMS.0305")


def test_token_of_other_project(mesh):
    """B's token on A's URL: the URI and the token do not match."""
    expect_raw_error(mesh.token_request("POST", LIST_KEYS, mesh.tokens["b_valid"], {}), "KMS.0321")
    # ... and on its own project it works.
    expect_raw_ok(mesh.token_request("POST", LIST_KEYS, mesh.tokens["b_valid"], {}, project=mesh.project_b))


def test_readonly_token(mesh, shared_key):
    tok = mesh.tokens["a_readonly"]
    expect_raw_ok(mesh.token_request("POST", "/v1.0/{project}/kms/describe-key", tok, {"key_id": shared_key}))
    expect_raw_error(
        mesh.token_request("POST", "/v1.0/{project}/kms/disable-key", tok, {"key_id": shared_key}), "KMS.0307"
    )


def test_no_credentials_at_all(mesh):
    """Neither Authorization nor X-Auth-Token. DECISION: the token path
    answers, since a request without any credential is a "null X-Auth-Token"
    to Huawei KMS (403 KMS.0301)."""
    expect_raw_error(mesh.token_request("POST", LIST_KEYS, None, {}), "KMS.0301")


# ---------------------------------------------------------------- AK/SK signature


def _assert_401(resp):
    # The published table has no code for signature failures; the edge
    # answers the way Huawei's API gateway does. Only the status is pinned.
    assert resp.status_code == 401, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) >= {"error_code", "error_msg"}
    assert resp.headers.get("X-Request-Id")


def test_signed_request_ok(mesh):
    expect_raw_ok(mesh.raw("POST", LIST_KEYS, {}))


def test_wrong_secret(mesh):
    acc = mesh.accounts["a_full"]
    sk = acc["secret_key"]
    wrong = {**acc, "secret_key": sk[:-1] + ("A" if sk[-1] != "A" else "B")}
    _assert_401(mesh.raw("POST", LIST_KEYS, {}, who=wrong))


def test_unknown_access_key(mesh):
    unknown = {**mesh.accounts["a_full"], "access_key": "UNKNOWNAK" + uuid.uuid4().hex[:12].upper()}
    _assert_401(mesh.raw("POST", LIST_KEYS, {}, who=unknown))


def test_stale_sdk_date(mesh):
    stale = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
    _assert_401(mesh.raw("POST", LIST_KEYS, {}, headers={"X-Sdk-Date": stale}))
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
    _assert_401(mesh.raw("POST", LIST_KEYS, {}, headers={"X-Sdk-Date": future}))


def test_date_within_skew_accepted(mesh):
    recent = datetime.fromtimestamp(time.time() - 300, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    expect_raw_ok(mesh.raw("POST", LIST_KEYS, {}, headers={"X-Sdk-Date": recent}))


def test_body_changed_after_signing(mesh, shared_key):
    # Sign one body, send another: the payload hash no longer matches.
    acc = mesh.accounts["a_full"]
    path = f"/v1.0/{acc['project_id']}/kms/describe-key"
    req = SdkRequest(
        method="POST",
        schema="http",
        host=mesh.endpoint.split("://", 1)[1],
        resource_path=path,
        query_params=[],
        header_params={
            "Content-Type": "application/json;charset=utf-8",
            "X-Project-Id": acc["project_id"],
            "User-Agent": "keymesh-e2e",
        },
        body=b'{"key_id": "%s"}' % shared_key.encode(),
    )
    req = Signer(BasicCredentials(acc["access_key"], acc["secret_key"], acc["project_id"])).sign(req)
    resp = mesh._session.post(mesh.endpoint + req.uri, headers=req.header_params, data=b'{"key_id": "x"}')
    _assert_401(resp)


def test_unsigned_with_access_key_header(mesh):
    resp = mesh.raw(
        "POST",
        LIST_KEYS,
        {},
        sign=False,
        headers={"Authorization": "SDK-HMAC-SHA256 Access=x, SignedHeaders=host, Signature=00"},
    )
    _assert_401(resp)


def test_project_header_must_match_path(mesh):
    """X-Project-Id (signed) must equal the {project_id} path segment.
    TODO(edge): the table has no dedicated code; ASSUMPTION: 403 KMS.0306."""
    resp = mesh.raw("POST", LIST_KEYS, {}, headers={"X-Project-Id": mesh.project_b})
    expect_raw_error(resp, "KMS.0306")


def test_account_used_on_other_project(mesh):
    """A's AK/SK on B's path (consistent X-Project-Id): the project does not
    belong to the account. ASSUMPTION: 403 KMS.0306."""
    path = f"/v1.0/{mesh.project_b}/kms/list-keys"
    resp = mesh.raw("POST", path, {}, headers={"X-Project-Id": mesh.project_b})
    expect_raw_error(resp, "KMS.0306")


# ---------------------------------------------------------------- isolation


def test_project_b_never_sees_project_a(mesh, kms):
    b = mesh.kms("b_full")
    key = mesh.new_key(key_alias=unique("iso"))
    label = unique("isotag")
    kms.create_kms_tag(CreateKmsTagRequest(key_id=key, body=CreateKmsTagRequestBody(tag=TagItem(key=label, value="v"))))
    alias = "alias/" + unique("iso")
    kms.create_alias(CreateAliasRequest(body=CreateAliasRequestBody(key_id=key, alias=alias)))
    kms.create_grant(
        CreateGrantRequest(
            body=CreateGrantRequestBody(key_id=key, grantee_principal="abc123", operations=["describe-key"])
        )
    )
    cipher = kms.encrypt_data(
        EncryptDataRequest(body=EncryptDataRequestBody(key_id=key, plain_text=plaintext(24)))
    ).cipher_text

    expect_error(lambda: b.list_key_detail(ListKeyDetailRequest(body=OperateKeyRequestBody(key_id=key))), "KMS.0207")
    expect_error(
        lambda: b.encrypt_data(EncryptDataRequest(body=EncryptDataRequestBody(key_id=key, plain_text=plaintext(8)))),
        "KMS.0207",
    )
    expect_error(
        lambda: b.decrypt_data(DecryptDataRequest(body=DecryptDataRequestBody(cipher_text=cipher))), "KMS.0207"
    )
    expect_error(lambda: b.show_kms_tags(ShowKmsTagsRequest(key_id=key)), "KMS.0207")
    expect_error(
        lambda: b.create_kms_tag(CreateKmsTagRequest(key_id=key, body=CreateKmsTagRequestBody(tag=TagItem(key="x")))),
        "KMS.0207",
    )
    expect_error(lambda: b.list_grants(ListGrantsRequest(body=ListGrantsRequestBody(key_id=key))), "KMS.0207")
    expect_error(
        lambda: b.create_alias(CreateAliasRequest(body=CreateAliasRequestBody(key_id=key, alias="alias/" + unique()))),
        "KMS.0207",
    )

    assert key not in (b.list_keys(ListKeysRequest(body=ListKeysRequestBody(key_spec="ALL", limit="1000"))).keys or [])
    b_tags = [t.key for t in (b.list_kms_tags(ListKmsTagsRequest()).tags or [])]
    assert label not in b_tags
    r = b.list_kms_by_tags(
        ListKmsByTagsRequest(
            resource_instances="resource_instances",
            body=ListKmsByTagsRequestBody(action="count", tags=[Tag(key=label, values=[])]),
        )
    )
    assert r.total_count == 0
    lr = b.list_aliases(ListAliasesRequest())
    body = lr.body[0] if isinstance(lr.body, list) else lr.body
    assert alias not in [a.alias for a in (body.aliases or [])]


def test_names_are_per_project(mesh, kms):
    """key_alias and alias names are unique per project, not globally."""
    b = mesh.kms("b_full")
    name = unique("same")
    ka = mesh.new_key(key_alias=name)
    kb = mesh.new_key("b_full", key_alias=name)
    assert ka != kb
    alias = "alias/" + unique("same")
    kms.create_alias(CreateAliasRequest(body=CreateAliasRequestBody(key_id=ka, alias=alias)))
    b.create_alias(CreateAliasRequest(body=CreateAliasRequestBody(key_id=kb, alias=alias)))

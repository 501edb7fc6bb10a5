"""Wire-level rules, with hand-made (but correctly signed) requests:
unknown paths, wrong methods, malformed and oversized bodies, error shape,
X-Request-Id on every response."""

import pytest

from conftest import expect_raw_error, expect_raw_ok


def test_unknown_path(mesh):
    expect_raw_error(mesh.raw("POST", "/v1.0/{project}/kms/no-such-operation", {}), "KMS.0201")
    expect_raw_error(mesh.raw("POST", "/v1.0/{project}/kms/describe-key/extra", {}), "KMS.0201")
    expect_raw_error(mesh.raw("GET", "/v1.0/{project}/nothing-here"), "KMS.0201")


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1.0/{project}/kms/create-key"),
        ("PUT", "/v1.0/{project}/kms/describe-key"),
        ("DELETE", "/v1.0/{project}/kms/list-keys"),
        ("POST", "/v1.0/{project}/kms/user-quotas"),
        ("PUT", "/v1.0/{project}/kms/aliases"),
        ("GET", "/v1.0/{project}/kms/resource_instances/action"),
    ],
)
def test_wrong_method(mesh, method, path):
    resp = mesh.raw(method, path, {} if method != "GET" else None)
    expect_raw_error(resp, "KMS.0215")


@pytest.mark.parametrize(
    "body",
    [b'{"key_id": ', b"not json", b'{"key_id": "a"} trailing', b"\xff\xfe{}", b"[]", b'"string"', b"42"],
)
def test_malformed_json(mesh, body):
    expect_raw_error(mesh.raw("POST", "/v1.0/{project}/kms/describe-key", body), "KMS.0202")


def test_empty_body_means_missing_parameters(mesh):
    expect_raw_error(mesh.raw("POST", "/v1.0/{project}/kms/describe-key", b""), "KMS.0204")


def test_body_too_long(mesh):
    # Above any legitimate KMS body (the largest is ~25 KiB).
    huge = b'{"key_id": "' + b"a" * (1 << 20) + b'"}'
    expect_raw_error(mesh.raw("POST", "/v1.0/{project}/kms/describe-key", huge), "KMS.0203")


def test_body_just_under_limit_is_parsed(mesh):
    # 60 KiB of valid JSON reaches the handler (which then rejects the value).
    big = b'{"key_id": "' + b"a" * (60 * 1024) + b'"}'
    expect_raw_error(mesh.raw("POST", "/v1.0/{project}/kms/describe-key", big), "KMS.0205")


def test_request_id_on_success_and_error(mesh):
    ok = mesh.raw("POST", "/v1.0/{project}/kms/list-keys", {})
    expect_raw_ok(ok)
    err = mesh.raw("POST", "/v1.0/{project}/kms/nope", {})
    assert err.headers.get("X-Request-Id")
    assert ok.headers["X-Request-Id"] != err.headers["X-Request-Id"]


def test_error_is_json_not_xml(mesh):
    resp = mesh.raw("POST", "/v1.0/{project}/kms/describe-key", b"{")
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.startswith("application/json"), ctype


def test_plain_application_json_content_type(mesh):
    """Some operations are sent with `application/json`, others with
    `application/json;charset=utf-8` (§2.2): both work everywhere."""
    expect_raw_ok(mesh.raw("POST", "/v1.0/{project}/kms/list-keys", {}, content_type="application/json"))
    expect_raw_ok(mesh.raw("GET", "/v1.0/{project}/kms/aliases", content_type="application/json;charset=utf-8"))


def test_query_string_is_signed_and_parsed(mesh):
    """§2.1: the query is sorted and RFC 3986 encoded; the marker may hold
    characters that need escaping."""
    resp = mesh.raw("GET", "/v1.0/{project}/kms/aliases", query=[("limit", "5"), ("marker", "")])
    expect_raw_ok(resp)


def test_xks_paths_still_served(mesh):
    """The Huawei dialect shares the listener with XKS: an XKS path still
    reaches the XKS handler (SigV4 missing → XKS error, not a KMS.* body)."""
    resp = mesh._session.post(mesh.endpoint + "/tenant-a/kms/xks/v1/health", data=b"{}", timeout=30)
    assert resp.status_code in (400, 401, 403)
    assert "KMS.0201" not in resp.text


def test_connection_reuse_after_early_errors(mesh):
    """Errors answered before the body is read (unknown path, wrong method)
    must not leave a keep-alive connection that the server then drops: the
    official client pools connections, so its next call would fail with
    "Remote end closed connection without response". Either the body is
    drained or the answer says `Connection: close`."""
    failures = []
    for i in range(40):
        bad = mesh.raw("POST", "/v1.0/{project}/kms/no-such-op", {"key_id": "x" * 100})
        expect_raw_error(bad, "KMS.0201")
        try:
            mesh.raw("POST", "/v1.0/{project}/kms/list-keys", {"limit": "1"})
        except Exception as e:  # requests.ConnectionError
            failures.append(f"round {i}: {e!r}"[:160])
    assert not failures, f"{len(failures)}/40 follow-up requests lost their connection: {failures[:3]}"

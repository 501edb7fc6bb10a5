"""CSMS wire rules and tenancy: project isolation, the read-only role,
X-Auth-Token and signature failures, malformed / oversized bodies, odd
paths, wrong methods and the operations keymesh recognises but does not
serve (all CSMS.0003)."""

import pytest
from huaweicloudsdkcsms.v1 import (
    CheckSecretsRequest,
    CheckSecretsRequestBody,
    CreateAgencyRequest,
    CreateAgencyRequestBody,
    CreateGrantsRequest,
    CreateSecretEventRequest,
    CreateSecretEventRequestBody,
    CreateSecretRequest,
    CreateSecretRequestBody,
    CreateSecretVersionRequest,
    CreateSecretVersionRequestBody,
    DeleteSecretRequest,
    DownloadSecretBlobRequest,
    GrantSecretReqBody,
    ListGrantsRequest,
    ListNotificationRecordsRequest,
    ListSecretEventsRequest,
    ListSecretsRequest,
    ListSecretTagsRequest,
    ListSecretTaskRequest,
    ListSecretVersionsRequest,
    ListUsersRequest,
    Notification,
    RotateSecretRequest,
    ShowAgencyRequest,
    ShowSecretEventRequest,
    ShowSecretFunctionTemplatesRequest,
    ShowSecretRequest,
    ShowSecretsConfigRequest,
    ShowSecretVersionRequest,
    ShowUserDetailRequest,
    UpdateSecretRequest,
    UpdateSecretRequestBody,
)

from conftest import CODES, expect_error, expect_raw_error, expect_raw_ok, new_secret, plaintext, unique

SECRETS = "/v1/{project}/secrets"


def all_names(client):
    names, marker = [], None
    while True:
        r = client.list_secrets(ListSecretsRequest(limit="50", marker=marker))
        names += [s.name for s in r.secrets]
        marker = r.page_info.next_marker
        if not marker:
            return names


# ---------------------------------------------------------------- tenancy


def test_project_isolation(mesh, csms):
    s = new_secret(csms)
    b = mesh.csms("b_full")
    assert s.name not in all_names(b)
    expect_error(lambda: b.show_secret(ShowSecretRequest(secret_name=s.name)), "CSMS.0106")
    expect_error(lambda: b.show_secret_version(ShowSecretVersionRequest(secret_name=s.name, version_id="latest")), "CSMS.0106")
    expect_error(lambda: b.delete_secret(DeleteSecretRequest(secret_name=s.name)), "CSMS.0106")
    expect_error(lambda: b.download_secret_blob(DownloadSecretBlobRequest(secret_name=s.name)), "CSMS.0106")
    # Tags are addressed by ID: another project's ID is not found.
    expect_error(lambda: b.list_secret_tags(ListSecretTagsRequest(secret_id=s.id)), "CSMS.0005")
    # B may use the same name for its own secret; they stay apart.
    sb = new_secret(b, name=s.name, secret_string="bee")
    assert sb.id != s.id
    a_v = csms.show_secret_version(ShowSecretVersionRequest(secret_name=s.name, version_id="latest")).version
    b_v = b.show_secret_version(ShowSecretVersionRequest(secret_name=s.name, version_id="latest")).version
    assert (a_v.secret_string, b_v.secret_string) == (plaintext(40), "bee")


def test_other_projects_path_is_refused(mesh, csms):
    s = new_secret(csms)
    # B's AK/SK on A's path (and X-Project-Id of A): no access.
    resp = mesh.raw("GET", f"/v1/{mesh.project_a}/secrets/{s.name}", who="b_full", content_type="application/json",
                    headers={"X-Project-Id": mesh.project_a})
    expect_raw_error(resp, "CSMS.0302")
    resp = mesh.raw("GET", f"/v1/{mesh.project_a}/secrets/{s.name}", who="b_full", content_type="application/json")
    expect_raw_error(resp, "CSMS.0302")


def test_readonly(mesh, csms):
    s = new_secret(csms)
    ro = mesh.csms("a_readonly")
    # Reads work, values included.
    assert ro.show_secret(ShowSecretRequest(secret_name=s.name)).secret.id == s.id
    assert s.name in all_names(ro)
    v = ro.show_secret_version(ShowSecretVersionRequest(secret_name=s.name, version_id="latest")).version
    assert v.secret_string == plaintext(40)
    # Writes are refused and change nothing.
    name = unique("ro")
    expect_error(lambda: ro.create_secret(CreateSecretRequest(body=CreateSecretRequestBody(name=name, secret_string="x"))), "CSMS.0302")
    expect_error(
        lambda: ro.create_secret_version(
            CreateSecretVersionRequest(secret_name=s.name, body=CreateSecretVersionRequestBody(secret_string="x"))
        ),
        "CSMS.0302",
    )
    expect_error(
        lambda: ro.update_secret(UpdateSecretRequest(secret_name=s.name, body=UpdateSecretRequestBody(description="x"))),
        "CSMS.0302",
    )
    expect_error(lambda: ro.delete_secret(DeleteSecretRequest(secret_name=s.name)), "CSMS.0302")
    expect_error(lambda: csms.show_secret(ShowSecretRequest(secret_name=name)), "CSMS.0106")
    assert csms.show_secret_version(ShowSecretVersionRequest(secret_name=s.name, version_id="latest")).version.version_metadata.id == "v1"


# ---------------------------------------------------------------- X-Auth-Token and signatures


def test_token_can_read_and_write(mesh):
    name = unique("tok")
    body = expect_raw_ok(mesh.token_request("POST", SECRETS, mesh.tokens["a_valid"], {"name": name, "secret_string": "t"}))
    assert body["secret"]["name"] == name
    body = expect_raw_ok(mesh.token_request("GET", f"{SECRETS}/{name}/versions/latest", mesh.tokens["a_valid"]))
    assert body["version"]["secret_string"] == "t"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a_bad_signature", "a_expired", "a_obt", "no_project"])
def test_bad_tokens(mesh, token):
    token = mesh.tokens.get(token, token)
    expect_raw_error(mesh.token_request("GET", SECRETS, token), "CSMS.0301")


def test_readonly_token(mesh):
    expect_raw_ok(mesh.token_request("GET", SECRETS, mesh.tokens["a_readonly"]))
    expect_raw_error(
        mesh.token_request("POST", SECRETS, mesh.tokens["a_readonly"], {"name": unique("rot"), "secret_string": "x"}),
        "CSMS.0302",
    )


def test_token_for_other_project(mesh):
    resp = mesh.token_request("GET", SECRETS, mesh.tokens["b_valid"], project=mesh.project_a)
    assert resp.status_code in (400, 403), resp.text
    assert resp.json()["error_code"] in ("CSMS.0301", "CSMS.0302"), resp.text


def test_signature_failures(mesh):
    acc = dict(mesh.accounts["a_full"])
    acc["secret_key"] = "wrong" + acc["secret_key"]
    resp = mesh.raw("GET", SECRETS, who=acc, content_type="application/json")
    assert resp.status_code == 401, resp.text
    assert resp.json()["error_code"] == "APIGW.0301"
    unknown = dict(mesh.accounts["a_full"], access_key="UNKNOWNAK0000000000")
    assert mesh.raw("GET", SECRETS, who=unknown).status_code == 401
    # No credentials at all.
    resp = mesh.raw("GET", SECRETS, sign=False)
    assert resp.status_code in (400, 401), resp.text


# ---------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    "body",
    [b'{"name": ', b"not json", b'{"name": "a"} trailing', b"\xff\xfe{}", b"[]", b'"string"', b"42"],
)
def test_malformed_json(mesh, body):
    expect_raw_error(mesh.raw("POST", SECRETS, body), "CSMS.0004")


@pytest.mark.parametrize(
    "body",
    [
        {"name": 5, "secret_string": "x"},
        {"name": "ok", "secret_string": 5},
        {"name": "ok", "secret_string": "x", "auto_rotation": "false"},
        {"name": "ok", "secret_string": "x", "event_subscriptions": "ev"},
        {"name": "ok", "secret_string": "x", "unknown_field": 1},
        {"name": "ok", "secret_string": "x", "description": ["d"]},
    ],
    ids=["name-int", "value-int", "bool-string", "list-string", "unknown-field", "string-list"],
)
def test_wrong_types_and_unknown_fields(mesh, body):
    body = dict(body)
    if body["name"] == "ok":
        body["name"] = unique("wt")
    expect_raw_error(mesh.raw("POST", SECRETS, body), "CSMS.0004")
    if isinstance(body["name"], str):
        expect_error(lambda: mesh.csms().show_secret(ShowSecretRequest(secret_name=body["name"])), "CSMS.0106")


def test_version_body_types(mesh, csms):
    s = new_secret(csms)
    path = f"{SECRETS}/{s.name}/versions"
    expect_raw_error(mesh.raw("POST", path, {"secret_string": "x", "version_stages": "SYSCURRENT"}), "CSMS.0004")
    expect_raw_error(mesh.raw("POST", path, {"secret_string": "x", "expire_time": True}), "CSMS.0004")
    expect_raw_error(mesh.raw("POST", path, {"secret_string": "x", "version_stages": [1]}), "CSMS.0004")
    # DECISION (§2.4): integer fields also take numeric strings; a
    # non-numeric one is a bad value, not a bad type.
    expect_raw_error(mesh.raw("POST", path, {"secret_string": "x", "expire_time": "tomorrow"}), "CSMS.0002")
    metas = csms.list_secret_versions(ListSecretVersionsRequest(secret_name=s.name)).version_metadatas
    assert [m.id for m in metas] == ["v1"], "no failed request added a version"
    expect_raw_error(mesh.raw("POST", path, {"secret_string": "x", "nope": True}), "CSMS.0004")


def test_huge_body(mesh):
    huge = b'{"name": "big", "secret_string": "' + b"a" * (1 << 20) + b'"}'
    expect_raw_error(mesh.raw("POST", SECRETS, huge), "CSMS.0004")
    expect_error(lambda: mesh.csms().show_secret(ShowSecretRequest(secret_name="big")), "CSMS.0106")


# ---------------------------------------------------------------- paths and methods


def test_encoded_slash_in_name(mesh, csms):
    expect_raw_error(mesh.raw("GET", f"{SECRETS}/a%2Fb", content_type="application/json"), "CSMS.0002")
    expect_raw_error(mesh.raw("GET", f"{SECRETS}/a%2Fb/versions/latest", content_type="application/json"), "CSMS.0002")
    # The SDK percent-encodes "/" itself.
    expect_error(lambda: csms.show_secret(ShowSecretRequest(secret_name="a/b")), "CSMS.0002")
    expect_error(lambda: csms.show_secret(ShowSecretRequest(secret_name="a b")), "CSMS.0002")
    expect_raw_error(mesh.raw("GET", f"{SECRETS}/{'x' * 65}", content_type="application/json"), "CSMS.0002")


def test_percent_encoded_valid_name(mesh, csms):
    s = new_secret(csms, name=unique("enc"))
    encoded = "".join(f"%{b:02X}" for b in s.name.encode())
    body = expect_raw_ok(mesh.raw("GET", f"{SECRETS}/{encoded}", content_type="application/json"))
    assert body["secret"]["id"] == s.id


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/{project}/nothing"),
        ("GET", "/v1/{project}/secrets/x/unknown"),
        ("POST", "/v1/{project}/secrets/x/versions/v1/more"),
        ("GET", "/v1/{project}/csms/unknown/thing/here"),
        ("PUT", SECRETS),
        ("DELETE", SECRETS),
        ("POST", SECRETS + "/x"),
        ("DELETE", SECRETS + "/x/versions"),
        ("DELETE", SECRETS + "/x/versions/v1"),
        ("POST", SECRETS + "/x/stages/S"),
        ("GET", SECRETS + "/x/scheduled-deleted-tasks/create"),
        ("GET", SECRETS + "/x/backup"),
        ("GET", "/v1/{project}/csms/generate-password"),
        ("POST", "/v1/{project}/csms/tags"),
        ("PUT", "/v1/{project}/csms/0d0466b0-e727-4d9c-b35d-f84bb474a37f/tags"),
    ],
)
def test_unknown_paths_and_wrong_methods(mesh, method, path):
    resp = mesh.raw(method, path, {} if method in ("POST", "PUT") else None)
    expect_raw_error(resp, "CSMS.0003")


UNSERVED = [
    ("rotate", lambda c: c.rotate_secret(RotateSecretRequest(secret_name="x"))),
    ("list-events", lambda c: c.list_secret_events(ListSecretEventsRequest())),
    ("show-event", lambda c: c.show_secret_event(ShowSecretEventRequest(event_name="e"))),
    (
        "create-event",
        lambda c: c.create_secret_event(
            CreateSecretEventRequest(
                body=CreateSecretEventRequestBody(
                    name="e",
                    event_types=["SECRET_DELETED"],
                    state="ENABLED",
                    notification=Notification(target_type="SMN", target_id="t", target_name="n"),
                )
            )
        ),
    ),
    ("notification-records", lambda c: c.list_notification_records(ListNotificationRecordsRequest())),
    ("tasks", lambda c: c.list_secret_task(ListSecretTaskRequest())),
    (
        "function-templates",
        lambda c: c.show_secret_function_templates(
            ShowSecretFunctionTemplatesRequest(secret_type="RDS-FG", secret_sub_type="SingleUser")
        ),
    ),
    ("show-agency", lambda c: c.show_agency(ShowAgencyRequest(secret_type="RDS-FG"))),
    ("create-agency", lambda c: c.create_agency(CreateAgencyRequest(body=CreateAgencyRequestBody(secret_type="RDS-FG")))),
    ("checker-config", lambda c: c.show_secrets_config(ShowSecretsConfigRequest())),
    ("checker", lambda c: c.check_secrets(CheckSecretsRequest(body=CheckSecretsRequestBody(type="t", data={})))),
    ("list-grants", lambda c: c.list_grants(ListGrantsRequest(resource_id="r"))),
    (
        "create-grants",
        lambda c: c.create_grants(
            CreateGrantsRequest(
                body=GrantSecretReqBody(resource_id="r", type="SECRET", grantee_type="0", grantee_target_id="u")
            )
        ),
    ),
    ("list-users", lambda c: c.list_users(ListUsersRequest(offset=0, limit=10))),
    ("show-user", lambda c: c.show_user_detail(ShowUserDetailRequest(user_id="u"))),
]


@pytest.mark.parametrize("call", [c for _, c in UNSERVED], ids=[n for n, _ in UNSERVED])
def test_unserved_operations(csms, call):
    expect_error(lambda: call(csms), "CSMS.0003")


def test_unserved_for_readonly_too(mesh):
    expect_error(lambda: mesh.csms("a_readonly").rotate_secret(RotateSecretRequest(secret_name="x")), "CSMS.0003")


def test_error_rows_exist():
    for code in ("CSMS.0002", "CSMS.0003", "CSMS.0004", "CSMS.0005", "CSMS.0101", "CSMS.0103", "CSMS.0105",
                 "CSMS.0106", "CSMS.0107", "CSMS.0108", "CSMS.0203", "CSMS.0301", "CSMS.0302", "CSMS.0401"):
        assert code in CODES

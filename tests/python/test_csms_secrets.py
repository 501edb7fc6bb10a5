"""CSMS secrets through the official huaweicloudsdkcsms client: create /
show / list (marker pagination) / update / delete, batch import with
per-item failures, the project's default CMK, name and value validation,
and "a failed create leaves nothing behind"."""

import base64
import time

import pytest
from huaweicloudsdkcsms.v1 import (
    BatchImportSecretsRequest,
    CreateSecretRequest,
    CreateSecretRequestBody,
    DeleteSecretRequest,
    ImportSecretsRequest,
    ListSecretsRequest,
    ListSecretVersionsRequest,
    ShowSecretVersionRequest,
    UpdateSecretRequest,
    UpdateSecretRequestBody,
)
from huaweicloudsdkkms.v2 import (
    DeleteKeyRequest,
    DisableKeyRequest,
    EnableKeyRequest,
    ListKeyDetailRequest,
    ListKeysRequest,
    ListKeysRequestBody,
    OperateKeyRequestBody,
    ScheduleKeyDeletionRequestBody,
)

from conftest import UUID_RE, expect_error, expect_raw_error, expect_raw_ok, new_secret, plaintext, show, unique

SECRETS = "/v1/{project}/secrets"


def create(csms, **body):
    return csms.create_secret(CreateSecretRequest(body=CreateSecretRequestBody(**body)))


def latest(csms, name):
    return csms.show_secret_version(ShowSecretVersionRequest(secret_name=name, version_id="latest")).version


def assert_absent(mesh, csms, name):
    """No secret ``name``: not shown, not listed, no versions."""
    expect_error(lambda: show(csms, name), "CSMS.0106")
    expect_error(lambda: csms.list_secret_versions(ListSecretVersionsRequest(secret_name=name)), "CSMS.0106")
    assert name not in all_names(csms)


def all_names(csms, limit="50"):
    names, marker = [], None
    for _ in range(1000):
        r = csms.list_secrets(ListSecretsRequest(limit=limit, marker=marker))
        names += [s.name for s in r.secrets or []]
        marker = r.page_info.next_marker if r.page_info else None
        if not marker:
            return names
    raise AssertionError("list-secrets never ended")


# ---------------------------------------------------------------- create / show


def test_create_show_round_trip(csms):
    name = unique("sec")
    before = int(time.time())
    value = plaintext(100)
    s = create(csms, name=name, secret_string=value, description="first secret").secret
    assert s.name == name
    assert UUID_RE.match(s.id), s.id
    assert s.state == "ENABLED"
    assert s.description == "first secret"
    assert s.secret_type == "COMMON"
    assert s.auto_rotation is False
    assert s.scheduled_delete_time is None
    # CSMS times are integer epoch SECONDS (not milliseconds).
    for t in (s.create_time, s.update_time):
        assert isinstance(t, int), t
        assert before - 5 <= t <= int(time.time()) + 5, t
    shown = show(csms, name)
    assert (shown.id, shown.name, shown.kms_key_id, shown.create_time) == (s.id, name, s.kms_key_id, s.create_time)
    v = latest(csms, name)
    assert v.secret_string == value
    assert v.secret_binary is None
    assert v.version_metadata.id == "v1"
    assert v.version_metadata.version_stages == ["SYSCURRENT"]
    assert v.version_metadata.secret_name == name
    assert v.version_metadata.kms_key_id == s.kms_key_id


def test_times_are_json_integers(mesh, csms):
    s = new_secret(csms)
    body = expect_raw_ok(mesh.raw("GET", f"{SECRETS}/{s.name}", content_type="application/json"))
    for f in ("create_time", "update_time"):
        assert type(body["secret"][f]) is int, body
        assert body["secret"][f] < 10**11, f"{f} looks like milliseconds: {body}"
    assert body["secret"]["scheduled_delete_time"] is None


def test_default_cmk_is_created_once_and_listed(mesh, csms):
    s1 = new_secret(csms)
    s2 = new_secret(csms)
    assert UUID_RE.match(s1.kms_key_id)
    assert s1.kms_key_id == s2.kms_key_id, "both secrets use the project's csms/default key"
    kms = mesh.kms("a_full")
    info = kms.list_key_detail(ListKeyDetailRequest(body=OperateKeyRequestBody(key_id=s1.kms_key_id))).key_info
    assert info.key_alias == "csms/default"
    assert info.default_key_flag == "1"
    assert info.key_state == "2"
    keys = kms.list_keys(ListKeysRequest(body=ListKeysRequestBody(limit="1000"))).keys
    assert s1.kms_key_id in keys
    # Project B gets its own default key, not A's.
    b = new_secret(mesh.csms("b_full"))
    assert b.kms_key_id != s1.kms_key_id


def test_explicit_cmk(csms, shared_key):
    s = new_secret(csms, kms_key_id=shared_key)
    assert s.kms_key_id == shared_key
    assert latest(csms, s.name).version_metadata.kms_key_id == shared_key


def test_binary_value(csms):
    raw = bytes(range(256)) * 4
    s = new_secret(csms, secret_binary=base64.b64encode(raw).decode())
    v = latest(csms, s.name)
    assert v.secret_string is None
    assert base64.b64decode(v.secret_binary) == raw


def test_largest_values(csms):
    text = plaintext(32768)
    s = new_secret(csms, secret_string=text)
    assert latest(csms, s.name).secret_string == text
    raw = (b"\x00\xff" * 16384)[:32768]
    s = new_secret(csms, secret_binary=base64.b64encode(raw).decode())
    assert base64.b64decode(latest(csms, s.name).secret_binary) == raw


def test_duplicate_name(csms):
    s = new_secret(csms)
    expect_error(lambda: create(csms, name=s.name, secret_string="other"), "CSMS.0101")
    # The original is untouched.
    assert show(csms, s.name).id == s.id


@pytest.mark.parametrize("name", ["", "a" * 65, "has space", "dot.name", "slash/name", "ümlaut", "star*"])
def test_invalid_name(csms, name):
    expect_error(lambda: create(csms, name=name, secret_string="x"), "CSMS.0002")


def test_name_edges_accepted(csms):
    for name in ("a", "A" * 64, "x_-9" + unique("")):
        new_secret(csms, name=name)
        assert show(csms, name).name == name


@pytest.mark.parametrize(
    "fields",
    [
        {},  # neither value
        {"secret_string": "a", "secret_binary": "YQ=="},  # both
        {"secret_string": "a" * 32769},
        {"secret_binary": base64.b64encode(b"a" * 32769).decode()},
        {"secret_binary": "not base64!"},
        {"secret_string": "a", "secret_type": "RDS-FG"},
        {"secret_string": "a", "auto_rotation": True, "rotation_period": "1d"},
        {"secret_string": "a", "event_subscriptions": ["ev"]},
        {"secret_string": "a", "description": "d" * 2049},
        {"secret_string": "a", "kms_key_id": "not-a-key-id"},
    ],
    ids=[
        "no-value",
        "both-values",
        "string-too-long",
        "binary-too-long",
        "bad-base64",
        "secret-type",
        "auto-rotation",
        "event-subscriptions",
        "description-too-long",
        "malformed-kms-key-id",
    ],
)
def test_invalid_create_leaves_nothing(mesh, csms, fields):
    name = unique("bad")
    expect_error(lambda: create(csms, name=name, **fields), "CSMS.0002")
    assert_absent(mesh, csms, name)


def test_missing_name(mesh):
    expect_raw_error(mesh.raw("POST", SECRETS, {"secret_string": "x"}), "CSMS.0002")


# ---------------------------------------------------------------- failed creates leave nothing


def test_unknown_cmk_leaves_nothing(mesh, csms):
    name = unique("nokey")
    expect_error(
        lambda: create(csms, name=name, secret_string=plaintext(), kms_key_id="0d0466b0-e727-4d9c-b35d-f84bb474a37f"),
        "CSMS.0401",
    )
    assert_absent(mesh, csms, name)
    # The name is free: creating it properly works.
    new_secret(csms, name=name)


def test_disabled_cmk_leaves_nothing(mesh, csms):
    kms = mesh.kms("a_full")
    key = mesh.new_key()
    kms.disable_key(DisableKeyRequest(body=OperateKeyRequestBody(key_id=key)))
    name = unique("dis")
    expect_error(lambda: create(csms, name=name, secret_string=plaintext(), kms_key_id=key), "CSMS.0401")
    assert_absent(mesh, csms, name)
    kms.enable_key(EnableKeyRequest(body=OperateKeyRequestBody(key_id=key)))
    s = new_secret(csms, name=name, kms_key_id=key)
    assert s.kms_key_id == key


def test_pending_deletion_cmk_leaves_nothing(mesh, csms):
    key = mesh.new_key()
    mesh.kms("a_full").delete_key(
        DeleteKeyRequest(body=ScheduleKeyDeletionRequestBody(key_id=key, pending_days="7"))
    )
    name = unique("pend")
    expect_error(lambda: create(csms, name=name, secret_string=plaintext(), kms_key_id=key), "CSMS.0401")
    assert_absent(mesh, csms, name)


def test_other_projects_cmk_is_unusable(mesh, csms):
    key_b = mesh.new_key("b_full")
    name = unique("xkey")
    expect_error(lambda: create(csms, name=name, secret_string="x", kms_key_id=key_b), "CSMS.0401")
    assert_absent(mesh, csms, name)


def test_disabled_cmk_blocks_reads(mesh, csms):
    key = mesh.new_key()
    s = new_secret(csms, kms_key_id=key)
    kms = mesh.kms("a_full")
    kms.disable_key(DisableKeyRequest(body=OperateKeyRequestBody(key_id=key)))
    expect_error(lambda: latest(csms, s.name), "CSMS.0401")
    kms.enable_key(EnableKeyRequest(body=OperateKeyRequestBody(key_id=key)))
    assert latest(csms, s.name).secret_string.startswith(plaintext(5))


# ---------------------------------------------------------------- list


def test_list_pagination(csms):
    prefix = unique("pg")
    created = sorted(f"{prefix}-{i:02d}" for i in range(7))
    for n in created:
        new_secret(csms, name=n)
    seen, marker, pages = [], None, 0
    while True:
        r = csms.list_secrets(ListSecretsRequest(limit="3", marker=marker))
        pages += 1
        assert len(r.secrets) <= 3
        assert r.page_info.current_count == len(r.secrets)
        seen += [s.name for s in r.secrets]
        marker = r.page_info.next_marker
        if not marker:
            break
        assert marker == r.secrets[-1].name, "marker = name of the last item"
        assert pages < 500
    assert seen == sorted(seen), "pages are ordered by name"
    assert len(seen) == len(set(seen)), "no secret on two pages"
    mine = [n for n in seen if n.startswith(prefix)]
    assert mine == created
    # A marker starts strictly after that name.
    r = csms.list_secrets(ListSecretsRequest(limit="2", marker=created[2]))
    assert [s.name for s in r.secrets] == created[3:5]


def test_list_default_page_size(csms):
    r = csms.list_secrets(ListSecretsRequest())
    assert len(r.secrets) <= 50
    assert r.page_info.current_count == len(r.secrets)


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "100000"])
def test_list_bad_limit(csms, limit):
    expect_error(lambda: csms.list_secrets(ListSecretsRequest(limit=limit)), "CSMS.0002")


# ---------------------------------------------------------------- update / delete


def test_update_metadata(csms, shared_key):
    s = new_secret(csms, description="old")
    u = csms.update_secret(
        UpdateSecretRequest(secret_name=s.name, body=UpdateSecretRequestBody(description="new", kms_key_id=shared_key))
    ).secret
    assert (u.description, u.kms_key_id, u.id) == ("new", shared_key, s.id)
    assert u.update_time >= s.update_time
    shown = show(csms, s.name)
    assert (shown.description, shown.kms_key_id) == ("new", shared_key)
    # The old version stays readable (it keeps the key it was sealed under).
    v1 = latest(csms, s.name)
    assert v1.version_metadata.kms_key_id == s.kms_key_id
    assert v1.secret_string == plaintext(40)


@pytest.mark.parametrize(
    "fields",
    [
        {"auto_rotation": True, "rotation_period": "1d"},
        {"event_subscriptions": ["ev"]},
        {"description": "d" * 2049},
        {"kms_key_id": "nope"},
    ],
    ids=["auto-rotation", "events", "description", "key-id"],
)
def test_update_invalid(csms, fields):
    s = new_secret(csms, description="keep")
    expect_error(
        lambda: csms.update_secret(UpdateSecretRequest(secret_name=s.name, body=UpdateSecretRequestBody(**fields))),
        "CSMS.0002",
    )
    assert show(csms, s.name).description == "keep"


def test_update_to_disabled_cmk(mesh, csms):
    key = mesh.new_key()
    mesh.kms("a_full").disable_key(DisableKeyRequest(body=OperateKeyRequestBody(key_id=key)))
    s = new_secret(csms)
    expect_error(
        lambda: csms.update_secret(UpdateSecretRequest(secret_name=s.name, body=UpdateSecretRequestBody(kms_key_id=key))),
        "CSMS.0401",
    )
    assert show(csms, s.name).kms_key_id == s.kms_key_id


def test_update_missing(csms):
    expect_error(
        lambda: csms.update_secret(UpdateSecretRequest(secret_name=unique("none"), body=UpdateSecretRequestBody(description="x"))),
        "CSMS.0106",
    )


def test_delete(mesh, csms):
    s = new_secret(csms)
    csms.delete_secret(DeleteSecretRequest(secret_name=s.name))
    assert_absent(mesh, csms, s.name)
    expect_error(lambda: csms.delete_secret(DeleteSecretRequest(secret_name=s.name)), "CSMS.0106")
    # The name can be reused, and the new secret starts again at v1.
    again = new_secret(csms, name=s.name)
    assert again.id != s.id
    assert latest(csms, s.name).version_metadata.id == "v1"


def test_show_missing(csms):
    expect_error(lambda: show(csms, unique("none")), "CSMS.0106")


# ---------------------------------------------------------------- batch import


def test_batch_import(mesh, csms):
    existing = new_secret(csms)
    ok1, ok2, bad_name = unique("bi"), unique("bi"), "bad name!"
    body = ImportSecretsRequest(
        secrets=[
            CreateSecretRequestBody(name=ok1, secret_string=plaintext(20)),
            CreateSecretRequestBody(name=existing.name, secret_string="dup"),
            CreateSecretRequestBody(name=bad_name, secret_string="x"),
            CreateSecretRequestBody(name=ok2, secret_binary=base64.b64encode(b"\x01\x02").decode()),
            CreateSecretRequestBody(name=unique("bi"), secret_string="a", secret_binary="YQ=="),
        ]
    )
    r = csms.batch_import_secrets(BatchImportSecretsRequest(body=body))
    assert (r.total, r.success, r.failed) == (5, 2, 3)
    failed = {e.name for e in r.error_list}
    assert existing.name in failed and bad_name in failed
    assert ok1 not in failed and ok2 not in failed
    assert all(e.error_msg for e in r.error_list)
    assert latest(csms, ok1).secret_string == plaintext(20)
    assert base64.b64decode(latest(csms, ok2).secret_binary) == b"\x01\x02"
    # The duplicate did not overwrite anything.
    assert latest(csms, existing.name).secret_string == plaintext(40)
    assert latest(csms, existing.name).version_metadata.id == "v1"


def test_batch_import_same_name_twice(csms):
    n = unique("bi2")
    body = ImportSecretsRequest(
        secrets=[CreateSecretRequestBody(name=n, secret_string="one"), CreateSecretRequestBody(name=n, secret_string="two")]
    )
    r = csms.batch_import_secrets(BatchImportSecretsRequest(body=body))
    assert (r.total, r.success, r.failed) == (2, 1, 1)
    assert [e.name for e in r.error_list] == [n]
    assert latest(csms, n).secret_string == "one"


def test_batch_import_disabled_cmk(mesh, csms):
    key = mesh.new_key()
    mesh.kms("a_full").disable_key(DisableKeyRequest(body=OperateKeyRequestBody(key_id=key)))
    bad, good = unique("bik"), unique("bik")
    body = ImportSecretsRequest(
        secrets=[
            CreateSecretRequestBody(name=bad, secret_string="x", kms_key_id=key),
            CreateSecretRequestBody(name=good, secret_string="y"),
        ]
    )
    r = csms.batch_import_secrets(BatchImportSecretsRequest(body=body))
    assert (r.success, r.failed) == (1, 1)
    assert [e.name for e in r.error_list] == [bad]
    assert_absent(mesh, csms, bad)
    assert latest(csms, good).secret_string == "y"


@pytest.mark.parametrize(
    "body,code",
    [
        ({}, "CSMS.0002"),
        ({"secrets": "x"}, "CSMS.0004"),
        ({"secrets": []}, "CSMS.0002"),
        ({"secrets": [{"name": "x", "secret_string": "y"}] * 51}, "CSMS.0002"),
    ],
    ids=["missing-secrets", "not-a-list", "empty", "over-50"],
)
def test_batch_import_malformed(mesh, body, code):
    expect_raw_error(mesh.raw("POST", f"{SECRETS}/batch-import", body), code)


def test_batch_import_malformed_item_fails_alone(mesh, csms):
    good = unique("bim")
    body = {
        "secrets": [
            {"name": 5, "secret_string": "x"},
            {"name": unique("bim"), "secret_string": "x", "unknown": 1},
            "not an object",
            {"name": good, "secret_string": "ok"},
        ]
    }
    r = expect_raw_ok(mesh.raw("POST", f"{SECRETS}/batch-import", body))
    assert (r["total"], r["success"], r["failed"]) == (4, 1, 3), r
    assert latest(csms, good).secret_string == "ok"

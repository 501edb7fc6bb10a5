"""KMS keys group: create-key, describe-key, list-keys, enable/disable,
schedule/cancel deletion — positive paths and every published state error."""

import json
import uuid

from huaweicloudsdkkms.v2 import (
    CancelKeyDeletionRequest,
    CreateKeyRequest,
    CreateKeyRequestBody,
    DeleteKeyRequest,
    EnableKeyRequest,
    ListKeyDetailRequest,
    ListKeysRequest,
    ListKeysRequestBody,
    OperateKeyRequestBody,
    ScheduleKeyDeletionRequestBody,
)

from conftest import UUID_RE, describe, disable, expect_error, expect_raw_error, expect_raw_ok, unique


def enable(kms, key_id):
    return kms.enable_key(EnableKeyRequest(body=OperateKeyRequestBody(key_id=key_id)))


def schedule(kms, key_id, days="7"):
    return kms.delete_key(
        DeleteKeyRequest(body=ScheduleKeyDeletionRequestBody(key_id=key_id, pending_days=days))
    )


def cancel(kms, key_id):
    return kms.cancel_key_deletion(CancelKeyDeletionRequest(body=OperateKeyRequestBody(key_id=key_id)))


def list_keys(kms, **fields):
    return kms.list_keys(ListKeysRequest(body=ListKeysRequestBody(**fields)))


# ---------------------------------------------------------------- create/describe


def test_create_and_describe(kms):
    alias = unique("create")
    r = kms.create_key(
        CreateKeyRequest(body=CreateKeyRequestBody(key_alias=alias, key_description="e2e key"))
    )
    assert UUID_RE.match(r.key_info.key_id)
    assert r.key_info.domain_id
    k = describe(kms, r.key_info.key_id)
    assert k.key_id == r.key_info.key_id
    assert k.key_alias == alias
    assert k.key_description == "e2e key"
    assert (k.key_spec, k.key_usage, k.origin) == ("AES_256", "ENCRYPT_DECRYPT", "kms")
    assert k.key_state == "2"
    assert k.default_key_flag == "0"
    assert k.key_rotation_enabled == "false"
    assert k.creation_date.isdigit()
    assert k.domain_id == r.key_info.domain_id


def test_create_with_every_optional_sdk_field(kms):
    """Every field of CreateKeyRequestBody the SDK can send is accepted."""
    r = kms.create_key(
        CreateKeyRequest(
            body=CreateKeyRequestBody(
                key_alias=unique("opt"),
                key_spec="AES_256",
                key_usage="ENCRYPT_DECRYPT",
                key_description="",
                origin="kms",
                enterprise_project_id="0",
                sequence=str(uuid.uuid4()),
                keystore_id="0",
            )
        )
    )
    k = describe(kms, r.key_info.key_id)
    assert k.key_state == "2"
    assert k.sys_enterprise_project_id == "0"
    assert k.keystore_id == "0"


def test_describe_wire_types(mesh, shared_key):
    """§2.4: string-typed fields are JSON strings on the wire, flags the
    strings "true"/"false" (the SDK would turn a JSON false into "False")."""
    resp = mesh.raw("POST", "/v1.0/{project}/kms/describe-key", {"key_id": shared_key})
    info = expect_raw_ok(resp)["key_info"]
    for field in ("key_state", "creation_date", "default_key_flag", "key_rotation_enabled"):
        assert isinstance(info[field], str), (field, info[field])
    assert info["key_rotation_enabled"] in ("true", "false")


def test_create_duplicate_alias(kms):
    alias = unique("dup")
    kms.create_key(CreateKeyRequest(body=CreateKeyRequestBody(key_alias=alias)))
    expect_error(
        lambda: kms.create_key(CreateKeyRequest(body=CreateKeyRequestBody(key_alias=alias))), "KMS.1104"
    )


def test_create_invalid_alias(kms):
    for bad in ["has space", "semi;colon", "x" * 256]:
        expect_error(
            lambda: kms.create_key(CreateKeyRequest(body=CreateKeyRequestBody(key_alias=bad))), "KMS.1101"
        )


def test_create_invalid_description(kms):
    expect_error(
        lambda: kms.create_key(
            CreateKeyRequest(body=CreateKeyRequestBody(key_alias=unique(), key_description="d" * 256))
        ),
        "KMS.1103",
    )


def test_create_missing_alias(kms):
    expect_error(lambda: kms.create_key(CreateKeyRequest(body=CreateKeyRequestBody())), "KMS.0204")


def test_describe_bad_key_id(kms):
    # (Upper-case hex is not in this list: §8.4 says accept every key-id
    # pattern the clients use, and the data-key-capsule one allows it.)
    for bad in ["not-a-key", "", "0d0466b0e7274d9cb35df84bb474a37f", "0d0466b0-e727-4d9c-b35d-f84bb474a37f0"]:
        # The empty string is a present-but-invalid id, not a missing one.
        expect_error(lambda: describe(kms, bad), "KMS.0205")


def test_describe_missing_key_id(kms):
    expect_error(
        lambda: kms.list_key_detail(ListKeyDetailRequest(body=OperateKeyRequestBody())), "KMS.0204"
    )


def test_describe_unknown_key(kms):
    expect_error(lambda: describe(kms, str(uuid.uuid4())), "KMS.0207")


# ---------------------------------------------------------------- list


def test_list_keys_contains_created(kms, key):
    r = list_keys(kms)
    assert key in r.keys
    assert key in [d.key_id for d in r.key_details]
    assert r.truncated == "false"
    assert isinstance(r.total, int) and r.total >= len(r.keys)


def test_list_keys_pagination(kms):
    for _ in range(3):
        kms.create_key(CreateKeyRequest(body=CreateKeyRequestBody(key_alias=unique("page"))))
    everything = list_keys(kms, limit="1000").keys
    assert len(everything) >= 3
    seen, marker = [], None
    for _ in range(len(everything) + 1):
        r = list_keys(kms, limit="2", marker=marker)
        seen += r.keys
        if r.truncated == "false":
            break
        assert r.truncated == "true" and r.next_marker
        marker = r.next_marker
    assert sorted(seen) == sorted(everything)
    assert len(seen) == len(set(seen))


def test_list_keys_wire_types(mesh):
    resp = mesh.raw("POST", "/v1.0/{project}/kms/list-keys", {"limit": "1"})
    body = expect_raw_ok(resp)
    assert body["truncated"] in ("true", "false")
    assert isinstance(body["total"], int)
    assert isinstance(body["next_marker"], str)


def test_list_keys_limit_as_json_number(mesh):
    """§2.4: string-typed numbers may arrive as JSON numbers."""
    body = expect_raw_ok(mesh.raw("POST", "/v1.0/{project}/kms/list-keys", {"limit": 1}))
    assert len(body["keys"]) == 1


def test_list_keys_state_filter(kms):
    k = kms.create_key(CreateKeyRequest(body=CreateKeyRequestBody(key_alias=unique("flt")))).key_info.key_id
    disable(kms, k)
    r = list_keys(kms, key_state="3", limit="1000")
    assert k in r.keys
    assert all(d.key_state == "3" for d in r.key_details)
    assert k not in list_keys(kms, key_state="2", limit="1000").keys


def test_list_keys_invalid_limit(kms):
    for bad in ["0", "-1", "abc", "1001"]:
        expect_error(lambda: list_keys(kms, limit=bad), "KMS.1601")


# ---------------------------------------------------------------- enable/disable


def test_disable_enable_cycle(kms, key):
    r = disable(kms, key)
    assert (r.key_info.key_id, r.key_info.key_state) == (key, "3")
    assert describe(kms, key).key_state == "3"
    expect_error(lambda: disable(kms, key), "KMS.1301")
    r = enable(kms, key)
    assert (r.key_info.key_id, r.key_info.key_state) == (key, "2")
    expect_error(lambda: enable(kms, key), "KMS.1201")


def test_enable_disable_unknown_key(kms):
    expect_error(lambda: enable(kms, str(uuid.uuid4())), "KMS.0207")
    expect_error(lambda: disable(kms, str(uuid.uuid4())), "KMS.0207")
    expect_error(lambda: disable(kms, "bad"), "KMS.0205")


# ---------------------------------------------------------------- deletion


def test_schedule_and_cancel_deletion(kms, key):
    r = schedule(kms, key, "7")
    assert (r.key_id, r.key_state) == (key, "4")
    k = describe(kms, key)
    assert k.key_state == "4"
    assert k.scheduled_deletion_date and k.scheduled_deletion_date.isdigit()
    assert int(k.scheduled_deletion_date) > int(k.creation_date)
    expect_error(lambda: schedule(kms, key, "7"), "KMS.1402")
    # §2.7 allows enable only on a disabled key; a key pending deletion
    # answers with its state's code (KMS.0210), as every other use does.
    expect_error(lambda: enable(kms, key), "KMS.0210")
    expect_error(lambda: disable(kms, key), "KMS.0210")
    r = cancel(kms, key)
    # ASSUMPTION: as on Huawei Cloud, a key whose deletion is cancelled is
    # left disabled (state "3"), not enabled.
    assert (r.key_id, r.key_state) == (key, "3")
    assert describe(kms, key).key_state == "3"
    expect_error(lambda: cancel(kms, key), "KMS.1501")


def test_cancel_deletion_of_enabled_key(kms, shared_key):
    expect_error(lambda: cancel(kms, shared_key), "KMS.1501")


def test_pending_days_range(kms, shared_key):
    for bad in ["6", "1097", "0", "-7", "seven"]:
        expect_error(lambda: schedule(kms, shared_key, bad), "KMS.1401")
    assert describe(kms, shared_key).key_state == "2"


def test_pending_days_bounds_accepted(kms):
    for days in ["7", "1096"]:
        k = kms.create_key(CreateKeyRequest(body=CreateKeyRequestBody(key_alias=unique("del")))).key_info.key_id
        assert schedule(kms, k, days).key_state == "4"


def test_pending_days_as_json_number(mesh, kms, key):
    """§2.4: pending_days is string-typed in the SDK model; a JSON number is accepted too."""
    body = expect_raw_ok(
        mesh.raw("POST", "/v1.0/{project}/kms/schedule-key-deletion", {"key_id": key, "pending_days": 8})
    )
    assert body["key_state"] == "4"


def test_schedule_missing_pending_days(kms, shared_key):
    expect_error(
        lambda: kms.delete_key(DeleteKeyRequest(body=ScheduleKeyDeletionRequestBody(key_id=shared_key))),
        "KMS.0204",
    )


# ---------------------------------------------------------------- read-only account


def test_readonly_account_reads(mesh, shared_key):
    ro = mesh.kms("a_readonly")
    assert describe(ro, shared_key).key_id == shared_key
    assert shared_key in list_keys(ro, limit="1000").keys


def test_readonly_account_cannot_write(mesh, shared_key):
    ro = mesh.kms("a_readonly")
    expect_error(
        lambda: ro.create_key(CreateKeyRequest(body=CreateKeyRequestBody(key_alias=unique()))), "KMS.0307"
    )
    expect_error(lambda: disable(ro, shared_key), "KMS.0307")
    expect_error(lambda: schedule(ro, shared_key, "7"), "KMS.0307")
    assert describe(mesh.kms(), shared_key).key_state == "2"


# ---------------------------------------------------------------- body rules


def test_unknown_field_is_rejected(mesh, shared_key):
    """DECISION: a body field the operation does not define is KMS.0202
    (invalid JSON format of the request message). The official clients only
    send model fields, so this only catches hand-written callers' typos."""
    resp = mesh.raw(
        "POST", "/v1.0/{project}/kms/describe-key", {"key_id": shared_key, "no_such_field": "1"}
    )
    expect_raw_error(resp, "KMS.0202")


def test_sequence_is_accepted_and_ignored(mesh, shared_key):
    body = expect_raw_ok(
        mesh.raw(
            "POST",
            "/v1.0/{project}/kms/describe-key",
            {"key_id": shared_key, "sequence": str(uuid.uuid4())},
        )
    )
    assert body["key_info"]["key_id"] == shared_key


def test_sdk_separators_and_compact_json_both_accepted(mesh, shared_key):
    compact = json.dumps({"key_id": shared_key}, separators=(",", ":"))
    assert expect_raw_ok(mesh.raw("POST", "/v1.0/{project}/kms/describe-key", compact))

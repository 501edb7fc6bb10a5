"""CSMS scheduled deletion and its cancellation, backup / restore of a
whole secret, and generate-password, through the official client."""

import base64
import string
import time

import pytest
from huaweicloudsdkcsms.v1 import (
    CreatePasswordRequestBody,
    DeleteSecretForScheduleRequest,
    DeleteSecretForScheduleRequestBody,
    DeleteSecretRequest,
    DownloadSecretBlobRequest,
    GenerateRandomPasswordRequest,
    ListSecretVersionsRequest,
    RestoreSecretRequest,
    UpdateSecretRequest,
    UpdateSecretRequestBody,
    UpdateSecretStageRequest,
    UpdateSecretStageRequestBody,
    UpdateVersionRequest,
    UpdateVersionRequestBody,
    UploadSecretBlobRequest,
    UploadSecretBlobRequestBody,
)

from conftest import add_version, expect_error, expect_raw_error, expect_raw_ok, new_secret, plaintext, show, unique, version

DAY = 86400


def schedule(csms, name, days=7):
    return csms.delete_secret_for_schedule(
        DeleteSecretForScheduleRequest(
            secret_name=name, body=DeleteSecretForScheduleRequestBody(recovery_window_in_days=days)
        )
    ).secret


def restore(csms, name):
    return csms.restore_secret(RestoreSecretRequest(secret_name=name)).secret


# ---------------------------------------------------------------- scheduled deletion


@pytest.mark.parametrize("days", [7, 30])
def test_schedule_and_restore(csms, days):
    s = new_secret(csms)
    now = int(time.time())
    p = schedule(csms, s.name, days)
    assert p.state == "PENDING_DELETE"
    assert isinstance(p.scheduled_delete_time, int)
    assert abs(p.scheduled_delete_time - (now + days * DAY)) < 120, p.scheduled_delete_time
    shown = show(csms, s.name)
    assert (shown.state, shown.scheduled_delete_time) == ("PENDING_DELETE", p.scheduled_delete_time)

    # Unusable while pending.
    expect_error(lambda: version(csms, s.name, "latest"), "CSMS.0103")
    expect_error(lambda: version(csms, s.name, "v1"), "CSMS.0103")
    expect_error(lambda: add_version(csms, s.name, secret_string="x"), "CSMS.0103")
    expect_error(
        lambda: csms.update_secret(UpdateSecretRequest(secret_name=s.name, body=UpdateSecretRequestBody(description="x"))),
        "CSMS.0103",
    )
    expect_error(lambda: schedule(csms, s.name), "CSMS.0107")

    r = restore(csms, s.name)
    assert r.state == "ENABLED"
    assert r.scheduled_delete_time is None
    assert version(csms, s.name, "latest").secret_string == plaintext(40)
    expect_error(lambda: restore(csms, s.name), "CSMS.0108")


def test_pending_secret_blocks_other_writes(csms):
    s = new_secret(csms)
    schedule(csms, s.name)
    expect_error(
        lambda: csms.update_version(
            UpdateVersionRequest(secret_name=s.name, version_id="v1", body=UpdateVersionRequestBody(expire_time=int(time.time()) + 60))
        ),
        "CSMS.0103",
    )
    expect_error(
        lambda: csms.update_secret_stage(
            UpdateSecretStageRequest(secret_name=s.name, stage_name="X", body=UpdateSecretStageRequestBody(version_id="v1"))
        ),
        "CSMS.0103",
    )
    # Metadata stays listable; versions metadata stays listable.
    assert [m.id for m in csms.list_secret_versions(ListSecretVersionsRequest(secret_name=s.name)).version_metadatas] == ["v1"]
    restore(csms, s.name)


def test_restore_never_scheduled(csms):
    s = new_secret(csms)
    expect_error(lambda: restore(csms, s.name), "CSMS.0108")


@pytest.mark.parametrize("days", [0, 6, 31, -1, 1000])
def test_recovery_window_out_of_range(csms, days):
    s = new_secret(csms)
    expect_error(lambda: schedule(csms, s.name, days), "CSMS.0002")
    assert show(csms, s.name).state == "ENABLED"


def test_schedule_window_forms(mesh, csms):
    path = "/v1/{project}/secrets/%s/scheduled-deleted-tasks/create"
    # No body: the documented default of 30 days.
    s = new_secret(csms)
    now = int(time.time())
    body = expect_raw_ok(mesh.raw("POST", path % s.name, b""))
    assert abs(body["secret"]["scheduled_delete_time"] - (now + 30 * DAY)) < 120
    # A numeric string is an integer (§2.4).
    s = new_secret(csms)
    body = expect_raw_ok(mesh.raw("POST", path % s.name, {"recovery_window_in_days": "7"}))
    assert abs(body["secret"]["scheduled_delete_time"] - (now + 7 * DAY)) < 120
    s = new_secret(csms)
    expect_raw_error(mesh.raw("POST", path % s.name, {"recovery_window_in_days": True}), "CSMS.0004")
    expect_raw_error(mesh.raw("POST", path % s.name, {"recovery_window_in_days": "seven"}), "CSMS.0002")
    expect_raw_error(mesh.raw("POST", path % s.name, {"days": 7}), "CSMS.0004")
    assert show(csms, s.name).state == "ENABLED"


def test_schedule_missing_secret(csms):
    expect_error(lambda: schedule(csms, unique("none")), "CSMS.0106")
    expect_error(lambda: restore(csms, unique("none")), "CSMS.0106")


def test_immediate_delete_of_pending_secret(csms):
    s = new_secret(csms)
    schedule(csms, s.name)
    csms.delete_secret(DeleteSecretRequest(secret_name=s.name))
    expect_error(lambda: show(csms, s.name), "CSMS.0106")


# ---------------------------------------------------------------- backup / restore


def backup(csms, name):
    return csms.download_secret_blob(DownloadSecretBlobRequest(secret_name=name)).secret_blob


def upload(csms, blob):
    return csms.upload_secret_blob(UploadSecretBlobRequest(body=UploadSecretBlobRequestBody(secret_blob=blob))).secret


def test_backup_restore_round_trip(csms):
    raw = bytes(range(256))
    s = new_secret(csms, secret_string=plaintext(50), description="backed up")
    add_version(csms, s.name, secret_binary=base64.b64encode(raw).decode())
    add_version(csms, s.name, secret_string=plaintext(70), version_stages=["CUSTOM"])
    blob = backup(csms, s.name)
    assert isinstance(blob, str) and blob
    assert plaintext(20) not in blob, "the blob must not carry the plaintext"

    expect_error(lambda: upload(csms, blob), "CSMS.0101")  # the name still exists
    csms.delete_secret(DeleteSecretRequest(secret_name=s.name))
    r = upload(csms, blob)
    assert (r.name, r.description, r.kms_key_id) == (s.name, "backed up", s.kms_key_id)
    assert r.state == "ENABLED"

    assert version(csms, s.name, "v1").secret_string == plaintext(50)
    assert base64.b64decode(version(csms, s.name, "v2").secret_binary) == raw
    v3 = version(csms, s.name, "v3")
    assert v3.secret_string == plaintext(70)
    assert v3.version_metadata.version_stages == ["CUSTOM"]
    stages = {
        m.id: sorted(m.version_stages or [])
        for m in csms.list_secret_versions(ListSecretVersionsRequest(secret_name=s.name)).version_metadatas
    }
    assert stages == {"v1": ["SYSPREVIOUS"], "v2": ["SYSCURRENT"], "v3": ["CUSTOM"]}
    # A new version continues the numbering.
    assert add_version(csms, s.name, secret_string="v4").id == "v4"


def test_backup_errors(mesh, csms):
    expect_error(lambda: backup(csms, unique("none")), "CSMS.0106")
    for bad in ("", "garbage", base64.b64encode(b"x" * 100).decode()):
        expect_error(lambda: upload(csms, bad), "CSMS.0002")
    expect_raw_error(mesh.raw("POST", "/v1/{project}/secrets/restore", {}), "CSMS.0002")


def test_blob_is_bound_to_the_project(mesh, csms):
    s = new_secret(csms)
    blob = backup(csms, s.name)
    csms_b = mesh.csms("b_full")
    with pytest.raises(Exception) as ei:
        upload(csms_b, blob)
    assert ei.value.status_code == 400, ei.value
    expect_error(lambda: show(csms_b, s.name), "CSMS.0106")


def test_tampered_blob(csms):
    s = new_secret(csms)
    blob = backup(csms, s.name)
    csms.delete_secret(DeleteSecretRequest(secret_name=s.name))
    mid = len(blob) // 2
    flipped = blob[:mid] + ("A" if blob[mid] != "A" else "B") + blob[mid + 1 :]
    with pytest.raises(Exception) as ei:
        upload(csms, flipped)
    assert ei.value.status_code == 400
    expect_error(lambda: show(csms, s.name), "CSMS.0106")
    assert upload(csms, blob).name == s.name


# ---------------------------------------------------------------- generate-password


def gen(csms, **kw):
    return csms.generate_random_password(GenerateRandomPasswordRequest(body=CreatePasswordRequestBody(**kw))).password


def test_generate_password_default(csms):
    p = gen(csms)
    assert isinstance(p, str) and len(p) == 32
    assert gen(csms) != p


def test_generate_password_options(csms):
    p = gen(csms, length=64, exclude_punctuation=True, exclude_numbers=True)
    assert len(p) == 64 and all(c in string.ascii_letters for c in p)
    p = gen(csms, length=20, exclude_lowercase=True, exclude_uppercase=True, exclude_punctuation=True)
    assert all(c in string.digits for c in p)
    p = gen(csms, length=40, exclude_characters="abcdefABCDEF0123")
    assert not set(p) & set("abcdefABCDEF0123")
    p = gen(csms, length=8, require_each_included_type=True)
    assert any(c.islower() for c in p) and any(c.isupper() for c in p) and any(c.isdigit() for c in p)
    assert any(c in string.punctuation for c in p)


def test_generate_password_invalid(csms):
    expect_error(lambda: gen(csms, length=0), "CSMS.0002")
    expect_error(
        lambda: gen(csms, exclude_lowercase=True, exclude_uppercase=True, exclude_numbers=True, exclude_punctuation=True),
        "CSMS.0002",
    )

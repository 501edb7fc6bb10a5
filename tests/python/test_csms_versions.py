"""CSMS versions and stages through the official client: value round trips
(text and binary, exact), `latest`, list (marker pagination), expiry update,
SYSCURRENT / SYSPREVIOUS movement, custom stages, the delete rules and the
stage quota."""

import base64
import os
import time

import pytest
from huaweicloudsdkcsms.v1 import (
    DeleteSecretStageRequest,
    ListSecretVersionsRequest,
    ShowSecretStageRequest,
    UpdateSecretStageRequest,
    UpdateSecretStageRequestBody,
    UpdateVersionRequest,
    UpdateVersionRequestBody,
)

from conftest import add_version, expect_error, expect_raw_error, expect_raw_ok, new_secret, plaintext, unique, version


def stages_by_version(csms, name):
    r = csms.list_secret_versions(ListSecretVersionsRequest(secret_name=name, limit=50))
    return {m.id: sorted(m.version_stages or []) for m in r.version_metadatas}


def stage(csms, name, st):
    return csms.show_secret_stage(ShowSecretStageRequest(secret_name=name, stage_name=st)).stage


def move_stage(csms, name, st, vid):
    return csms.update_secret_stage(
        UpdateSecretStageRequest(secret_name=name, stage_name=st, body=UpdateSecretStageRequestBody(version_id=vid))
    ).stage


# ---------------------------------------------------------------- values


TEXTS = [
    plaintext(1),
    plaintext(64) + "\n\t\r\\\"'{}[]<>&%",
    plaintext(10) + " ünïcødé ✓ 密钥 🔑",
    plaintext(10) + '{"json": ["inside", 1]}',
    "   " + plaintext(10) + "   ",
]


@pytest.mark.parametrize("text", TEXTS, ids=[f"text{i}" for i in range(len(TEXTS))])
def test_text_round_trip(csms, text):
    s = new_secret(csms, secret_string=text)
    assert version(csms, s.name, "v1").secret_string == text
    m = add_version(csms, s.name, secret_string=text[::-1])
    assert m.id == "v2"
    assert version(csms, s.name, "v2").secret_string == text[::-1]
    assert version(csms, s.name, "latest").secret_string == text[::-1]
    assert version(csms, s.name, "v1").secret_string == text


@pytest.mark.parametrize("n", [1, 2, 3, 255, 4096, 32768])
def test_binary_round_trip(csms, n):
    raw = os.urandom(n)
    s = new_secret(csms, secret_string="start")
    add_version(csms, s.name, secret_binary=base64.b64encode(raw).decode())
    v = version(csms, s.name, "v2")
    assert v.secret_string is None
    assert v.secret_binary == base64.b64encode(raw).decode()
    assert base64.b64decode(v.secret_binary) == raw


def test_text_that_looks_like_base64_stays_text(csms):
    s = new_secret(csms, secret_string="YQ==")
    v = version(csms, s.name, "v1")
    assert (v.secret_string, v.secret_binary) == ("YQ==", None)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"secret_string": "a", "secret_binary": "YQ=="},
        {"secret_string": "a" * 32769},
        {"secret_binary": "***"},
        {"secret_string": "a", "version_stages": []},
        {"secret_string": "a", "version_stages": ["bad stage"]},
        {"secret_string": "a", "version_stages": ["s" * 65]},
        {"secret_string": "a", "version_stages": [f"s{i}" for i in range(13)]},
    ],
    ids=["no-value", "both", "too-long", "bad-base64", "empty-stages", "stage-charset", "stage-length", "13-stages"],
)
def test_invalid_new_version_leaves_nothing(csms, fields):
    s = new_secret(csms)
    expect_error(lambda: add_version(csms, s.name, **fields), "CSMS.0002")
    assert stages_by_version(csms, s.name) == {"v1": ["SYSCURRENT"]}
    assert version(csms, s.name, "latest").secret_string == plaintext(40)


def test_new_version_on_missing_secret(csms):
    expect_error(lambda: add_version(csms, unique("none"), secret_string="x"), "CSMS.0106")


def test_new_version_with_disabled_cmk_leaves_nothing(mesh, csms):
    from huaweicloudsdkkms.v2 import DisableKeyRequest, EnableKeyRequest, OperateKeyRequestBody

    key = mesh.new_key()
    s = new_secret(csms, kms_key_id=key)
    kms = mesh.kms("a_full")
    kms.disable_key(DisableKeyRequest(body=OperateKeyRequestBody(key_id=key)))
    expect_error(lambda: add_version(csms, s.name, secret_string="x"), "CSMS.0401")
    kms.enable_key(EnableKeyRequest(body=OperateKeyRequestBody(key_id=key)))
    assert stages_by_version(csms, s.name) == {"v1": ["SYSCURRENT"]}
    # The next version number is not burnt by the failure... or if it is,
    # the failed one is not visible. Either way v1 is current and readable.
    m = add_version(csms, s.name, secret_string="y")
    assert set(stages_by_version(csms, s.name)) == {"v1", m.id}


def test_show_missing_version(csms):
    s = new_secret(csms)
    for vid in ("v2", "v0", "nope", "V1"):
        expect_error(lambda: version(csms, s.name, vid), "CSMS.0005")
    expect_error(lambda: version(csms, unique("none"), "v1"), "CSMS.0106")


# ---------------------------------------------------------------- metadata, list, expiry


def test_version_metadata(csms):
    s = new_secret(csms)
    exp = int(time.time()) + 86400
    before = int(time.time())
    m = add_version(csms, s.name, secret_string="x", expire_time=exp)
    assert m.id == "v2"
    assert m.secret_name == s.name
    assert m.kms_key_id == s.kms_key_id
    assert m.expire_time == exp
    assert isinstance(m.create_time, int) and before - 5 <= m.create_time <= time.time() + 5
    assert sorted(m.version_stages) == ["SYSCURRENT"]


def test_list_versions_pagination(csms):
    s = new_secret(csms)
    for i in range(6):
        add_version(csms, s.name, secret_string=f"v{i}")
    seen, marker = [], None
    for _ in range(20):
        r = csms.list_secret_versions(ListSecretVersionsRequest(secret_name=s.name, limit=3, marker=marker))
        assert len(r.version_metadatas) <= 3
        assert r.page_info.current_count == len(r.version_metadatas)
        seen += [m.id for m in r.version_metadatas]
        marker = r.page_info.next_marker
        if not marker:
            break
    assert sorted(seen, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, 8)]
    assert len(set(seen)) == 7


def test_list_versions_missing_secret(csms):
    expect_error(lambda: csms.list_secret_versions(ListSecretVersionsRequest(secret_name=unique("none"))), "CSMS.0106")


def test_update_expiry(csms):
    s = new_secret(csms)
    exp = int(time.time()) + 3600
    m = csms.update_version(
        UpdateVersionRequest(secret_name=s.name, version_id="v1", body=UpdateVersionRequestBody(expire_time=exp))
    ).version_metadata
    assert (m.id, m.expire_time) == ("v1", exp)
    assert version(csms, s.name, "v1").version_metadata.expire_time == exp
    expect_error(
        lambda: csms.update_version(
            UpdateVersionRequest(secret_name=s.name, version_id="v9", body=UpdateVersionRequestBody(expire_time=exp))
        ),
        "CSMS.0005",
    )


def test_update_expiry_requires_value(mesh, csms):
    s = new_secret(csms)
    expect_raw_error(mesh.raw("PUT", f"/v1/{{project}}/secrets/{s.name}/versions/v1", {}), "CSMS.0002")
    expect_raw_error(mesh.raw("PUT", f"/v1/{{project}}/secrets/{s.name}/versions/v1", {"expire_time": "soon"}), "CSMS.0002")
    expect_raw_error(mesh.raw("PUT", f"/v1/{{project}}/secrets/{s.name}/versions/v1", {"expire_time": -1}), "CSMS.0002")
    expect_raw_error(mesh.raw("PUT", f"/v1/{{project}}/secrets/{s.name}/versions/v1", {"expire_time": [1]}), "CSMS.0004")
    # A numeric string is an integer (§2.4).
    exp = int(time.time()) + 120
    expect_raw_ok(mesh.raw("PUT", f"/v1/{{project}}/secrets/{s.name}/versions/v1", {"expire_time": str(exp)}))
    assert version(csms, s.name, "v1").version_metadata.expire_time == exp


# ---------------------------------------------------------------- stages


def test_syscurrent_and_sysprevious_move(csms):
    s = new_secret(csms, secret_string="one")
    assert stages_by_version(csms, s.name) == {"v1": ["SYSCURRENT"]}
    add_version(csms, s.name, secret_string="two")
    assert stages_by_version(csms, s.name) == {"v1": ["SYSPREVIOUS"], "v2": ["SYSCURRENT"]}
    add_version(csms, s.name, secret_string="three")
    assert stages_by_version(csms, s.name) == {"v1": [], "v2": ["SYSPREVIOUS"], "v3": ["SYSCURRENT"]}
    assert stage(csms, s.name, "SYSCURRENT").version_id == "v3"
    assert stage(csms, s.name, "SYSPREVIOUS").version_id == "v2"
    # Reading by stage name is reading by version.
    assert version(csms, s.name, "latest").secret_string == "three"
    assert version(csms, s.name, "v1").secret_string == "one"


def test_version_with_custom_stage_keeps_syscurrent(csms):
    s = new_secret(csms, secret_string="one")
    m = add_version(csms, s.name, secret_string="two", version_stages=["PENDING"])
    assert m.version_stages == ["PENDING"]
    assert stages_by_version(csms, s.name) == {"v1": ["SYSCURRENT"], "v2": ["PENDING"]}
    # latest = newest version, whatever its stages.
    latest = version(csms, s.name, "latest")
    assert (latest.version_metadata.id, latest.secret_string) == ("v2", "two")
    # A stage on another version moves to the new one.
    add_version(csms, s.name, secret_string="three", version_stages=["PENDING", "EXTRA"])
    assert stages_by_version(csms, s.name) == {"v1": ["SYSCURRENT"], "v2": [], "v3": ["EXTRA", "PENDING"]}


def test_explicit_syscurrent_moves_sysprevious(csms):
    s = new_secret(csms)
    add_version(csms, s.name, secret_string="two", version_stages=["SYSCURRENT", "MINE"])
    assert stages_by_version(csms, s.name) == {"v1": ["SYSPREVIOUS"], "v2": ["MINE", "SYSCURRENT"]}


def test_move_custom_stage(csms):
    s = new_secret(csms)
    add_version(csms, s.name, secret_string="two")
    st = move_stage(csms, s.name, "CANARY", "v1")
    assert (st.name, st.version_id, st.secret_name) == ("CANARY", "v1", s.name)
    assert isinstance(st.update_time, int)
    assert stage(csms, s.name, "CANARY").version_id == "v1"
    move_stage(csms, s.name, "CANARY", "v2")
    assert stages_by_version(csms, s.name) == {"v1": ["SYSPREVIOUS"], "v2": ["CANARY", "SYSCURRENT"]}
    csms.delete_secret_stage(DeleteSecretStageRequest(secret_name=s.name, stage_name="CANARY"))
    assert stages_by_version(csms, s.name) == {"v1": ["SYSPREVIOUS"], "v2": ["SYSCURRENT"]}
    expect_error(lambda: stage(csms, s.name, "CANARY"), "CSMS.0005")


def test_move_syscurrent_back(csms):
    s = new_secret(csms, secret_string="one")
    add_version(csms, s.name, secret_string="two")
    move_stage(csms, s.name, "SYSCURRENT", "v1")
    assert stage(csms, s.name, "SYSCURRENT").version_id == "v1"
    assert "SYSCURRENT" not in stages_by_version(csms, s.name)["v2"]


def test_stage_errors(csms):
    s = new_secret(csms)
    expect_error(lambda: move_stage(csms, s.name, "X", "v7"), "CSMS.0005")
    expect_error(lambda: move_stage(csms, s.name, "bad stage", "v1"), "CSMS.0002")
    expect_error(lambda: move_stage(csms, s.name, "s" * 65, "v1"), "CSMS.0002")
    expect_error(lambda: stage(csms, s.name, "NOPE"), "CSMS.0005")
    expect_error(lambda: stage(csms, unique("none"), "SYSCURRENT"), "CSMS.0106")
    expect_error(
        lambda: csms.delete_secret_stage(DeleteSecretStageRequest(secret_name=s.name, stage_name="NOPE")), "CSMS.0005"
    )
    for sys in ("SYSCURRENT", "SYSPREVIOUS"):
        if sys == "SYSPREVIOUS":
            add_version(csms, s.name, secret_string="two")
        expect_error(
            lambda: csms.delete_secret_stage(DeleteSecretStageRequest(secret_name=s.name, stage_name=sys)), "CSMS.0105"
        )
    assert stages_by_version(csms, s.name) == {"v1": ["SYSPREVIOUS"], "v2": ["SYSCURRENT"]}


def test_stage_quota(csms):
    s = new_secret(csms)
    # 12 stages per secret; SYSCURRENT is one of them.
    names = [f"S{i}" for i in range(11)]
    for n in names:
        move_stage(csms, s.name, n, "v1")
    expect_error(lambda: move_stage(csms, s.name, "ONE_TOO_MANY", "v1"), "CSMS.0203")
    # Moving an existing stage is not a new one.
    add_version(csms, s.name, secret_string="two", version_stages=["S0"])
    # Freeing one makes room again.
    csms.delete_secret_stage(DeleteSecretStageRequest(secret_name=s.name, stage_name="S1"))
    move_stage(csms, s.name, "ONE_MORE", "v1")

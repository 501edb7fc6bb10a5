"""KMS quotas group (user-quotas, user-instances) and API version discovery."""

from huaweicloudsdkkms.v2 import (
    ShowUserInstancesRequest,
    ShowUserQuotasRequest,
    ShowVersionRequest,
    ShowVersionsRequest,
)

from conftest import expect_raw_error, expect_raw_ok


def quotas(kms):
    r = kms.show_user_quotas(ShowUserQuotasRequest())
    return {q.type: (q.used, q.quota) for q in r.quotas.resources}


def instances(kms):
    return kms.show_user_instances(ShowUserInstancesRequest()).instance_num


def test_quotas_track_key_count(mesh, kms):
    before = quotas(kms)
    assert set(before) >= {"CMK", "grant_per_CMK"}
    used, limit = before["CMK"]
    assert isinstance(used, int) and isinstance(limit, int) and limit >= used
    assert instances(kms) == used
    mesh.new_key()
    assert quotas(kms)["CMK"][0] == used + 1
    assert instances(kms) == used + 1


def test_quotas_are_per_project(mesh, kms):
    b = mesh.kms("b_full")
    b_before, a_before = instances(b), instances(kms)
    mesh.new_key("b_full")
    assert instances(b) == b_before + 1
    assert instances(kms) == a_before


def test_quotas_wire_types(mesh):
    body = expect_raw_ok(mesh.raw("GET", "/v1.0/{project}/kms/user-quotas"))
    for r in body["quotas"]["resources"]:
        assert isinstance(r["used"], int) and isinstance(r["quota"], int)
    body = expect_raw_ok(mesh.raw("GET", "/v1.0/{project}/kms/user-instances"))
    assert isinstance(body["instance_num"], int)


def test_readonly_reads_quotas(mesh):
    assert "CMK" in quotas(mesh.kms("a_readonly"))


def test_versions(kms):
    r = kms.show_versions(ShowVersionsRequest())
    ids = [v.id for v in r.versions]
    assert "v1.0" in ids
    v = next(v for v in r.versions if v.id == "v1.0")
    assert v.status in ("CURRENT", "SUPPORTED", "DEPRECATED")
    one = kms.show_version(ShowVersionRequest(version_id="v1.0")).version
    assert one["id"] == "v1.0"


def test_unknown_version(mesh):
    # ASSUMPTION: an API version keymesh does not serve is an invalid URL.
    expect_raw_error(mesh.raw("GET", "/v9.9"), "KMS.0201")

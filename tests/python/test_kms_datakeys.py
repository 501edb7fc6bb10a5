"""KMS datakeys group: create-datakey (with and without plaintext),
encrypt-datakey, decrypt-datakey, RSA and EC data key pairs."""

import base64
import hashlib
import os
import uuid

from huaweicloudsdkkms.v2 import (
    CreateDatakeyRequest,
    CreateDatakeyRequestBody,
    CreateDatakeyWithoutPlaintextRequest,
    CreateEcDatakeyPairRequest,
    CreateEcDatakeyPairRequestBody,
    CreateRsaDatakeyPairRequest,
    CreateRsaDatakeyPairRequestBody,
    DecryptDatakeyRequest,
    DecryptDatakeyRequestBody,
    DisableKeyRequest,
    EncryptDatakeyRequest,
    EncryptDatakeyRequestBody,
    OperateKeyRequestBody,
)

from conftest import HEX_RE, expect_error, expect_raw_error, expect_raw_ok


def create(kms, key_id, **fields):
    return kms.create_datakey(CreateDatakeyRequest(body=CreateDatakeyRequestBody(key_id=key_id, **fields)))


def create_wo(kms, key_id, **fields):
    return kms.create_datakey_without_plaintext(
        CreateDatakeyWithoutPlaintextRequest(body=CreateDatakeyRequestBody(key_id=key_id, **fields))
    )


def decrypt(kms, key_id, cipher, length, aad=None):
    return kms.decrypt_datakey(
        DecryptDatakeyRequest(
            body=DecryptDatakeyRequestBody(
                key_id=key_id,
                cipher_text=cipher,
                datakey_cipher_length=length,
                additional_authenticated_data=aad,
            )
        )
    )


def encrypt(kms, key_id, plain_hex, length, aad=None):
    return kms.encrypt_datakey(
        EncryptDatakeyRequest(
            body=EncryptDatakeyRequestBody(
                key_id=key_id,
                plain_text=plain_hex,
                datakey_plain_length=length,
                additional_authenticated_data=aad,
            )
        )
    )


def dek_with_digest(dek):
    return (dek + hashlib.sha256(dek).digest()).hex()


# ---------------------------------------------------------------- create


def test_create_default_is_256_bits(kms, shared_key):
    r = create(kms, shared_key)
    assert r.key_id == shared_key
    assert HEX_RE.match(r.plain_text) and len(r.plain_text) == 64
    assert HEX_RE.match(r.cipher_text) and r.cipher_text
    d = decrypt(kms, shared_key, r.cipher_text, "32")
    assert d.data_key.lower() == r.plain_text.lower()
    assert d.datakey_length == "32"
    assert d.datakey_dgst.lower() == hashlib.sha256(bytes.fromhex(r.plain_text)).hexdigest()


def test_create_key_spec_and_length(kms, shared_key):
    assert len(create(kms, shared_key, key_spec="AES_128").plain_text) == 32
    assert len(create(kms, shared_key, key_spec="AES_256").plain_text) == 64
    assert len(create(kms, shared_key, datakey_length="512").plain_text) == 128
    # datakey_length wins over key_spec.
    assert len(create(kms, shared_key, key_spec="AES_128", datakey_length="64").plain_text) == 16


def test_create_documented_length_range_accepted(kms, shared_key):
    """§8.1: the documented range 8..8192 bits is accepted, not only 512."""
    for bits in ["8", "8192"]:
        r = create(kms, shared_key, datakey_length=bits)
        assert len(r.plain_text) == int(bits) // 4
        assert decrypt(kms, shared_key, r.cipher_text, str(int(bits) // 8)).data_key.lower() == r.plain_text.lower()


def test_create_length_errors(kms, shared_key):
    for bad in ["0", "8200", "16384", "-8"]:
        expect_error(lambda: create(kms, shared_key, datakey_length=bad), "KMS.1901")
    for bad in ["100", "12"]:
        expect_error(lambda: create(kms, shared_key, datakey_length=bad), "KMS.1903")


def test_create_bad_key_spec(kms, shared_key):
    expect_error(lambda: create(kms, shared_key, key_spec="AES_512"), "KMS.1902")


def test_create_length_as_json_number(mesh, shared_key):
    body = expect_raw_ok(
        mesh.raw("POST", "/v1.0/{project}/kms/create-datakey", {"key_id": shared_key, "datakey_length": 128})
    )
    assert len(body["plain_text"]) == 32


def test_create_without_plaintext(kms, shared_key):
    r = create_wo(kms, shared_key, datakey_length="256", additional_authenticated_data="wo")
    assert r.key_id == shared_key and HEX_RE.match(r.cipher_text)
    d = decrypt(kms, shared_key, r.cipher_text, "32", aad="wo")
    assert len(d.data_key) == 64


def test_create_without_plaintext_has_no_plaintext(mesh, shared_key):
    body = expect_raw_ok(
        mesh.raw("POST", "/v1.0/{project}/kms/create-datakey-without-plaintext", {"key_id": shared_key})
    )
    assert "plain_text" not in body


def test_create_errors(mesh, kms, shared_key):
    expect_error(lambda: create(kms, None), "KMS.0204")
    expect_error(lambda: create(kms, "x"), "KMS.0205")
    expect_error(lambda: create(kms, str(uuid.uuid4())), "KMS.0207")
    expect_error(lambda: create_wo(kms, str(uuid.uuid4())), "KMS.0207")
    k = mesh.new_key()
    kms.disable_key(DisableKeyRequest(body=OperateKeyRequestBody(key_id=k)))
    expect_error(lambda: create(kms, k), "KMS.0209")
    expect_error(lambda: create_wo(kms, k), "KMS.0209")


# ---------------------------------------------------------------- decrypt


def test_decrypt_aad_binding(kms, shared_key):
    r = create(kms, shared_key, additional_authenticated_data="ctx")
    assert decrypt(kms, shared_key, r.cipher_text, "32", aad="ctx").data_key.lower() == r.plain_text.lower()
    # The authentication tag fails: the DEK cannot be verified (KMS.2203).
    expect_error(lambda: decrypt(kms, shared_key, r.cipher_text, "32", aad="other"), "KMS.2203")
    expect_error(lambda: decrypt(kms, shared_key, r.cipher_text, "32"), "KMS.2203")


def test_decrypt_length_mismatch(kms, shared_key):
    r = create(kms, shared_key)
    expect_error(lambda: decrypt(kms, shared_key, r.cipher_text, "16"), "KMS.2204")
    expect_error(lambda: decrypt(kms, shared_key, r.cipher_text, "64"), "KMS.2204")


def test_decrypt_length_out_of_range(kms, shared_key):
    # §8.1: documented range 1..1024 bytes; outside it → KMS.2202.
    r = create(kms, shared_key)
    for bad in ["0", "1025"]:
        expect_error(lambda: decrypt(kms, shared_key, r.cipher_text, bad), "KMS.2202")


def test_decrypt_invalid_cipher_text(mesh, kms, shared_key):
    r = create(kms, shared_key)
    for bad in ["zz" * 40, "00" * 40, r.cipher_text[:-2], "abc"]:
        expect_error(lambda: decrypt(kms, shared_key, bad, "32"), "KMS.2201")
    # A ciphertext of another key of the project is not this key's ciphertext.
    other = mesh.new_key()
    expect_error(lambda: decrypt(kms, other, r.cipher_text, "32"), "KMS.2201")


def test_decrypt_missing_parameters(kms, shared_key):
    r = create(kms, shared_key)
    expect_error(lambda: decrypt(kms, shared_key, r.cipher_text, None), "KMS.0204")
    expect_error(lambda: decrypt(kms, shared_key, None, "32"), "KMS.0204")


def test_decrypt_wire_types(mesh, kms, shared_key):
    r = create(kms, shared_key)
    body = expect_raw_ok(
        mesh.raw(
            "POST",
            "/v1.0/{project}/kms/decrypt-datakey",
            {"key_id": shared_key, "cipher_text": r.cipher_text, "datakey_cipher_length": 32},
        )
    )
    assert body["datakey_length"] == "32"


# ---------------------------------------------------------------- encrypt-datakey


def test_encrypt_datakey_round_trip(kms, shared_key):
    dek = os.urandom(64)
    r = encrypt(kms, shared_key, dek_with_digest(dek), "64", aad="e")
    assert r.key_id == shared_key
    assert r.datakey_length == "64"
    assert HEX_RE.match(r.cipher_text)
    d = decrypt(kms, shared_key, r.cipher_text, "64", aad="e")
    assert d.data_key.lower() == dek.hex()
    assert d.datakey_dgst.lower() == hashlib.sha256(dek).hexdigest()


def test_encrypt_datakey_documented_lengths(kms, shared_key):
    """§8.1: any length in 1..1024 bytes, not only 64."""
    for n in [1, 32, 1024]:
        dek = os.urandom(n)
        r = encrypt(kms, shared_key, dek_with_digest(dek), str(n))
        assert decrypt(kms, shared_key, r.cipher_text, str(n)).data_key.lower() == dek.hex()


def test_encrypt_datakey_hash_failure(kms, shared_key):
    dek = os.urandom(32)
    bad = (dek + hashlib.sha256(b"other").digest()).hex()
    expect_error(lambda: encrypt(kms, shared_key, bad, "32"), "KMS.2103")


def test_encrypt_datakey_length_mismatch(kms, shared_key):
    dek = os.urandom(64)
    expect_error(lambda: encrypt(kms, shared_key, dek_with_digest(dek), "32"), "KMS.2104")
    # DEK alone, without its digest.
    expect_error(lambda: encrypt(kms, shared_key, dek.hex(), "64"), "KMS.2104")


def test_encrypt_datakey_invalid_plain_text(kms, shared_key):
    expect_error(lambda: encrypt(kms, shared_key, "not hex!" * 12, "16"), "KMS.2101")
    expect_error(lambda: encrypt(kms, shared_key, "abc", "1"), "KMS.2101")


def test_encrypt_datakey_length_out_of_range(kms, shared_key):
    dek = os.urandom(32)
    for bad in ["0", "1025"]:
        expect_error(lambda: encrypt(kms, shared_key, dek_with_digest(dek), bad), "KMS.2102")


def test_encrypt_datakey_missing(kms, shared_key):
    expect_error(lambda: encrypt(kms, shared_key, None, "32"), "KMS.0204")
    expect_error(lambda: encrypt(kms, shared_key, dek_with_digest(os.urandom(32)), None), "KMS.0204")


# ---------------------------------------------------------------- key pairs


def _der_len_ok(b64):
    return len(base64.b64decode(b64)) > 32


def test_rsa_datakey_pair(kms, shared_key):
    r = kms.create_rsa_datakey_pair(
        CreateRsaDatakeyPairRequest(body=CreateRsaDatakeyPairRequestBody(key_id=shared_key, key_spec="RSA_2048"))
    )
    assert (r.key_id, r.key_spec) == (shared_key, "RSA_2048")
    assert _der_len_ok(r.public_key) and _der_len_ok(r.private_key_cipher_text)
    assert r.private_key_plain_text and _der_len_ok(r.private_key_plain_text)


def test_ec_datakey_pair_without_plaintext(kms, shared_key):
    r = kms.create_ec_datakey_pair(
        CreateEcDatakeyPairRequest(
            body=CreateEcDatakeyPairRequestBody(key_id=shared_key, key_spec="ECC_NIST_P256", with_plain_text=False)
        )
    )
    assert (r.key_id, r.key_spec) == (shared_key, "ECC_NIST_P256")
    assert _der_len_ok(r.public_key) and _der_len_ok(r.private_key_cipher_text)
    assert not r.private_key_plain_text


def test_datakey_pair_errors(mesh, kms, shared_key):
    expect_error(
        lambda: kms.create_rsa_datakey_pair(
            CreateRsaDatakeyPairRequest(body=CreateRsaDatakeyPairRequestBody(key_id=shared_key))
        ),
        "KMS.0204",
    )
    expect_error(
        lambda: kms.create_ec_datakey_pair(
            CreateEcDatakeyPairRequest(
                body=CreateEcDatakeyPairRequestBody(key_id=str(uuid.uuid4()), key_spec="ECC_NIST_P384")
            )
        ),
        "KMS.0207",
    )
    # §2.4: with_plain_text is boolean-typed; the string "false" is not a boolean.
    expect_raw_error(
        mesh.raw(
            "POST",
            "/v1.0/{project}/kms/create-ec-datakey-pair",
            {"key_id": shared_key, "key_spec": "ECC_NIST_P256", "with_plain_text": "false"},
        ),
        "KMS.0202",
    )

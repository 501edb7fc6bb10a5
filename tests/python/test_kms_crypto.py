"""KMS crypto group: encrypt-data, decrypt-data, re-encrypt."""

import base64
import uuid

from huaweicloudsdkkms.v2 import (
    CreateDatakeyRequest,
    CreateDatakeyRequestBody,
    DecryptDataRequest,
    DecryptDataRequestBody,
    DecryptDatakeyRequest,
    DecryptDatakeyRequestBody,
    DeleteKeyRequest,
    EncryptDataRequest,
    EncryptDataRequestBody,
    ReEncryptRequest,
    ReEncryptRequestBody,
    ScheduleKeyDeletionRequestBody,
)

from conftest import B64_CIPHER_RE, disable, expect_error, expect_raw_error, expect_raw_ok, plaintext


def encrypt(kms, key_id, text, aad=None):
    return kms.encrypt_data(
        EncryptDataRequest(
            body=EncryptDataRequestBody(key_id=key_id, plain_text=text, additional_authenticated_data=aad)
        )
    )


def decrypt(kms, cipher, aad=None, key_id=None):
    return kms.decrypt_data(
        DecryptDataRequest(
            body=DecryptDataRequestBody(cipher_text=cipher, additional_authenticated_data=aad, key_id=key_id)
        )
    )


def schedule(kms, key_id):
    kms.delete_key(DeleteKeyRequest(body=ScheduleKeyDeletionRequestBody(key_id=key_id, pending_days="7")))


def test_round_trip(kms, shared_key):
    text = plaintext(100)
    r = encrypt(kms, shared_key, text)
    assert r.key_id == shared_key
    # §8.2: base64 in the range decrypt-data accepts.
    assert B64_CIPHER_RE.match(r.cipher_text), r.cipher_text
    d = decrypt(kms, r.cipher_text)
    assert d.key_id == shared_key
    assert d.plain_text == text
    assert base64.b64decode(d.plain_text_base64) == text.encode()


def test_round_trip_sizes_and_utf8(kms, shared_key):
    for text in [plaintext(1), plaintext(4096), plaintext(30) + " äöü €"]:
        r = encrypt(kms, shared_key, text)
        assert B64_CIPHER_RE.match(r.cipher_text)
        assert decrypt(kms, r.cipher_text).plain_text == text


def test_ciphertexts_are_randomised(kms, shared_key):
    text = plaintext(32)
    assert encrypt(kms, shared_key, text).cipher_text != encrypt(kms, shared_key, text).cipher_text


def test_decrypt_with_key_id_given(kms, shared_key):
    c = encrypt(kms, shared_key, plaintext(20)).cipher_text
    assert decrypt(kms, c, key_id=shared_key).plain_text == plaintext(20)


def test_aad_binds_ciphertext(kms, shared_key):
    c = encrypt(kms, shared_key, plaintext(40), aad="ctx-1").cipher_text
    assert decrypt(kms, c, aad="ctx-1").plain_text == plaintext(40)
    # TODO(edge): decrypt-data has no code of its own for an unauthentic
    # ciphertext; ASSUMPTION: KMS.2201 "Invalid cipher_text." (the only
    # published cipher_text code) rather than the generic KMS.0308.
    expect_error(lambda: decrypt(kms, c, aad="ctx-2"), "KMS.2201")
    expect_error(lambda: decrypt(kms, c), "KMS.2201")


def test_aad_too_long(kms, shared_key):
    # ASSUMPTION: additional_authenticated_data is the encryption context;
    # above 128 bytes → KMS.0208 "Invalid value of value encryption_context."
    expect_error(lambda: encrypt(kms, shared_key, plaintext(8), aad="a" * 129), "KMS.0208")
    assert encrypt(kms, shared_key, plaintext(8), aad="a" * 128).cipher_text


def test_decrypt_tampered_or_malformed(kms, shared_key):
    c = encrypt(kms, shared_key, plaintext(64)).cipher_text
    raw = bytearray(base64.b64decode(c))
    raw[-1] ^= 1
    tampered = base64.b64encode(bytes(raw)).decode()
    # TODO(edge): see test_aad_binds_ciphertext for the choice of KMS.2201.
    for bad in [tampered, "A" * 128, "!" * 200, c[:100], base64.b64encode(b"x" * 200).decode()]:
        expect_error(lambda: decrypt(kms, bad), "KMS.2201")


def test_decrypt_key_id_mismatch(mesh, kms, shared_key):
    """A ciphertext names its key; a different key_id is refused."""
    other = mesh.new_key()
    c = encrypt(kms, shared_key, plaintext(16)).cipher_text
    # ASSUMPTION: a key_id that is not the ciphertext's key makes the
    # ciphertext invalid for that key (KMS.2201).
    expect_error(lambda: decrypt(kms, c, key_id=other), "KMS.2201")


def test_plaintext_limits(kms, shared_key):
    # ASSUMPTION: plain_text outside 1..4096 bytes → KMS.2101 "Invalid plain_text."
    expect_error(lambda: encrypt(kms, shared_key, plaintext(4097)), "KMS.2101")
    # 4096 characters but 4097+ bytes after UTF-8 encoding.
    expect_error(lambda: encrypt(kms, shared_key, plaintext(4095) + "€"), "KMS.2101")
    expect_error(lambda: encrypt(kms, shared_key, ""), "KMS.2101")


def test_missing_parameters(kms, shared_key):
    expect_error(
        lambda: kms.encrypt_data(EncryptDataRequest(body=EncryptDataRequestBody(key_id=shared_key))), "KMS.0204"
    )
    expect_error(
        lambda: kms.encrypt_data(EncryptDataRequest(body=EncryptDataRequestBody(plain_text=plaintext(4)))),
        "KMS.0204",
    )
    expect_error(lambda: kms.decrypt_data(DecryptDataRequest(body=DecryptDataRequestBody())), "KMS.0204")


def test_bad_and_unknown_key(kms):
    expect_error(lambda: encrypt(kms, "nope", plaintext(4)), "KMS.0205")
    expect_error(lambda: encrypt(kms, str(uuid.uuid4()), plaintext(4)), "KMS.0207")


def test_disabled_key(mesh, kms):
    k = mesh.new_key()
    c = encrypt(kms, k, plaintext(16)).cipher_text
    disable(kms, k)
    expect_error(lambda: encrypt(kms, k, plaintext(16)), "KMS.0209")
    expect_error(lambda: decrypt(kms, c), "KMS.0209")


def test_pending_deletion_key(mesh, kms):
    k = mesh.new_key()
    c = encrypt(kms, k, plaintext(16)).cipher_text
    schedule(kms, k)
    expect_error(lambda: encrypt(kms, k, plaintext(16)), "KMS.0210")
    expect_error(lambda: decrypt(kms, c), "KMS.0210")


def test_symmetric_key_rejects_asymmetric_algorithm(kms, shared_key):
    expect_error(
        lambda: kms.encrypt_data(
            EncryptDataRequest(
                body=EncryptDataRequestBody(
                    key_id=shared_key, plain_text=plaintext(8), encryption_algorithm="RSAES_OAEP_SHA_256"
                )
            )
        ),
        "KMS.2105",
    )


def test_sequence_too_long(kms, shared_key):
    expect_error(
        lambda: kms.encrypt_data(
            EncryptDataRequest(
                body=EncryptDataRequestBody(key_id=shared_key, plain_text=plaintext(8), sequence="s" * 37)
            )
        ),
        "KMS.0206",
    )


def test_readonly_account_cannot_encrypt(mesh, shared_key):
    # ASSUMPTION: like Huawei's "KMS ReadOnlyAccess", a read-only account may
    # only describe and list; cryptographic operations need full access.
    expect_error(lambda: encrypt(mesh.kms("a_readonly"), shared_key, plaintext(8)), "KMS.0307")


# ---------------------------------------------------------------- re-encrypt


def re_encrypt(kms, cipher, dest, **fields):
    return kms.re_encrypt(
        ReEncryptRequest(body=ReEncryptRequestBody(cipher_text=cipher, destination_key_id=dest, **fields))
    )


def test_re_encrypt_data(mesh, kms, shared_key):
    dest = mesh.new_key()
    c = encrypt(kms, shared_key, plaintext(50), aad="src").cipher_text
    r = re_encrypt(
        kms,
        c,
        dest,
        source_additional_authenticated_data="src",
        destination_additional_authenticated_data="dst",
    )
    assert (r.key_id, r.source_key_id) == (dest, shared_key)
    assert B64_CIPHER_RE.match(r.cipher_text)
    d = decrypt(kms, r.cipher_text, aad="dst")
    assert (d.key_id, d.plain_text) == (dest, plaintext(50))
    expect_error(lambda: decrypt(kms, r.cipher_text, aad="src"), "KMS.2201")


def test_re_encrypt_datakey(mesh, kms, shared_key):
    dest = mesh.new_key()
    dk = kms.create_datakey(
        CreateDatakeyRequest(body=CreateDatakeyRequestBody(key_id=shared_key, datakey_length="256"))
    )
    r = re_encrypt(kms, dk.cipher_text, dest, datakey_cipher_length="32")
    assert r.key_id == dest
    d = kms.decrypt_datakey(
        DecryptDatakeyRequest(
            body=DecryptDatakeyRequestBody(key_id=dest, cipher_text=r.cipher_text, datakey_cipher_length="32")
        )
    )
    assert d.data_key == dk.plain_text


def test_re_encrypt_errors(mesh, kms, shared_key):
    c = encrypt(kms, shared_key, plaintext(10)).cipher_text
    expect_error(
        lambda: kms.re_encrypt(ReEncryptRequest(body=ReEncryptRequestBody(cipher_text=c))), "KMS.0204"
    )
    expect_error(lambda: re_encrypt(kms, c, "bad-id"), "KMS.0205")
    expect_error(lambda: re_encrypt(kms, c, str(uuid.uuid4())), "KMS.0207")
    expect_error(lambda: re_encrypt(kms, "A" * 128, shared_key), "KMS.2201")
    dest = mesh.new_key()
    disable(kms, dest)
    expect_error(lambda: re_encrypt(kms, c, dest), "KMS.0209")


# ---------------------------------------------------------------- raw typing


def test_encrypt_raw_request(mesh, shared_key):
    """The SDK sends `", "`/`": "` separators; the response is flat JSON."""
    body = expect_raw_ok(
        mesh.raw(
            "POST", "/v1.0/{project}/kms/encrypt-data", {"key_id": shared_key, "plain_text": plaintext(12)}
        )
    )
    assert set(body) >= {"key_id", "cipher_text"}


def test_encrypt_plain_text_wrong_json_type(mesh, shared_key):
    # A string field sent as a number: the JSON does not fit the message format.
    expect_raw_error(
        mesh.raw("POST", "/v1.0/{project}/kms/encrypt-data", {"key_id": shared_key, "plain_text": 12345}),
        "KMS.0202",
    )

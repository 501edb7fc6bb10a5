//! Every row of the published Huawei KMS/CSMS error table
//! (`shared/errors/huawei-kms-csms.csv`): HTTP status, `error_code` and
//! `error_msg` exactly as published. Generated from the CSV; the unit test
//! below and the e2e table test keep it honest.

/// One published error: what goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub status: u16,
    pub code: &'static str,
    pub msg: &'static str,
}

pub const CSMS_0002: Code = Code {
    status: 400,
    code: "CSMS.0002",
    msg: "The value of parameter is invalid.",
};
pub const CSMS_0003: Code = Code {
    status: 400,
    code: "CSMS.0003",
    msg: "The request is invalid.",
};
pub const CSMS_0004: Code = Code {
    status: 400,
    code: "CSMS.0004",
    msg: "The requested body format is wrong.",
};
pub const CSMS_0005: Code = Code {
    status: 400,
    code: "CSMS.0005",
    msg: "The resource does not exist.",
};
pub const CSMS_0103: Code = Code {
    status: 400,
    code: "CSMS.0103",
    msg: "The secret is in the scheduled deletion state.",
};
pub const CSMS_0105: Code = Code {
    status: 400,
    code: "CSMS.0105",
    msg: "Can not delete the system internal stage.",
};
pub const CSMS_0106: Code = Code {
    status: 400,
    code: "CSMS.0106",
    msg: "The secret name not found int the db.",
};
pub const CSMS_0107: Code = Code {
    status: 400,
    code: "CSMS.0107",
    msg: "The secret is in schedule delete state.",
};
pub const CSMS_0108: Code = Code {
    status: 400,
    code: "CSMS.0108",
    msg: "The secret is not in schedule delete state.",
};
pub const CSMS_0202: Code = Code {
    status: 400,
    code: "CSMS.0202",
    msg: "The number of secret has reached the upper limit.",
};
pub const CSMS_0203: Code = Code {
    status: 400,
    code: "CSMS.0203",
    msg: "The number of stage has reached the upper limit.",
};
pub const CSMS_0204: Code = Code {
    status: 400,
    code: "CSMS.0204",
    msg: "The number of stage is greater than the quota limit.",
};
pub const CSMS_0301: Code = Code {
    status: 400,
    code: "CSMS.0301",
    msg: "Invalid X-Auth-Token.",
};
pub const CSMS_0401: Code = Code {
    status: 400,
    code: "CSMS.0401",
    msg: "Can not get the protected secret value using the provided KMS key.",
};
pub const CSMS_0109: Code = Code {
    status: 403,
    code: "CSMS.0109",
    msg: "The secret state is not enabled.",
};
pub const CSMS_0302: Code = Code {
    status: 403,
    code: "CSMS.0302",
    msg: "The user role has no permission to access the interface.",
};
pub const CSMS_0205: Code = Code {
    status: 404,
    code: "CSMS.0205",
    msg: "Version quota not found for secret",
};
pub const CSMS_0206: Code = Code {
    status: 404,
    code: "CSMS.0206",
    msg: "Stage quota not found for secret",
};
pub const CSMS_0207: Code = Code {
    status: 404,
    code: "CSMS.0207",
    msg: "Secret quota not found.",
};
pub const CSMS_0101: Code = Code {
    status: 409,
    code: "CSMS.0101",
    msg: "The secret name already exists.",
};
pub const CSMS_0102: Code = Code {
    status: 409,
    code: "CSMS.0102",
    msg: "The version id already exists.",
};
pub const CSMS_0104: Code = Code {
    status: 409,
    code: "CSMS.0104",
    msg: "The stage name already exists.",
};
pub const CSMS_0001: Code = Code {
    status: 500,
    code: "CSMS.0001",
    msg: "An internal error occurred.",
};
pub const CSMS_0006: Code = Code {
    status: 500,
    code: "CSMS.0006",
    msg: "AES encrypt secret value occurred an error.",
};
pub const CSMS_0201: Code = Code {
    status: 500,
    code: "CSMS.0201",
    msg: "The number of secret has reached the upper limit.",
};
pub const KMS_0105: Code = Code {
    status: 400,
    code: "KMS.0105",
    msg: "A system exception occurred. Contact technical support.",
};
pub const KMS_0106: Code = Code {
    status: 400,
    code: "KMS.0106",
    msg: "It is replica service, readonly api allowed.",
};
pub const KMS_0201: Code = Code {
    status: 400,
    code: "KMS.0201",
    msg: "Invalid request URL.",
};
pub const KMS_0202: Code = Code {
    status: 400,
    code: "KMS.0202",
    msg: "Invalid JSON format of the request message.",
};
pub const KMS_0203: Code = Code {
    status: 400,
    code: "KMS.0203",
    msg: "Request message too long.",
};
pub const KMS_0204: Code = Code {
    status: 400,
    code: "KMS.0204",
    msg: "Parameters missing in the request message.",
};
pub const KMS_0205: Code = Code {
    status: 400,
    code: "KMS.0205",
    msg: "Invalid key ID.",
};
pub const KMS_0206: Code = Code {
    status: 400,
    code: "KMS.0206",
    msg: "Invalid sequence number.",
};
pub const KMS_0208: Code = Code {
    status: 400,
    code: "KMS.0208",
    msg: "Invalid value of value encryption_context.",
};
pub const KMS_0209: Code = Code {
    status: 400,
    code: "KMS.0209",
    msg: "The key has been disabled.",
};
pub const KMS_0210: Code = Code {
    status: 400,
    code: "KMS.0210",
    msg: "The key is in Scheduled deletion state and cannot be used.",
};
pub const KMS_0211: Code = Code {
    status: 400,
    code: "KMS.0211",
    msg: "Cannot perform this operation on Default Master Keys.",
};
pub const KMS_0212: Code = Code {
    status: 400,
    code: "KMS.0212",
    msg: "Invalid resource type.",
};
pub const KMS_0214: Code = Code {
    status: 400,
    code: "KMS.0214",
    msg: "The request format is invalid.",
};
pub const KMS_0308: Code = Code {
    status: 400,
    code: "KMS.0308",
    msg: "Invalid parameter.",
};
pub const KMS_0309: Code = Code {
    status: 400,
    code: "KMS.0309",
    msg: "External keys required.",
};
pub const KMS_0310: Code = Code {
    status: 400,
    code: "KMS.0310",
    msg: "The key is not in Pending import state.",
};
pub const KMS_0311: Code = Code {
    status: 400,
    code: "KMS.0311",
    msg: "Failed to decrypt data using the RSA private key.",
};
pub const KMS_0312: Code = Code {
    status: 400,
    code: "KMS.0312",
    msg: "External keys cannot be rotated.",
};
pub const KMS_0313: Code = Code {
    status: 400,
    code: "KMS.0313",
    msg: "Key rotation is not enabled.",
};
pub const KMS_0315: Code = Code {
    status: 400,
    code: "KMS.0315",
    msg: "Invalid partition_id.",
};
pub const KMS_0317: Code = Code {
    status: 400,
    code: "KMS.0317",
    msg: "The cmk partition is not enabled.",
};
pub const KMS_0318: Code = Code {
    status: 400,
    code: "KMS.0318",
    msg: "Partition name has exist.",
};
pub const KMS_0319: Code = Code {
    status: 400,
    code: "KMS.0319",
    msg: "Rotation not supported in the current KMS version.",
};
pub const KMS_0320: Code = Code {
    status: 400,
    code: "KMS.0320",
    msg: "Resource frozen.",
};
pub const KMS_0323: Code = Code {
    status: 400,
    code: "KMS.0323",
    msg: "Failed to obtain the partition of the key.",
};
pub const KMS_0324: Code = Code {
    status: 400,
    code: "KMS.0324",
    msg: "RSA keys cannot be rotated.",
};
pub const KMS_0325: Code = Code {
    status: 400,
    code: "KMS.0325",
    msg: "The asymmetric key is not support this operation.",
};
pub const KMS_0327: Code = Code {
    status: 400,
    code: "KMS.0327",
    msg: "Failed to obtain user permissions.",
};
pub const KMS_0329: Code = Code {
    status: 400,
    code: "KMS.0329",
    msg: "Hash algorithm does not match the digest length.",
};
pub const KMS_0331: Code = Code {
    status: 400,
    code: "KMS.0331",
    msg: "The symmetric key is not support this operation.",
};
pub const KMS_0332: Code = Code {
    status: 400,
    code: "KMS.0332",
    msg: "This key is not support the signing algorithm.",
};
pub const KMS_0334: Code = Code {
    status: 400,
    code: "KMS.0334",
    msg: "The cmk is used to encrypt and decrypt.",
};
pub const KMS_0335: Code = Code {
    status: 400,
    code: "KMS.0335",
    msg: "The cmk is used to sign and verify.",
};
pub const KMS_0338: Code = Code {
    status: 400,
    code: "KMS.0338",
    msg: "The custom keystore do not support rotation.",
};
pub const KMS_0339: Code = Code {
    status: 400,
    code: "KMS.0339",
    msg: "The custom keystore do not support import key.",
};
pub const KMS_0340: Code = Code {
    status: 400,
    code: "KMS.0340",
    msg: "not support keystore.",
};
pub const KMS_0341: Code = Code {
    status: 400,
    code: "KMS.0341",
    msg: "The hmac key do not support this operation.",
};
pub const KMS_0401: Code = Code {
    status: 400,
    code: "KMS.0401",
    msg: "Tag list cannot be empty.",
};
pub const KMS_0402: Code = Code {
    status: 400,
    code: "KMS.0402",
    msg: "Invalid match value.",
};
pub const KMS_0403: Code = Code {
    status: 400,
    code: "KMS.0403",
    msg: "Invalid match key.",
};
pub const KMS_0404: Code = Code {
    status: 400,
    code: "KMS.0404",
    msg: "Invalid action.",
};
pub const KMS_0405: Code = Code {
    status: 400,
    code: "KMS.0405",
    msg: "Invalid tag value.",
};
pub const KMS_0406: Code = Code {
    status: 400,
    code: "KMS.0406",
    msg: "Invalid tag key.",
};
pub const KMS_0407: Code = Code {
    status: 400,
    code: "KMS.0407",
    msg: "Invalid tag list size.",
};
pub const KMS_0408: Code = Code {
    status: 400,
    code: "KMS.0408",
    msg: "Invalid resourceType.",
};
pub const KMS_0409: Code = Code {
    status: 400,
    code: "KMS.0409",
    msg: "Too many tags.",
};
pub const KMS_0410: Code = Code {
    status: 400,
    code: "KMS.0410",
    msg: "Invalid tag value length.",
};
pub const KMS_0411: Code = Code {
    status: 400,
    code: "KMS.0411",
    msg: "Invalid tag key length.",
};
pub const KMS_0412: Code = Code {
    status: 400,
    code: "KMS.0412",
    msg: "Invalid tag list.",
};
pub const KMS_0413: Code = Code {
    status: 400,
    code: "KMS.0413",
    msg: "Too many tag values.",
};
pub const KMS_0414: Code = Code {
    status: 400,
    code: "KMS.0414",
    msg: "Invalid tags.",
};
pub const KMS_0415: Code = Code {
    status: 400,
    code: "KMS.0415",
    msg: "Invalid matches.",
};
pub const KMS_0417: Code = Code {
    status: 400,
    code: "KMS.0417",
    msg: "Invalid offset.",
};
pub const KMS_0418: Code = Code {
    status: 400,
    code: "KMS.0418",
    msg: "Offset is not required.",
};
pub const KMS_1101: Code = Code {
    status: 400,
    code: "KMS.1101",
    msg: "Invalid key_alias.",
};
pub const KMS_1102: Code = Code {
    status: 400,
    code: "KMS.1102",
    msg: "Invalid realm.",
};
pub const KMS_1103: Code = Code {
    status: 400,
    code: "KMS.1103",
    msg: "Invalid key_description.",
};
pub const KMS_1104: Code = Code {
    status: 400,
    code: "KMS.1104",
    msg: "Duplicate key aliases.",
};
pub const KMS_1105: Code = Code {
    status: 400,
    code: "KMS.1105",
    msg: "Too many keys.",
};
pub const KMS_1108: Code = Code {
    status: 400,
    code: "KMS.1108",
    msg: "Failed to create the default partition for the key.",
};
pub const KMS_1109: Code = Code {
    status: 400,
    code: "KMS.1109",
    msg: "Failed to create the route for the key.",
};
pub const KMS_1110: Code = Code {
    status: 400,
    code: "KMS.1110",
    msg: "Invalid alg_type.",
};
pub const KMS_1114: Code = Code {
    status: 400,
    code: "KMS.1114",
    msg: "EC keys do not support to encrypt/decrypt.",
};
pub const KMS_1115: Code = Code {
    status: 400,
    code: "KMS.1115",
    msg: "Symmetric keys do not support to sign/verify.",
};
pub const KMS_1201: Code = Code {
    status: 400,
    code: "KMS.1201",
    msg: "The key is not disabled.",
};
pub const KMS_1301: Code = Code {
    status: 400,
    code: "KMS.1301",
    msg: "The key is not enabled.",
};
pub const KMS_1401: Code = Code {
    status: 400,
    code: "KMS.1401",
    msg: "Set the pending deletion period between 7 to 1096 days.",
};
pub const KMS_1402: Code = Code {
    status: 400,
    code: "KMS.1402",
    msg: "The key is already in Pending deletion state.",
};
pub const KMS_1404: Code = Code {
    status: 400,
    code: "KMS.1404",
    msg: "This region is not the original region of the key, and it is not allowed to import-key-material.",
};
pub const KMS_1501: Code = Code {
    status: 400,
    code: "KMS.1501",
    msg: "The key is not in Pending deletion state.",
};
pub const KMS_1601: Code = Code {
    status: 400,
    code: "KMS.1601",
    msg: "Invalid limit.",
};
pub const KMS_1602: Code = Code {
    status: 400,
    code: "KMS.1602",
    msg: "marker must be greater than or equals 0.",
};
pub const KMS_1603: Code = Code {
    status: 400,
    code: "KMS.1603",
    msg: "Invalid offset.",
};
pub const KMS_1801: Code = Code {
    status: 400,
    code: "KMS.1801",
    msg: "random_data_length must be 512 bits.",
};
pub const KMS_1802: Code = Code {
    status: 400,
    code: "KMS.1802",
    msg: "random_data_length must be a multiple of 8.",
};
pub const KMS_1901: Code = Code {
    status: 400,
    code: "KMS.1901",
    msg: "datakey_length must be in the range 8 bits to 8,192 bits.",
};
pub const KMS_1902: Code = Code {
    status: 400,
    code: "KMS.1902",
    msg: "key_spec can only be AES_128 or AES_256.",
};
pub const KMS_1903: Code = Code {
    status: 400,
    code: "KMS.1903",
    msg: "datakey_length must be a multiple of 8.",
};
pub const KMS_1904: Code = Code {
    status: 400,
    code: "KMS.1904",
    msg: "The rsa wrapping data key is over length 1520 bits.",
};
pub const KMS_2001: Code = Code {
    status: 400,
    code: "KMS.2001",
    msg: "datakey_length must be 512 bits.",
};
pub const KMS_2101: Code = Code {
    status: 400,
    code: "KMS.2101",
    msg: "Invalid plain_text.",
};
pub const KMS_2102: Code = Code {
    status: 400,
    code: "KMS.2102",
    msg: "datakey_plain_length must be 64 bytes.",
};
pub const KMS_2103: Code = Code {
    status: 400,
    code: "KMS.2103",
    msg: "Failed to verify the DEK hash.",
};
pub const KMS_2104: Code = Code {
    status: 400,
    code: "KMS.2104",
    msg: "The length of plain_text does not match datakey_plain_length.",
};
pub const KMS_2105: Code = Code {
    status: 400,
    code: "KMS.2105",
    msg: "The symmetric key not support this encryption algorithm.",
};
pub const KMS_2106: Code = Code {
    status: 400,
    code: "KMS.2106",
    msg: "The rsa key not support this encryption algorithm.",
};
pub const KMS_2108: Code = Code {
    status: 400,
    code: "KMS.2108",
    msg: "The rsa encryption plain_text is over length.",
};
pub const KMS_2201: Code = Code {
    status: 400,
    code: "KMS.2201",
    msg: "Invalid cipher_text.",
};
pub const KMS_2202: Code = Code {
    status: 400,
    code: "KMS.2202",
    msg: "datakey_cipher_length must be 64 bytes.",
};
pub const KMS_2203: Code = Code {
    status: 400,
    code: "KMS.2203",
    msg: "Failed to verify the DEK hash.",
};
pub const KMS_2204: Code = Code {
    status: 400,
    code: "KMS.2204",
    msg: "The length of cipher_text does not match datakey_cipher_length.",
};
pub const KMS_2301: Code = Code {
    status: 400,
    code: "KMS.2301",
    msg: "The quota value is beyond the maximum configurable limit.",
};
pub const KMS_2302: Code = Code {
    status: 400,
    code: "KMS.2302",
    msg: "New quota value must not less than old.",
};
pub const KMS_2303: Code = Code {
    status: 400,
    code: "KMS.2303",
    msg: "The quota type is not supported.",
};
pub const KMS_2304: Code = Code {
    status: 400,
    code: "KMS.2304",
    msg: "Can not update grant quota when no grant has created.",
};
pub const KMS_2305: Code = Code {
    status: 400,
    code: "KMS.2305",
    msg: "Can not update cmk quota when no cmk has created.",
};
pub const KMS_2401: Code = Code {
    status: 400,
    code: "KMS.2401",
    msg: "Specify an operation in addition to create-grant.",
};
pub const KMS_2402: Code = Code {
    status: 400,
    code: "KMS.2402",
    msg: "Invalid user ID.",
};
pub const KMS_2403: Code = Code {
    status: 400,
    code: "KMS.2403",
    msg: "Failed to create the grant.",
};
pub const KMS_2404: Code = Code {
    status: 400,
    code: "KMS.2404",
    msg: "Too many CMK grants.",
};
pub const KMS_2405: Code = Code {
    status: 400,
    code: "KMS.2405",
    msg: "Too many grants.",
};
pub const KMS_2406: Code = Code {
    status: 400,
    code: "KMS.2406",
    msg: "The basic partition has no right to create grant.",
};
pub const KMS_2501: Code = Code {
    status: 400,
    code: "KMS.2501",
    msg: "Invalid grant ID.",
};
pub const KMS_2502: Code = Code {
    status: 400,
    code: "KMS.2502",
    msg: "grant_id and key_id do not match.",
};
pub const KMS_2601: Code = Code {
    status: 400,
    code: "KMS.2601",
    msg: "Token expired.",
};
pub const KMS_2602: Code = Code {
    status: 400,
    code: "KMS.2602",
    msg: "Key expiration time must be later than the current time.",
};
pub const KMS_2603: Code = Code {
    status: 400,
    code: "KMS.2603",
    msg: "Key IDs in the imported key and token do not match.",
};
pub const KMS_2604: Code = Code {
    status: 400,
    code: "KMS.2604",
    msg: "The external key plaintext length must be 32 bits.",
};
pub const KMS_2605: Code = Code {
    status: 400,
    code: "KMS.2605",
    msg: "Token verification failed.",
};
pub const KMS_2606: Code = Code {
    status: 400,
    code: "KMS.2606",
    msg: "You are importing a deleted key again. The imported plaintext must be the same as the deleted key plaintext.",
};
pub const KMS_2608: Code = Code {
    status: 400,
    code: "KMS.2608",
    msg: "The imported asymmetric private key can not be null.",
};
pub const KMS_2609: Code = Code {
    status: 400,
    code: "KMS.2609",
    msg: "The imported asymmetric private is invalid.",
};
pub const KMS_2610: Code = Code {
    status: 400,
    code: "KMS.2610",
    msg: "The temporary key length must be 16 or 32.",
};
pub const KMS_2701: Code = Code {
    status: 400,
    code: "KMS.2701",
    msg: "Key material is not in Enabled or Disabled state and cannot be deleted.",
};
pub const KMS_2702: Code = Code {
    status: 400,
    code: "KMS.2702",
    msg: "The imported private key material can not be deleted.",
};
pub const KMS_2801: Code = Code {
    status: 400,
    code: "KMS.2801",
    msg: "End_time must bigger than start_time.",
};
pub const KMS_2901: Code = Code {
    status: 400,
    code: "KMS.2901",
    msg: "Key rotation is not disabled.",
};
pub const KMS_3001: Code = Code {
    status: 400,
    code: "KMS.3001",
    msg: "Invalid rotation_interval.",
};
pub const KMS_3103: Code = Code {
    status: 400,
    code: "KMS.3103",
    msg: "Invalid id of tenant.",
};
pub const KMS_3201: Code = Code {
    status: 400,
    code: "KMS.3201",
    msg: "Generate order id failed.",
};
pub const KMS_3202: Code = Code {
    status: 400,
    code: "KMS.3202",
    msg: "KMS error.",
};
pub const KMS_3702: Code = Code {
    status: 400,
    code: "KMS.3702",
    msg: "Invalid kms status parameter.",
};
pub const KMS_3801: Code = Code {
    status: 400,
    code: "KMS.3801",
    msg: "KMS key sync enable and configuration failed.",
};
pub const KMS_3802: Code = Code {
    status: 400,
    code: "KMS.3802",
    msg: "Failed to sync operation convert to born region.",
};
pub const KMS_3803: Code = Code {
    status: 400,
    code: "KMS.3803",
    msg: "The key of born region is turned off sync, so no operation can be performed.",
};
pub const KMS_3804: Code = Code {
    status: 400,
    code: "KMS.3804",
    msg: "AttestationDocument parsing failed.",
};
pub const KMS_3902: Code = Code {
    status: 400,
    code: "KMS.3902",
    msg: "Invalid Service-Transaction-Id in request header.",
};
pub const KMS_3903: Code = Code {
    status: 400,
    code: "KMS.3903",
    msg: "Service-Transaction-Id is missing in request header.",
};
pub const KMS_4001: Code = Code {
    status: 400,
    code: "KMS.4001",
    msg: "Service name to notify is illegal.",
};
pub const KMS_4002: Code = Code {
    status: 400,
    code: "KMS.4002",
    msg: "Service url to notify is illegal.",
};
pub const KMS_5022: Code = Code {
    status: 400,
    code: "KMS.5022",
    msg: "Tags are not compliant.",
};
pub const KMS_5023: Code = Code {
    status: 400,
    code: "KMS.5023",
    msg: "Pdp5 Header is invalid.",
};
pub const KMS_0301: Code = Code {
    status: 403,
    code: "KMS.0301",
    msg: "Invalid or null X-Auth-Token.",
};
pub const KMS_0302: Code = Code {
    status: 403,
    code: "KMS.0302",
    msg: "Invalid X-Auth-Token.",
};
pub const KMS_0303: Code = Code {
    status: 403,
    code: "KMS.0303",
    msg: "X-Auth-Token expired.",
};
pub const KMS_0304: Code = Code {
    status: 403,
    code: "KMS.0304",
    msg: "X-Auth-Token contains the OBT tag and cannot be used to access services.",
};
pub const KMS_0305: Code = Code {
    status: 403,
    code: "KMS.0305",
    msg: "Invalid X-Auth-Token project name.",
};
pub const KMS_0306: Code = Code {
    status: 403,
    code: "KMS.0306",
    msg: "No access permissions.",
};
pub const KMS_0307: Code = Code {
    status: 403,
    code: "KMS.0307",
    msg: "No access permissions.",
};
pub const KMS_0314: Code = Code {
    status: 403,
    code: "KMS.0314",
    msg: "Real-name authentication is required to access the API.",
};
pub const KMS_0321: Code = Code {
    status: 403,
    code: "KMS.0321",
    msg: "URIs in URL and X-Auth-Token do not match.",
};
pub const KMS_0322: Code = Code {
    status: 403,
    code: "KMS.0322",
    msg: "The user has no permission to access the partition.",
};
pub const KMS_0326: Code = Code {
    status: 403,
    code: "KMS.0326",
    msg: "No access permissions.",
};
pub const KMS_0328: Code = Code {
    status: 403,
    code: "KMS.0328",
    msg: "KMS has been frozen. Renew it and try again.",
};
pub const KMS_0330: Code = Code {
    status: 403,
    code: "KMS.0330",
    msg: "User has no permission.",
};
pub const KMS_0207: Code = Code {
    status: 404,
    code: "KMS.0207",
    msg: "The key does not exist.",
};
pub const KMS_0316: Code = Code {
    status: 404,
    code: "KMS.0316",
    msg: "No exist partition_id.",
};
pub const KMS_0416: Code = Code {
    status: 404,
    code: "KMS.0416",
    msg: "Invalid tag ID.",
};
pub const KMS_3901: Code = Code {
    status: 404,
    code: "KMS.3901",
    msg: "The requested jobId cannot be found.",
};
pub const KMS_0215: Code = Code {
    status: 405,
    code: "KMS.0215",
    msg: "Request method not supported.",
};
pub const KMS_0100: Code = Code {
    status: 500,
    code: "KMS.0100",
    msg: "Get-status error.",
};
pub const KMS_0101: Code = Code {
    status: 500,
    code: "KMS.0101",
    msg: "KMS error.",
};
pub const KMS_0102: Code = Code {
    status: 500,
    code: "KMS.0102",
    msg: "Abnormal KMS I/O.",
};
pub const KMS_0103: Code = Code {
    status: 500,
    code: "KMS.0103",
    msg: "A system exception occurred. Contact technical support.",
};
pub const KMS_3805: Code = Code {
    status: 500,
    code: "KMS.3805",
    msg: "Failed to build digital envelope.",
};
pub const KMS_3806: Code = Code {
    status: 500,
    code: "KMS.3806",
    msg: "Unable to obtain enclave root certificate, please contact technical support.",
};
pub const KMS_5012: Code = Code {
    status: 500,
    code: "KMS.5012",
    msg: "Request PDP service failed.",
};
pub const KMS_5021: Code = Code {
    status: 500,
    code: "KMS.5021",
    msg: "Check pdp5 auth failed.",
};
pub const KMS_0104: Code = Code {
    status: 503,
    code: "KMS.0104",
    msg: "A system exception occurred. Contact technical support.",
};

/// Every published row, in table order.
pub const ALL: &[Code] = &[
    CSMS_0002, CSMS_0003, CSMS_0004, CSMS_0005, CSMS_0103, CSMS_0105, CSMS_0106, CSMS_0107,
    CSMS_0108, CSMS_0202, CSMS_0203, CSMS_0204, CSMS_0301, CSMS_0401, CSMS_0109, CSMS_0302,
    CSMS_0205, CSMS_0206, CSMS_0207, CSMS_0101, CSMS_0102, CSMS_0104, CSMS_0001, CSMS_0006,
    CSMS_0201, KMS_0105, KMS_0106, KMS_0201, KMS_0202, KMS_0203, KMS_0204, KMS_0205, KMS_0206,
    KMS_0208, KMS_0209, KMS_0210, KMS_0211, KMS_0212, KMS_0214, KMS_0308, KMS_0309, KMS_0310,
    KMS_0311, KMS_0312, KMS_0313, KMS_0315, KMS_0317, KMS_0318, KMS_0319, KMS_0320, KMS_0323,
    KMS_0324, KMS_0325, KMS_0327, KMS_0329, KMS_0331, KMS_0332, KMS_0334, KMS_0335, KMS_0338,
    KMS_0339, KMS_0340, KMS_0341, KMS_0401, KMS_0402, KMS_0403, KMS_0404, KMS_0405, KMS_0406,
    KMS_0407, KMS_0408, KMS_0409, KMS_0410, KMS_0411, KMS_0412, KMS_0413, KMS_0414, KMS_0415,
    KMS_0417, KMS_0418, KMS_1101, KMS_1102, KMS_1103, KMS_1104, KMS_1105, KMS_1108, KMS_1109,
    KMS_1110, KMS_1114, KMS_1115, KMS_1201, KMS_1301, KMS_1401, KMS_1402, KMS_1404, KMS_1501,
    KMS_1601, KMS_1602, KMS_1603, KMS_1801, KMS_1802, KMS_1901, KMS_1902, KMS_1903, KMS_1904,
    KMS_2001, KMS_2101, KMS_2102, KMS_2103, KMS_2104, KMS_2105, KMS_2106, KMS_2108, KMS_2201,
    KMS_2202, KMS_2203, KMS_2204, KMS_2301, KMS_2302, KMS_2303, KMS_2304, KMS_2305, KMS_2401,
    KMS_2402, KMS_2403, KMS_2404, KMS_2405, KMS_2406, KMS_2501, KMS_2502, KMS_2601, KMS_2602,
    KMS_2603, KMS_2604, KMS_2605, KMS_2606, KMS_2608, KMS_2609, KMS_2610, KMS_2701, KMS_2702,
    KMS_2801, KMS_2901, KMS_3001, KMS_3103, KMS_3201, KMS_3202, KMS_3702, KMS_3801, KMS_3802,
    KMS_3803, KMS_3804, KMS_3902, KMS_3903, KMS_4001, KMS_4002, KMS_5022, KMS_5023, KMS_0301,
    KMS_0302, KMS_0303, KMS_0304, KMS_0305, KMS_0306, KMS_0307, KMS_0314, KMS_0321, KMS_0322,
    KMS_0326, KMS_0328, KMS_0330, KMS_0207, KMS_0316, KMS_0416, KMS_3901, KMS_0215, KMS_0100,
    KMS_0101, KMS_0102, KMS_0103, KMS_3805, KMS_3806, KMS_5012, KMS_5021, KMS_0104,
];

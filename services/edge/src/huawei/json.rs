//! Request bodies under the typing rules of §2.4: string-typed numeric
//! fields arrive as JSON strings or numbers (both accepted), boolean fields
//! must be real JSON booleans, and a body may only carry the fields its
//! operation defines. Values are checked by the handlers, which know the
//! published code for each field's rules.

use serde_json::{Map, Value};

use super::codes::Code;
use super::error::ApiError;

/// A parsed JSON object body.
#[derive(Debug, Default)]
pub struct Body(Map<String, Value>);

impl Body {
    /// Parse `raw` as a JSON object whose members are all in `allowed`. An
    /// empty body is an empty object (operations without required fields).
    pub fn parse(raw: &[u8], allowed: &[&str]) -> Result<Self, ApiError> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let map = match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(ApiError::MalformedJson("the body is not a JSON object")),
            Err(_) => return Err(ApiError::MalformedJson("the body is not JSON")),
        };
        if map.keys().any(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::MalformedJson("unknown field"));
        }
        Ok(Self(map))
    }

    fn get(&self, name: &str) -> Option<&Value> {
        // Fields are omitted when unset (§2.3); tolerate an explicit null the same way.
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// An optional string field; another JSON type → KMS.0202.
    pub fn str(&self, name: &'static str) -> Result<Option<&str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::MalformedJson("a string field has another type")),
        }
    }

    /// A required string field (absent → KMS.0204).
    pub fn req(&self, name: &'static str) -> Result<&str, ApiError> {
        self.str(name)?.ok_or(ApiError::Missing(name))
    }

    /// A string-typed (or integer-typed) number: `"7"` or `7`. Anything
    /// that is not an integer → `bad`.
    pub fn int(&self, name: &'static str, bad: Code) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(ApiError::Invalid(bad)),
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::Invalid(bad)),
            Some(_) => Err(ApiError::MalformedJson("a number field has another type")),
        }
    }

    /// A required number (absent → KMS.0204).
    pub fn req_int(&self, name: &'static str, bad: Code) -> Result<i64, ApiError> {
        self.int(name, bad)?.ok_or(ApiError::Missing(name))
    }

    /// A boolean field: only a JSON boolean (the string `"false"` would read
    /// as true in the clients, so it is refused with KMS.0202).
    pub fn bool(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::MalformedJson("a boolean field has another type")),
        }
    }

    /// An array field.
    pub fn array(&self, name: &'static str) -> Result<Option<&Vec<Value>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(ApiError::MalformedJson("an array field has another type")),
        }
    }
}

impl Body {
    /// An object nested in another body (batch-import items); the same
    /// rules as [`Body::parse`].
    pub fn from_value(v: &Value, allowed: &[&str]) -> Result<Self, ApiError> {
        let Value::Object(map) = v else {
            return Err(ApiError::MalformedJson("an array element is not an object"));
        };
        if map.keys().any(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::MalformedJson("unknown field"));
        }
        Ok(Self(map.clone()))
    }

    /// A nested object field, as a body of its own.
    pub fn object(&self, name: &'static str, allowed: &[&str]) -> Result<Option<Self>, ApiError> {
        self.get(name)
            .map(|v| Self::from_value(v, allowed))
            .transpose()
    }
}

/// The named parameters of a raw query string, percent-decoded (`+` is not
/// a space: the clients encode per RFC 3986). An empty value counts as
/// absent, a repeated parameter's last value wins and other parameters are
/// ignored, as Huawei's gateway does. `None` when a value is not UTF-8.
pub fn query_params<const N: usize>(
    query: Option<&str>,
    names: [&str; N],
) -> Option<[Option<String>; N]> {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(i) = names.iter().position(|n| *n == name) else {
            continue;
        };
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()?
            .into_owned();
        out[i] = Some(value).filter(|v| !v.is_empty());
    }
    Some(out)
}

/// A string member of an array element object (tags, matches).
pub fn member<'a>(v: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    let Value::Object(m) = v else {
        return Err(ApiError::MalformedJson("an array element is not an object"));
    };
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::MalformedJson("a string field has another type")),
    }
}

/// A JSON body for a successful answer.
pub fn ok(v: Value) -> bytes::Bytes {
    bytes::Bytes::from(v.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::codes;
    use super::*;

    #[test]
    fn typing_rules() {
        let b = Body::parse(
            br#"{"a": "7", "b": 8, "c": true, "d": "x"}"#,
            &["a", "b", "c", "d"],
        )
        .unwrap();
        assert_eq!(b.int("a", codes::KMS_0308).unwrap(), Some(7));
        assert_eq!(b.int("b", codes::KMS_0308).unwrap(), Some(8));
        assert_eq!(b.bool("c").unwrap(), Some(true));
        assert!(
            matches!(b.int("d", codes::KMS_1401), Err(ApiError::Invalid(c)) if c == codes::KMS_1401)
        );
        assert!(matches!(b.str("b"), Err(ApiError::MalformedJson(_))));
        let b = Body::parse(br#"{"c": "true"}"#, &["c"]).unwrap();
        assert!(matches!(b.bool("c"), Err(ApiError::MalformedJson(_))));
        assert!(matches!(
            Body::parse(br#"{"zz": 1}"#, &["a"]),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            Body::parse(b"[1]", &["a"]),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            Body::parse(b"{", &["a"]),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            Body::parse(b"", &["a"]).unwrap().req("a"),
            Err(ApiError::Missing("a"))
        ));
    }
}

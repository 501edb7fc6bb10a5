//! The XKS wire error table (`tests/fixtures/xks.csv`, a copy of
//! `shared/errors/xks.csv`) and assertions that an error response follows it.

use std::collections::BTreeSet;
use std::sync::Mutex;

use keymesh_xks_client::XksResponse;
use keymesh_xks_client::model::Operation;

/// The error table as shipped with the tests.
pub const XKS_CSV: &str = include_str!("../fixtures/xks.csv");

/// One row of the error table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub status: u16,
    pub error_name: String,
    pub scenario: String,
    /// The operations that may return it.
    pub apis: BTreeSet<Operation>,
}

/// Split one CSV line (RFC 4180 quoting, no embedded newlines); shared
/// with the Huawei table in [`crate::kms`].
pub(crate) fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_apis(s: &str) -> BTreeSet<Operation> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("ALL") {
        let mut all: BTreeSet<_> = Operation::ALL.into_iter().collect();
        if let Some(ex) = rest.trim().strip_prefix("except") {
            for name in ex.split(',') {
                all.retain(|o| o.name() != name.trim());
            }
        }
        return all;
    }
    s.split(',')
        .map(|n| {
            Operation::ALL
                .into_iter()
                .find(|o| o.name() == n.trim())
                .unwrap_or_else(|| panic!("unknown API {n:?} in xks.csv"))
        })
        .collect()
}

/// Parse a CSV in the `http_status,error_name,scenario,apis` format.
pub fn parse_table(csv: &str) -> Vec<Row> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().expect("header");
    assert_eq!(
        split_csv(header),
        ["http_status", "error_name", "scenario", "apis"]
    );
    lines
        .map(|l| {
            let f = split_csv(l);
            assert_eq!(f.len(), 4, "bad row {l}");
            Row {
                status: f[0].parse().expect("status"),
                error_name: f[1].clone(),
                scenario: f[2].clone(),
                apis: parse_apis(&f[3]),
            }
        })
        .collect()
}

/// The parsed table.
pub fn table() -> Vec<Row> {
    parse_table(XKS_CSV)
}

/// (status, errorName, operation) triples observed by [`assert_xks_error`] in this process.
pub static OBSERVED: Mutex<BTreeSet<(u16, String, Operation)>> = Mutex::new(BTreeSet::new());

/// Check that `resp` is the XKS error `status`/`name` for `op`:
/// JSON content type, `errorName`, optional `errorMessage` of printable ASCII
/// under 512 chars, and the (status, name) pair allowed for `op` by the table
/// (ValidationException is tolerated on GetHealthStatus, spec digest §15.1).
#[track_caller]
pub fn assert_xks_error(resp: &XksResponse, op: Operation, status: u16, name: &str) {
    let body = String::from_utf8_lossy(&resp.body);
    assert_eq!(
        (resp.status(), resp.error_name().as_deref()),
        (status, Some(name)),
        "{op:?}: expected {status} {name}, got {} body {body:.400}",
        resp.status()
    );
    assert_error_shape(resp, op);
}

/// Check the shape of any XKS error response (without fixing which one).
#[track_caller]
pub fn assert_error_shape(resp: &XksResponse, op: Operation) {
    let body = String::from_utf8_lossy(&resp.body);
    let ct = resp.content_type().unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{op:?} {}: error Content-Type is {ct:?}, want application/json (body {body:.200})",
        resp.status()
    );
    let err = resp.error_body().unwrap_or_else(|| {
        panic!(
            "{op:?} {}: body is not an XKS error: {body:.400}",
            resp.status()
        )
    });
    if let Some(m) = &err.error_message {
        assert!(
            m.len() < 512,
            "{op:?}: errorMessage is {} chars (must be < 512)",
            m.len()
        );
        assert!(
            m.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "{op:?}: errorMessage has non-printable/non-ASCII chars: {m:?}"
        );
    }
    let rows = table();
    let row = rows
        .iter()
        .find(|r| r.error_name == err.error_name)
        .unwrap_or_else(|| {
            panic!(
                "{op:?}: errorName {} is not in the XKS error table",
                err.error_name
            )
        });
    assert_eq!(
        row.status,
        resp.status(),
        "{op:?}: {} must be sent with HTTP {}",
        err.error_name,
        row.status
    );
    let tolerated = op == Operation::GetHealthStatus && err.error_name == "ValidationException";
    assert!(
        row.apis.contains(&op) || tolerated,
        "{op:?} may not return {} per the error table (allowed for {:?})",
        err.error_name,
        row.apis
    );
    OBSERVED
        .lock()
        .unwrap()
        .insert((resp.status(), err.error_name, op));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parses() {
        let t = table();
        assert_eq!(t.len(), 12);
        let v = t
            .iter()
            .find(|r| r.error_name == "ValidationException")
            .unwrap();
        assert!(!v.apis.contains(&Operation::GetHealthStatus));
        assert_eq!(v.apis.len(), 3);
        let ic = t
            .iter()
            .find(|r| r.error_name == "InvalidCiphertextException")
            .unwrap();
        assert_eq!(ic.apis, [Operation::Decrypt].into_iter().collect());
        let ku = t
            .iter()
            .find(|r| r.error_name == "InvalidKeyUsageException")
            .unwrap();
        assert_eq!(
            ku.apis,
            [Operation::Encrypt, Operation::Decrypt]
                .into_iter()
                .collect()
        );
    }
}

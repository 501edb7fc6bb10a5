//! A small CSMS client for the e2e tests: the signed [`KmsClient`] (same
//! SDK-HMAC-SHA256 signing, same raw control) on the CSMS paths
//! `/v1/{project}/...`, plus the few calls the tests repeat.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{Value, json};

use crate::kms::{KmsClient, KmsResponse};

/// CSMS calls of one identity on one project.
#[derive(Debug, Clone)]
pub struct CsmsClient(pub KmsClient);

impl CsmsClient {
    /// `/v1/{project}/{suffix}` (`suffix` is sent verbatim: encode it yourself).
    pub fn path(&self, suffix: &str) -> String {
        format!("/v1/{}/{suffix}", self.0.project)
    }

    /// Any method on `/v1/{project}/{suffix}` with a raw body.
    pub async fn call(&self, method: &str, suffix: &str, body: impl Into<Vec<u8>>) -> KmsResponse {
        self.0
            .send(method, &self.path(suffix), body.into(), |_| {}, |_| {})
            .await
            .unwrap_or_else(|e| panic!("{method} {suffix}: {e:#}"))
    }

    /// Any method with a JSON body.
    pub async fn json(&self, method: &str, suffix: &str, body: &Value) -> KmsResponse {
        self.try_json(method, suffix, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {suffix}: {e:#}"))
    }

    /// [`Self::json`], but a transport failure (e.g. the edge died) is
    /// returned instead of panicking.
    pub async fn try_json(&self, method: &str, suffix: &str, body: &Value) -> Result<KmsResponse> {
        let body = serde_json::to_vec(body).unwrap_or_default();
        self.0
            .send(method, &self.path(suffix), body, |_| {}, |_| {})
            .await
    }

    pub async fn get(&self, suffix: &str) -> KmsResponse {
        self.call("GET", suffix, Vec::new()).await
    }

    pub async fn delete(&self, suffix: &str) -> KmsResponse {
        self.call("DELETE", suffix, Vec::new()).await
    }

    /// `POST /secrets` with `name` and a text value.
    pub async fn create_text(&self, name: &str, value: &str) -> KmsResponse {
        self.json(
            "POST",
            "secrets",
            &json!({ "name": name, "secret_string": value }),
        )
        .await
    }

    /// `POST /secrets/{name}/versions` with a text value.
    pub async fn add_text(&self, name: &str, value: &str) -> KmsResponse {
        self.json(
            "POST",
            &format!("secrets/{name}/versions"),
            &json!({ "secret_string": value }),
        )
        .await
    }

    /// `GET /secrets/{name}/versions/{version}`.
    pub async fn version(&self, name: &str, version: &str) -> KmsResponse {
        self.get(&format!("secrets/{name}/versions/{version}"))
            .await
    }

    /// Every secret name of the project, following `next_marker`.
    pub async fn all_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..10_000 {
            let q = match &marker {
                Some(m) => format!("secrets?limit=200&marker={m}"),
                None => "secrets?limit=200".to_owned(),
            };
            let r = self.get(&q).await.ok();
            for s in r.json["secrets"].as_array().into_iter().flatten() {
                names.push(s["name"].as_str().unwrap_or_default().to_owned());
            }
            marker = r.json["page_info"]["next_marker"]
                .as_str()
                .filter(|m| !m.is_empty())
                .map(str::to_owned);
            if marker.is_none() {
                return names;
            }
        }
        panic!("list-secrets never ended");
    }

    /// `{version id → stages}` of a secret.
    pub async fn stages(&self, name: &str) -> BTreeMap<String, Vec<String>> {
        let r = self
            .get(&format!("secrets/{name}/versions?limit=200"))
            .await
            .ok();
        let mut out = BTreeMap::new();
        for m in r.json["version_metadatas"].as_array().into_iter().flatten() {
            let mut st: Vec<String> = m["version_stages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect();
            st.sort();
            out.insert(m["id"].as_str().unwrap_or_default().to_owned(), st);
        }
        out
    }
}

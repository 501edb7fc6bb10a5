//! Who is calling: an SDK-HMAC-SHA256 signature by an account's access key
//! (§3), or an `X-Auth-Token` signed by one of the configured token keys.
//! Either way the caller is bound to one project, which must be the path's
//! project. A token is only a signed claim: it is honoured while its user
//! has an account in that project, with the lesser of the token's and the
//! account's role (looked up through the account cache, so deleting or
//! downgrading the account revokes the token within the cache TTL).

use std::sync::Arc;
use std::time::SystemTime;

use http::request::Parts;
use keymesh_kms_core::Role;

use super::Huawei;
use super::codes;
use super::error::ApiError;
use super::route::Route;

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub project_id: String,
    /// Principal id (grants name it).
    pub user_id: String,
    pub role: Role,
    /// Set for SDK-HMAC callers.
    pub access_key: Option<String>,
}

impl Default for Caller {
    fn default() -> Self {
        Self {
            project_id: String::new(),
            user_id: String::new(),
            role: Role::ReadOnly,
            access_key: None,
        }
    }
}

impl Caller {
    /// For the audit line: the access key, else the token's user.
    pub fn principal(&self) -> String {
        self.access_key
            .clone()
            .unwrap_or_else(|| format!("token:{}", self.user_id))
    }
}

/// The client address of a request (set by the listener).
pub fn peer(parts: &Parts) -> Option<std::net::SocketAddr> {
    crate::http::abuse::Peer::of(&parts.extensions)
}

/// Authenticate `parts` + `body` for `route`.
pub async fn authenticate(
    h: &Huawei,
    parts: &Parts,
    body: &[u8],
    route: &Route,
) -> Result<Caller, ApiError> {
    let headers = &parts.headers;
    if headers.contains_key(http::header::AUTHORIZATION) {
        return signed(h, parts, body, route).await;
    }
    match headers.get("x-auth-token").map(|v| v.to_str()) {
        Some(Ok(token)) => by_token(h, token, route).await,
        _ => Err(ApiError::Token(codes::KMS_0301)),
    }
}

async fn by_token(h: &Huawei, token: &str, route: &Route) -> Result<Caller, ApiError> {
    use keymesh_huawei_auth::token::{Role as TokenRole, TokenError};
    let Some(keys) = &h.tokens else {
        // No verification key configured: no token can be valid.
        return Err(ApiError::Token(codes::KMS_0302));
    };
    // Signature and claims first: only a token our issuer signed for this
    // project can cost a store read.
    let claims = keys
        .get()
        .verify_with(
            &h.token_policy,
            token,
            SystemTime::now(),
            Some(&route.project_id),
        )
        .map_err(|e| ApiError::Token(token_code(e.kms_code())))?;
    let project = &route.project_id;
    let account_role = match h.kms.cache().subject(project, &claims.sub) {
        Some(r) => r,
        None => {
            let r = h.kms.accounts.user_role(project, &claims.sub).await?;
            h.kms.cache().put_subject(project, &claims.sub, r);
            r
        }
    };
    let Some(account_role) = account_role else {
        return Err(ApiError::Token(token_code(TokenError::Revoked.kms_code())));
    };
    let token_role = match claims.role {
        TokenRole::Full => Role::Full,
        TokenRole::ReadOnly => Role::ReadOnly,
    };
    Ok(Caller {
        project_id: route.project_id.clone(),
        user_id: claims.sub,
        role: token_role.min(account_role),
        access_key: None,
    })
}

/// `token_public_key_file`'s parser for [`keymesh_common::reload::Reloadable`].
pub fn parse_token_keys(bytes: &[u8]) -> anyhow::Result<keymesh_huawei_auth::token::TokenVerifier> {
    Ok(keymesh_huawei_auth::token::TokenVerifier::from_pem_bytes(
        bytes,
    )?)
}

/// The request's deadline (set by the deadline layer before authentication).
fn deadline_of(parts: &Parts, h: &Huawei) -> tokio::time::Instant {
    parts.extensions.get::<crate::http::Deadline>().map_or_else(
        || tokio::time::Instant::now() + std::time::Duration::from_millis(h.config.deadline_ms),
        |d| d.0,
    )
}

fn token_code(code: &str) -> codes::Code {
    [
        codes::KMS_0301,
        codes::KMS_0302,
        codes::KMS_0303,
        codes::KMS_0304,
        codes::KMS_0305,
        codes::KMS_0321,
    ]
    .into_iter()
    .find(|c| c.code == code)
    .unwrap_or(codes::KMS_0302)
}

async fn signed(h: &Huawei, parts: &Parts, body: &[u8], route: &Route) -> Result<Caller, ApiError> {
    use keymesh_huawei_auth::sdk_hmac;
    // HTTP/2 carries the host in :authority, which the signature covers as `host`.
    // Copy the headers only in that case (HTTP/1.1 always sends Host).
    let with_host;
    let headers = if parts.headers.contains_key(http::header::HOST) {
        &parts.headers
    } else {
        let mut h = parts.headers.clone();
        sdk_hmac::ensure_host(&mut h, &parts.uri);
        with_host = h;
        &with_host
    };
    let req = sdk_hmac::Request::new(&parts.method, &parts.uri, headers, body);
    let prepared = h
        .signatures
        .precheck(&req, SystemTime::now())
        .map_err(|_| ApiError::Signature("signature rejected"))?;
    let ak = prepared.access_key().to_owned();
    let account = match h.kms.cache().account(&ak) {
        Some(a) => a,
        None => {
            // A store round trip (and, for a sealed secret, a worker call)
            // for a caller not yet authenticated: its source pays for it
            // first (unknown keys are then remembered by the cache's negative
            // side and fail without a query).
            if !h.app.abuse.sources.admit(peer(parts)) {
                return Err(ApiError::Throttled);
            }
            // Unsealed through a worker; the clear SK lives only in the cache.
            let a = h
                .kms
                .accounts
                .load(&ak, deadline_of(parts, h))
                .await?
                .map(Arc::new);
            h.kms.cache().put_account(&ak, a.clone());
            a
        }
    };
    let Some(account) = account else {
        return Err(ApiError::Signature("unknown access key"));
    };
    let Some(secret_key) = account.secret.clear() else {
        return Err(ApiError::Internal);
    };
    prepared
        .check_signature(secret_key)
        .map_err(|_| ApiError::Signature("signature rejected"))?;
    // The account's project must be the path's (and X-Project-Id's, when sent).
    let header_project = parts.headers.get("x-project-id").map(|v| v.as_bytes());
    if account.project_id != route.project_id
        || header_project.is_some_and(|p| p != route.project_id.as_bytes())
    {
        return Err(ApiError::NoAccess);
    }
    Ok(Caller {
        project_id: account.project_id.clone(),
        user_id: account.user_id.clone(),
        role: account.role,
        access_key: Some(ak),
    })
}

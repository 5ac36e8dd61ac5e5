//! The admin endpoints: policy reload and cache invalidation. Open on a
//! loopback listener, behind a bearer token otherwise.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::error::decode;
use super::{AdminAccess, ApiError, json};
use crate::engine::Engine;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invalidate {
    #[serde(default)]
    uids: Vec<Uid>,
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
struct Uid {
    #[serde(rename = "type")]
    type_name: String,
    id: String,
}

/// Lets the request through when the listener's admin access allows it.
///
/// # Errors
/// [`ApiError::Forbidden`] without the token, or when admin is closed here.
pub(super) fn authorize(access: &AdminAccess, headers: &HeaderMap) -> Result<(), ApiError> {
    // A browser's request (a page the operator has open, reaching a
    // loopback admin port) always says where it comes from; no admin client
    // does. Refused whatever the access mode.
    if headers.contains_key(http::header::ORIGIN) || headers.contains_key("sec-fetch-site") {
        return Err(ApiError::Forbidden(
            "admin endpoints do not answer browsers (the request carries `Origin`)",
        ));
    }
    match access {
        AdminAccess::Open => Ok(()),
        AdminAccess::Closed => Err(ApiError::Forbidden(
            "admin endpoints are closed on a non-loopback listener without `admin.token`",
        )),
        AdminAccess::Token(token) => {
            let presented = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, credentials)| credentials.trim());
            let matches = presented.is_some_and(|p| same_secret(p, token));
            if matches {
                Ok(())
            } else {
                Err(ApiError::Forbidden(
                    "admin endpoints need `Authorization: Bearer <admin.token>`",
                ))
            }
        }
    }
}

/// Compares digests of both, every byte: the time taken says nothing of
/// the token, its length included.
fn same_secret(presented: &str, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(presented), Sha256::digest(token));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `POST /admin/v1/cache/invalidate` with `{"uids": [{"type","id"}, ...]}` or `{"all": true}`.
pub(super) async fn invalidate(
    engine: &Engine,
    body: &Bytes,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let request: Invalidate = decode(body)?;
    if request.all {
        engine.forget_all();
        return Ok(json(
            StatusCode::OK,
            &serde_json::json!({"invalidated": "all"}),
        ));
    }
    if request.uids.is_empty() {
        return Err(ApiError::InvalidBody {
            field: "uids".to_owned(),
            message: "`uids`: give at least one `{\"type\", \"id\"}`, or `\"all\": true`"
                .to_owned(),
        });
    }
    let mut uids = Vec::with_capacity(request.uids.len());
    for (index, uid) in request.uids.iter().enumerate() {
        let parsed =
            engine
                .parse_uid(&uid.type_name, &uid.id)
                .ok_or_else(|| ApiError::InvalidBody {
                    field: format!("uids[{index}].type"),
                    message: format!(
                        "`uids[{index}].type`: `{}` is not an entity type of the schema",
                        uid.type_name
                    ),
                })?;
        uids.push(parsed);
    }
    engine.forget(&uids).await;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"invalidated": uids.len()}),
    ))
}

/// `POST /admin/v1/policies/reload`: re-reads policies and schema now.
/// 200 with the new version, or 422 with Cedar's diagnostics (the last good
/// policies keep serving).
pub(super) fn reload(engine: &Engine) -> Response<Full<Bytes>> {
    match engine.reload_policies() {
        Ok(snapshot) => json(
            StatusCode::OK,
            &serde_json::json!({"policy_version": snapshot.version().as_ref(), "policies": snapshot.policy_count()}),
        ),
        Err(error) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({
                "error": {"code": "invalid_policies", "message": error.to_string(), "diagnostics": error.lines()},
                "policy_version": engine.policies().current().version().as_ref(),
            }),
        ),
    }
}

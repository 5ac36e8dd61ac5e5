//! The OpenAPI 3.1 document of every endpoint (`openapi.yaml` at the
//! repository's root), served as written and as JSON, so clients generate
//! from the contract the running server answers by.

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// The document, as written.
pub const YAML: &str = include_str!("../../openapi.yaml");

/// The document as JSON, converted once; `None` if it were not valid YAML
/// (a unit test makes sure it is).
static JSON: LazyLock<Option<Bytes>> = LazyLock::new(|| {
    let value: serde_json::Value = serde_norway::from_str(YAML).ok()?;
    serde_json::to_vec(&value).ok().map(Bytes::from)
});

/// `GET /openapi.yaml`
pub(super) fn yaml() -> Response<Full<Bytes>> {
    document(Bytes::from_static(YAML.as_bytes()), "application/yaml")
}

/// `GET /openapi.json`
pub(super) fn json() -> Response<Full<Bytes>> {
    match &*JSON {
        Some(bytes) => document(bytes.clone(), "application/json"),
        None => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

fn document(body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_converts_to_json() {
        let json: serde_json::Value =
            serde_json::from_slice(JSON.as_ref().expect("valid YAML")).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        assert!(json["paths"]["/access/v1/evaluation"]["post"].is_object());
    }
}

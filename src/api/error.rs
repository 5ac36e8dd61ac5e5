//! The one table from an API error to its HTTP status, its gRPC code (the
//! `ext_authz` listener) and its `{"error":{"code","message","field"}}`
//! body: [`ApiError::answered`]. Every refusal of every surface is an
//! [`ApiError`], forward-auth's included.

use http::StatusCode;
use serde::Serialize;

/// A request the API refuses before or instead of deciding it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The body is not the JSON the endpoint expects; names the field.
    #[error("{message}")]
    InvalidBody {
        /// dotted path of the field at fault (`subject.id`), or empty for the body
        field: String,
        /// what is wrong
        message: String,
    },
    /// The decoded request is malformed for the schema (context, properties, entities).
    #[error("{message}")]
    InvalidRequest {
        /// dotted path of the field at fault
        field: String,
        /// stable code from the engine
        code: &'static str,
        /// what is wrong
        message: String,
    },
    /// The body is larger than `server.max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// the limit
        limit: usize,
    },
    /// A batch holds more items than `server.max_batch_items`.
    #[error("`{field}` holds {count} items, more than the limit of {limit}")]
    BatchTooLarge {
        /// `evaluations` or `requests`
        field: &'static str,
        /// how many were sent
        count: usize,
        /// the limit
        limit: usize,
    },
    /// A request (a batch counting its shared entities once per item that
    /// uses them) carries more entities than `server.max_request_entities`.
    #[error("`entities`: the request uses {count} entities, more than the limit of {limit}")]
    TooManyEntities {
        /// how many the request would use
        count: usize,
        /// the limit
        limit: usize,
    },
    /// The body nests deeper than `server.max_json_depth`.
    #[error("request body nests deeper than {limit} levels")]
    TooDeep {
        /// the limit
        limit: usize,
    },
    /// The request took longer than `server.request_timeout`.
    #[error("the request took longer than {0:?}")]
    RequestTimeout(std::time::Duration),
    /// The listener holds `server.max_connections` connections already.
    #[error("too many connections: the limit is {0}")]
    TooManyConnections(usize),
    /// The body could not be read from the connection.
    #[error("cannot read the request body: {0}")]
    BodyRead(String),
    /// No such endpoint.
    #[error("no endpoint at `{0}`")]
    NotFound(String),
    /// An admin endpoint without the admin token, or closed on this listener.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The entity store could not list a search's candidates (it failed,
    /// or does not implement `/entities/search`): not the caller's mistake.
    #[error("{0}")]
    StoreUnavailable(String),
    /// A search took longer than `search.time_budget`: refused whole,
    /// never answered in part.
    #[error(
        "the search took longer than its budget of {0:?} (`search.time_budget`); narrow it (a more specific type, or an evaluation per entity) or raise the budget"
    )]
    SearchOverBudget(std::time::Duration),
    /// Forward-auth without one authenticated principal: the trusted header
    /// is missing, or sent more than once.
    #[error("{message}")]
    Unauthenticated {
        /// `no_principal` or `ambiguous_principal`
        code: &'static str,
        /// names the header
        message: String,
    },
    /// Forward-auth refused before or instead of deciding: the original
    /// request is ambiguous (two readers could read it apart), or what the
    /// route made of it does not fit the schema. A deny, never an allow.
    #[error("{message}")]
    Refused {
        /// stable: `ambiguous_request`, `ambiguous_path`, `ambiguous_header`,
        /// `duplicate_parameter`, `method_override`, or the engine's code
        code: &'static str,
        /// names the header, parameter, segment or field at fault
        message: String,
    },
    /// Forward-auth for a request no gateway route matches: answered with
    /// `gateway.unmatched_status` (403 when no route is configured at all).
    #[error("{message}")]
    NoRoute {
        /// `gateway.unmatched_status`
        status: StatusCode,
        /// the method and path that matched nothing
        message: String,
    },
    /// The endpoint exists but not for this method.
    #[error("method `{method}` is not allowed on `{path}`; use {allowed}")]
    MethodNotAllowed {
        /// the method sent
        method: String,
        /// the path
        path: String,
        /// the method to use
        allowed: &'static str,
    },
}

impl ApiError {
    /// The one table: the HTTP status and the gRPC code this error is
    /// answered with. On gRPC every forward-auth refusal is a deny
    /// (`PERMISSION_DENIED`, or `UNAUTHENTICATED`), which Envoy answers with
    /// the HTTP status beside it.
    pub fn answered(&self) -> (StatusCode, tonic::Code) {
        use tonic::Code;
        match self {
            Self::InvalidBody { .. }
            | Self::InvalidRequest { .. }
            | Self::BodyRead(_)
            | Self::TooDeep { .. } => (StatusCode::BAD_REQUEST, Code::InvalidArgument),
            Self::BatchTooLarge { .. } | Self::TooManyEntities { .. } => {
                (StatusCode::BAD_REQUEST, Code::ResourceExhausted)
            }
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted),
            Self::RequestTimeout(_) | Self::SearchOverBudget(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, Code::DeadlineExceeded)
            }
            Self::TooManyConnections(_) | Self::StoreUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable)
            }
            Self::NotFound(_) => (StatusCode::NOT_FOUND, Code::Unimplemented),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, Code::Unimplemented),
            Self::Forbidden(_) | Self::Refused { .. } => {
                (StatusCode::FORBIDDEN, Code::PermissionDenied)
            }
            Self::Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, Code::Unauthenticated),
            Self::NoRoute { status, .. } => (*status, Code::PermissionDenied),
        }
    }

    /// The HTTP status this error is answered with ([`Self::answered`]).
    pub fn status(&self) -> StatusCode {
        self.answered().0
    }

    /// This error as a gRPC status ([`Self::answered`]), for the `ext_authz`
    /// listener.
    pub fn grpc(&self) -> tonic::Status {
        tonic::Status::new(self.answered().1, self.to_string())
    }

    /// Stable, snake_case.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidBody { .. } => "invalid_body",
            Self::InvalidRequest { code, .. }
            | Self::Unauthenticated { code, .. }
            | Self::Refused { code, .. } => code,
            Self::NoRoute { .. } => "no_route",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::TooDeep { .. } => "too_deep",
            Self::RequestTimeout(_) => "request_timeout",
            Self::TooManyConnections(_) => "too_many_connections",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::TooManyEntities { .. } => "too_many_entities",
            Self::BodyRead(_) => "body_unreadable",
            Self::NotFound(_) => "not_found",
            Self::Forbidden(_) => "forbidden",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::StoreUnavailable(_) => "entity_store_unavailable",
            Self::SearchOverBudget(_) => "search_over_budget",
        }
    }

    /// The field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidBody { field, .. } | Self::InvalidRequest { field, .. } => {
                Some(field.as_str()).filter(|f| !f.is_empty())
            }
            Self::BatchTooLarge { field, .. } => Some(field),
            Self::TooManyEntities { .. } => Some("entities"),
            _ => None,
        }
    }

    /// Whether this is a refusal by a configured limit (counted in
    /// `mandate_refusals_total`).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            Self::BodyTooLarge { .. }
                | Self::BatchTooLarge { .. }
                | Self::TooManyEntities { .. }
                | Self::TooDeep { .. }
                | Self::RequestTimeout(_)
                | Self::TooManyConnections(_)
        )
    }

    /// The wire form of this error.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                field: self.field(),
            },
        }
    }
}

/// `{"error": {...}}`
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// the error
    pub error: ErrorDetail<'a>,
}

/// `{"code","message","field"?}`
#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    /// stable, snake_case
    pub code: &'static str,
    /// for a person; names the field
    pub message: String,
    /// dotted path of the field at fault
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
}

/// Decodes a body into `T`, naming the field at fault on error.
///
/// # Errors
/// [`ApiError::InvalidBody`] with the dotted path of the field.
pub fn decode<'de, T: serde::Deserialize<'de>>(body: &'de [u8]) -> Result<T, ApiError> {
    decode_at(body, String::new)
}

/// Decodes an already-parsed JSON value (a batch item) into `T`; fields are
/// named under `prefix` (`evaluations[2]`).
///
/// # Errors
/// [`ApiError::InvalidBody`] with the dotted path of the field.
pub fn decode_value<'de, T: serde::Deserialize<'de>>(
    value: &'de serde_json::Value,
    prefix: &str,
) -> Result<T, ApiError> {
    if let Ok(decoded) = T::deserialize(value) {
        return Ok(decoded);
    }
    serde_path_to_error::deserialize(value).map_err(|e| invalid_body(&e, prefix))
}

/// Decodes a body, or a part of one (a batch item), into `T`, naming the
/// field at fault under the `prefix` made on error (`evaluations[2]`).
///
/// # Errors
/// [`ApiError::InvalidBody`] with the dotted path of the field.
pub fn decode_at<'de, T: serde::Deserialize<'de>>(
    body: &'de [u8],
    prefix: impl FnOnce() -> String,
) -> Result<T, ApiError> {
    // One plain parse when the body is good; only a bad one is parsed again,
    // tracking the path, to name the field at fault.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let prefix = prefix();
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| invalid_body(&e, &prefix))?;
    de.end().map_err(|e| ApiError::InvalidBody {
        message: format!("invalid JSON: {e}"),
        field: prefix,
    })?;
    Ok(value)
}

fn invalid_body<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>, prefix: &str) -> ApiError {
    let inner = e.inner().to_string();
    let mut field = prefix.to_owned();
    let path = e.path().to_string();
    if path != "." {
        join(&mut field, &path);
    }
    // serde reports a missing field at its parent's path; name the field itself.
    if let Some(missing) = inner
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        join(&mut field, missing);
    }
    let message = if field.is_empty() {
        format!("invalid JSON: {inner}")
    } else {
        format!("`{field}`: {inner}")
    };
    ApiError::InvalidBody { field, message }
}

fn join(path: &mut String, segment: &str) {
    if !path.is_empty() && !segment.starts_with('[') {
        path.push('.');
    }
    path.push_str(segment);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::StatusCode;
    use tonic::Code;

    use super::ApiError;

    /// One of each kind. The match below fails to compile when a kind is
    /// added, so a new kind cannot miss its row in the table test.
    fn every_kind() -> Vec<ApiError> {
        let kinds = vec![
            ApiError::InvalidBody {
                field: "subject.id".to_owned(),
                message: "m".to_owned(),
            },
            ApiError::InvalidRequest {
                field: "context.amount".to_owned(),
                code: "invalid_context",
                message: "m".to_owned(),
            },
            ApiError::BodyTooLarge { limit: 1 },
            ApiError::BatchTooLarge {
                field: "evaluations",
                count: 2,
                limit: 1,
            },
            ApiError::TooManyEntities { count: 2, limit: 1 },
            ApiError::TooDeep { limit: 1 },
            ApiError::RequestTimeout(Duration::from_secs(1)),
            ApiError::TooManyConnections(1),
            ApiError::BodyRead("m".to_owned()),
            ApiError::NotFound("/x".to_owned()),
            ApiError::Forbidden("m"),
            ApiError::StoreUnavailable("m".to_owned()),
            ApiError::SearchOverBudget(Duration::from_secs(1)),
            ApiError::Unauthenticated {
                code: "no_principal",
                message: "m".to_owned(),
            },
            ApiError::Refused {
                code: "ambiguous_path",
                message: "m".to_owned(),
            },
            ApiError::NoRoute {
                status: StatusCode::NOT_FOUND,
                message: "m".to_owned(),
            },
            ApiError::MethodNotAllowed {
                method: "GET".to_owned(),
                path: "/x".to_owned(),
                allowed: "POST",
            },
        ];
        for kind in &kinds {
            match kind {
                ApiError::InvalidBody { .. }
                | ApiError::InvalidRequest { .. }
                | ApiError::BodyTooLarge { .. }
                | ApiError::BatchTooLarge { .. }
                | ApiError::TooManyEntities { .. }
                | ApiError::TooDeep { .. }
                | ApiError::RequestTimeout(_)
                | ApiError::TooManyConnections(_)
                | ApiError::BodyRead(_)
                | ApiError::NotFound(_)
                | ApiError::Forbidden(_)
                | ApiError::StoreUnavailable(_)
                | ApiError::SearchOverBudget(_)
                | ApiError::Unauthenticated { .. }
                | ApiError::Refused { .. }
                | ApiError::NoRoute { .. }
                | ApiError::MethodNotAllowed { .. } => {}
            }
        }
        kinds
    }

    #[test]
    fn every_kind_has_its_status_grpc_code_and_body() {
        let table: Vec<(&str, u16, Code, Option<&str>)> = vec![
            (
                "invalid_body",
                400,
                Code::InvalidArgument,
                Some("subject.id"),
            ),
            (
                "invalid_context",
                400,
                Code::InvalidArgument,
                Some("context.amount"),
            ),
            ("body_too_large", 413, Code::ResourceExhausted, None),
            (
                "batch_too_large",
                400,
                Code::ResourceExhausted,
                Some("evaluations"),
            ),
            (
                "too_many_entities",
                400,
                Code::ResourceExhausted,
                Some("entities"),
            ),
            ("too_deep", 400, Code::InvalidArgument, None),
            ("request_timeout", 503, Code::DeadlineExceeded, None),
            ("too_many_connections", 503, Code::Unavailable, None),
            ("body_unreadable", 400, Code::InvalidArgument, None),
            ("not_found", 404, Code::Unimplemented, None),
            ("forbidden", 403, Code::PermissionDenied, None),
            ("entity_store_unavailable", 503, Code::Unavailable, None),
            ("search_over_budget", 503, Code::DeadlineExceeded, None),
            ("no_principal", 401, Code::Unauthenticated, None),
            ("ambiguous_path", 403, Code::PermissionDenied, None),
            ("no_route", 404, Code::PermissionDenied, None),
            ("method_not_allowed", 405, Code::Unimplemented, None),
        ];
        let kinds = every_kind();
        assert_eq!(kinds.len(), table.len(), "a row per kind");
        for (error, (code, status, grpc, field)) in kinds.iter().zip(table) {
            assert_eq!(error.code(), code);
            assert_eq!(error.status().as_u16(), status, "{code}");
            assert_eq!(error.answered(), (error.status(), grpc), "{code}");
            let sent = error.grpc();
            assert_eq!(
                (sent.code(), sent.message()),
                (grpc, error.to_string().as_str())
            );
            let body = serde_json::to_value(error.body()).unwrap();
            let mut expected = serde_json::json!({"code": code, "message": error.to_string()});
            if let Some(field) = field {
                expected["field"] = serde_json::json!(field);
            }
            assert_eq!(body, serde_json::json!({"error": expected}), "{code}");
        }
    }

    #[test]
    fn an_unmatched_route_is_answered_with_the_configured_status() {
        let error = ApiError::NoRoute {
            status: StatusCode::FORBIDDEN,
            message: "no gateway route matches `GET /x`".to_owned(),
        };
        assert_eq!(
            error.answered(),
            (StatusCode::FORBIDDEN, Code::PermissionDenied)
        );
    }
}

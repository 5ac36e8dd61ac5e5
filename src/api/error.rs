//! The one table from an API error to its HTTP status and its
//! `{"error":{"code","message","field"}}` body.

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
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidBody { .. }
            | Self::InvalidRequest { .. }
            | Self::BatchTooLarge { .. }
            | Self::TooManyEntities { .. }
            | Self::BodyRead(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooDeep { .. } => StatusCode::BAD_REQUEST,
            Self::RequestTimeout(_)
            | Self::TooManyConnections(_)
            | Self::StoreUnavailable(_)
            | Self::SearchOverBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Stable, snake_case.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidBody { .. } => "invalid_body",
            Self::InvalidRequest { code, .. } => code,
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

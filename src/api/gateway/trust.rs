//! The trust rules of forward-auth: where the original request comes from
//! (one source, never a fallback), what makes a request ambiguous (a header
//! sent twice, a method override, a dot segment or an encoded separator in
//! the path), each refused before any route is looked up.

use std::collections::HashMap;

use crate::api::ApiError;
use crate::config::OriginalSource;

/// A refusal of an ambiguous original request (403), naming what is at fault.
pub(super) fn refused(code: &'static str, message: String) -> ApiError {
    ApiError::Refused { code, message }
}

/// A header sent more than once, or whose value is not text.
#[derive(Debug, Clone, Copy)]
pub struct Ambiguous;

/// The original request, as the gateway described it.
pub trait OriginalRequest {
    /// The one value of header `name` (lower case): `Ok(None)` when absent,
    /// `Err` when it is sent more than once or is not text.
    ///
    /// # Errors
    /// [`Ambiguous`] as above.
    fn single(&self, name: &str) -> Result<Option<&str>, Ambiguous>;

    /// Whether header `name` (lower case) is present at all.
    fn has(&self, name: &str) -> bool;
}

impl OriginalRequest for http::HeaderMap {
    fn single(&self, name: &str) -> Result<Option<&str>, Ambiguous> {
        let mut values = self.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(value), None) => value.to_str().map(Some).map_err(|_| Ambiguous),
            (Some(_), Some(_)) => Err(Ambiguous),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.contains_key(name)
    }
}

/// Envoy's gRPC `CheckRequest` headers: Envoy joins a repeated header's
/// values with commas, so a comma marks a header sent more than once.
impl OriginalRequest for HashMap<String, String> {
    fn single(&self, name: &str) -> Result<Option<&str>, Ambiguous> {
        match self.get(name) {
            Some(value) if value.contains(',') => Err(Ambiguous),
            value => Ok(value.map(String::as_str)),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.contains_key(name)
    }
}

/// The headers that may describe the original request, by source.
const X_ORIGINAL: [&str; 2] = ["x-original-method", "x-original-uri"];
const X_FORWARDED: [&str; 2] = ["x-forwarded-method", "x-forwarded-uri"];

/// Headers some frameworks read to replace the request's method.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
];

/// The original method and URI from the pair of headers `source` names;
/// `None` for [`OriginalSource::RequestLine`], whose caller reads its own
/// request line. Any header of another pair, half a pair, a duplicate or a
/// method override is refused: the client may have sent it, and the
/// application behind the gateway may read it.
///
/// # Errors
/// [`ApiError::Refused`] (403) naming the header.
pub fn original_headers(
    source: OriginalSource,
    request: &impl OriginalRequest,
) -> Result<Option<(http::Method, &str)>, ApiError> {
    for name in METHOD_OVERRIDES {
        if request.has(name) {
            return Err(refused(
                "method_override",
                format!("the request carries the method override header `{name}`"),
            ));
        }
    }
    let ours = match source {
        OriginalSource::XOriginal => Some(X_ORIGINAL),
        OriginalSource::XForwarded => Some(X_FORWARDED),
        OriginalSource::RequestLine => None,
    };
    for name in X_ORIGINAL.iter().chain(&X_FORWARDED) {
        if ours.is_some_and(|pair| pair.contains(name)) {
            continue;
        }
        if request.has(name) {
            return Err(refused(
                "ambiguous_request",
                format!(
                    "the request carries `{name}`, but this gateway describes the original request \
                     by {}",
                    describe(source)
                ),
            ));
        }
    }
    let Some([method_name, uri_name]) = ours else {
        return Ok(None);
    };
    let one = |name: &str| match request.single(name) {
        Ok(Some(value)) if !value.is_empty() => Ok(value),
        Ok(_) => Err(refused(
            "ambiguous_request",
            format!("the gateway sent no `{name}`: it must send `{method_name}` and `{uri_name}`"),
        )),
        Err(Ambiguous) => Err(refused(
            "ambiguous_request",
            format!("`{name}` is sent more than once"),
        )),
    };
    let (method, uri) = (one(method_name)?, one(uri_name)?);
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| {
        refused(
            "ambiguous_request",
            format!("`{method_name}` is not a method: `{method}`"),
        )
    })?;
    Ok(Some((method, uri)))
}

fn describe(source: OriginalSource) -> &'static str {
    match source {
        OriginalSource::XOriginal => "`x-original-method` and `x-original-uri`",
        OriginalSource::XForwarded => "`x-forwarded-method` and `x-forwarded-uri`",
        OriginalSource::RequestLine => "its request line",
    }
}

/// The decoded segments of a path; anything an application could read
/// otherwise than we do is refused: an empty or dot segment, an encoded
/// `/`, `\` or `%`, a control character, bytes that are not UTF-8.
pub(super) fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    let refuse = |why: String| refused("ambiguous_path", why);
    let Some(rest) = path.strip_prefix('/') else {
        return Err(refuse(format!("the path `{path}` does not start with `/`")));
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/')
        .map(|raw| {
            let decoded = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| refuse(format!("the path segment `{raw}` is not UTF-8")))?;
            let bad = decoded.is_empty()
                || decoded == "."
                || decoded == ".."
                || decoded.contains(['/', '\\', '%'])
                || decoded.chars().any(char::is_control);
            if bad {
                return Err(refuse(format!(
                    "the path segment `{raw}` is empty, a dot segment, or holds an encoded `/`, \
                     `\\`, `%` or a control character"
                )));
            }
            Ok(decoded.into_owned())
        })
        .collect()
}

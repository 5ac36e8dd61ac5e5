//! The gateway route table: an original request (method, path, query,
//! headers) → the action, resource and context of a decision. Shared by
//! HTTP forward-auth and Envoy's gRPC `ext_authz`. Compiled once at start;
//! nothing here trusts the request beyond what a route names.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::config::{ContextSource, GatewayConfig, OriginalSource, RouteConfig, ValueKind};

/// A route table that cannot be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("gateway route {index} (`{method} {path}`): {message}")]
#[diagnostic(help(
    "a route is a `method`, a `path` pattern (`/literal/{{param}}/…`), an `action` and a `resource_type` the schema declares, and templates that use only the pattern's parameters"
))]
pub struct RouteError {
    index: usize,
    method: String,
    path: String,
    message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A text template: literal pieces and `{param}` references.
#[derive(Debug, Clone)]
struct Template(Vec<Segment>);

#[derive(Debug, Clone)]
enum Source {
    Query(String),
    Header(String),
    Template(Template),
}

#[derive(Debug, Clone)]
struct ContextField {
    name: String,
    source: Source,
    /// whether the value comes from the operator or the gateway (a literal,
    /// a trusted header) rather than from the client
    trusted: bool,
    kind: ValueKind,
    entity: Option<String>,
    default: Option<String>,
}

#[derive(Debug, Clone)]
struct Route {
    /// the method and path as configured, for diagnostics
    written: (String, String),
    method: Option<http::Method>,
    pattern: Vec<Segment>,
    action: String,
    resource_type: String,
    resource_id: Template,
    context: Vec<ContextField>,
}

/// The compiled table, with the gateway's trust settings.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    principal_header: http::HeaderName,
    principal_type: String,
    unmatched_status: u16,
    original: Option<OriginalSource>,
    deny_detail: bool,
    /// `gateway.route_type`: the AuthZEN resource type that asks about a route
    route_type: Option<String>,
}

/// What a matched route asks.
#[derive(Debug, Clone)]
pub struct Resolved<'t> {
    /// the action id
    pub action: &'t str,
    /// the resource's type, as callers write types
    pub resource_type: &'t str,
    /// the resource id, from the path
    pub resource_id: String,
    /// the context, as JSON
    pub context: Value,
}

/// A gateway request refused before any decision: it is ambiguous, or
/// names no principal. Always a deny.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// 401 (no or ambiguous principal) or 403
    pub status: u16,
    /// stable, snake_case
    pub code: &'static str,
    /// for a person, naming the header, parameter or segment at fault
    pub message: String,
}

impl Refusal {
    fn forbidden(code: &'static str, message: String) -> Self {
        Self {
            status: 403,
            code,
            message,
        }
    }
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
/// A [`Refusal`] (403) naming the header.
pub fn original_headers(
    source: OriginalSource,
    request: &impl OriginalRequest,
) -> Result<Option<(http::Method, &str)>, Refusal> {
    for name in METHOD_OVERRIDES {
        if request.has(name) {
            return Err(Refusal::forbidden(
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
            return Err(Refusal::forbidden(
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
        Ok(_) => Err(Refusal::forbidden(
            "ambiguous_request",
            format!("the gateway sent no `{name}`: it must send `{method_name}` and `{uri_name}`"),
        )),
        Err(Ambiguous) => Err(Refusal::forbidden(
            "ambiguous_request",
            format!("`{name}` is sent more than once"),
        )),
    };
    let (method, uri) = (one(method_name)?, one(uri_name)?);
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| {
        Refusal::forbidden(
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

impl RouteTable {
    /// Compiles the configured table.
    ///
    /// # Errors
    /// A bad method, pattern, template or header name, naming the route.
    pub fn compile(config: &GatewayConfig) -> Result<Self, RouteError> {
        let trusted: Vec<String> = config
            .trusted_headers
            .iter()
            .map(|h| h.to_lowercase())
            .collect();
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| {
                compile_route(route, &trusted).map_err(|message| RouteError {
                    index,
                    method: route.method.clone(),
                    path: route.path.clone(),
                    message,
                })
            })
            .collect::<Result<_, _>>()?;
        let principal_header =
            http::HeaderName::from_bytes(config.principal_header.to_lowercase().as_bytes())
                .map_err(|e| RouteError {
                    index: 0,
                    method: String::new(),
                    path: String::new(),
                    message: format!(
                        "`gateway.principal_header` `{}`: {e}",
                        config.principal_header
                    ),
                })?;
        Ok(Self {
            routes,
            principal_header,
            principal_type: config.principal_type.clone(),
            unmatched_status: config.unmatched_status,
            original: config.original,
            deny_detail: config.deny_detail,
            route_type: config.route_type.clone(),
        })
    }

    /// The principal's id from the trusted header.
    ///
    /// # Errors
    /// 401 when the gateway sent none, or sent the header more than once.
    pub fn principal<'r>(&self, request: &'r impl OriginalRequest) -> Result<&'r str, Refusal> {
        let name = self.principal_header.as_str();
        match request.single(name) {
            // A proxy joins a repeated header's values with commas.
            Ok(Some(id)) if id.contains(',') => Err(Refusal {
                status: 401,
                code: "ambiguous_principal",
                message: format!("the principal header `{name}` holds more than one value"),
            }),
            Ok(Some(id)) if !id.is_empty() => Ok(id),
            Ok(_) => Err(Refusal {
                status: 401,
                code: "no_principal",
                message: "the gateway sent no authenticated principal header".to_owned(),
            }),
            Err(Ambiguous) => Err(Refusal {
                status: 401,
                code: "ambiguous_principal",
                message: format!("the principal header `{name}` is sent more than once"),
            }),
        }
    }

    /// The principal's entity type.
    pub fn principal_type(&self) -> &str {
        &self.principal_type
    }

    /// The status answered when no route matches.
    pub fn unmatched_status(&self) -> u16 {
        self.unmatched_status
    }

    /// Whether a deny tells the gateway (and so, often, the end user) why:
    /// `gateway.deny_detail`.
    pub fn deny_detail(&self) -> bool {
        self.deny_detail
    }

    /// Where forward-auth reads the original request (`None`: not set, so
    /// the table is empty).
    pub fn original(&self) -> Option<OriginalSource> {
        self.original
    }

    /// Whether the table has any route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Refuses a table where a fact (`is_fact(action, attribute)`) comes
    /// from a place the client controls (query, path, a header not in
    /// `gateway.trusted_headers`).
    ///
    /// # Errors
    /// The first such attribute, naming its route.
    pub fn check_facts(&self, is_fact: impl Fn(&str, &str) -> bool) -> Result<(), RouteError> {
        for (index, route) in self.routes.iter().enumerate() {
            let mut untrusted = route.context.iter().filter(|field| !field.trusted);
            if let Some(field) = untrusted.find(|field| is_fact(&route.action, &field.name)) {
                let (method, path) = route.written.clone();
                return Err(RouteError {
                    index,
                    method,
                    path,
                    message: format!(
                        "context `{}` is a fact (a Boolean a policy of `{}` relies on) but comes \
                         from a place the client controls; read it from a header the gateway sets \
                         and strips from the client, listed in `gateway.trusted_headers`",
                        field.name, route.action
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks every route's action and resource type (and the principal
    /// type) against the schema's names: a misspelt one would deny every
    /// request on the route, so it is refused at start, with the closest
    /// name the schema declares.
    ///
    /// # Errors
    /// The first unknown name, naming its route.
    pub fn check_names(
        &self,
        unknown_action: impl Fn(&str) -> Option<String>,
        unknown_type: impl Fn(&str, &str) -> Option<String>,
    ) -> Result<(), RouteError> {
        for (index, route) in self.routes.iter().enumerate() {
            let unknown = unknown_action(&route.action)
                .or_else(|| unknown_type("resource type", &route.resource_type))
                .or_else(|| {
                    (index == 0)
                        .then(|| {
                            unknown_type(
                                "principal type (`gateway.principal_type`)",
                                &self.principal_type,
                            )
                        })
                        .flatten()
                });
            if let Some(message) = unknown {
                let (method, path) = route.written.clone();
                return Err(RouteError {
                    index,
                    method,
                    path,
                    message,
                });
            }
        }
        Ok(())
    }

    /// Whether an AuthZEN `resource.type` asks about a route
    /// (`gateway.route_type`, compared as AuthZEN types are: in any case).
    pub fn is_route_type(&self, type_name: &str) -> bool {
        self.route_type
            .as_deref()
            .is_some_and(|route_type| route_type.eq_ignore_ascii_case(type_name))
    }

    /// A question about a route itself, as the API-gateway interop asks it:
    /// the first route whose method is `method` (or `*`) and whose path is
    /// `template` exactly as the table writes it (parameter names
    /// included), resolved with each path parameter standing for itself
    /// (`{todoId}`) and each context value from the query or a header at
    /// its default; `None` when no route has that method and template (a
    /// concrete path such as `/todos/1` is not a template).
    pub fn route_question(&self, method: &str, template: &str) -> Option<Resolved<'_>> {
        let route = self.routes.iter().find(|route| {
            route.written.1 == template
                && route.method.as_ref().is_none_or(|m| m.as_str() == method)
        })?;
        let params: Vec<(&str, String)> = route
            .pattern
            .iter()
            .filter_map(|segment| match segment {
                Segment::Param(name) => Some((name.as_str(), format!("{{{name}}}"))),
                Segment::Literal(_) => None,
            })
            .collect();
        let params: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let mut context = Map::new();
        for field in &route.context {
            let text = match &field.source {
                Source::Template(template) => Some(render(template, &params)),
                Source::Query(_) | Source::Header(_) => field.default.clone(),
            };
            if let Some(text) = text {
                context.insert(field.name.clone(), typed(field, text));
            }
        }
        Some(Resolved {
            action: &route.action,
            resource_type: &route.resource_type,
            resource_id: render(&route.resource_id, &params),
            context: Value::Object(context),
        })
    }

    /// The first route matching `method` and `path_and_query`, resolved;
    /// `Ok(None)` when none matches.
    ///
    /// # Errors
    /// A [`Refusal`] (403) when the request is ambiguous: a dot segment, an
    /// encoded `/` or `\` or an empty segment in the path, a query parameter
    /// the route reads sent twice, a header it reads sent twice.
    pub fn resolve<'t>(
        &'t self,
        method: &http::Method,
        path_and_query: &str,
        request: &impl OriginalRequest,
    ) -> Result<Option<Resolved<'t>>, Refusal> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let segments = segments(path)?;
        let mut query_pairs: Option<Vec<(String, String)>> = None;
        for route in &self.routes {
            if route.method.as_ref().is_some_and(|m| m != method) {
                continue;
            }
            let Some(params) = match_pattern(&route.pattern, &segments) else {
                continue;
            };
            let mut context = Map::new();
            for field in &route.context {
                let text = match &field.source {
                    Source::Query(name) => {
                        let pairs = query_pairs.get_or_insert_with(|| {
                            form_urlencoded::parse(query.as_bytes())
                                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                                .collect()
                        });
                        let mut values = pairs.iter().filter(|(key, _)| key == name);
                        match (values.next(), values.next()) {
                            (Some(_), Some(_)) => {
                                return Err(Refusal::forbidden(
                                    "duplicate_parameter",
                                    format!("the query parameter `{name}` is sent more than once"),
                                ));
                            }
                            (value, _) => value.map(|(_, v)| v.clone()),
                        }
                    }
                    Source::Header(name) => match request.single(name) {
                        Ok(value) => value.map(str::to_owned),
                        Err(Ambiguous) => {
                            return Err(Refusal::forbidden(
                                "ambiguous_header",
                                format!("the header `{name}` is sent more than once"),
                            ));
                        }
                    },
                    Source::Template(template) => Some(render(template, &params)),
                };
                let Some(text) = text.or_else(|| field.default.clone()) else {
                    continue;
                };
                context.insert(field.name.clone(), typed(field, text));
            }
            return Ok(Some(Resolved {
                action: &route.action,
                resource_type: &route.resource_type,
                resource_id: render(&route.resource_id, &params),
                context: Value::Object(context),
            }));
        }
        Ok(None)
    }
}

/// The decoded segments of a path; anything an application could read
/// otherwise than we do is refused: an empty or dot segment, an encoded
/// `/`, `\` or `%`, a control character, bytes that are not UTF-8.
fn segments(path: &str) -> Result<Vec<String>, Refusal> {
    let refuse = |why: String| Refusal::forbidden("ambiguous_path", why);
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

fn typed(field: &ContextField, text: String) -> Value {
    if let Some(entity) = &field.entity {
        return serde_json::json!({"type": entity, "id": text});
    }
    match field.kind {
        ValueKind::String => Value::String(text),
        // A value that is not of its type stays a string, so the schema
        // refuses it by name instead of it silently becoming something else.
        ValueKind::Bool => match text.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text),
        },
        ValueKind::Long => text.parse::<i64>().map_or(Value::String(text), Value::from),
    }
}

fn compile_route(route: &RouteConfig, trusted_headers: &[String]) -> Result<Route, String> {
    let method = match route.method.as_str() {
        "*" => None,
        m => Some(
            http::Method::from_bytes(m.to_uppercase().as_bytes())
                .map_err(|e| format!("method: {e}"))?,
        ),
    };
    if !route.path.starts_with('/') {
        return Err("the path must start with `/`".to_owned());
    }
    let mut pattern = Vec::new();
    for segment in route.path.split('/').filter(|s| !s.is_empty()) {
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if !name.is_empty() && !name.contains(['{', '}']) => {
                pattern.push(Segment::Param(name.to_owned()))
            }
            Some(_) => return Err(format!("bad parameter `{segment}`")),
            None if segment.contains(['{', '}']) => {
                return Err(format!("a parameter must be a whole segment: `{segment}`"));
            }
            None => pattern.push(Segment::Literal(segment.to_owned())),
        }
    }
    let params: Vec<&str> = pattern
        .iter()
        .filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
        .collect();
    let resource_id =
        template(&route.resource_id, &params).map_err(|e| format!("resource_id: {e}"))?;
    let mut context = Vec::new();
    for (name, source) in &route.context {
        let (from, kind, entity, default) = match source {
            ContextSource::Text(from) => (from.as_str(), ValueKind::String, None, None),
            ContextSource::Typed {
                from,
                kind,
                entity,
                default,
            } => (from.as_str(), *kind, entity.clone(), default.clone()),
        };
        let (source, trusted) = if let Some(query) = from.strip_prefix("query:") {
            (Source::Query(query.to_owned()), false)
        } else if let Some(header) = from.strip_prefix("header:") {
            let header = header.to_lowercase();
            let trusted = trusted_headers.contains(&header);
            (Source::Header(header), trusted)
        } else {
            let template = template(from, &params).map_err(|e| format!("context `{name}`: {e}"))?;
            // A literal is the operator's word; a path parameter the client's.
            let literal = template.0.iter().all(|p| matches!(p, Segment::Literal(_)));
            (Source::Template(template), literal)
        };
        context.push(ContextField {
            name: name.clone(),
            source,
            trusted,
            kind,
            entity,
            default,
        });
    }
    Ok(Route {
        written: (route.method.clone(), route.path.clone()),
        method,
        pattern,
        action: route.action.clone(),
        resource_type: route.resource_type.clone(),
        resource_id,
        context,
    })
}

fn template(text: &str, params: &[&str]) -> Result<Template, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let (literal, tail) = rest.split_at(open);
        if !literal.is_empty() {
            pieces.push(Segment::Literal(literal.to_owned()));
        }
        let close = tail
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{text}`"))?;
        let name = tail.get(1..close).unwrap_or_default();
        if !params.contains(&name) {
            return Err(format!("`{{{name}}}` is not a parameter of the path"));
        }
        pieces.push(Segment::Param(name.to_owned()));
        rest = tail.get(close + 1..).unwrap_or_default();
    }
    if !rest.is_empty() {
        pieces.push(Segment::Literal(rest.to_owned()));
    }
    Ok(Template(pieces))
}

fn match_pattern<'s>(
    pattern: &'s [Segment],
    segments: &'s [String],
) -> Option<Vec<(&'s str, &'s str)>> {
    if pattern.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (expected, actual) in pattern.iter().zip(segments) {
        match expected {
            Segment::Literal(literal) if literal == actual => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => params.push((name.as_str(), actual.as_str())),
        }
    }
    Some(params)
}

fn render(template: &Template, params: &[(&str, &str)]) -> String {
    template
        .0
        .iter()
        .map(|piece| match piece {
            Segment::Literal(text) => text.as_str(),
            Segment::Param(name) => params
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(toml_routes: &str) -> RouteTable {
        let mut config = crate::config::Config::gateway_from(toml_routes);
        config.trusted_headers = vec!["X-Owner-Approved".to_owned()];
        RouteTable::compile(&config).unwrap()
    }

    const ROUTES: &str = r#"
        [[routes]]
        method = "POST"
        path = "/accounts/{account}/withdrawals"
        action = "withdraw"
        resource_type = "Account"
        resource_id = "{account}"
        context.destination = { from = "query:destination", entity = "Brokerage::Destination" }
        context.ownerApproved = { from = "header:x-owner-approved", type = "bool" }
        context.amount = "query:amount"

        [[routes]]
        method = "*"
        path = "/accounts/{account}"
        action = "view_account"
        resource_type = "Account"
        resource_id = "{account}"
    "#;

    #[test]
    fn a_route_maps_path_query_and_headers_to_a_decision() {
        let table = table(ROUTES);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-owner-approved", "true".parse().unwrap());
        let resolved = table
            .resolve(
                &http::Method::POST,
                "/accounts/alice%2Dpersonal/withdrawals?destination=alice-bank&amount=12.50",
                &headers,
            )
            .unwrap()
            .unwrap();
        assert_eq!(resolved.action, "withdraw");
        assert_eq!(resolved.resource_id, "alice-personal");
        assert_eq!(
            resolved.context,
            serde_json::json!({
                "destination": {"type": "Brokerage::Destination", "id": "alice-bank"},
                "ownerApproved": true,
                "amount": "12.50"
            })
        );
    }

    #[test]
    fn method_and_segment_count_must_match() {
        let table = table(ROUTES);
        let headers = http::HeaderMap::new();
        assert!(
            table
                .resolve(&http::Method::GET, "/accounts/a/withdrawals", &headers)
                .unwrap()
                .is_none()
        );
        assert!(
            table
                .resolve(&http::Method::POST, "/accounts/a/withdrawals/x", &headers)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            table
                .resolve(&http::Method::DELETE, "/accounts/a", &headers)
                .unwrap()
                .unwrap()
                .action,
            "view_account"
        );
    }

    #[test]
    fn a_route_question_names_the_route_by_method_and_exact_template() {
        let routes = table(ROUTES);
        let asked = routes
            .route_question("POST", "/accounts/{account}/withdrawals")
            .unwrap();
        assert_eq!(asked.action, "withdraw");
        assert_eq!(asked.resource_id, "{account}");
        // Path parameters stand for themselves; query and header values are
        // absent (no default given here).
        assert_eq!(asked.context, serde_json::json!({}));
        let with_defaults = table(
            r#"
            [[routes]]
            method = "GET"
            path = "/feeds/{feed}"
            action = "view_feed"
            resource_type = "Feed"
            resource_id = "feed-{feed}"
            context.feed = "{feed}"
            context.level = "basic"
            context.mfa = { from = "header:x-owner-approved", type = "bool", default = "false" }
            context.side = "query:side"
            "#,
        );
        let asked = with_defaults
            .route_question("GET", "/feeds/{feed}")
            .unwrap();
        assert_eq!(asked.resource_id, "feed-{feed}");
        assert_eq!(
            asked.context,
            serde_json::json!({"feed": "{feed}", "level": "basic", "mfa": false})
        );
        // `*` matches any method
        assert_eq!(
            routes
                .route_question("DELETE", "/accounts/{account}")
                .unwrap()
                .action,
            "view_account"
        );
        for (method, template) in [
            ("GET", "/accounts/{account}/withdrawals"),
            ("post", "/accounts/{account}/withdrawals"),
            ("POST", "/accounts/alice/withdrawals"),
            ("POST", "/accounts/{acct}/withdrawals"),
            ("POST", "/accounts/{account}/withdrawals/"),
            ("POST", ""),
        ] {
            assert!(
                routes.route_question(method, template).is_none(),
                "{method} {template}"
            );
        }
    }

    #[test]
    fn a_template_naming_an_unknown_parameter_is_refused() {
        let config = crate::config::Config::gateway_from(
            r#"
            original = "x-original"
            [[routes]]
            method = "GET"
            path = "/accounts/{account}"
            action = "view_account"
            resource_type = "Account"
            resource_id = "{acount}"
            "#,
        );
        let err = RouteTable::compile(&config).unwrap_err();
        assert!(
            err.to_string().contains("`{acount}` is not a parameter"),
            "{err}"
        );
    }

    fn refusal(
        table: &RouteTable,
        method: http::Method,
        uri: &str,
        headers: &http::HeaderMap,
    ) -> Refusal {
        match table.resolve(&method, uri, headers) {
            Err(refusal) => refusal,
            Ok(resolved) => panic!("`{uri}` was not refused: {resolved:?}"),
        }
    }

    #[test]
    fn a_query_parameter_sent_twice_is_refused_whatever_its_spelling() {
        let table = table(ROUTES);
        let headers = http::HeaderMap::new();
        for uri in [
            "/accounts/alice-personal/withdrawals?destination=alice-bank&destination=mallory-wallet",
            "/accounts/alice-personal/withdrawals?destination=alice-bank&%64estination=mallory-wallet",
            "/accounts/alice-personal/withdrawals?amount=1&destination=a&amount=2",
        ] {
            let refused = refusal(&table, http::Method::POST, uri, &headers);
            assert_eq!((refused.status, refused.code), (403, "duplicate_parameter"));
        }
    }

    #[test]
    fn dot_segments_encoded_separators_and_empty_segments_are_refused() {
        let table = table(ROUTES);
        let headers = http::HeaderMap::new();
        for uri in [
            "/accounts/..",
            "/accounts/.",
            "/accounts/%2E%2E",
            "/accounts/a%2Fb",
            "/accounts/a%2fb",
            "/accounts/a%5Cb",
            "/accounts/a\\b",
            "/accounts/a%00",
            "/accounts/a%252F",
            "/accounts//a",
            "/accounts/a/",
            "/accounts/%FF",
            "accounts/a",
        ] {
            let refused = refusal(&table, http::Method::GET, uri, &headers);
            assert_eq!(
                (refused.status, refused.code),
                (403, "ambiguous_path"),
                "{uri}"
            );
        }
        assert!(
            table
                .resolve(&http::Method::GET, "/accounts/alice%2Dpersonal", &headers)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_header_or_principal_sent_twice_is_refused() {
        let table = table(ROUTES);
        let mut headers = http::HeaderMap::new();
        headers.append("x-owner-approved", "false".parse().unwrap());
        headers.append("x-owner-approved", "true".parse().unwrap());
        let refused = refusal(
            &table,
            http::Method::POST,
            "/accounts/a/withdrawals?destination=d",
            &headers,
        );
        assert_eq!((refused.status, refused.code), (403, "ambiguous_header"));

        headers.append("x-user-id", "bob".parse().unwrap());
        assert_eq!(table.principal(&headers).unwrap(), "bob");
        headers.append("x-user-id", "alice".parse().unwrap());
        let refused = table.principal(&headers).unwrap_err();
        assert_eq!((refused.status, refused.code), (401, "ambiguous_principal"));
        let grpc: HashMap<String, String> =
            HashMap::from([("x-user-id".to_owned(), "bob,alice".to_owned())]);
        assert_eq!(
            table.principal(&grpc).unwrap_err().code,
            "ambiguous_principal"
        );
    }

    #[test]
    fn only_the_configured_pair_describes_the_original_request() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-original-method", "POST".parse().unwrap());
        headers.insert("x-original-uri", "/accounts/a".parse().unwrap());
        let (method, uri) = original_headers(OriginalSource::XOriginal, &headers)
            .unwrap()
            .unwrap();
        assert_eq!((method, uri), (http::Method::POST, "/accounts/a"));
        // the other pair, in either direction
        for source in [OriginalSource::XForwarded, OriginalSource::RequestLine] {
            let refused = original_headers(source, &headers).unwrap_err();
            assert_eq!((refused.status, refused.code), (403, "ambiguous_request"));
        }
        headers.insert("x-forwarded-uri", "/accounts/b".parse().unwrap());
        assert!(original_headers(OriginalSource::XOriginal, &headers).is_err());
        // half a pair, and a duplicate
        let mut half = http::HeaderMap::new();
        half.insert("x-forwarded-uri", "/accounts/a".parse().unwrap());
        assert!(original_headers(OriginalSource::XForwarded, &half).is_err());
        half.insert("x-forwarded-method", "GET".parse().unwrap());
        assert!(original_headers(OriginalSource::XForwarded, &half).is_ok());
        half.append("x-forwarded-uri", "/accounts/b".parse().unwrap());
        assert!(original_headers(OriginalSource::XForwarded, &half).is_err());
        // a method override, whatever the source
        let mut line = http::HeaderMap::new();
        assert!(
            original_headers(OriginalSource::RequestLine, &line)
                .unwrap()
                .is_none()
        );
        line.insert("x-http-method-override", "DELETE".parse().unwrap());
        let refused = original_headers(OriginalSource::RequestLine, &line).unwrap_err();
        assert_eq!(refused.code, "method_override");
    }

    #[test]
    fn a_fact_from_a_place_the_client_controls_is_refused_at_load() {
        let is_fact =
            |action: &str, attribute: &str| action == "withdraw" && attribute == "ownerApproved";
        table(ROUTES).check_facts(is_fact).unwrap();
        let untrusted = crate::config::Config::gateway_from(ROUTES);
        let table = RouteTable::compile(&untrusted).unwrap();
        let err = table.check_facts(is_fact).unwrap_err();
        assert!(err.to_string().contains("context `ownerApproved`"), "{err}");
        assert!(err.to_string().contains("gateway.trusted_headers"), "{err}");
    }
}

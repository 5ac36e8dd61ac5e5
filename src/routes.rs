//! The gateway route table: an original request (method, path, query,
//! headers) → the action, resource and context of a decision. Shared by
//! HTTP forward-auth and Envoy's gRPC `ext_authz`. Compiled once at start;
//! nothing here trusts the request beyond what a route names.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::config::{ContextSource, GatewayConfig, RouteConfig, ValueKind};

/// A route table that cannot be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("gateway route {index} (`{method} {path}`): {message}")]
#[diagnostic(help(
    "patterns are `/literal/{{param}}/…`; templates may only use the pattern's parameters"
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
    kind: ValueKind,
    entity: Option<String>,
    default: Option<String>,
}

#[derive(Debug, Clone)]
struct Route {
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

/// The original request, as the gateway described it.
pub trait OriginalRequest {
    /// a header's value, by lower-case name
    fn header(&self, name: &str) -> Option<&str>;
}

impl OriginalRequest for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl OriginalRequest for HashMap<String, String> {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl RouteTable {
    /// Compiles the configured table.
    ///
    /// # Errors
    /// A bad method, pattern, template or header name, naming the route.
    pub fn compile(config: &GatewayConfig) -> Result<Self, RouteError> {
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| {
                compile_route(route).map_err(|message| RouteError {
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
        })
    }

    /// The principal's id from the trusted header, if the gateway sent one.
    pub fn principal<'r>(&self, request: &'r impl OriginalRequest) -> Option<&'r str> {
        request
            .header(self.principal_header.as_str())
            .filter(|id| !id.is_empty())
    }

    /// The principal's entity type.
    pub fn principal_type(&self) -> &str {
        &self.principal_type
    }

    /// The status answered when no route matches.
    pub fn unmatched_status(&self) -> u16 {
        self.unmatched_status
    }

    /// Whether the table has any route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The first route matching `method` and `path_and_query`, resolved.
    pub fn resolve<'t>(
        &'t self,
        method: &http::Method,
        path_and_query: &str,
        request: &impl OriginalRequest,
    ) -> Option<Resolved<'t>> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        self.routes.iter().find_map(|route| {
            if route.method.as_ref().is_some_and(|m| m != method) {
                return None;
            }
            let params = match_pattern(&route.pattern, &segments)?;
            let mut context = Map::new();
            for field in &route.context {
                let text = match &field.source {
                    Source::Query(name) => form_urlencoded::parse(query.as_bytes())
                        .find(|(key, _)| key == name)
                        .map(|(_, value)| value.into_owned()),
                    Source::Header(name) => request.header(name).map(str::to_owned),
                    Source::Template(template) => Some(render(template, &params)),
                };
                let Some(text) = text.or_else(|| field.default.clone()) else {
                    continue;
                };
                context.insert(field.name.clone(), typed(field, text));
            }
            Some(Resolved {
                action: &route.action,
                resource_type: &route.resource_type,
                resource_id: render(&route.resource_id, &params),
                context: Value::Object(context),
            })
        })
    }
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

fn compile_route(route: &RouteConfig) -> Result<Route, String> {
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
        let source = if let Some(query) = from.strip_prefix("query:") {
            Source::Query(query.to_owned())
        } else if let Some(header) = from.strip_prefix("header:") {
            Source::Header(header.to_lowercase())
        } else {
            Source::Template(template(from, &params).map_err(|e| format!("context `{name}`: {e}"))?)
        };
        context.push(ContextField {
            name: name.clone(),
            source,
            kind,
            entity,
            default,
        });
    }
    Ok(Route {
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
        let config: GatewayConfig = toml::from_str(toml_routes).unwrap();
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
                .is_none()
        );
        assert!(
            table
                .resolve(&http::Method::POST, "/accounts/a/withdrawals/x", &headers)
                .is_none()
        );
        assert_eq!(
            table
                .resolve(&http::Method::DELETE, "/accounts/a", &headers)
                .unwrap()
                .action,
            "view_account"
        );
    }

    #[test]
    fn a_template_naming_an_unknown_parameter_is_refused() {
        let config: GatewayConfig = toml::from_str(
            r#"
            [[routes]]
            method = "GET"
            path = "/accounts/{account}"
            action = "view_account"
            resource_type = "Account"
            resource_id = "{acount}"
            "#,
        )
        .unwrap();
        let err = RouteTable::compile(&config).unwrap_err();
        assert!(
            err.to_string().contains("`{acount}` is not a parameter"),
            "{err}"
        );
    }
}

//! The gateway route table: a gateway's question (the original method,
//! path, query and headers, from the one source configured) → the
//! principal, action, resource and context of a decision, in one trip
//! ([`RouteTable::resolve`]). Shared by HTTP forward-auth and Envoy's gRPC
//! `ext_authz`. Compiled once at start; nothing here trusts the request
//! beyond what a route names.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::template::{self, Segment, Template};
use super::trust::{self, Ambiguous, OriginalRequest, refused};
use super::{PREFIX, Question};
use crate::api::ApiError;
use crate::config::{ContextSource, GatewayConfig, OriginalSource, RouteConfig, ValueKind};
use crate::engine::EntityRef;

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
    unmatched_status: http::StatusCode,
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
            unmatched_status: http::StatusCode::from_u16(config.unmatched_status).map_err(|e| {
                RouteError {
                    index: 0,
                    method: String::new(),
                    path: String::new(),
                    message: format!(
                        "`gateway.unmatched_status` {}: {e}",
                        config.unmatched_status
                    ),
                }
            })?,
            original: config.original,
            deny_detail: config.deny_detail,
            route_type: config.route_type.clone(),
        })
    }

    /// A gateway's question, in one trip: the original request from the
    /// one source it may come from, the principal from the trusted header,
    /// and the first route that matches, resolved.
    ///
    /// # Errors
    /// [`ApiError::Unauthenticated`] (401) without one principal;
    /// [`ApiError::Refused`] (403) for an ambiguous request (another
    /// source's headers, a method override, a dot segment, an encoded
    /// separator, a parameter or header the route reads sent twice);
    /// [`ApiError::NoRoute`] (`gateway.unmatched_status`) when no route
    /// matches.
    pub fn resolve<'a, H: OriginalRequest>(
        &'a self,
        question: &Question<'a, H>,
    ) -> Result<(EntityRef<'a>, Resolved<'a>), ApiError> {
        let (method, target, headers) = self.original(question)?;
        let principal = EntityRef {
            type_name: &self.principal_type,
            id: self.principal(headers)?,
            properties: None,
        };
        match self.route(&method, &target, headers)? {
            Some(resolved) => Ok((principal, resolved)),
            None => Err(ApiError::NoRoute {
                status: self.unmatched_status,
                message: format!("no gateway route matches `{method} {target}`"),
            }),
        }
    }

    /// The original method and path-and-query of `question`, from the one
    /// source this deployment configured (Envoy's gRPC attributes are the
    /// original request itself), and the headers that came with it.
    fn original<'a, H: OriginalRequest>(
        &self,
        question: &Question<'a, H>,
    ) -> Result<(http::Method, Cow<'a, str>, &'a H), ApiError> {
        match *question {
            Question::Forwarded {
                method,
                path_and_query,
                headers,
            } => {
                let Some(source) = self.original else {
                    return Err(ApiError::NoRoute {
                        status: http::StatusCode::FORBIDDEN,
                        message: "no gateway routes are configured".to_owned(),
                    });
                };
                if let Some((method, uri)) = trust::original_headers(source, headers)? {
                    return Ok((method, Cow::Borrowed(uri), headers));
                }
                let below = path_and_query.strip_prefix(PREFIX).unwrap_or_default();
                let uri = if below.is_empty() || below.starts_with('?') {
                    Cow::Owned(format!("/{below}"))
                } else {
                    Cow::Borrowed(below)
                };
                Ok((method.clone(), uri, headers))
            }
            Question::Attributes {
                method,
                path,
                headers,
            } => {
                // Envoy's attributes are the original request; a header that
                // claims another one, or overrides the method, is refused.
                trust::original_headers(OriginalSource::RequestLine, headers)?;
                let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| {
                    refused("ambiguous_request", format!("`{method}` is not a method"))
                })?;
                Ok((method, Cow::Borrowed(path), headers))
            }
        }
    }

    /// The principal's id from the trusted header.
    ///
    /// # Errors
    /// 401 when the gateway sent none, or sent the header more than once.
    fn principal<'r>(&self, request: &'r impl OriginalRequest) -> Result<&'r str, ApiError> {
        let name = self.principal_header.as_str();
        let unauthenticated = |code, message| Err(ApiError::Unauthenticated { code, message });
        match request.single(name) {
            // A proxy joins a repeated header's values with commas.
            Ok(Some(id)) if id.contains(',') => unauthenticated(
                "ambiguous_principal",
                format!("the principal header `{name}` holds more than one value"),
            ),
            Ok(Some(id)) if !id.is_empty() => Ok(id),
            Ok(_) => unauthenticated(
                "no_principal",
                "the gateway sent no authenticated principal header".to_owned(),
            ),
            Err(Ambiguous) => unauthenticated(
                "ambiguous_principal",
                format!("the principal header `{name}` is sent more than once"),
            ),
        }
    }

    /// Whether a deny tells the gateway (and so, often, the end user) why:
    /// `gateway.deny_detail`.
    pub fn deny_detail(&self) -> bool {
        self.deny_detail
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
        let params: Vec<(&str, String)> = template::params(&route.pattern)
            .into_iter()
            .map(|name| (name, format!("{{{name}}}")))
            .collect();
        let params: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let mut context = Map::new();
        for field in &route.context {
            let text = match &field.source {
                Source::Template(template) => Some(template::render(template, &params)),
                Source::Query(_) | Source::Header(_) => field.default.clone(),
            };
            if let Some(text) = text {
                context.insert(field.name.clone(), typed(field, text));
            }
        }
        Some(Resolved {
            action: &route.action,
            resource_type: &route.resource_type,
            resource_id: template::render(&route.resource_id, &params),
            context: Value::Object(context),
        })
    }

    /// The first route matching `method` and `path_and_query`, resolved;
    /// `Ok(None)` when none matches.
    ///
    /// # Errors
    /// [`ApiError::Refused`] (403) when the request is ambiguous: a dot
    /// segment, an encoded `/` or `\` or an empty segment in the path, a
    /// query parameter the route reads sent twice, a header it reads sent
    /// twice.
    fn route(
        &self,
        method: &http::Method,
        path_and_query: &str,
        request: &impl OriginalRequest,
    ) -> Result<Option<Resolved<'_>>, ApiError> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let segments = trust::segments(path)?;
        let mut query_pairs: Option<Vec<(String, String)>> = None;
        for route in &self.routes {
            if route.method.as_ref().is_some_and(|m| m != method) {
                continue;
            }
            let Some(params) = template::match_pattern(&route.pattern, &segments) else {
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
                                return Err(refused(
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
                            return Err(refused(
                                "ambiguous_header",
                                format!("the header `{name}` is sent more than once"),
                            ));
                        }
                    },
                    Source::Template(template) => Some(template::render(template, &params)),
                };
                let Some(text) = text.or_else(|| field.default.clone()) else {
                    continue;
                };
                context.insert(field.name.clone(), typed(field, text));
            }
            return Ok(Some(Resolved {
                action: &route.action,
                resource_type: &route.resource_type,
                resource_id: template::render(&route.resource_id, &params),
                context: Value::Object(context),
            }));
        }
        Ok(None)
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

fn compile_route(route: &RouteConfig, trusted_headers: &[String]) -> Result<Route, String> {
    let method = match route.method.as_str() {
        "*" => None,
        m => Some(
            http::Method::from_bytes(m.to_uppercase().as_bytes())
                .map_err(|e| format!("method: {e}"))?,
        ),
    };
    let pattern = template::pattern(&route.path)?;
    let params = template::params(&pattern);
    let resource_id =
        template::template(&route.resource_id, &params).map_err(|e| format!("resource_id: {e}"))?;
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
            let template =
                template::template(from, &params).map_err(|e| format!("context `{name}`: {e}"))?;
            // A literal is the operator's word; a path parameter the client's.
            let literal = template.is_literal();
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

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
            .route(
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
                .route(&http::Method::GET, "/accounts/a/withdrawals", &headers)
                .unwrap()
                .is_none()
        );
        assert!(
            table
                .route(&http::Method::POST, "/accounts/a/withdrawals/x", &headers)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            table
                .route(&http::Method::DELETE, "/accounts/a", &headers)
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
    ) -> ApiError {
        match table.route(&method, uri, headers) {
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
            assert_eq!(
                (refused.status().as_u16(), refused.code()),
                (403, "duplicate_parameter")
            );
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
                (refused.status().as_u16(), refused.code()),
                (403, "ambiguous_path"),
                "{uri}"
            );
        }
        assert!(
            table
                .route(&http::Method::GET, "/accounts/alice%2Dpersonal", &headers)
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
        assert_eq!(
            (refused.status().as_u16(), refused.code()),
            (403, "ambiguous_header")
        );

        headers.append("x-user-id", "bob".parse().unwrap());
        assert_eq!(table.principal(&headers).unwrap(), "bob");
        headers.append("x-user-id", "alice".parse().unwrap());
        let refused = table.principal(&headers).unwrap_err();
        assert_eq!(
            (refused.status().as_u16(), refused.code()),
            (401, "ambiguous_principal")
        );
        let grpc: HashMap<String, String> =
            HashMap::from([("x-user-id".to_owned(), "bob,alice".to_owned())]);
        assert_eq!(
            table.principal(&grpc).unwrap_err().code(),
            "ambiguous_principal"
        );
    }

    #[test]
    fn only_the_configured_pair_describes_the_original_request() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-original-method", "POST".parse().unwrap());
        headers.insert("x-original-uri", "/accounts/a".parse().unwrap());
        let (method, uri) = trust::original_headers(OriginalSource::XOriginal, &headers)
            .unwrap()
            .unwrap();
        assert_eq!((method, uri), (http::Method::POST, "/accounts/a"));
        // the other pair, in either direction
        for source in [OriginalSource::XForwarded, OriginalSource::RequestLine] {
            let refused = trust::original_headers(source, &headers).unwrap_err();
            assert_eq!(
                (refused.status().as_u16(), refused.code()),
                (403, "ambiguous_request")
            );
        }
        headers.insert("x-forwarded-uri", "/accounts/b".parse().unwrap());
        assert!(trust::original_headers(OriginalSource::XOriginal, &headers).is_err());
        // half a pair, and a duplicate
        let mut half = http::HeaderMap::new();
        half.insert("x-forwarded-uri", "/accounts/a".parse().unwrap());
        assert!(trust::original_headers(OriginalSource::XForwarded, &half).is_err());
        half.insert("x-forwarded-method", "GET".parse().unwrap());
        assert!(trust::original_headers(OriginalSource::XForwarded, &half).is_ok());
        half.append("x-forwarded-uri", "/accounts/b".parse().unwrap());
        assert!(trust::original_headers(OriginalSource::XForwarded, &half).is_err());
        // a method override, whatever the source
        let mut line = http::HeaderMap::new();
        assert!(
            trust::original_headers(OriginalSource::RequestLine, &line)
                .unwrap()
                .is_none()
        );
        line.insert("x-http-method-override", "DELETE".parse().unwrap());
        let refused = trust::original_headers(OriginalSource::RequestLine, &line).unwrap_err();
        assert_eq!(refused.code(), "method_override");
    }

    /// What one trip down the table answered: the principal, action and
    /// resource id, or the refusal's status and code.
    fn asked<H: OriginalRequest>(
        table: &RouteTable,
        question: &Question<'_, H>,
    ) -> Result<(String, String, String), (u16, &'static str)> {
        table
            .resolve(question)
            .map(|(principal, route)| {
                (
                    principal.id.to_owned(),
                    route.action.to_owned(),
                    route.resource_id.clone(),
                )
            })
            .map_err(|error| (error.status().as_u16(), error.code()))
    }

    #[test]
    fn one_trip_down_reads_the_source_then_the_principal_then_the_route() {
        let forwarding = table(&format!("original = \"x-original\"\n{ROUTES}"));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-original-method", "GET".parse().unwrap());
        headers.insert(
            "x-original-uri",
            "/accounts/alice-personal".parse().unwrap(),
        );
        fn forwarded(headers: &http::HeaderMap) -> Question<'_, http::HeaderMap> {
            Question::Forwarded {
                method: &http::Method::POST,
                path_and_query: "/gateway/authorize",
                headers,
            }
        }
        assert_eq!(
            asked(&forwarding, &forwarded(&headers)),
            Err((401, "no_principal"))
        );
        headers.insert("x-user-id", "bob".parse().unwrap());
        assert_eq!(
            asked(&forwarding, &forwarded(&headers)),
            Ok(("bob".into(), "view_account".into(), "alice-personal".into()))
        );
        headers.insert("x-original-uri", "/nowhere".parse().unwrap());
        assert_eq!(
            asked(&forwarding, &forwarded(&headers)),
            Err((404, "no_route"))
        );
        // Another source's header is refused before the principal is read.
        headers.remove("x-user-id");
        headers.insert("x-forwarded-uri", "/accounts/bob".parse().unwrap());
        assert_eq!(
            asked(&forwarding, &forwarded(&headers)),
            Err((403, "ambiguous_request"))
        );
        // Without `gateway.original`, nothing forwarded is decided.
        let unset = table(ROUTES);
        let mut bob = http::HeaderMap::new();
        bob.insert("x-user-id", "bob".parse().unwrap());
        assert_eq!(asked(&unset, &forwarded(&bob)), Err((403, "no_route")));
        // Envoy's attributes are the original request itself.
        let attributes = |method| Question::Attributes {
            method,
            path: "/accounts/a",
            headers: &bob,
        };
        assert_eq!(
            asked(&unset, &attributes("DELETE")),
            Ok(("bob".into(), "view_account".into(), "a".into()))
        );
        assert_eq!(
            asked(&unset, &attributes("GE T")),
            Err((403, "ambiguous_request"))
        );
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

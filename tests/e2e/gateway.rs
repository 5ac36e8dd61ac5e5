//! Gateway forward-auth (`/gateway/authorize`) in each gateway's dialect,
//! and Envoy's gRPC `ext_authz`, over the example route table.

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use http_body_util::Full;

use mandate::config::OriginalSource;

use crate::support::{Reply, Server, gateway_config, send};

async fn ask(server: &Server, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = http::Request::get(server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::new(Bytes::new())).unwrap(), false).await
}

#[tokio::test]
async fn nginx_style_headers_allow_a_trader_to_order() {
    let server = Server::start(gateway_config()).await;
    let reply = ask(
        &server,
        "/gateway/authorize",
        &[
            ("x-original-method", "POST"),
            (
                "x-original-uri",
                "/accounts/alice-personal/orders?side=buy&instrument=AAPL",
            ),
            ("x-user-id", "carol"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(reply.headers["x-mandate-decision"], "allow");
    assert_eq!(reply.headers["x-mandate-reasons"], "S2");
}

fn gateway_reading(source: OriginalSource) -> mandate::config::Config {
    let mut config = gateway_config();
    config.gateway.original = Some(source);
    config
}

#[tokio::test]
async fn forwarded_headers_deny_a_withdrawal_to_another_holder() {
    let server = Server::start(gateway_reading(OriginalSource::XForwarded)).await;
    let reply = ask(
        &server,
        "/gateway/authorize",
        &[
            ("x-forwarded-method", "POST"),
            (
                "x-forwarded-uri",
                "/accounts/alice-personal/withdrawals?destination=mallory-wallet&amount=10.00",
            ),
            ("x-user-id", "erin"),
        ],
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json["context"]["reasons"], serde_json::json!(["F1"]));
}

#[tokio::test]
async fn envoy_style_request_line_carries_the_original_path() {
    let server = Server::start(gateway_reading(OriginalSource::RequestLine)).await;
    let request = http::Request::delete(
        server.url("/gateway/authorize/accounts/alice-personal/second-users/alice-api"),
    )
    .header("x-user-id", "alice")
    .body(Full::new(Bytes::new()))
    .unwrap();
    let reply = send(request, false).await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(reply.headers["x-mandate-reasons"], "U6");
}

#[tokio::test]
async fn no_principal_is_a_401_and_no_route_the_configured_status() {
    let server = Server::start(gateway_config()).await;
    let reply = ask(
        &server,
        "/gateway/authorize",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/accounts/alice-personal"),
        ],
    )
    .await;
    assert_eq!(reply.status, 401);
    let reply = ask(
        &server,
        "/gateway/authorize",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/nowhere"),
            ("x-user-id", "alice"),
        ],
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json["error"]["code"], "no_route");

    let mut config = gateway_config();
    config.gateway.unmatched_status = 404;
    let server = Server::start(config).await;
    let reply = ask(
        &server,
        "/gateway/authorize",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/nowhere"),
            ("x-user-id", "alice"),
        ],
    )
    .await;
    assert_eq!(reply.status, 404);
}

#[tokio::test]
async fn a_request_that_does_not_fit_the_schema_is_denied_not_passed() {
    let server = Server::start(gateway_config()).await;
    let reply = ask(
        &server,
        "/gateway/authorize",
        &[
            ("x-original-method", "POST"),
            ("x-original-uri", "/accounts/alice-personal/orders?side=buy"),
            ("x-user-id", "carol"),
        ],
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json["error"]["code"], "invalid_context");
}

#[tokio::test]
async fn headers_name_typed_context_values() {
    let server = Server::start(gateway_config()).await;
    let headers = |confirmed: &'static str| {
        [
            ("x-original-method", "POST"),
            (
                "x-original-uri",
                "/accounts/alice-personal/second-users?for=grace",
            ),
            ("x-user-id", "alice"),
            ("x-mfa", "false"),
            ("x-email-confirmed", confirmed),
        ]
    };
    assert_eq!(
        ask(&server, "/gateway/authorize", &headers("true"))
            .await
            .status,
        200
    );
    let reply = ask(&server, "/gateway/authorize", &headers("false")).await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.json["context"]["reasons"],
        serde_json::json!(["U5.confirmation"])
    );
}

async fn check(
    server: &Server,
    method: &str,
    path: &str,
    user: Option<&str>,
) -> (i32, Option<HttpResponse>) {
    let mut headers = std::collections::HashMap::new();
    if let Some(user) = user {
        headers.insert("x-user-id".to_owned(), user.to_owned());
    }
    check_with(server, method, path, headers).await
}

async fn check_with(
    server: &Server,
    method: &str,
    path: &str,
    headers: std::collections::HashMap<String, String>,
) -> (i32, Option<HttpResponse>) {
    let mut client = AuthorizationClient::connect(format!("http://{}", server.grpc.unwrap()))
        .await
        .unwrap();
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let response = client.check(request).await.unwrap().into_inner();
    (
        response.status.map_or(0, |s| s.code),
        response.http_response,
    )
}

#[tokio::test]
async fn grpc_ext_authz_answers_ok_denied_and_unauthenticated() {
    let server = Server::start(gateway_config()).await;
    let (code, response) = check(&server, "GET", "/accounts/alice-personal", Some("grace")).await;
    assert_eq!(code, 0);
    let Some(HttpResponse::OkResponse(ok)) = response else {
        panic!("expected an ok response")
    };
    assert!(ok.headers.iter().any(|h| {
        h.header
            .as_ref()
            .is_some_and(|h| h.key == "x-mandate-reasons" && h.value == "A1")
    }));

    let (code, response) = check(&server, "GET", "/accounts/alice-personal", Some("mallory")).await;
    assert_eq!(code, 7, "PERMISSION_DENIED");
    let Some(HttpResponse::DeniedResponse(denied)) = response else {
        panic!("expected a denied response")
    };
    assert_eq!(denied.status.unwrap().code, 403);

    let (code, response) = check(&server, "GET", "/accounts/alice-personal", None).await;
    assert_eq!(code, 16, "UNAUTHENTICATED");
    let Some(HttpResponse::DeniedResponse(denied)) = response else {
        panic!("expected a denied response")
    };
    assert_eq!(denied.status.unwrap().code, 401);
}

#[tokio::test]
async fn grpc_ext_authz_takes_the_trace_from_its_metadata_else_the_original_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let mut config = gateway_config();
    config.log.decisions = mandate::config::DecisionSink::File;
    config.log.decisions_file = Some(log.clone());
    let server = Server::start(config).await;
    let mut client = AuthorizationClient::connect(format!("http://{}", server.grpc.unwrap()))
        .await
        .unwrap();
    let envoys = "00-11111111111111111111111111111111-2222222222222222-01";
    let callers = "00-33333333333333333333333333333333-4444444444444444-01";
    let asked = |traceparent: Option<&str>| {
        let mut headers = std::collections::HashMap::new();
        headers.insert("x-user-id".to_owned(), "grace".to_owned());
        if let Some(parent) = traceparent {
            headers.insert("traceparent".to_owned(), parent.to_owned());
        }
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(AttrRequest {
                    http: Some(HttpRequest {
                        method: "GET".to_owned(),
                        path: "/accounts/alice-personal".to_owned(),
                        headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    };
    // Envoy's own call carries its trace in metadata: that one wins.
    let mut request = tonic::Request::new(asked(Some(callers)));
    request
        .metadata_mut()
        .insert("traceparent", envoys.parse().unwrap());
    client.check(request).await.unwrap();
    // Without it, the original request's header.
    client
        .check(tonic::Request::new(asked(Some(callers))))
        .await
        .unwrap();
    // Neither: a trace of its own.
    client
        .check(tonic::Request::new(asked(None)))
        .await
        .unwrap();
    let lines = crate::support::decision_lines(&log, 3);
    assert_eq!(lines[0]["trace_id"], "11111111111111111111111111111111");
    assert_eq!(lines[1]["trace_id"], "33333333333333333333333333333333");
    let own = lines[2]["trace_id"].as_str().unwrap();
    assert!(own.len() == 32 && !own.starts_with("1111") && !own.starts_with("3333"));
}

/// A request as nginx would describe it, plus `extra` headers.
async fn ask_as_nginx(server: &Server, method: &str, uri: &str, extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![("x-original-method", method), ("x-original-uri", uri)];
    headers.extend_from_slice(extra);
    ask(server, "/gateway/authorize", &headers).await
}

#[tokio::test]
async fn a_client_sent_original_request_pair_is_refused_not_followed() {
    // Caddy and Traefik set X-Forwarded-*; a client adds X-Original-* to
    // make a withdrawal look like a view.
    let server = Server::start(gateway_reading(OriginalSource::XForwarded)).await;
    let reply = ask(
        &server,
        "/gateway/authorize",
        &[
            ("x-forwarded-method", "POST"),
            (
                "x-forwarded-uri",
                "/accounts/alice-personal/withdrawals?destination=mallory-wallet&amount=9999.00",
            ),
            ("x-original-method", "GET"),
            ("x-original-uri", "/accounts/alice-personal"),
            ("x-user-id", "bob"),
        ],
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.json);
    assert_eq!(reply.json["error"]["code"], "ambiguous_request");
    assert_eq!(reply.headers["x-mandate-decision"], "deny");

    // nginx's Mandate refuses a client's X-Forwarded-* the same way.
    let server = Server::start(gateway_config()).await;
    let reply = ask_as_nginx(
        &server,
        "GET",
        "/accounts/alice-personal",
        &[("x-forwarded-uri", "/accounts/x"), ("x-user-id", "bob")],
    )
    .await;
    assert_eq!(reply.json["error"]["code"], "ambiguous_request");

    // Envoy's Mandate refuses both pairs: the request line is the request.
    let server = Server::start(gateway_reading(OriginalSource::RequestLine)).await;
    for header in ["x-original-uri", "x-forwarded-uri"] {
        let request = http::Request::delete(
            server.url("/gateway/authorize/accounts/alice-personal/sub-users/frank"),
        )
        .header("x-user-id", "alice")
        .header(header, "/accounts/alice-personal")
        .body(Full::new(Bytes::new()))
        .unwrap();
        let reply = send(request, false).await;
        assert_eq!(reply.status, 403, "{header}: {}", reply.json);
        assert_eq!(reply.json["error"]["code"], "ambiguous_request");
    }
}

#[tokio::test]
async fn half_a_pair_or_a_duplicate_original_header_is_refused() {
    let server = Server::start(gateway_config()).await;
    let reply = ask(
        &server,
        "/gateway/authorize",
        &[
            ("x-original-uri", "/accounts/alice-personal"),
            ("x-user-id", "grace"),
        ],
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json["error"]["code"], "ambiguous_request");
    let reply = ask_as_nginx(
        &server,
        "GET",
        "/accounts/alice-personal",
        &[("x-original-method", "DELETE"), ("x-user-id", "grace")],
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json["error"]["code"], "ambiguous_request");
}

#[tokio::test]
async fn method_override_headers_are_refused() {
    let server = Server::start(gateway_config()).await;
    for header in [
        "x-http-method-override",
        "X-Method-Override",
        "x-http-method",
    ] {
        let reply = ask_as_nginx(
            &server,
            "GET",
            "/accounts/alice-personal",
            &[(header, "DELETE"), ("x-user-id", "grace")],
        )
        .await;
        assert_eq!(reply.status, 403, "{header}");
        assert_eq!(reply.json["error"]["code"], "method_override");
    }
}

#[tokio::test]
async fn a_duplicate_identity_or_fact_header_is_refused() {
    let server = Server::start(gateway_config()).await;
    let reply = ask_as_nginx(
        &server,
        "GET",
        "/accounts/alice-personal",
        &[("x-user-id", "mallory"), ("x-user-id", "grace")],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json["error"]["code"], "ambiguous_principal");
    let reply = ask_as_nginx(
        &server,
        "POST",
        "/accounts/acme-corp/withdrawals?destination=acme-bank",
        &[
            ("x-user-id", "quinn"),
            ("x-owner-approved", "false"),
            ("x-owner-approved", "true"),
        ],
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json["error"]["code"], "ambiguous_header");
}

#[tokio::test]
async fn a_duplicate_query_parameter_is_refused_whichever_value_comes_first() {
    let server = Server::start(gateway_config()).await;
    for query in [
        "destination=alice-bank&destination=mallory-wallet",
        "destination=mallory-wallet&destination=alice-bank",
        "destination=alice-bank&amount=1.00&destination=mallory-wallet",
    ] {
        let reply = ask_as_nginx(
            &server,
            "POST",
            &format!("/accounts/alice-personal/withdrawals?{query}"),
            &[("x-user-id", "erin")],
        )
        .await;
        assert_eq!(reply.status, 403, "{query}");
        assert_eq!(reply.json["error"]["code"], "duplicate_parameter");
    }
}

#[tokio::test]
async fn dot_segments_and_encoded_separators_in_the_path_are_refused() {
    let server = Server::start(gateway_config()).await;
    for uri in [
        "/accounts/alice-personal/orders/..%2Fsub-users%2Ffrank",
        "/accounts/alice-personal/orders/%2E%2E/sub-users/frank",
        "/accounts/alice-personal/orders/../sub-users/frank",
        "/accounts/alice-personal/orders/x%5C..%5Csub-users",
    ] {
        let reply = ask_as_nginx(&server, "DELETE", uri, &[("x-user-id", "bob")]).await;
        assert_eq!(reply.status, 403, "{uri}");
        assert_eq!(reply.json["error"]["code"], "ambiguous_path", "{uri}");
    }
}

#[tokio::test]
async fn trusted_fact_headers_decide_when_the_gateway_sets_them() {
    let server = Server::start(gateway_config()).await;
    let withdraw =
        |approved: &'static str| [("x-user-id", "quinn"), ("x-owner-approved", approved)];
    let uri = "/accounts/acme-corp/withdrawals?destination=acme-bank";
    let reply = ask_as_nginx(&server, "POST", uri, &withdraw("true")).await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    let reply = ask_as_nginx(&server, "POST", uri, &withdraw("false")).await;
    assert_eq!(reply.status, 403);
    let reply = ask_as_nginx(&server, "POST", uri, &[("x-user-id", "quinn")]).await;
    assert_eq!(reply.status, 403, "absent means not approved");
}

#[tokio::test]
async fn a_route_reading_a_fact_from_the_client_does_not_start() {
    let mut config = gateway_config();
    config.gateway.trusted_headers.retain(|h| h != "x-mfa");
    let Err(error) = mandate::app::start(&config).await else {
        panic!("a fact read from a client header was accepted");
    };
    let text = error.to_string();
    assert!(text.contains("context `mfa`"), "{text}");
    assert!(text.contains("add_second_user"), "{text}");
}

#[tokio::test]
async fn grpc_ext_authz_refuses_ambiguity_like_http() {
    let server = Server::start(gateway_config()).await;
    let headers = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let (code, _) = check_with(
        &server,
        "GET",
        "/accounts/alice-personal",
        headers(&[("x-user-id", "mallory,grace")]),
    )
    .await;
    assert_eq!(code, 16, "a duplicate identity is UNAUTHENTICATED");
    let (code, _) = check_with(
        &server,
        "POST",
        "/accounts/alice-personal/withdrawals?destination=alice-bank&destination=mallory-wallet",
        headers(&[("x-user-id", "erin")]),
    )
    .await;
    assert_eq!(code, 7, "a duplicate parameter is PERMISSION_DENIED");
    let (code, _) = check_with(
        &server,
        "GET",
        "/accounts/alice-personal",
        headers(&[("x-user-id", "grace"), ("x-original-method", "DELETE")]),
    )
    .await;
    assert_eq!(code, 7);
}

/// What Mallory, with no role anywhere, sees of acme-corp through a gateway
/// that hands Mandate's deny to the end user (Caddy, Traefik, Envoy): the
/// same status and body whoever is a sub-user, whoever the owner, whatever
/// the destinations. The decision log keeps the explanation.
#[tokio::test]
async fn a_deny_tells_the_end_user_nothing_by_default() {
    let mut config = gateway_reading(OriginalSource::XForwarded);
    config.gateway.deny_detail = false;
    let server = Server::start(config).await;
    let probes = [
        ("DELETE", "/accounts/acme-corp/sub-users/quinn"),
        ("DELETE", "/accounts/acme-corp/sub-users/alice"),
        ("DELETE", "/accounts/acme-corp/sub-users/nobody-at-all"),
        (
            "POST",
            "/accounts/acme-corp/withdrawals?destination=acme-bank",
        ),
        (
            "POST",
            "/accounts/acme-corp/withdrawals?destination=mallory-wallet",
        ),
    ];
    for (method, uri) in probes {
        let reply = ask(
            &server,
            "/gateway/authorize",
            &[
                ("x-forwarded-method", method),
                ("x-forwarded-uri", uri),
                ("x-user-id", "mallory"),
            ],
        )
        .await;
        assert_eq!(reply.status, 403, "{method} {uri}");
        let id = reply.headers["x-request-id"].to_str().unwrap();
        assert_eq!(
            reply.json,
            serde_json::json!({"decision": false, "request_id": id}),
            "{method} {uri}"
        );
        let ours: Vec<_> = reply
            .headers
            .keys()
            .filter(|name| name.as_str().starts_with("x-mandate-"))
            .collect();
        assert!(ours.is_empty(), "{method} {uri}: {ours:?}");
    }
    // A refusal (no principal) says as little.
    let reply = ask(
        &server,
        "/gateway/authorize",
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/accounts/acme-corp"),
        ],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json.as_object().unwrap().len(), 2, "{}", reply.json);
    // An allow keeps the headers gateways copy.
    let reply = ask(
        &server,
        "/gateway/authorize",
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/accounts/alice-personal"),
            ("x-user-id", "grace"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-mandate-reasons"], "A1");
}

#[tokio::test]
async fn a_grpc_deny_tells_the_end_user_nothing_by_default() {
    let mut config = gateway_config();
    config.gateway.deny_detail = false;
    let server = Server::start(config).await;
    for user in [Some("mallory"), None] {
        let mut headers = std::collections::HashMap::new();
        headers.insert("x-request-id".to_owned(), "envoy-abc-1".to_owned());
        if let Some(user) = user {
            headers.insert("x-user-id".to_owned(), user.to_owned());
        }
        let (code, response) = check_with(
            &server,
            "DELETE",
            "/accounts/acme-corp/sub-users/quinn",
            headers,
        )
        .await;
        assert!(code == 7 || code == 16, "{code}");
        let Some(HttpResponse::DeniedResponse(denied)) = response else {
            panic!("expected a denied response")
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&denied.body).unwrap(),
            serde_json::json!({"decision": false, "request_id": "envoy-abc-1"})
        );
        let names: Vec<String> = denied
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref().map(|h| h.key.clone()))
            .collect();
        assert_eq!(names, ["content-type", "x-request-id"]);
    }
}

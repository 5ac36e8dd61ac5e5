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

#[tokio::test]
async fn forwarded_headers_deny_a_withdrawal_to_another_holder() {
    let server = Server::start(gateway_config()).await;
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
    let server = Server::start(gateway_config()).await;
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
    let mut client = AuthorizationClient::connect(format!("http://{}", server.grpc.unwrap()))
        .await
        .unwrap();
    let mut headers = std::collections::HashMap::new();
    if let Some(user) = user {
        headers.insert("x-user-id".to_owned(), user.to_owned());
    }
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

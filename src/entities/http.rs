//! The HTTP store client: `POST {base}/entities/batch` with
//! `{"uids": [{"type","id"}, ...]}`, answered by `{"entities": [...]}` in
//! Cedar's JSON entity format. Pooled connections (HTTP/1.1 and HTTP/2, TLS
//! through rustls), connect and request timeouts, bounded retries with
//! jittered backoff, an optional bearer token.

use std::time::Duration;
use tracing::Instrument;

use super::cache::ListQuery;
use super::describe;
use bytes::Bytes;
use cedar_policy::{Entity, EntityUid, Schema};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// Settings of the HTTP store client.
#[derive(Debug, Clone)]
pub struct HttpStoreSettings {
    /// base URL; `/entities/batch` is appended
    pub base: String,
    /// bearer token, if any
    pub token: Option<String>,
    /// PEM CA bundle for `https`, instead of the system roots
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for a store that requires one
    pub client_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// time to open a connection
    pub connect_timeout: Duration,
    /// time for one request, response included
    pub request_timeout: Duration,
    /// retries after a retryable failure
    pub retries: u32,
    /// base of the jittered exponential backoff
    pub retry_backoff: Duration,
    /// largest answer read; a larger one is malformed
    pub max_response_bytes: usize,
}

/// Why the store could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The client could not be built (bad URL, unreadable CA).
    #[error("entity store client: {0}")]
    Setup(String),
    /// Connection refused, reset, TLS failure.
    #[error("entity store unreachable: {0}")]
    Unreachable(String),
    /// No answer within the request timeout.
    #[error("entity store did not answer within {0:?}")]
    Timeout(Duration),
    /// A status other than 200.
    #[error("entity store answered HTTP {0}")]
    Status(u16),
    /// A body that is not the contract's JSON, or an entity that does not
    /// conform to the schema.
    #[error("entity store answered malformed data: {0}")]
    Malformed(String),
}

impl UpstreamError {
    fn retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Timeout(_) => true,
            Self::Status(status) => *status >= 500,
            Self::Setup(_) | Self::Malformed(_) => false,
        }
    }

    /// A closed label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Setup(_) | Self::Unreachable(_) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::Status(_) => "bad_status",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// An entity's uid as the store contract writes it, `{"type", "id"}`:
/// in the listing's answer and `related`, and in a batch's `uids`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct StoreUid {
    /// the entity type, as Cedar prints it
    #[serde(rename = "type")]
    pub type_name: String,
    /// the id, unescaped
    pub id: String,
}

/// One entity as the store sent it, parsed and checked against the schema.
#[derive(Debug)]
pub struct Fetched {
    /// the entity
    pub entity: Entity,
    /// its parents, as Cedar wrote them back (its `Entity` does not expose them)
    pub parents: Vec<EntityUid>,
    /// what the cache keeps of it once its built form is let go (a tenth
    /// of the size; see `rebuild`), and the cache's weight estimate
    pub json: super::rebuild::Kept,
}

/// The client.
pub struct HttpStore {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: http::Uri,
    /// `{base}/entities/search`: the optional listing endpoint
    search_url: http::Uri,
    authorization: Option<HeaderValue>,
    settings: HttpStoreSettings,
}

#[derive(Deserialize)]
struct BatchAnswer<'a> {
    /// each read by Cedar from its own text, which is kept when Cedar
    /// cannot write the entity back (`rebuild::Kept::Store`)
    #[serde(borrow)]
    entities: Vec<&'a serde_json::value::RawValue>,
}

impl HttpStore {
    /// Builds the client.
    ///
    /// # Errors
    /// A base URL that does not parse, or a CA file that cannot be read.
    pub fn new(settings: HttpStoreSettings) -> Result<Self, UpstreamError> {
        let endpoint = |path: &str| -> Result<http::Uri, UpstreamError> {
            format!("{}/{path}", settings.base.trim_end_matches('/'))
                .parse()
                .map_err(|e| {
                    UpstreamError::Setup(format!("`store.upstream` `{}`: {e}", settings.base))
                })
        };
        let url = endpoint("entities/batch")?;
        let search_url = endpoint("entities/search")?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        let identity = settings
            .client_identity
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let tls = crate::support::tls::client_config(settings.ca.as_deref(), identity)
            .map_err(|e| UpstreamError::Setup(e.to_string()))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let authorization = settings
            .token
            .as_deref()
            .map(|token| HeaderValue::from_str(&format!("Bearer {token}")))
            .transpose()
            .map_err(|_| {
                UpstreamError::Setup(
                    "`store.upstream_token` is not a valid header value".to_owned(),
                )
            })?;
        Ok(Self {
            client,
            url,
            search_url,
            authorization,
            settings,
        })
    }

    /// Fetches `uids` in one call (retrying as configured). A uid the store
    /// does not know is simply absent from the answer.
    ///
    /// # Errors
    /// When the store cannot be reached, times out, answers non-200 or
    /// malformed data, after the retries.
    pub async fn fetch(
        &self,
        uids: &[EntityUid],
        schema: &Schema,
    ) -> Result<Vec<Fetched>, UpstreamError> {
        let body = serde_json::json!({
            "uids": uids
                .iter()
                .map(|uid| serde_json::json!({"type": uid.type_name().to_string(), "id": uid.id().unescaped()}))
                .collect::<Vec<_>>()
        });
        let body = Bytes::from(
            serde_json::to_vec(&body).map_err(|e| UpstreamError::Setup(e.to_string()))?,
        );
        let span = crate::telemetry::trace::stage(|| {
            tracing::info_span!(
                target: crate::telemetry::trace::SPANS,
                "store.fetch",
                otel.kind = "client",
                uids = uids.len(),
                retries = tracing::field::Empty,
            )
        });
        let mut attempt = 0;
        loop {
            let answer = self
                .attempt(&self.url, body.clone())
                .instrument(span.clone())
                .await;
            match answer {
                Ok(bytes) => return answered(parse(&bytes, schema)?, uids),
                Err(error) if error.retryable() && attempt < self.settings.retries => {
                    attempt += 1;
                    span.record("retries", attempt);
                    let base = self
                        .settings
                        .retry_backoff
                        .saturating_mul(1 << attempt.min(6));
                    // Full jitter: spreads retries of many sidecars apart.
                    let wait = base.mul_f64(fastrand::f64());
                    tracing::debug!(%error, attempt, ?wait, "retrying the entity store");
                    tokio::time::sleep(wait).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Asks the store for nothing (`{"uids": []}`), once and without
    /// retries: whether it answers now, for `/readyz`, at the cost of one
    /// request.
    ///
    /// # Errors
    /// The store cannot be reached, times out, or answers non-200 or
    /// malformed data.
    pub async fn probe(&self, schema: &Schema) -> Result<(), UpstreamError> {
        let bytes = self
            .attempt(&self.url, Bytes::from_static(br#"{"uids":[]}"#))
            .await?;
        parse(&bytes, schema).map(drop)
    }

    /// The ids of every entity of `type_name` the store holds, through
    /// `POST {base}/entities/search` (`{"type", "related"?, "page":
    /// {"limit", "token"}}` answered by `{"uids": [{"type","id"}], "page":
    /// {"next_token"}}`), page by page; with `related`, the store may list
    /// only the entities referring to one of them. At most `max` (then
    /// `Ok` with more than `max`, for the caller to refuse). Each page asks
    /// for `max` and one more, so a store that honours `limit` answers in
    /// one request; at most `requests` requests are made in all.
    ///
    /// A store that refuses `related` (400 or 422: written to the contract
    /// before it had the field, and strict about unknown ones) is asked
    /// again without it, for every entity of the type (within the same
    /// `requests`).
    ///
    /// # Errors
    /// The store fails, answers another type or a uid twice, does not
    /// implement the endpoint (404), or does not end its pages within
    /// `requests` requests.
    pub async fn list(&self, query: ListQuery<'_>) -> Result<Vec<String>, UpstreamError> {
        let (type_name, max) = (query.type_name, query.max);
        let mut left = query.requests;
        match self
            .list_pages(type_name, query.related, max, &mut left)
            .await
        {
            Err(UpstreamError::Status(400 | 422)) if query.related.is_some() => {
                self.list_pages(type_name, None, max, &mut left).await
            }
            listed => listed,
        }
    }

    async fn list_pages(
        &self,
        type_name: &str,
        related: Option<&[EntityUid]>,
        max: usize,
        left: &mut usize,
    ) -> Result<Vec<String>, UpstreamError> {
        #[derive(Deserialize)]
        struct Page {
            next_token: String,
        }
        #[derive(Deserialize)]
        struct Listed {
            uids: Vec<StoreUid>,
            page: Page,
        }
        let mut ids = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut token: Option<String> = None;
        let related: Option<Vec<StoreUid>> = related.map(|related| {
            related
                .iter()
                .map(|uid| StoreUid {
                    type_name: uid.type_name().to_string(),
                    id: uid.id().unescaped().to_owned(),
                })
                .collect()
        });
        let limit = max.saturating_add(1);
        // Bounded: a store that never ends its pages, or pages in smaller
        // steps than asked, cannot make a search a storm of requests.
        while *left > 0 {
            *left -= 1;
            let page = match &token {
                Some(token) => serde_json::json!({"limit": limit, "token": token}),
                None => serde_json::json!({"limit": limit}),
            };
            let body = match &related {
                Some(related) => {
                    serde_json::json!({"type": type_name, "related": related, "page": page})
                }
                None => serde_json::json!({"type": type_name, "page": page}),
            };
            let body = Bytes::from(
                serde_json::to_vec(&body).map_err(|e| UpstreamError::Setup(e.to_string()))?,
            );
            let bytes = self.attempt(&self.search_url, body).await?;
            let listed: Listed = serde_json::from_slice(&bytes)
                .map_err(|e| UpstreamError::Malformed(format!("`/entities/search`: {e}")))?;
            for uid in listed.uids {
                if uid.type_name != type_name || !seen.insert(uid.id.clone()) {
                    return Err(UpstreamError::Malformed(format!(
                        "`/entities/search` answered `{}::\"{}\"` for type `{type_name}` (another type, or twice)",
                        uid.type_name, uid.id
                    )));
                }
                ids.push(uid.id);
            }
            if ids.len() > max || listed.page.next_token.is_empty() {
                return Ok(ids);
            }
            token = Some(listed.page.next_token);
        }
        Err(UpstreamError::Malformed(format!(
            "`/entities/search` did not end its pages within the search's budget of requests (pages of `limit` {limit} were asked)"
        )))
    }

    async fn attempt(&self, url: &http::Uri, body: Bytes) -> Result<Bytes, UpstreamError> {
        let mut request = http::Request::post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Setup(e.to_string()))?;
        // The trace goes on to the store when spans are exported.
        if let Some(parent) = crate::telemetry::otel::current_traceparent()
            && let Ok(value) = http::HeaderValue::try_from(parent)
        {
            request
                .headers_mut()
                .insert(crate::telemetry::trace::TRACEPARENT, value);
        }
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(AUTHORIZATION, authorization.clone());
        }
        let timeout = self.settings.request_timeout;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| UpstreamError::Unreachable(describe(&e)))?;
            let status = response.status();
            if status != http::StatusCode::OK {
                return Err(UpstreamError::Status(status.as_u16()));
            }
            let limit = self.settings.max_response_bytes;
            Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        UpstreamError::Malformed(format!(
                            "the answer exceeds `store.max_response_bytes` ({limit} bytes)"
                        ))
                    } else {
                        UpstreamError::Unreachable(e.to_string())
                    }
                })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
    }
}

/// Parses the store's answer; any entity that does not conform to the schema
/// makes the whole answer malformed (fail closed, and counted).
pub(super) fn parse(bytes: &[u8], schema: &Schema) -> Result<Vec<Fetched>, UpstreamError> {
    let answer: BatchAnswer<'_> = serde_json::from_slice(bytes)
        .map_err(|e| UpstreamError::Malformed(format!("not `{{\"entities\": [...]}}`: {e}")))?;
    answer
        .entities
        .into_iter()
        .map(|json| {
            let entity = Entity::from_json_str(json.get(), Some(schema))
                .map_err(|e| UpstreamError::Malformed(describe(&e)))?;
            let (json, parents) = super::rebuild::kept_form(&entity, json.get());
            Ok(Fetched {
                entity,
                parents,
                json,
            })
        })
        .collect()
}

/// The store answers only what was asked: an entity whose uid was not
/// requested is dropped (it could overwrite a fresh cached entry it has no
/// business changing), and a uid answered twice makes the answer malformed.
pub(super) fn answered(
    fetched: Vec<Fetched>,
    asked: &[EntityUid],
) -> Result<Vec<Fetched>, UpstreamError> {
    let asked: std::collections::HashSet<&EntityUid> = asked.iter().collect();
    let mut seen = std::collections::HashSet::with_capacity(fetched.len());
    let mut kept = Vec::with_capacity(fetched.len());
    for item in fetched {
        let uid = item.entity.uid();
        if !seen.insert(uid.clone()) {
            return Err(UpstreamError::Malformed(format!(
                "the answer holds `{uid}` more than once"
            )));
        }
        if asked.contains(&uid) {
            kept.push(item);
        } else {
            tracing::debug!(%uid, "dropped an entity the store was not asked for");
        }
    }
    Ok(kept)
}

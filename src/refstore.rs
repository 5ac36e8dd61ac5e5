//! A reference entity store: serves the upstream contract
//! (`POST /entities/batch`) from a Cedar JSON entities file, with an optional
//! added latency. For demos, the Helm chart's examples and benchmarks
//! (`mandate serve-store`); the platform's own account service replaces it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;

/// The entities, keyed by (type, id).
pub struct RefStore {
    entities: HashMap<(String, String), Value>,
    latency: Duration,
}

#[derive(Deserialize)]
struct Uid {
    #[serde(rename = "type")]
    type_name: String,
    id: String,
}

#[derive(Deserialize)]
struct Batch {
    uids: Vec<Uid>,
}

impl RefStore {
    /// Reads a Cedar JSON entities file (a list of `{"uid", "attrs", "parents"}`).
    ///
    /// # Errors
    /// An unreadable file, or one that is not such a list.
    pub fn open(path: &Path, latency: Duration) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let list: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| format!("`{}` is not a JSON list: {e}", path.display()))?;
        let mut entities = HashMap::with_capacity(list.len());
        for entity in list {
            let uid = entity
                .get("uid")
                .and_then(|uid| uid.get("__entity").or(Some(uid)));
            let key = uid.and_then(|uid| {
                Some((
                    uid.get("type")?.as_str()?.to_owned(),
                    uid.get("id")?.as_str()?.to_owned(),
                ))
            });
            let Some(key) = key else {
                return Err(format!(
                    "`{}`: an entity without a `uid` `{{\"type\", \"id\"}}`",
                    path.display()
                ));
            };
            entities.insert(key, entity);
        }
        Ok(Self { entities, latency })
    }

    /// Answers one batch body.
    fn answer(&self, body: &[u8]) -> (u16, String) {
        match serde_json::from_slice::<Batch>(body) {
            Ok(batch) => {
                let found: Vec<&Value> = batch
                    .uids
                    .into_iter()
                    .filter_map(|uid| self.entities.get(&(uid.type_name, uid.id)))
                    .collect();
                (200, serde_json::json!({ "entities": found }).to_string())
            }
            Err(e) => (
                400,
                serde_json::json!({"error": {"code": "invalid_body", "message": e.to_string()}})
                    .to_string(),
            ),
        }
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                () = &mut shutdown => break,
            };
            let store = Arc::clone(&self);
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let store = Arc::clone(&store);
                    async move {
                        let (status, text) = if request.uri().path() == "/entities/batch"
                            && request.method() == http::Method::POST
                        {
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            if !store.latency.is_zero() {
                                tokio::time::sleep(store.latency).await;
                            }
                            store.answer(&body)
                        } else {
                            (404, "{\"error\":{\"code\":\"not_found\",\"message\":\"POST /entities/batch\"}}".to_owned())
                        };
                        let mut response = http::Response::new(Full::new(Bytes::from(text)));
                        *response.status_mut() =
                            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

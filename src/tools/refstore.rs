//! A reference entity store: serves the upstream contract
//! (`POST /entities/batch`) from a Cedar JSON entities file, with an optional
//! added latency, and re-reads the file when it changes, publishing which
//! entities changed on the change-event bus when one is given. For demos,
//! the Helm chart's examples and benchmarks (`mandate serve-store`); the
//! platform's own account service replaces it.

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

use crate::entities::StoreUid;

type Keyed = HashMap<(String, String), Value>;

/// The entities, keyed by (type, id).
pub struct RefStore {
    path: std::path::PathBuf,
    entities: arc_swap::ArcSwap<Keyed>,
    stamp: std::sync::Mutex<Option<(std::time::SystemTime, u64)>>,
    latency: Duration,
    /// requests answered: `/entities/batch`, `/entities/search`
    calls: [std::sync::atomic::AtomicUsize; 2],
}

#[derive(Deserialize)]
struct Batch {
    uids: Vec<StoreUid>,
}

#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Deserialize)]
struct List {
    #[serde(rename = "type")]
    type_name: String,
    /// only the entities whose attributes refer to one of these
    #[serde(default)]
    related: Option<Vec<StoreUid>>,
    #[serde(default)]
    page: Option<ListPage>,
}

impl RefStore {
    /// Reads a Cedar JSON entities file (a list of `{"uid", "attrs", "parents"}`).
    ///
    /// # Errors
    /// An unreadable file, or one that is not such a list.
    pub fn open(path: &Path, latency: Duration) -> Result<Self, String> {
        let stamp = stamp(path);
        Ok(Self {
            path: path.to_owned(),
            entities: arc_swap::ArcSwap::from_pointee(read(path)?),
            stamp: std::sync::Mutex::new(stamp),
            latency,
            calls: Default::default(),
        })
    }

    /// The requests answered so far: `(batch, search)`, what a test or a
    /// benchmark counts a search's store calls by.
    pub fn calls(&self) -> (usize, usize) {
        let [batch, search] = &self.calls;
        (
            batch.load(std::sync::atomic::Ordering::SeqCst),
            search.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// Re-reads the file if it changed since the last reading; returns the
    /// uids whose entity was added, changed or removed (`None`: no change,
    /// or the new file is invalid and the last good one keeps serving).
    pub fn reload_if_changed(&self) -> Option<Vec<(String, String)>> {
        let now = stamp(&self.path);
        {
            let mut last = self
                .stamp
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *last == now {
                return None;
            }
            *last = now;
        }
        let next = match read(&self.path) {
            Ok(next) => next,
            Err(error) => {
                eprintln!("error: {error}; the last good entities keep serving");
                return None;
            }
        };
        let before = self.entities.load();
        let mut changed: Vec<(String, String)> = next
            .iter()
            .filter(|(uid, entity)| before.get(*uid) != Some(*entity))
            .map(|(uid, _)| uid.clone())
            .chain(
                before
                    .keys()
                    .filter(|uid| !next.contains_key(*uid))
                    .cloned(),
            )
            .collect();
        changed.sort();
        self.entities.store(Arc::new(next));
        Some(changed)
    }
}

fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads a Cedar JSON entities file, keyed by uid.
fn read(path: &Path) -> Result<Keyed, String> {
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
    Ok(entities)
}

impl RefStore {
    /// Answers one `/entities/search` body: the ids of a type (with
    /// `related`, those whose attributes refer to one of them), sorted, a
    /// page at a time (the token is the next offset).
    fn list(&self, body: &[u8]) -> (u16, String) {
        let request: List = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(e) => {
                return (
                    400,
                    serde_json::json!({"error": {"code": "invalid_body", "message": e.to_string()}})
                        .to_string(),
                );
            }
        };
        let entities = self.entities.load();
        let refers = |entity: &Value| {
            let Some(related) = &request.related else {
                return true;
            };
            let mut referenced = Vec::new();
            if let Some(attrs) = entity.get("attrs") {
                crate::entities::referenced_uids(attrs, &mut referenced);
            }
            related
                .iter()
                .any(|uid| referenced.contains(&(uid.type_name.as_str(), uid.id.as_str())))
        };
        let mut ids: Vec<&str> = entities
            .iter()
            .filter(|((type_name, _), entity)| *type_name == request.type_name && refers(entity))
            .map(|((_, id), _)| id.as_str())
            .collect();
        ids.sort_unstable();
        let page = request.page.unwrap_or(ListPage {
            limit: None,
            token: None,
        });
        let start = page
            .token
            .and_then(|t| t.parse::<usize>().ok())
            .unwrap_or(0)
            .min(ids.len());
        let end = page
            .limit
            .map_or(ids.len(), |l| start.saturating_add(l.max(1)).min(ids.len()));
        let next_token = if end < ids.len() {
            end.to_string()
        } else {
            String::new()
        };
        let uids: Vec<Value> = ids
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|id| serde_json::json!({"type": request.type_name, "id": id}))
            .collect();
        (
            200,
            serde_json::json!({"uids": uids, "page": {"next_token": next_token}}).to_string(),
        )
    }

    /// Answers one batch body.
    fn answer(&self, body: &[u8]) -> (u16, String) {
        match serde_json::from_slice::<Batch>(body) {
            Ok(batch) => {
                let entities = self.entities.load();
                let found: Vec<&Value> = batch
                    .uids
                    .into_iter()
                    .filter_map(|uid| entities.get(&(uid.type_name, uid.id)))
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
                        let path = request.uri().path().to_owned();
                        let (status, text) = if (path == "/entities/batch"
                            || path == "/entities/search")
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
                            let [batch, search] = &store.calls;
                            let counter = if path == "/entities/batch" {
                                batch
                            } else {
                                search
                            };
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            if path == "/entities/batch" {
                                store.answer(&body)
                            } else {
                                store.list(&body)
                            }
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

//! The management API: what is configured, what is cached, warming and
//! flushing the cache, health and readiness.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, RwLock,
};

use artifactapi_layers::{
    coord::Coordinator,
    error::json_error,
    store::{is_shared_blob, now_ms, Store},
    RemoteKind, SharedRemotes,
};
use axum::{
    body::Body,
    extract::{Path, Query, State as Shared},
    http::{Request, Response, StatusCode},
    response::IntoResponse,
    Json,
};
use futures_util::{stream, StreamExt};
use http_body_util::BodyExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use artifactapi_services::coord::RedisCoordinator;

use artifactapi_layers::S3TeeLayer;

use crate::{app::Artifacts, metrics::Metrics};

/// What the management handlers share.
#[derive(Clone)]
pub(crate) struct State {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tee: S3TeeLayer,
    pub(crate) remotes: SharedRemotes,
    pub(crate) config: Arc<RwLock<Arc<Value>>>,
    pub(crate) store: Store,
    pub(crate) artifacts: Artifacts,
    pub(crate) draining: Arc<AtomicBool>,
    pub(crate) kinds: Kinds,
    pub(crate) coordinator: Option<Arc<RedisCoordinator>>,
    /// Whether writes need the admin token (the operator page asks for it).
    pub(crate) admin_required: bool,
}

/// Which backend plays each role, for `/health`.
#[derive(Clone, Copy)]
pub(crate) struct Kinds {
    pub(crate) index: IndexKind,
    pub(crate) blobs: BlobsKind,
    pub(crate) coordination: CoordinationKind,
}

/// Where the index lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IndexKind {
    /// SQLite under `DATA_DIR`: one process.
    Sqlite,
    /// PostgreSQL, shared by replicas.
    Postgres,
}

/// Where the blobs live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlobsKind {
    /// Files under `DATA_DIR`.
    Filesystem,
    /// An S3-compatible object store.
    S3,
}

/// How replicas coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CoordinationKind {
    /// Redis: leases, invalidations, shared tokens.
    Redis,
    /// None beyond this process.
    InProcess,
}

impl IndexKind {
    fn as_str(self) -> &'static str {
        match self {
            IndexKind::Sqlite => "sqlite",
            IndexKind::Postgres => "postgres",
        }
    }
}

impl BlobsKind {
    fn as_str(self) -> &'static str {
        match self {
            BlobsKind::Filesystem => "filesystem",
            BlobsKind::S3 => "s3",
        }
    }
}

impl CoordinationKind {
    fn as_str(self) -> &'static str {
        match self {
            CoordinationKind::Redis => "redis",
            CoordinationKind::InProcess => "in-process",
        }
    }
}

/// How many paths `POST /cache-artifact` fetches at once.
const WARM_CONCURRENCY: usize = 4;

type Answer = Response<Body>;

fn error(status: StatusCode, message: &str, remote: &str) -> Answer {
    json_error(status, message, remote, "").map(Body::new)
}

/// `DELETE /cache/{remote}/{path}`: removes the cached entry at `path` with
/// every variant of it (npm full and abbreviated packuments, PyPI HTML and
/// JSON pages, Docker manifests per accepted media types), on every replica,
/// and its bytes. For a Docker remote the path is `{name}/manifests/{tag or
/// digest}` or `{name}/blobs/{digest}`. The next request is a fresh miss.
pub(crate) async fn purge(
    Shared(state): Shared<State>,
    Path((remote, path)): Path<(String, String)>,
) -> Answer {
    let path = path.trim_start_matches('/').to_owned();
    match state.remotes.load().get(&remote) {
        None => return error(StatusCode::NOT_FOUND, "unknown remote", &remote),
        Some(r) if r.kind == RemoteKind::Local => {
            let message =
                "a local repository is not a cache: DELETE /api/{remote}/{path} deletes an artifact";
            return json_error(StatusCode::BAD_REQUEST, message, &remote, &path).map(Body::new);
        }
        Some(_) => {}
    }
    // A fill whose client has the whole body is committed before we look.
    state.tee.settled().await;
    let entries = match state.store.index.find_path(&remote, &path).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::error!(error = %e, "purge failed");
            return error(StatusCode::SERVICE_UNAVAILABLE, "cache index unavailable", &remote);
        }
    };
    if entries.is_empty() {
        return json_error(StatusCode::NOT_FOUND, "not cached", &remote, &path).map(Body::new);
    }
    let mut removed = 0u64;
    for entry in &entries {
        // The row first: from then on no replica serves the bytes.
        match state.store.index.remove(&entry.key).await {
            Ok(_) => removed += 1,
            Err(e) => {
                tracing::error!(error = %e, "purge failed");
                return error(StatusCode::SERVICE_UNAVAILABLE, "cache index unavailable", &remote);
            }
        }
        state.tee.forget(&entry.key);
        if let Err(e) = state.store.blobs.delete(&entry.blob).await {
            tracing::warn!(blob = %entry.blob, error = %e, "could not delete a purged blob");
        }
    }
    state.metrics.purged(&remote, removed);
    tracing::info!(remote, path, removed, "purged");
    Json(json!({ "remote": remote, "path": path, "removed": removed })).into_response()
}

/// `GET /metrics`: Prometheus metrics, in the OpenMetrics text format.
pub(crate) async fn metrics(Shared(state): Shared<State>) -> Answer {
    let mut answer = Response::new(Body::from(state.metrics.render().await));
    answer.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    answer
}

/// `GET /`: name, version and the configured remotes.
pub(crate) async fn root(Shared(state): Shared<State>) -> impl IntoResponse {
    let remotes: Vec<_> = state
        .remotes
        .load()
        .iter()
        .map(|r| {
            let kind = match &r.kind {
                RemoteKind::Remote { .. } => "remote",
                RemoteKind::Local => "local",
                RemoteKind::Group(_) => "group",
            };
            let mut remote = json!({
                "name": r.name,
                "type": kind,
                "package": r.package.as_str(),
                "description": r.description,
            });
            if let RemoteKind::Group(group) = &r.kind {
                remote["members"] = group.members.iter().map(|m| m.remote.clone()).collect();
                remote["resolve"] = group.resolve.as_str().into();
            }
            remote
        })
        .collect();
    Json(json!({ "name": "artifactapi", "version": env!("CARGO_PKG_VERSION"), "remotes": remotes }))
}

/// Each backend's state: `"ok"` or what is wrong.
async fn backend_states(state: &State) -> (bool, Value) {
    let index = state.store.index.ping().await;
    let blobs = state.store.blobs.ping().await;
    let describe = |kind: &str, r: &Result<(), _>| match r {
        Ok(()) => json!({ "kind": kind, "state": "ok" }),
        Err(e) => json!({ "kind": kind, "state": format!("error: {e}") }),
    };
    // Redis is not needed to serve: it shows in health, never in readiness.
    let coordination = match &state.coordinator {
        Some(redis) => redis.ping().await.map_err(artifactapi_layers::store::StoreError::Backend),
        None => Ok(()),
    };
    let healthy = index.is_ok() && blobs.is_ok();
    let backends = json!({
        "index": describe(state.kinds.index.as_str(), &index),
        "blobs": describe(state.kinds.blobs.as_str(), &blobs),
        "coordination": describe(state.kinds.coordination.as_str(), &coordination),
    });
    (healthy, backends)
}

/// `GET /health`: liveness. 200 while the process can answer at all, even
/// degraded; the body says how each backend is.
pub(crate) async fn health(Shared(state): Shared<State>) -> impl IntoResponse {
    let (healthy, backends) = backend_states(&state).await;
    let status = if healthy { "ok" } else { "degraded" };
    Json(json!({ "status": status, "backends": backends }))
}

/// `GET /ready`: readiness. 503 while draining or while the index or the
/// blob store is down, so that traffic goes to other replicas.
pub(crate) async fn ready(Shared(state): Shared<State>) -> impl IntoResponse {
    if state.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })));
    }
    let (healthy, backends) = backend_states(&state).await;
    if healthy {
        (StatusCode::OK, Json(json!({ "status": "ready", "backends": backends })))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "backends": backends })))
    }
}

/// `GET /config`: the effective configuration, credentials masked.
pub(crate) async fn config(Shared(state): Shared<State>) -> impl IntoResponse {
    let config = state.config.read().unwrap_or_else(|p| p.into_inner()).clone();
    Json((*config).clone())
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
    prefix: Option<String>,
}

/// `GET /artifacts/{remote}?limit=N&after=PATH&prefix=P`: one page of
/// entries, by path (only those under `prefix` when given), with how many
/// times each was served from the cache and when last.
pub(crate) async fn list(
    Shared(state): Shared<State>,
    Path(remote): Path<String>,
    Query(query): Query<ListQuery>,
) -> Answer {
    if state.remotes.load().get(&remote).is_none() {
        return error(StatusCode::NOT_FOUND, "unknown remote", &remote);
    }
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be a number from 1 to 1000", &remote),
    };
    let page = match crate::listing::page(
        &state.store,
        &remote,
        query.prefix.as_deref(),
        query.after.as_deref(),
        limit,
    )
    .await
    {
        Ok(page) => page,
        Err(e) => {
            tracing::error!(remote, error = %e, "cannot list the index");
            return error(StatusCode::SERVICE_UNAVAILABLE, "index unavailable", &remote);
        }
    };
    let items: Vec<Value> = page.items.iter().map(item).collect();
    // The remote's totals (every page): one grouped query.
    let usage = state.store.index.usage().await.unwrap_or_default();
    let totals = usage.into_iter().find(|u| u.remote == remote).unwrap_or_default();
    Json(json!({ "items": items, "next": page.next, "count": totals.entries, "total_bytes": totals.bytes }))
        .into_response()
}

fn item(listed: &crate::listing::Listed) -> Value {
    let e = &listed.entry;
    json!({
        "path": e.path,
        "size": e.size,
        "class": e.class.as_str(),
        "cached_at": rfc3339(e.cached_at_ms),
        "expires_at": e.expires_at_ms.map(rfc3339),
        "served_count": listed.served.map_or(0, |(n, _)| n),
        "last_served_at": listed.served.map(|(_, at)| rfc3339(at)),
    })
}

#[derive(Deserialize)]
pub(crate) struct CacheRequest {
    remote: String,
    paths: Vec<String>,
}

/// Characters a path segment may not carry raw in a URI.
const PATH_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// `POST /cache-artifact`: fetches each path into the cache through the
/// normal artifact stack (so patterns, single flight and verification all
/// apply), a few at a time.
pub(crate) async fn cache_artifacts(
    Shared(state): Shared<State>,
    body: Result<Json<CacheRequest>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("expected {{\"remote\", \"paths\"}}: {e}"), "")
        }
    };
    let remote = request.remote;
    match state.remotes.load().get(&remote) {
        None => return error(StatusCode::NOT_FOUND, "unknown remote", &remote),
        Some(r) if r.kind == RemoteKind::Local => {
            return error(StatusCode::BAD_REQUEST, "a local repository has nothing to fetch", &remote)
        }
        Some(_) => {}
    }
    let results: Vec<Value> = stream::iter(request.paths)
        .map(|path| {
            let artifacts = state.artifacts.clone();
            let remote = remote.clone();
            async move { warm(artifacts, &remote, path).await }
        })
        .buffered(WARM_CONCURRENCY)
        .collect()
        .await;
    Json(json!({ "results": results })).into_response()
}

async fn warm(artifacts: Artifacts, remote: &str, path: String) -> Value {
    let encoded = utf8_percent_encode(path.trim_start_matches('/'), PATH_ESCAPES).to_string();
    let failure = |message: String| json!({ "path": path, "status": "error", "error": message });
    let Ok(req) = Request::get(format!("/{remote}/{encoded}")).body(Body::empty()) else {
        return failure("not a valid path".into());
    };
    let Ok(answer) = artifacts.oneshot(req).await;
    let status = answer.status();
    let body = answer.into_body().collect().await;
    match (status, body) {
        (StatusCode::OK, Ok(_)) => json!({ "path": path, "status": "cached" }),
        (StatusCode::OK, Err(e)) => failure(format!("the transfer failed: {e}")),
        (status, Ok(body)) => {
            let detail = serde_json::from_slice::<Value>(&body.to_bytes())
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| status.to_string());
            failure(format!("{}: {detail}", status.as_u16()))
        }
        (status, Err(e)) => failure(format!("{status}: {e}")),
    }
}

#[derive(Deserialize)]
pub(crate) struct FlushQuery {
    remote: Option<String>,
    all: Option<bool>,
}

/// `PUT /cache/flush?remote=R&all=true`: expires mutable entries; with
/// `all=true` removes immutable ones too. Local repositories are never touched.
pub(crate) async fn flush(Shared(state): Shared<State>, Query(query): Query<FlushQuery>) -> Answer {
    if let Some(remote) = &query.remote {
        if state.remotes.load().get(remote).is_none() {
            return error(StatusCode::NOT_FOUND, "unknown remote", remote);
        }
    }
    let remote = query.remote.as_deref();
    // Fills in flight that began before now will not commit as fresh, and
    // the commits under way land before the index is flushed.
    state.tee.flushing(remote, query.all.unwrap_or(false)).await;
    if let Some(redis) = &state.coordinator {
        // The same on every other replica, before the index is touched.
        redis.flushing(remote, query.all.unwrap_or(false)).await;
    }
    let flushed = match state.store.index.flush(remote, query.all.unwrap_or(false), now_ms() - 1).await {
        Ok(flushed) => flushed,
        Err(e) => {
            tracing::error!(error = %e, "flush failed");
            return error(StatusCode::SERVICE_UNAVAILABLE, "index unavailable", remote.unwrap_or_default());
        }
    };
    // Nothing fetched before the flush answers a request after it: not a
    // finished fill still joinable, not a remembered 404.
    state.tee.forget_all(remote);
    // Content-addressed blobs may be shared with entries that stay.
    for entry in flushed.removed.iter().filter(|e| !is_shared_blob(&e.blob)) {
        if let Err(e) = state.store.blobs.delete(&entry.blob).await {
            tracing::warn!(blob = %entry.blob, error = %e, "could not delete a flushed blob");
        }
    }
    tracing::info!(
        remote = remote.unwrap_or("*"),
        expired = flushed.expired,
        removed = flushed.removed.len(),
        "cache flushed"
    );
    Json(json!({ "expired": flushed.expired, "removed": flushed.removed.len() })).into_response()
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC (`2026-11-25T23:20:27.123Z`).
pub(crate) fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_651_227_123), "2026-11-26T00:00:27.123Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}

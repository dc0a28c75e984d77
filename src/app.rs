//! Assembles the stacks and the routes.

use std::{
    convert::Infallible,
    path::Path,
    sync::{atomic::AtomicBool, Arc},
    task::{Context, Poll},
};

use artifactapi_layers::{
    error::{find_cause, json_error, BoxError, UpstreamError, UpstreamStatus},
    local::LocalRepo,
    store::{hot::HotIndex, Store, StoreError},
    ArtifactBody, CacheLookupLayer, PathError, PatternGuardLayer, RemoteKind, RemoteResolveLayer, Remotes,
    RevalidateLayer, S3TeeLayer, StaleOnErrorLayer,
};
use artifactapi_services::{blob::FsBlobStore, index::SqliteIndex, upstream::UpstreamFetch};
use axum::{
    body::Body,
    http::{header, HeaderValue, Method, Request, Response, StatusCode},
    middleware::from_fn_with_state,
    routing::{get, post, put},
    Router,
};
use futures_util::future::BoxFuture;
use tower::{util::BoxCloneSyncService, Service, ServiceBuilder, ServiceExt};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::{
    auth::{require_admin, AdminToken},
    config::Config,
    manage,
    settings::Settings,
};

/// How many index entries are kept in memory for hits without a database
/// round trip.
const HOT_ENTRIES: usize = 20_000;

/// Opens the embedded store under `DATA_DIR`: blobs as files, the index in
/// SQLite behind a bounded in-memory index of hot entries, spool files in
/// `tmp/` (left-overs of a previous run are removed: they were never
/// committed).
pub async fn open_store(data_dir: &Path) -> Result<(Store, std::path::PathBuf), BoxError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create DATA_DIR {}: {e}", data_dir.display()))?;
    let spool = data_dir.join("tmp");
    if let Ok(entries) = std::fs::read_dir(&spool) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "part") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    std::fs::create_dir_all(&spool)?;
    let blobs = FsBlobStore::new(data_dir.join("blobs"))?;
    let index = SqliteIndex::open(&data_dir.join("index.db"))
        .await
        .map_err(|e| format!("cannot open the index in {}: {e}", data_dir.display()))?;
    let index = HotIndex::new(Arc::new(index), HOT_ENTRIES);
    Ok((Store::new(Arc::new(index), Arc::new(blobs)), spool))
}

/// The running application: its routes, and the switch that tells `/ready`
/// the process is draining.
pub struct App {
    /// Every route.
    pub router: Router,
    /// Set on shutdown: `/ready` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
}

/// A boxed artifact stack.
pub(crate) type Stack = BoxCloneSyncService<Request<Body>, Response<ArtifactBody>, BoxError>;

/// The whole application: management endpoints and the artifact routes.
pub async fn build(settings: &Settings, config: &Config) -> Result<App, BoxError> {
    let remotes = Arc::new(config.remotes.clone());
    let (store, spool) = open_store(&settings.data_dir).await?;
    let upstream = UpstreamFetch::new(&settings.upstream)?;

    // Remotes. Outermost first; each layer may answer on its own.
    let proxy = ServiceBuilder::new()
        // 404 for an unknown remote, 400 for a refused path.
        .layer(RemoteResolveLayer::new(remotes.clone()))
        // 403 when no pattern allows the path; attaches its class.
        .layer(PatternGuardLayer::new())
        // Fresh entries answered from the store; expired ones attached.
        .layer(CacheLookupLayer::new(store.clone()))
        // Upstream failed (unreachable, timeout, 5xx, 429): the expired copy.
        .layer(StaleOnErrorLayer::new(store.clone()))
        // Expired mutable entries with validators: one conditional request.
        .layer(RevalidateLayer::new(store.clone()))
        // One fill per key, streamed to every client and into the store.
        .layer(S3TeeLayer::new(store.clone(), spool.clone()))
        .service(upstream);

    // Local repositories: the same path rules, then uploads and downloads.
    let local = ServiceBuilder::new()
        .layer(RemoteResolveLayer::new(remotes.clone()))
        .layer(PatternGuardLayer::new())
        .service(LocalRepo::new(store.clone(), spool, settings.max_upload_bytes));

    let admin = AdminToken::new(settings.admin_token.clone());
    let artifacts = Artifacts {
        proxy: BoxCloneSyncService::new(proxy),
        local: BoxCloneSyncService::new(local),
        remotes: remotes.clone(),
        admin: admin.clone(),
    };
    let draining = Arc::new(AtomicBool::new(false));
    let state = manage::State {
        remotes,
        config: Arc::new(config.masked()),
        store,
        artifacts: artifacts.clone(),
        draining: draining.clone(),
        backends: manage::Backends { index: "sqlite", blobs: "filesystem", coordination: "in-process" },
    };

    let router = Router::new()
        .route("/", get(manage::root))
        .route("/health", get(manage::health))
        .route("/ready", get(manage::ready))
        .route("/config", get(manage::config))
        .route("/artifacts/{remote}", get(manage::list))
        .route(
            "/cache-artifact",
            post(manage::cache_artifacts).route_layer(from_fn_with_state(admin.clone(), require_admin)),
        )
        .route("/cache/flush", put(manage::flush).route_layer(from_fn_with_state(admin, require_admin)))
        .nest_service("/api/v1/remote", artifacts.clone())
        .nest_service("/api", artifacts)
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", "", "").map(Body::new)
        }))
        .layer(TraceLayer::new_for_http());
    Ok(App { router, draining })
}

/// The edge of the artifact routes: sends each request to the stack of its
/// remote's kind, checks methods and the admin token for writes, and turns
/// every error a stack raised into its HTTP answer, by asking what caused it.
#[derive(Clone)]
pub(crate) struct Artifacts {
    proxy: Stack,
    local: Stack,
    remotes: Arc<Remotes>,
    admin: AdminToken,
}

impl Service<Request<Body>> for Artifacts {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let full = req.uri().path().trim_start_matches('/');
        let (remote, path) = full.split_once('/').unwrap_or((full, ""));
        let (remote, path) = (remote.to_owned(), path.to_owned());
        let local = self.remotes.get(&remote).is_some_and(|r| r.kind == RemoteKind::Local);
        let refuse = |allow: &'static str| {
            let mut answer = json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", &remote, &path);
            answer.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            answer
        };
        let stack = match (local, req.method().clone()) {
            (false, Method::GET | Method::HEAD) => self.proxy.clone(),
            (false, _) => return ready(refuse("GET, HEAD")),
            (true, Method::GET | Method::HEAD) => self.local.clone(),
            (true, Method::PUT | Method::DELETE) => match self.admin.check(req.headers()) {
                Ok(()) => self.local.clone(),
                Err(refused) => return ready(refused.response()),
            },
            (true, _) => return ready(refuse("GET, HEAD, PUT, DELETE")),
        };
        let call = stack.oneshot(req);
        Box::pin(async move {
            let answer = match call.await {
                Ok(answer) => answer,
                Err(e) => rescue(&*e, &remote, &path),
            };
            Ok(answer.map(Body::new))
        })
    }
}

fn ready(answer: Response<ArtifactBody>) -> BoxFuture<'static, Result<Response<Body>, Infallible>> {
    Box::pin(async move { Ok(answer.map(Body::new)) })
}

fn rescue(e: &(dyn std::error::Error + 'static), remote: &str, path: &str) -> Response<ArtifactBody> {
    let path = percent_decoded(path);
    if let Some(status) = find_cause::<UpstreamStatus>(e) {
        let mut answer = json_error(status.client_status(), &status.to_string(), remote, &path);
        if let Some(retry_after) = status.retry_after() {
            answer.headers_mut().insert(header::RETRY_AFTER, retry_after.clone());
        }
        return answer;
    }
    if let Some(upstream) = find_cause::<UpstreamError>(e) {
        tracing::warn!(remote, path = %path, error = %upstream, "upstream failed");
        return json_error(upstream.status(), &upstream.to_string(), remote, &path);
    }
    if let Some(bad) = find_cause::<PathError>(e) {
        return json_error(bad.status(), &bad.to_string(), remote, &path);
    }
    if let Some(store) = find_cause::<StoreError>(e) {
        tracing::error!(remote, path = %path, error = %store, "store failed");
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "cache store unavailable", remote, &path);
    }
    tracing::error!(remote, path = %path, error = %e, "request failed");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", remote, &path)
}

fn percent_decoded(path: &str) -> String {
    percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned()
}

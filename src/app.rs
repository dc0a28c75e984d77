//! Assembles the stacks and the routes.

use std::{
    convert::Infallible,
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc, RwLock},
    task::{Context, Poll},
};

use artifactapi_layers::{
    client::{ClientAddr, TrustedProxies},
    coord::Coordinator,
    digest::ExpectedDigests,
    error::{json_error, BoxError},
    local::LocalRepo,
    policy::{Audit, PolicyLayer, PolicyStats},
    rescue::{Refused, RescueLayer},
    store::{
        breaker::Breaker, hot::HotIndex, hot_blobs::HotBlobs, now_ms, BlobStore, Budget, Index, Keeper, Store,
    },
    ArtifactBody, BodyRewriteLayer, CacheLookupLayer, Door, GroupLayer, PatternGuardLayer, RemoteKind,
    RemoteResolveLayer, ResolvedRemote, RevalidateLayer, S3TeeLayer, SharedRemotes, StaleOnErrorLayer,
};
use artifactapi_services::{
    blob::{FsBlobStore, LocalTier, S3BlobStore},
    coord::{Notice, RedisCoordinator},
    docker::{self, auth::Tokens, upstream::RegistryUpstream, RegistryRequestLayer},
    index::{PostgresIndex, SqliteIndex},
    upstream::UpstreamFetch,
};
use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, Response, StatusCode},
    middleware::from_fn_with_state,
    routing::{delete, get, post, put},
    Router,
};
use futures_util::future::BoxFuture;
use tower::{util::BoxCloneSyncService, Service, ServiceBuilder, ServiceExt};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::{
    auth::{require_admin, AdminToken},
    config::Config,
    manage::{self, BlobsKind, CoordinationKind, IndexKind},
    metrics::{Metrics, ObserveLayer},
    settings::Settings,
};

/// How many index entries are kept in memory for hits without a database
/// round trip.
const HOT_ENTRIES: usize = 20_000;

/// How long a replica keeps its memory copy of a small blob before reading
/// it again from the shared store (where another replica may have deleted it).
const HOT_BLOB_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// The store and coordination this process runs on.
pub(crate) struct Backends {
    pub(crate) store: Store,
    pub(crate) spool: PathBuf,
    pub(crate) coordinator: Option<Arc<RedisCoordinator>>,
    pub(crate) kinds: manage::Kinds,
    /// The index's memory copies, which other replicas' writes make stale.
    pub(crate) hot: Arc<HotIndex>,
    /// The local disk tier in front of S3, when there is one.
    pub(crate) local: Option<LocalTier>,
    /// The circuit breaker in front of PostgreSQL, when the index is there.
    pub(crate) breaker: Option<Arc<Breaker>>,
}

/// Opens the backends the environment asks for: blobs in S3 (`MINIO_*`) or
/// files under `DATA_DIR`; the index in PostgreSQL (`DATABASE_URL`/`DBHOST`)
/// or SQLite under `DATA_DIR`; coordination through Redis (`REDIS_URL`) or
/// none. A configured S3 or PostgreSQL that cannot be reached stops start-up;
/// an unreachable Redis only warns (requests work without it). Spool files
/// live in `DATA_DIR/tmp` whatever the backends; left-overs of a previous run
/// are removed (they were never committed).
pub(crate) async fn open_backends(settings: &Settings) -> Result<Backends, BoxError> {
    let data_dir = &settings.data_dir;
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

    let (blobs, blobs_kind): (Arc<dyn BlobStore>, _) = match &settings.s3 {
        Some(s3) => {
            let store = S3BlobStore::connect(s3)
                .await
                .map_err(|e| format!("cannot use S3 at {} (bucket {}): {e}", s3.endpoint, s3.bucket))?;
            (Arc::new(store), BlobsKind::S3)
        }
        None => (Arc::new(FsBlobStore::new(data_dir.join("blobs"))?), BlobsKind::Filesystem),
    };
    let mut breaker_handle = None;
    let (index, index_kind): (Arc<dyn Index>, _) = match &settings.postgres {
        Some(pg) => {
            let index = PostgresIndex::connect(pg.options()?)
                .await
                .map_err(|e| format!("cannot use PostgreSQL ({pg:?}): {e}"))?;
            // While the database is down, calls fail at once rather than
            // each waiting out the pool's timeout (see `Breaker`).
            let breaker = Breaker::new(Arc::new(index));
            breaker_handle = Some(breaker.clone());
            (breaker, IndexKind::Postgres)
        }
        None => {
            let index = SqliteIndex::open(&data_dir.join("index.db"))
                .await
                .map_err(|e| format!("cannot open the index in {}: {e}", data_dir.display()))?;
            (Arc::new(index), IndexKind::Sqlite)
        }
    };
    let coordinator = match &settings.redis_url {
        Some(url) => {
            let replica = format!("{}-{}", std::process::id(), now_ms());
            let redis = Arc::new(RedisCoordinator::new(url, &settings.redis_prefix, &replica)?);
            if let Err(e) = redis.ping().await {
                tracing::warn!(error = %e, "Redis is not reachable; working without coordination until it is");
            }
            Some(redis)
        }
        None => None,
    };
    let mut hot = HotIndex::new(index, HOT_ENTRIES);
    if let Some(redis) = &coordinator {
        hot = hot.with_coordinator(redis.clone());
    }
    let hot = Arc::new(hot);
    let kinds = manage::Kinds {
        index: index_kind,
        blobs: blobs_kind,
        coordination: if coordinator.is_some() {
            CoordinationKind::Redis
        } else {
            CoordinationKind::InProcess
        },
    };
    // With S3, large hits read a copy on the replica's own disk (see
    // `LocalTier`). Whether a copy's blob still exists is asked of S3 where
    // other replicas may delete it unannounced: on every hit without Redis,
    // every HOT_BLOB_AGE with it (purges reach every replica through Redis
    // before they answer).
    let local = match (&settings.cache_local_dir, blobs_kind) {
        (Some(dir), BlobsKind::S3) => {
            let mut tier = LocalTier::open(blobs.clone(), dir, settings.cache_local_bytes)
                .await
                .map_err(|e| format!("CACHE_LOCAL_DIR {}: {e}", dir.display()))?;
            tier = match (index_kind, &coordinator) {
                (IndexKind::Sqlite, _) => tier,
                (_, Some(redis)) => tier.confirm_after(HOT_BLOB_AGE).with_coordinator(redis.clone()),
                (_, None) => tier.confirm_after(std::time::Duration::ZERO),
            };
            let (copies, bytes, budget) = tier.usage();
            tracing::info!(dir = %dir.display(), copies, bytes, budget, "local disk tier in front of S3");
            Some(tier)
        }
        (Some(dir), BlobsKind::Filesystem) => {
            tracing::warn!(dir = %dir.display(), "CACHE_LOCAL_DIR is for S3-backed stores; the blobs are local already, so it is not used");
            None
        }
        (None, _) => None,
    };
    let blobs: Arc<dyn BlobStore> = match &local {
        Some(tier) => Arc::new(tier.clone()),
        None => blobs,
    };
    // Small blobs served again and again are answered from memory. Replicas
    // (a shared index) delete each other's blobs unseen: with Redis, which
    // tells them of every change, copies live at most HOT_BLOB_AGE; without
    // it, there are none (a hit must find a purged blob missing at once).
    let capacity = usize::try_from(settings.cache_memory_bytes).unwrap_or(usize::MAX);
    let blobs: Arc<dyn BlobStore> = match (index_kind, &coordinator) {
        (IndexKind::Sqlite, _) => Arc::new(HotBlobs::new(blobs, capacity)),
        (_, Some(_)) => Arc::new(HotBlobs::new(blobs, capacity).with_max_age(HOT_BLOB_AGE)),
        (_, None) => {
            if capacity > 0 {
                tracing::info!("no copies of small blobs in memory: replicas without Redis cannot tell each other of purges");
            }
            blobs
        }
    };
    Ok(Backends {
        store: Store::new(hot.clone(), blobs),
        spool,
        coordinator,
        kinds,
        hot,
        local,
        breaker: breaker_handle,
    })
}

/// Cleans up at start-up and then every `interval`: leftovers of interrupted
/// writes, index rows without blobs, blobs without rows (older than `grace`),
/// and spool files older than a day (no fill takes that long).
fn spawn_clean_up(
    store: Store,
    spool: PathBuf,
    interval: Option<std::time::Duration>,
    grace: std::time::Duration,
) {
    tokio::spawn(async move {
        loop {
            let started = std::time::Instant::now();
            let result = artifactapi_layers::store::clean_up(&store, grace).await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match result {
                Ok(done) if done.is_empty() => tracing::info!(
                    rows_checked = done.rows_checked,
                    blobs_checked = done.blobs_checked,
                    elapsed_ms,
                    "clean-up found nothing to remove"
                ),
                Ok(done) => tracing::info!(
                    rows_checked = done.rows_checked,
                    blobs_checked = done.blobs_checked,
                    leftovers = done.leftovers,
                    orphan_rows = done.orphan_rows,
                    orphan_blobs = done.orphan_blobs,
                    elapsed_ms,
                    "clean-up removed what nothing will use"
                ),
                Err(e) => tracing::warn!(error = %e, "clean-up failed; trying again later"),
            }
            let Some(interval) = interval else { break };
            tokio::time::sleep(interval).await;
            remove_old_spool_files(&spool, grace.max(std::time::Duration::from_secs(24 * 3600)));
        }
    });
}

/// Every `CACHE_EVICT_INTERVAL`: writes the access times of what was served
/// and, with a budget (`CACHE_MAX_BYTES`, `cache.max_bytes`), evicts the
/// least recently served entries past it. Also at once when a fill found the
/// store short of room, and when a commit may have taken the store past its
/// budget (the [`Keeper`] adds up commits between checks), so that a burst
/// of fills does not overshoot by whatever arrives in one interval.
fn spawn_eviction(
    store: Store,
    remotes: SharedRemotes,
    settings: &Settings,
    metrics: Arc<Metrics>,
    tee: Arc<artifactapi_layers::tee::TeeStats>,
) {
    let (total, interval) = (settings.cache_max_bytes, settings.evict_interval);
    tokio::spawn(async move {
        let mut keeper = Keeper::new();
        let mut rounds = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let per_remote = || {
                remotes.load().iter().filter_map(|r| r.max_bytes.map(|max| (r.name.clone(), max))).collect()
            };
            let budget = tokio::select! {
                _ = rounds.tick() => Budget { total, per_remote: per_remote() },
                () = tee.short_of_room.notified() => Budget { total, per_remote: per_remote() },
                () = store.growth.grown() => {
                    let budget = Budget { total, per_remote: per_remote() };
                    if !keeper.may_exceed(&store, &budget) {
                        continue;
                    }
                    budget
                }
            };
            let started = std::time::Instant::now();
            match keeper.check(&store, &budget).await {
                Ok(done) if done.entries > 0 => {
                    metrics.evicted(done.entries, done.bytes);
                    tracing::info!(
                        entries = done.entries,
                        bytes = done.bytes,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "evicted to keep within the budget"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "eviction failed; trying again later"),
            }
        }
    });
}

fn remove_old_spool_files(spool: &std::path::Path, age: std::time::Duration) {
    let Some(cutoff) = std::time::SystemTime::now().checked_sub(age) else { return };
    for entry in std::fs::read_dir(spool).into_iter().flatten().flatten() {
        let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|m| m < cutoff);
        if old && entry.path().extension().is_some_and(|e| e == "part") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The running application: its routes, and the switch that tells `/ready`
/// the process is draining.
pub struct App {
    /// Every route.
    pub router: Router,
    /// The access log (`ACCESS_LOG`), `None` when off: the server wraps the
    /// whole router in it (a [`Logging`] middleware), so that it sees every
    /// request before routing and boxes nothing per route; off, requests
    /// never pass it.
    ///
    /// [`Logging`]: crate::access_log::Logging
    pub access: Option<crate::access_log::AccessLog>,
    /// Set on shutdown: `/ready` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
    /// Puts a new configuration in force.
    pub reload: Reload,
}

/// Puts a reloaded configuration in force: its remotes for every request
/// from now on (requests in flight finish with the remote they resolved), and
/// `/config`. Backends and environment settings are not reloaded.
#[derive(Clone)]
pub struct Reload {
    remotes: SharedRemotes,
    config: Arc<RwLock<Arc<serde_json::Value>>>,
}

impl Reload {
    /// Puts `config` in force.
    pub fn apply(&self, config: &Config) {
        self.remotes.replace(Arc::new(config.remotes.clone()));
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config.masked());
    }
}

/// A boxed artifact stack.
pub(crate) type Stack = BoxCloneSyncService<Request<Body>, Response<ArtifactBody>, BoxError>;

/// The whole application: management endpoints and the artifact routes.
pub async fn build(settings: &Settings, config: &Config) -> Result<App, BoxError> {
    let remotes = SharedRemotes::new(Arc::new(config.remotes.clone()));
    let backends = open_backends(settings).await?;
    spawn_clean_up(
        backends.store.clone(),
        backends.spool.clone(),
        settings.cleanup_interval,
        settings.cleanup_grace,
    );
    // Digests promised by package metadata, checked when the files are fetched.
    let digests = Arc::new(ExpectedDigests::new(200_000));
    let tee = fill_layer(settings, &backends, &digests);
    follow_other_replicas(&backends, &tee);
    let groups = GroupLayer::new(remotes.clone(), settings.metadata_max_bytes)
        .within(settings.document_budget)
        .keep_merged_within(settings.group_merged_max_bytes);
    let (policy, policy_stats) = policy_layer(settings)?;
    let metrics = Arc::new(
        Metrics::new(
            backends.store.clone(),
            vec![tee.stats()],
            groups.stats(),
            policy_stats,
            remotes.clone(),
        )
        .with_local_tier(backends.local.clone())
        .with_breaker(backends.breaker.clone())
        .with_store_budget(settings.cache_max_bytes),
    );
    spawn_eviction(backends.store.clone(), remotes.clone(), settings, metrics.clone(), tee.stats());
    spawn_tally(metrics.clone());

    let admin = AdminToken::new(settings.admin_token.clone());
    let Stacks { proxy, local, registry } =
        stacks(settings, &backends, &remotes, &tee, &digests, &policy, &metrics)?;
    let members = Dispatch { proxy, local, registry, group: None, admin: admin.clone() };
    // Groups: a service over their members' stacks (members are never
    // groups themselves).
    let group = ServiceBuilder::new().layer(policy).layer(groups).service(members.clone());
    let dispatch = Dispatch { group: Some(BoxCloneSyncService::new(group)), ..members };
    // Who the client is: one rule for the access log and the artifact routes.
    let trusted = TrustedProxies::new(settings.trusted_proxies.iter().copied());
    let access = crate::access_log::AccessLog::open(&settings.access_log, settings.log_json, trusted.clone())
        .map_err(|e| format!("ACCESS_LOG {:?}: {e}", settings.access_log))?;
    let artifacts =
        Artifacts::new(RemoteResolveLayer::new(remotes.clone()), dispatch.clone(), trusted.clone());
    let registry = Artifacts::new(RemoteResolveLayer::registry(remotes.clone()), dispatch, trusted);
    let draining = Arc::new(AtomicBool::new(false));
    let reload =
        Reload { remotes: remotes.clone(), config: Arc::new(RwLock::new(Arc::new(config.masked()))) };
    let Backends { store, kinds, coordinator, .. } = backends;
    let state = manage::State {
        metrics,
        tee,
        remotes,
        config: reload.config.clone(),
        store,
        artifacts: artifacts.clone(),
        draining: draining.clone(),
        kinds,
        coordinator,
        admin_required: settings.admin_token.is_some(),
    };
    let router = routes(state, admin, artifacts, registry);
    Ok(App { router, access, draining, reload })
}

/// One map of fills for every stack: a key is fetched once, whoever asks
/// (across replicas, with Redis).
fn fill_layer(settings: &Settings, backends: &Backends, digests: &Arc<ExpectedDigests>) -> S3TeeLayer {
    let (store, spool) = (backends.store.clone(), backends.spool.clone());
    match &backends.coordinator {
        Some(redis) => S3TeeLayer::with_coordinator(store, spool, redis.clone()),
        None => S3TeeLayer::new(store, spool),
    }
    .verify_with(digests.clone())
    .check_within(settings.document_budget, settings.zip_budget)
}

/// Other replicas' writes, purges and flushes make this one's memory copies
/// stale: hot index entries, local tier files, and finished fills still
/// joinable.
fn follow_other_replicas(backends: &Backends, tee: &S3TeeLayer) {
    let Some(redis) = &backends.coordinator else { return };
    let (tee, local, hot) = (tee.clone(), backends.local.clone(), backends.hot.clone());
    redis.listen(move |notice| match notice {
        Notice::BlobDeleted(key) => {
            if let Some(local) = &local {
                local.forget(key);
            }
            None
        }
        Notice::Changed(key) => {
            hot.invalidate(key);
            tee.forget(key);
            None
        }
        Notice::All => {
            hot.clear();
            tee.forget_all(None);
            None
        }
        Notice::Flushing { remote, remove_immutable } => {
            let (tee, remote) = (tee.clone(), remote.map(str::to_owned));
            Some(Box::pin(async move { tee.flushing(remote.as_deref(), remove_immutable).await }))
        }
    });
}

/// The supply-chain policy layer and its counters.
fn policy_layer(settings: &Settings) -> Result<(PolicyLayer, Arc<PolicyStats>), BoxError> {
    let audit = Arc::new(Audit::new(settings.audit_log.as_deref()).map_err(|e| {
        let path = settings.audit_log.as_deref().unwrap_or(std::path::Path::new(""));
        format!("AUDIT_LOG {}: {e}", path.display())
    })?);
    let stats = Arc::new(PolicyStats::default());
    let layer = PolicyLayer::new(audit, stats.clone(), settings.metadata_max_bytes)
        .lookups_per_request(settings.lookup_max_requests);
    Ok((layer, stats))
}

/// A snapshot a minute of each remote's totals: the page's last hour.
fn spawn_tally(metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        let mut minute = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            minute.tick().await;
            metrics.tally.remember();
        }
    });
}

/// The stacks of the remotes behind the front door (see [`Artifacts`]),
/// outermost layer first, each of which may answer on its own: remotes
/// and the registry share one cache chain over their own upstream
/// services; local repositories store uploads.
fn stacks(
    settings: &Settings,
    backends: &Backends,
    remotes: &SharedRemotes,
    tee: &S3TeeLayer,
    digests: &Arc<ExpectedDigests>,
    policy: &PolicyLayer,
    metrics: &Arc<Metrics>,
) -> Result<Stacks, BoxError> {
    let store = &backends.store;
    let upstream = UpstreamFetch::new(&settings.upstream)?;
    let cache = ServiceBuilder::new()
        // Fresh entries answered from the store; expired ones attached.
        .layer(CacheLookupLayer::new(store.clone()))
        // Upstream failed (unreachable, timeout, 5xx, 429): the expired copy.
        .layer(StaleOnErrorLayer::new(store.clone()))
        // Expired mutable entries with validators: one conditional request.
        .layer(RevalidateLayer::new(store.clone()))
        // One fill per key, streamed to every client and into the store.
        .layer(tee.clone())
        .layer(ObserveLayer::upstream(metrics.clone()));
    let proxy = ServiceBuilder::new()
        // 403 when no pattern allows the path; attaches its class.
        .layer(PatternGuardLayer::new())
        // Requests, results and bytes, by remote and class.
        .layer(ObserveLayer::requests(metrics.clone()))
        // Supply-chain policy: hidden versions' files refused, documents
        // that list versions filtered on the way out.
        .layer(policy.clone())
        // Package metadata: negotiate the variant, rewrite file links to us.
        .layer(
            BodyRewriteLayer::new(settings.public_url.clone(), settings.metadata_max_bytes)
                .within(settings.document_budget)
                .lookups_per_request(settings.lookup_max_requests)
                .verify_with(digests.clone())
                .refresh_metadata_in(store.clone(), remotes.clone()),
        )
        .layer(cache.clone())
        .service(upstream.clone());
    // The registry: the same path rules; the request shaped for the cache
    // (manifests keyed by the accepted types, HEAD from a full fetch); the
    // same cache; its upstream service authenticates and checks digests.
    let tokens = Arc::new(Tokens::new(backends.coordinator.clone().map(|c| c as Arc<dyn Coordinator>)));
    let registry = ServiceBuilder::new()
        .layer(PatternGuardLayer::new())
        .layer(RegistryRequestLayer)
        .layer(ObserveLayer::requests(metrics.clone()))
        .layer(cache)
        .service(RegistryUpstream::new(upstream, tokens));
    // Local repositories: the same path rules, then uploads and downloads.
    let local = ServiceBuilder::new()
        .layer(PatternGuardLayer::new())
        .layer(ObserveLayer::requests(metrics.clone()))
        .service(LocalRepo::new(store.clone(), backends.spool.clone(), settings.max_upload_bytes));
    Ok(Stacks {
        proxy: BoxCloneSyncService::new(proxy),
        local: BoxCloneSyncService::new(local),
        registry: BoxCloneSyncService::new(registry),
    })
}

/// The stacks a remote's requests go through, by the remote's kind.
struct Stacks {
    proxy: Stack,
    local: Stack,
    registry: Stack,
}

/// The management endpoints, the operator page and the artifact routes.
fn routes(state: manage::State, admin: AdminToken, artifacts: Artifacts, registry: Artifacts) -> Router {
    let guarded = |admin: &AdminToken| from_fn_with_state(admin.clone(), require_admin);
    Router::new()
        .route("/", get(manage::root))
        .route("/ui", get(|| async { axum::response::Redirect::permanent("/ui/") }))
        .route("/ui/", get(crate::ui::overview))
        .route("/ui/remotes/{remote}", get(crate::ui::remote))
        .route("/ui/entries/{remote}/{*path}", get(crate::ui::entry))
        .route("/health", get(manage::health))
        .route("/ready", get(manage::ready))
        .route("/config", get(manage::config))
        .route("/metrics", get(manage::metrics))
        .route("/artifacts/{remote}", get(manage::list))
        .route("/cache-artifact", post(manage::cache_artifacts).route_layer(guarded(&admin)))
        .route("/cache/flush", put(manage::flush).route_layer(guarded(&admin)))
        .route("/cache/{remote}/{*path}", delete(manage::purge).route_layer(guarded(&admin)))
        .nest_service("/api/v1/remote", artifacts.clone())
        .nest_service("/api", artifacts)
        .with_state(state)
        .merge(docker::router(registry))
        .layer(CatchPanicLayer::custom(|_| {
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", "", "").map(Body::new)
        }))
        .layer(TraceLayer::new_for_http())
}

/// The edge of the artifact routes: the one rescue ([`RescueLayer`], which
/// turns every error a stack raised into its HTTP answer in the format's
/// error shape, by asking what caused it, and writes the cache headers)
/// around the front door ([`RemoteResolveLayer`], the one place a path
/// becomes a remote, an artifact path and package coordinates: `/api/...`
/// or `/v2/...`) and [`Dispatch`]. It decides who the client is, once
/// ([`ClientAddr`]), for whatever inside names one.
#[derive(Clone)]
pub(crate) struct Artifacts {
    front: BoxCloneSyncService<Request<Body>, Response<ArtifactBody>, Infallible>,
    trusted: TrustedProxies,
}

impl Artifacts {
    fn new(door: RemoteResolveLayer, dispatch: Dispatch, trusted: TrustedProxies) -> Self {
        let front = ServiceBuilder::new()
            // Errors become answers: JSON {"error", "remote", "path"}, or
            // the registry's {"errors": [...]} for docker remotes.
            .layer(RescueLayer::new())
            // 404 for an unknown remote, 400 for a refused path.
            .layer(door)
            .service(dispatch);
        Self { front: BoxCloneSyncService::new(front), trusted }
    }
}

impl Service<Request<Body>> for Artifacts {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>().copied()
        {
            let client = self.trusted.client(peer.ip(), req.headers());
            req.extensions_mut().insert(ClientAddr(client));
        }
        let call = self.front.clone().oneshot(req);
        Box::pin(async move { Ok(call.await?.map(Body::new)) })
    }
}

/// Sends a resolved request to the stack of its remote's kind: a caching
/// remote's (GET, HEAD), a local repository's (GET, HEAD; PUT and DELETE
/// with the admin token) or the registry's (GET, HEAD at `/v2/` only).
#[derive(Clone)]
pub(crate) struct Dispatch {
    proxy: Stack,
    local: Stack,
    registry: Stack,
    /// The groups' stack; `None` in the dispatch the groups ask their
    /// members through.
    group: Option<Stack>,
    admin: AdminToken,
}

impl Service<Request<Body>> for Dispatch {
    type Response = Response<ArtifactBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ArtifactBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (Some(ResolvedRemote(remote)), Some(door)) =
            (req.extensions().get::<ResolvedRemote>(), req.extensions().get::<Door>())
        else {
            return Box::pin(async { Err("a request reached dispatch unresolved".into()) });
        };
        let refuse = |refused: Refused| -> Self::Future { Box::pin(async move { Err(refused.into()) }) };
        let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
        let registry =
            remote.package.format().spec().served_at == artifactapi_layers::format::ServedAt::Registry;
        let stack = match (door, registry, &remote.kind) {
            (Door::Registry, ..) if read_only => self.registry.clone(),
            (Door::Registry, ..) => {
                return refuse(Refused::method(
                    "this registry is a read-only pull-through mirror",
                    "GET, HEAD",
                ))
            }
            (Door::Remotes, true, _) => {
                let name = &remote.name;
                let message =
                    format!("{name} is a container registry mirror: pull from /v2/{name}/{{name}}/...");
                return refuse(Refused::new(StatusCode::NOT_FOUND, message));
            }
            (Door::Remotes, false, RemoteKind::Remote { .. }) if read_only => self.proxy.clone(),
            (Door::Remotes, false, RemoteKind::Remote { .. }) => {
                return refuse(Refused::method("method not allowed", "GET, HEAD"))
            }
            (Door::Remotes, false, RemoteKind::Group(_)) if read_only => match &self.group {
                Some(group) => group.clone(),
                None => {
                    let message = format!("{} is a group, and groups do not nest", remote.name);
                    return refuse(Refused::new(StatusCode::NOT_FOUND, message));
                }
            },
            (Door::Remotes, false, RemoteKind::Group(_)) => {
                return refuse(Refused::method(
                    "a group is read-only: write to one of its members",
                    "GET, HEAD",
                ))
            }
            (Door::Remotes, false, RemoteKind::Local) => match *req.method() {
                Method::GET | Method::HEAD => self.local.clone(),
                Method::PUT | Method::DELETE => match self.admin.check(req.headers()) {
                    Ok(()) => self.local.clone(),
                    Err(refused) => {
                        let answer = refused.response();
                        return Box::pin(async move { Ok(answer) });
                    }
                },
                _ => return refuse(Refused::method("method not allowed", "GET, HEAD, PUT, DELETE")),
            },
        };
        Box::pin(stack.oneshot(req))
    }
}

//! The policy as a layer: files of hidden versions refused, documents that
//! list versions filtered on the way out, Go's `@latest` answered with the
//! newest version the policy lets through.
//!
//! Over 400 lines: the layer and the one request's judge (`Judge`: files,
//! unclassified paths, documents, `@latest`, and the budgeted look-ups of
//! publish times they share). Splitting the judge's four answers apart would
//! split the look-up budget they count together; its tests are against the
//! binary, in `tests/integration/policy.rs`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tower::{Layer, Service, ServiceExt};

use super::{
    refusal::{self, is_json},
    time, Audit, AuditEvent, Mode, Policy, PolicyStats, Unclassified, Verdict, Withheld,
};
use crate::{
    body::{self, read_capped, ArtifactBody},
    client::ClientAddr,
    error::BoxError,
    extensions::CacheStatus,
    format::{Format, PathKind},
    path::ArtifactPath,
    pattern::Decision,
    remote::Remote,
    remote_resolve::{Door, ResolvedRemote},
    store::now_ms,
    Classification,
};

/// Applies [`PolicyService`].
#[derive(Debug, Clone)]
pub struct PolicyLayer {
    audit: Arc<Audit>,
    stats: Arc<PolicyStats>,
    max_bytes: usize,
    lookups: usize,
}

impl PolicyLayer {
    /// Decisions written to `audit` and counted in `stats`; documents of at
    /// most `max_bytes` are filtered.
    pub fn new(audit: Arc<Audit>, stats: Arc<PolicyStats>, max_bytes: usize) -> Self {
        Self { audit, stats, max_bytes, lookups: DEFAULT_LOOKUPS }
    }

    /// At most `lookups` upstream requests per request for the publish times
    /// of the versions a document lists (`LOOKUP_MAX_REQUESTS`); past it,
    /// versions whose times are not cached count as too young until a later
    /// request has read them.
    pub fn lookups_per_request(mut self, lookups: usize) -> Self {
        self.lookups = lookups;
        self
    }
}

impl<S> Layer<S> for PolicyLayer {
    type Service = PolicyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyService {
            inner,
            audit: self.audit.clone(),
            stats: self.stats.clone(),
            max_bytes: self.max_bytes,
            lookups: self.lookups,
        }
    }
}

/// Applies the policy of the request's remote (or group).
#[derive(Debug, Clone)]
pub struct PolicyService<S> {
    inner: S,
    audit: Arc<Audit>,
    stats: Arc<PolicyStats>,
    max_bytes: usize,
    lookups: usize,
}

/// One request's context.
struct Judge<S, B> {
    inner: S,
    remote: Arc<Remote>,
    policy: Arc<Policy>,
    format: &'static dyn Format,
    path: ArtifactPath,
    client: String,
    audit: Arc<Audit>,
    stats: Arc<PolicyStats>,
    max_bytes: usize,
    /// Look-ups that went upstream, and how many may.
    lookups: AtomicUsize,
    max_lookups: usize,
    body: std::marker::PhantomData<fn() -> B>,
}

impl<S, B> Service<Request<B>> for PolicyService<S>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    B: Default + Send + 'static,
{
    type Response = Response<ArtifactBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ArtifactBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let inner = crate::take_ready(&mut self.inner);
        let (Some(ResolvedRemote(remote)), Some(path)) = (
            req.extensions().get::<ResolvedRemote>().cloned(),
            req.extensions().get::<ArtifactPath>().cloned(),
        ) else {
            return Box::pin(inner.oneshot(req));
        };
        let Some(policy) = remote.policy.clone() else { return Box::pin(inner.oneshot(req)) };
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Box::pin(inner.oneshot(req));
        }
        let format = remote.package.format();
        let kind = format.classify(&path);
        // Decided at the edge; `X-Forwarded-For` is the edge's to judge.
        let client = match req.extensions().get::<ClientAddr>() {
            Some(ClientAddr(addr)) => addr.to_string(),
            None => "unknown".into(),
        };
        let judge = Judge {
            inner: inner.clone(),
            remote,
            policy,
            format,
            path: path.clone(),
            client,
            audit: self.audit.clone(),
            stats: self.stats.clone(),
            max_bytes: self.max_bytes,
            lookups: AtomicUsize::new(0),
            max_lookups: self.lookups,
            body: std::marker::PhantomData,
        };
        Box::pin(async move {
            if let Some(list) = format.versions().and_then(|v| v.latest_list(&path)) {
                return judge.latest(list, req).await;
            }
            let name = match kind {
                PathKind::File { name, version } => {
                    return match judge.file(&name, &version).await? {
                        Some(refusal) => Ok(refusal),
                        None => inner.oneshot(req).await,
                    };
                }
                // Fail closed: what cannot be named cannot be judged.
                PathKind::Unknown => {
                    return match judge.unclassified() {
                        Some(refusal) => Ok(refusal),
                        None => inner.oneshot(req).await,
                    };
                }
                PathKind::Metadata(Some(name))
                    if format.versions().is_some_and(|v| v.lists_versions(&path)) =>
                {
                    name
                }
                PathKind::Metadata(_) => return inner.oneshot(req).await,
            };
            // The whole document, to filter: the client's validators are
            // ours to answer.
            let client_etag = req.headers_mut().remove(header::IF_NONE_MATCH);
            req.headers_mut().remove(header::IF_MODIFIED_SINCE);
            req.headers_mut().remove(header::RANGE);
            let head = req.method() == Method::HEAD;
            *req.method_mut() = Method::GET;
            let res = inner.oneshot(req).await?;
            judge.document(&name, res, client_etag, head).await
        })
    }
}

/// How many look-ups one request may send upstream by default (the publish
/// times of the versions a document lists).
const DEFAULT_LOOKUPS: usize = 4;

impl<S, B> Judge<S, B>
where
    S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Clone,
    B: Default,
{
    /// Asks the stack below for `path` (an `Accept` of `accept`), as the
    /// front door would have resolved it.
    async fn fetch(&self, path: &ArtifactPath, accept: Option<&'static str>) -> Option<(Bytes, bool)> {
        let Decision::Allow(class) = self.remote.classifier.classify(path.decoded()) else { return None };
        let mut req = Request::new(B::default());
        *req.uri_mut() = format!("/{}/{}", self.remote.name, path.raw()).parse().ok()?;
        if let Some(accept) = accept {
            req.headers_mut().insert(header::ACCEPT, HeaderValue::from_static(accept));
        }
        let extensions = req.extensions_mut();
        extensions.insert(ResolvedRemote(self.remote.clone()));
        extensions.insert(path.clone());
        extensions.insert(Door::Remotes);
        extensions.insert(Classification(class));
        if let Some(coordinates) = self.format.classify(path).coordinates() {
            extensions.insert(coordinates);
        }
        if self.lookups.load(Ordering::Relaxed) >= self.max_lookups {
            tracing::info!(remote = %self.remote.name, path = %path.display(), "look-up budget spent: judged unknown");
            return None;
        }
        let res = self.inner.clone().oneshot(req).await.ok()?;
        if !matches!(res.extensions().get::<CacheStatus>(), Some(CacheStatus::Hit | CacheStatus::Local)) {
            self.lookups.fetch_add(1, Ordering::Relaxed);
        }
        if res.status() != StatusCode::OK {
            return None;
        }
        let json = is_json(&res);
        let body = read_capped(res.into_body(), self.max_bytes).await.ok()??;
        Some((body, json))
    }

    /// The publish times of `versions` of the package at `path`, as far as
    /// the format's metadata tells them.
    async fn times(&self, versions: &[String]) -> Vec<(String, i64)> {
        if !self.policy.has_cooldown() {
            return Vec::new();
        }
        let Some(versions_of) = self.format.versions() else { return Vec::new() };
        if let Some((document, accept)) = versions_of.times_document(&self.path, None) {
            return match self.fetch(&document, Some(accept)).await {
                Some((body, _)) => versions_of.publish_times_in(&body),
                None => Vec::new(),
            };
        }
        let mut out = Vec::new();
        for version in versions {
            if let Some((document, accept)) = versions_of.times_document(&self.path, Some(version)) {
                if let Some((body, _)) = self.fetch(&document, Some(accept)).await {
                    out.extend(versions_of.publish_times_in(&body));
                }
            }
        }
        out
    }

    fn verdict(&self, name: &str, version: &str, times: &[(String, i64)]) -> Verdict {
        let published = times.iter().find(|(v, _)| v == version).map(|(_, t)| *t);
        self.policy.judge(self.format.spec().scheme, name, version, published, now_ms())
    }

    fn record(&self, name: &str, versions: Vec<String>, rule: &str, action: &'static str) {
        self.stats.count(&self.remote.name, rule, action);
        self.audit.write(&AuditEvent {
            time: time::format_rfc3339(now_ms()),
            remote: self.remote.name.clone(),
            package: name.to_owned(),
            versions,
            rule: rule.to_owned(),
            action,
            client: self.client.clone(),
        });
    }

    /// A file of `name`@`version`: its refusal, if the policy refuses it.
    async fn file(&self, name: &str, version: &str) -> Result<Option<Response<ArtifactBody>>, BoxError> {
        let denied =
            self.policy.judge(self.format.spec().scheme, name, version, Some(i64::MIN / 2), now_ms());
        let verdict = match denied {
            Verdict::Denied(_) => denied,
            _ if self.policy.has_cooldown() => {
                let times = self.times(&[version.to_owned()]).await;
                self.verdict(name, version, &times)
            }
            _ => Verdict::Pass,
        };
        let report = self.policy.mode == Mode::Report;
        match &verdict {
            Verdict::Pass => Ok(None),
            Verdict::Allowed => {
                self.record(name, vec![version.to_owned()], verdict.rule(), "allowed");
                Ok(None)
            }
            _ if report => {
                self.record(name, vec![version.to_owned()], verdict.rule(), "would-refuse");
                Ok(None)
            }
            _ => {
                self.record(name, vec![version.to_owned()], verdict.rule(), "refused");
                Ok(Some(refusal::refusal(&self.remote.name, &self.path, name, version, &verdict)))
            }
        }
    }

    /// A path the format cannot classify: its refusal, unless the policy
    /// allows such paths (or only reports).
    fn unclassified(&self) -> Option<Response<ArtifactBody>> {
        let name = self.path.display();
        match (self.policy.unclassified, self.policy.mode) {
            (Unclassified::Allow, _) => None,
            (Unclassified::Refuse, Mode::Report) => {
                self.record(&name, Vec::new(), "unclassified", "would-refuse");
                None
            }
            (Unclassified::Refuse, Mode::Enforce) => {
                self.record(&name, Vec::new(), "unclassified", "refused");
                Some(refusal::unclassified(&self.remote.name, &self.path))
            }
        }
    }

    /// A document listing versions, filtered.
    async fn document(
        &self,
        name: &str,
        res: Response<ArtifactBody>,
        client_etag: Option<HeaderValue>,
        head: bool,
    ) -> Result<Response<ArtifactBody>, BoxError> {
        if res.status() != StatusCode::OK {
            return Ok(res);
        }
        let json = is_json(&res);
        let (mut parts, body) = res.into_parts();
        let Some(body) = read_capped(body, self.max_bytes).await? else {
            return Err(format!("a document larger than {} bytes cannot be filtered", self.max_bytes).into());
        };
        let Some(versions_of) = self.format.versions() else {
            return Err("this format lists no versions".into());
        };
        let listed = versions_of.listed_versions(&self.path, &body, json).unwrap_or_default();
        let times = self.times(&listed.versions).await;
        let mut hidden: Vec<(String, Verdict)> = Vec::new();
        let mut allowed = Vec::new();
        for version in &listed.versions {
            match self.verdict(name, version, &times) {
                Verdict::Allowed => allowed.push(version.clone()),
                v if v.blocks() => hidden.push((version.clone(), v)),
                _ => {}
            }
        }
        if !allowed.is_empty() {
            self.record(name, allowed, "min_release_age", "allowed");
        }
        let report = self.policy.mode == Mode::Report;
        let mut rules: Vec<&str> = hidden.iter().map(|(_, v)| v.rule()).collect();
        rules.sort_unstable();
        rules.dedup();
        for rule in rules {
            let versions = hidden.iter().filter(|(_, v)| v.rule() == rule).map(|(v, _)| v.clone()).collect();
            self.record(name, versions, rule, if report { "would-hide" } else { "hidden" });
        }
        // Entries with no version to judge are hidden wherever some
        // version of the package may be: they cannot be shown to pass.
        let unversioned = listed.unversioned > 0 && self.policy.may_hide(name);
        if unversioned {
            self.record(name, Vec::new(), "unclassified", if report { "would-hide" } else { "hidden" });
        }
        let withheld = (!report && (unversioned || !hidden.is_empty())).then(|| Withheld {
            refused: false,
            versions: hidden.iter().map(|(v, _)| v.clone()).collect(),
            unversioned,
        });
        let body = match &withheld {
            None => body,
            Some(_) => {
                let keep = |version: Option<&str>| match version {
                    Some(version) => !hidden.iter().any(|(v, _)| v == version),
                    None => !unversioned,
                };
                Bytes::from(versions_of.filter_versions(&self.path, &body, json, &keep)?)
            }
        };
        let etag = format!("W/\"{}\"", hex::encode(&Sha256::digest(&body)[..16]));
        if client_etag
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(etag.trim_start_matches("W/")))
        {
            let mut res = Response::new(body::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res.headers_mut().insert(header::ETAG, HeaderValue::from_str(&etag)?);
            return Ok(res);
        }
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        parts.headers.insert(header::ETAG, HeaderValue::from_str(&etag)?);
        parts.headers.remove(header::LAST_MODIFIED);
        if let Some(withheld) = withheld {
            parts.extensions.insert(withheld);
        }
        Ok(Response::from_parts(parts, if head { body::empty() } else { body::full(body) }))
    }

    /// Go's `@latest`: upstream's answer when the policy lets its version
    /// through, else the newest listed version it does let through.
    async fn latest(&self, list: ArtifactPath, req: Request<B>) -> Result<Response<ArtifactBody>, BoxError> {
        let name = self.format.coordinates(&self.path).map(|c| c.name).unwrap_or_default();
        let Some(versions_of) = self.format.versions() else {
            return Err("this format lists no versions".into());
        };
        let res = self.inner.clone().oneshot(req).await?;
        if res.status() != StatusCode::OK {
            return Ok(res);
        }
        let (parts, body) = res.into_parts();
        let body = read_capped(body, self.max_bytes).await?.unwrap_or_default();
        let named = versions_of.listed_versions(&self.path, &body, true).unwrap_or_default().versions;
        let times = versions_of.publish_times_in(&body);
        let verdicts: Vec<Verdict> = named.iter().map(|v| self.verdict(&name, v, &times)).collect();
        let report = self.policy.mode == Mode::Report;
        if !verdicts.iter().any(Verdict::blocks) || report {
            if let (Some(version), Some(verdict)) = (named.first(), verdicts.first().filter(|v| v.blocks())) {
                self.record(&name, vec![version.clone()], verdict.rule(), "would-hide");
            }
            return Ok(Response::from_parts(parts, body::full(body)));
        }
        let versions = match self.fetch(&list, None).await {
            Some((list_body, json)) => {
                versions_of.listed_versions(&list, &list_body, json).unwrap_or_default().versions
            }
            None => Vec::new(),
        };
        let times = self.times(&versions).await;
        let scheme = self.format.spec().scheme;
        let newest = versions
            .iter()
            .filter(|v| !self.verdict(&name, v, &times).blocks())
            .max_by(|a, b| scheme.compare(a, b))
            .cloned();
        if let Some(verdict) = verdicts.first() {
            self.record(&name, named.clone(), verdict.rule(), "hidden");
        }
        let answer = match newest.and_then(|v| versions_of.times_document(&self.path, Some(&v))) {
            Some((info, accept)) => self.fetch(&info, Some(accept)).await,
            None => None,
        };
        match answer {
            Some((body, _)) => {
                let mut res = Response::from_parts(parts, body::full(body.clone()));
                res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                res.headers_mut().remove(header::ETAG);
                Ok(res)
            }
            None => Ok(refusal::refusal(
                &self.remote.name,
                &self.path,
                &name,
                named.first().map_or("", |v| v),
                &verdicts[0],
            )),
        }
    }
}

//! Group remotes (`type: group`): one URL over other remotes of one package
//! type, a service over the members' own stacks (each member's patterns,
//! cache, rewriting and checks apply as if it had been asked directly).
//!
//! Which members may answer a request is decided by the package name the
//! format's path parser gives ([`Coordinates`]) and each member's
//! `only_names` / `except_names`. Then the group's `resolve`:
//!
//! - `first` (the default, the guard against dependency confusion): for
//!   each package name, the first allowed member whose metadata knows it
//!   answers for that name alone, metadata and files. A file's owner is
//!   found by asking the members, in order, for the document that lists
//!   the name's versions ([`Grouping::owner_document`](crate::format::Grouping::owner_document)); only the owner is asked
//!   for the file, so a later member can neither add versions to nor shadow
//!   an earlier member's name. The owner is remembered for the group's
//!   `mutable_ttl`.
//! - `merge`: a document the format merges ([`Grouping::merges`](crate::format::Grouping::merges)) is asked of
//!   every allowed member and merged ([`Grouping::merge`](crate::format::Grouping::merge)), the earliest
//!   member winning what they share; the merged bytes are kept with a
//!   fingerprint of the members' answers and merged again only when one of
//!   those changed, within a byte budget (least recently used first out).
//!   A merged document has no query: members are asked without it, and it
//!   is kept without it. Anything else comes from the first member that
//!   has it.
//!
//! A member's 404 or 410 means "try the next"; a member that fails (after
//! its own stale copy could not help) counts as not knowing the name, so a
//! later member that has a file still serves it. When no member answers,
//! the first failure is raised, or a 404.
//!
//! Links in the metadata a member answers point at that member (its stack
//! rewrote them), so files are fetched through the member that listed
//! them; where clients build file URLs themselves (Go, Cargo's `dl`, Maven,
//! generic), file requests come to the group and are routed as above. A
//! member's document asked through a group knows it ([`ViaGroup`]): Cargo's
//! `config.json` then points `dl` at the group.

mod members;
mod merged;
#[cfg(test)]
mod tests;

use std::{
    sync::{atomic::AtomicU64, Arc},
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

use crate::{
    body::ArtifactBody,
    budget::DocumentBudget,
    error::BoxError,
    format::{Coordinates, Format},
    path::ArtifactPath,
    remote::{RemoteKind, Resolve, SharedRemotes},
    remote_resolve::ResolvedRemote,
};

pub use members::ViaGroup;

/// How many bytes of merged documents a process keeps by default.
const DEFAULT_MERGED_BYTES: usize = 64 << 20;

/// What groups have done, for metrics.
#[derive(Debug, Default)]
pub struct GroupStats {
    /// Documents merged (a merge is done again only when a member's answer
    /// changed).
    pub merges: AtomicU64,
    /// Merged documents answered from the kept merge.
    pub merged_hits: AtomicU64,
}

/// Applies [`GroupService`] to the members' dispatch.
#[derive(Debug, Clone)]
pub struct GroupLayer {
    remotes: SharedRemotes,
    max_bytes: usize,
    budget: DocumentBudget,
    merged_bytes: usize,
    stats: Arc<GroupStats>,
}

impl GroupLayer {
    /// Groups among `remotes`, reading member documents of at most
    /// `max_bytes` to merge them.
    pub fn new(remotes: impl Into<SharedRemotes>, max_bytes: usize) -> Self {
        Self {
            remotes: remotes.into(),
            max_bytes,
            budget: DocumentBudget { output_bytes: max_bytes, ..DocumentBudget::default() },
            merged_bytes: DEFAULT_MERGED_BYTES,
            stats: Arc::default(),
        }
    }

    /// Merges within `budget` (default: output as large as `max_bytes`).
    pub fn within(mut self, budget: DocumentBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Keeps at most `bytes` of merged documents in memory (default
    /// 64 MiB); past it, the least recently used are merged again when
    /// next asked for.
    pub fn keep_merged_within(mut self, bytes: usize) -> Self {
        self.merged_bytes = bytes;
        self
    }

    /// The counters every service of this layer adds to.
    pub fn stats(&self) -> Arc<GroupStats> {
        self.stats.clone()
    }
}

impl<S> Layer<S> for GroupLayer {
    type Service = GroupService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GroupService {
            inner,
            remotes: self.remotes.clone(),
            max_bytes: self.max_bytes,
            budget: self.budget,
            owners: Arc::default(),
            merged: Arc::new(merged::Merged::new(self.merged_bytes)),
            stats: self.stats.clone(),
        }
    }
}

/// A group's requests, answered by its members through `S` (the members'
/// dispatch: each member's own stack).
#[derive(Debug, Clone)]
pub struct GroupService<S> {
    inner: S,
    remotes: SharedRemotes,
    max_bytes: usize,
    budget: DocumentBudget,
    owners: Arc<members::Owners>,
    merged: Arc<merged::Merged>,
    stats: Arc<GroupStats>,
}

impl<S, B> Service<Request<B>> for GroupService<S>
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = crate::take_ready(&mut self.inner);
        let (Some(ResolvedRemote(group)), Some(path)) = (
            req.extensions().get::<ResolvedRemote>().cloned(),
            req.extensions().get::<ArtifactPath>().cloned(),
        ) else {
            return Box::pin(inner.oneshot(req));
        };
        let RemoteKind::Group(spec) = &group.kind else {
            return Box::pin(inner.oneshot(req));
        };
        let coordinates = req.extensions().get::<Coordinates>().cloned();
        let name = coordinates.as_ref().map(|c| c.name.clone());
        let table = self.remotes.load();
        let members: Vec<_> = spec
            .members
            .iter()
            .filter(|m| m.allows(name.as_deref()))
            .filter_map(|m| table.get(&m.remote).cloned())
            .collect();
        let asker = members::Asker::new(inner, &group, path, coordinates, req);
        let format: &'static dyn Format = group.package.format();
        let (resolve, this) = (spec.resolve, self.clone());
        Box::pin(async move {
            let path = asker.path().clone();
            match resolve {
                Resolve::Merge if format.grouping().is_some_and(|g| g.merges(&path)) => {
                    let (merged, stats, budget) = (&this.merged, &this.stats, &this.budget);
                    merged::answer(&asker, &members, format, merged, stats, this.max_bytes, budget).await
                }
                Resolve::Merge => asker.first_answer(&members, &path).await.map(|(_, res)| res),
                Resolve::First => {
                    let metadata = format.grouping().and_then(|g| g.owner_document(&path));
                    let (name, ttl) = (group.name.as_str(), group.ttl.mutable);
                    match metadata.clone().filter(|m| m.cache_key("") != path.cache_key("")) {
                        // A file: its name's owner alone is asked, once one
                        // is found.
                        Some(metadata) => {
                            match this.owners.owner(&asker, name, &members, &metadata, ttl).await {
                                Some(owner) => asker.ask(&owner, &path, true).await,
                                None => asker.first_answer(&members, &path).await.map(|(_, res)| res),
                            }
                        }
                        None => {
                            let (owner, res) = asker.first_answer(&members, &path).await?;
                            if let (Some(metadata), Some(owner)) = (metadata, owner) {
                                this.owners.remember(name, &metadata, &owner, ttl);
                            }
                            Ok(res)
                        }
                    }
                }
            }
        })
    }
}

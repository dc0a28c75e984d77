//! Asking a group's members: one request per member through its own stack,
//! what counts as "this member does not have it", and which member owns a
//! name (for `resolve: first`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use tower::{Service, ServiceExt};

use crate::{
    body::ArtifactBody,
    client::ClientAddr,
    error::{find_cause, BoxError, UpstreamStatus},
    format::Coordinates,
    path::ArtifactPath,
    policy::Withheld,
    remote::Remote,
    remote_resolve::{Door, ResolvedRemote},
    rescue::Refused,
};

/// The group a member was asked through, on the member's request (a member
/// document that names this proxy's URLs names the group's where clients
/// build file URLs themselves: Cargo's `dl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaGroup {
    /// The group's name.
    pub group: Arc<str>,
    /// The group has a policy: the member's links point at the group (not
    /// at the member, whose own URL would serve what the group hides).
    pub guarded: bool,
}

/// What is needed to ask the members for a group's request.
pub(super) struct Asker<S> {
    inner: S,
    group: Arc<str>,
    guarded: bool,
    path: ArtifactPath,
    coordinates: Option<Coordinates>,
    method: Method,
    headers: HeaderMap,
    /// A member's policy audits the group's client.
    client: Option<ClientAddr>,
}

/// Headers that make a member's answer depend on what the client has
/// already, or on a part of it.
const CONDITIONAL: [header::HeaderName; 4] =
    [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::RANGE, header::IF_RANGE];

impl<S> Asker<S> {
    pub(super) fn new<B>(
        inner: S,
        group: &Remote,
        path: ArtifactPath,
        coordinates: Option<Coordinates>,
        req: Request<B>,
    ) -> Self {
        let (parts, _) = req.into_parts();
        Self {
            inner,
            group: group.name.as_str().into(),
            guarded: group.policy.is_some(),
            path,
            coordinates,
            method: parts.method,
            headers: parts.headers,
            client: parts.extensions.get::<ClientAddr>().copied(),
        }
    }

    /// The path the client asked the group for.
    pub(super) fn path(&self) -> &ArtifactPath {
        &self.path
    }

    /// The group's name.
    pub(super) fn group(&self) -> &str {
        &self.group
    }

    /// The client's method.
    pub(super) fn method(&self) -> &Method {
        &self.method
    }

    /// The client's headers.
    pub(super) fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl<S> Asker<S> {
    /// Asks `member` for `path` through its stack: the client's method and
    /// headers, less the conditional ones unless `as_client` (the answer
    /// then goes to the client as it is).
    pub(super) async fn ask<B>(
        &self,
        member: &Arc<Remote>,
        path: &ArtifactPath,
        as_client: bool,
    ) -> Result<Response<ArtifactBody>, BoxError>
    where
        S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Clone,
        B: Default,
    {
        let method = if as_client { self.method.clone() } else { Method::GET };
        self.request(member, path, method, as_client).await
    }

    async fn request<B>(
        &self,
        member: &Arc<Remote>,
        path: &ArtifactPath,
        method: Method,
        conditional: bool,
    ) -> Result<Response<ArtifactBody>, BoxError>
    where
        S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Clone,
        B: Default,
    {
        let mut req = Request::new(B::default());
        *req.method_mut() = method;
        let query = path.query().map(|q| format!("?{q}")).unwrap_or_default();
        *req.uri_mut() = format!("/{}/{}{query}", member.name, path.raw()).parse()?;
        *req.headers_mut() = self.headers.clone();
        if !conditional {
            for name in CONDITIONAL {
                req.headers_mut().remove(name);
            }
        }
        let extensions = req.extensions_mut();
        extensions.insert(ResolvedRemote(member.clone()));
        extensions.insert(path.clone());
        extensions.insert(Door::Remotes);
        extensions.insert(ViaGroup { group: self.group.clone(), guarded: self.guarded });
        if let Some(client) = self.client {
            extensions.insert(client);
        }
        let coordinates = match path.cache_key("") == self.path.cache_key("") {
            true => self.coordinates.clone(),
            false => member.package.format().coordinates(path),
        };
        if let Some(coordinates) = coordinates {
            extensions.insert(coordinates);
        }
        self.inner.clone().oneshot(req).await
    }

    /// The first of `members` that has `path` answers it (with the client's
    /// conditional headers); one that does not have it, or fails, passes
    /// to the next. When none answers: the first failure, else a 404. The
    /// member that answered is named when every member before it said it
    /// does not have the path (none failed): it owns the name.
    pub(super) async fn first_answer<B>(
        &self,
        members: &[Arc<Remote>],
        path: &ArtifactPath,
    ) -> Result<(Option<Arc<Remote>>, Response<ArtifactBody>), BoxError>
    where
        S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Clone,
        B: Default,
    {
        let mut failure = None;
        for member in members {
            match self.ask(member, path, true).await {
                Ok(res) if lacks(&res) => {}
                Ok(res) => return Ok((failure.is_none().then(|| member.clone()), res)),
                Err(e) if lacking(&e) => {}
                Err(e) => {
                    tracing::debug!(member = %member.name, error = %e, "a group member failed; asking the next");
                    failure.get_or_insert(e);
                }
            }
        }
        Err(failure.unwrap_or_else(|| not_found(&self.group, members)))
    }
}

/// A member's answer that means "not here": 404, 410, or its patterns do
/// not allow the path (403). Its policy's refusal is not one: that is the
/// member's answer, final for the group.
pub(super) fn lacks(res: &Response<ArtifactBody>) -> bool {
    let refused = res.extensions().get::<Withheld>().is_some_and(|w| w.refused);
    !refused && lacks_status(res.status())
}

fn lacks_status(status: StatusCode) -> bool {
    matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::FORBIDDEN)
}

/// A member's error that means "not here".
pub(super) fn lacking(e: &BoxError) -> bool {
    let upstream = find_cause::<UpstreamStatus>(&**e).map(UpstreamStatus::upstream);
    let refused = find_cause::<Refused>(&**e).map(Refused::status);
    upstream.or(refused).is_some_and(lacks_status)
}

/// The 404 of a group none of whose members has a path.
pub(super) fn not_found(group: &str, members: &[Arc<Remote>]) -> BoxError {
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let message = if names.is_empty() {
        format!("no member of group {group} may answer for this name")
    } else {
        format!("not found in any member of group {group} ({})", names.join(", "))
    };
    Box::new(Refused::new(StatusCode::NOT_FOUND, message))
}

/// Which member owns a name, per group, for a while (`resolve: first`).
#[derive(Debug, Default)]
pub(super) struct Owners(Mutex<HashMap<String, (String, Instant)>>);

/// How many owners are remembered; past it, they are forgotten at once.
const MAX_OWNERS: usize = 100_000;

impl Owners {
    fn key(group: &str, metadata: &ArtifactPath) -> String {
        metadata.cache_key(group)
    }

    /// Remembers that `owner` answered `metadata` for `group`.
    pub(super) fn remember(&self, group: &str, metadata: &ArtifactPath, owner: &Remote, ttl: Duration) {
        let mut owners = self.0.lock().expect("owners lock");
        if owners.len() >= MAX_OWNERS {
            owners.clear();
        }
        owners.insert(Self::key(group, metadata), (owner.name.clone(), Instant::now() + ttl));
    }

    /// The member among `members` that owns the name `metadata` lists: the
    /// first that has `metadata`, remembered for `ttl`. `None` when none of
    /// them has it (the format keeps no such document there).
    pub(super) async fn owner<S, B>(
        &self,
        asker: &Asker<S>,
        group: &str,
        members: &[Arc<Remote>],
        metadata: &ArtifactPath,
        ttl: Duration,
    ) -> Option<Arc<Remote>>
    where
        S: Service<Request<B>, Response = Response<ArtifactBody>, Error = BoxError> + Clone,
        B: Default,
    {
        let known = {
            let owners = self.0.lock().expect("owners lock");
            owners.get(&Self::key(group, metadata)).filter(|(_, until)| *until > Instant::now()).cloned()
        };
        if let Some((name, _)) = known {
            if let Some(member) = members.iter().find(|m| m.name == name) {
                return Some(member.clone());
            }
        }
        // A member that fails counts as not knowing the name, for this
        // request only: an owner found past a failure is not remembered.
        let mut failed = false;
        for member in members {
            match asker.request(member, metadata, Method::GET, false).await {
                Ok(res) if lacks(&res) => {}
                Ok(_) => {
                    if !failed {
                        self.remember(group, metadata, member, ttl);
                    }
                    return Some(member.clone());
                }
                Err(e) if lacking(&e) => {}
                Err(_) => failed = true,
            }
        }
        None
    }
}

//! Upstream registry authentication: challenges, tokens and their cache.
//!
//! A registry that wants credentials answers 401 with `WWW-Authenticate`:
//! `Bearer realm=…,service=…,scope=…` (a token server hands out short-lived
//! tokens, anonymously or for the remote's `username`/`password`) or `Basic`.
//! Tokens are kept per remote and repository until shortly before they expire,
//! and shared with the other replicas through the coordinator (Redis) when
//! there is one. Nothing here is ever logged with its value.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use artifactapi_layers::{
    coord::Coordinator, error::UpstreamErrorKind, store::now_ms, Remote, UpstreamError,
};
use base64::Engine as _;
use http::HeaderValue;
use serde::Deserialize;
use url::Url;

use crate::upstream::UpstreamFetch;

/// What a 401 asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// A token from `realm`, for `service` and `scope`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The service the token is for.
        service: Option<String>,
        /// The access asked for (`repository:library/nginx:pull`).
        scope: Option<String>,
    },
    /// HTTP Basic credentials.
    Basic,
}

/// Parses a `WWW-Authenticate` value.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, params) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(params);
    let get = |k: &str| params.iter().find(|(name, _)| name.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
}

/// `key="value", key=value, ...`, with commas inside quotes kept.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// A token server's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Tokens are used until this long before they expire.
const MARGIN: Duration = Duration::from_secs(30);
/// When a token server does not say, a token lives this long (the
/// distribution specification's default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// At most this many cached authorizations; past it, the expired ones go,
/// then all.
const MAX_TOKENS: usize = 10_000;
/// The largest token answer read.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

/// The authorizations in use, per remote and repository.
#[derive(Default)]
pub struct Tokens {
    by_scope: Mutex<HashMap<String, (HeaderValue, Instant)>>,
    /// Remotes whose registry asked for Basic credentials.
    basic: Mutex<Vec<String>>,
    coordinator: Option<Arc<dyn Coordinator>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

impl Tokens {
    /// A cache shared with other replicas through `coordinator`, if any.
    pub fn new(coordinator: Option<Arc<dyn Coordinator>>) -> Self {
        Self { coordinator, ..Self::default() }
    }

    fn key(remote: &Remote, repository: &str) -> String {
        format!("registry-token\u{1f}{}\u{1f}{repository}", remote.name)
    }

    /// The `Authorization` to send for `repository` on `remote` before any
    /// challenge: a token still valid, Basic credentials for a registry known
    /// to want them, or nothing.
    pub async fn authorization(&self, remote: &Remote, repository: &str) -> Option<HeaderValue> {
        if self.basic.lock().expect("basic lock").contains(&remote.name) {
            return remote.credentials.as_ref().map(basic);
        }
        let key = Self::key(remote, repository);
        if let Some((value, until)) = self.by_scope.lock().expect("token lock").get(&key) {
            if *until > Instant::now() {
                return Some(value.clone());
            }
        }
        let coordinator = self.coordinator.as_ref()?;
        let shared = coordinator.shared_value(&key).await.ok().flatten()?;
        // `{expires at, ms since the epoch} {value}`
        let (until_ms, value) = shared.split_once(' ')?;
        let remaining = until_ms.parse::<i64>().ok()?.checked_sub(now_ms()).filter(|ms| *ms > 0)?;
        let remaining = Duration::from_millis(remaining as u64);
        let value = HeaderValue::from_str(value).ok()?;
        self.remember(key, value.clone(), remaining);
        Some(value)
    }

    /// Answers a challenge: the `Authorization` to retry with, or `None`
    /// when there is nothing to retry with (Basic asked, no credentials).
    pub async fn answer(
        &self,
        fetch: &UpstreamFetch,
        remote: &Remote,
        repository: &str,
        challenge: Challenge,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        let (realm, service, scope) = match challenge {
            Challenge::Basic => {
                let Some(credentials) = &remote.credentials else { return Ok(None) };
                let mut basic_remotes = self.basic.lock().expect("basic lock");
                if !basic_remotes.contains(&remote.name) {
                    basic_remotes.push(remote.name.clone());
                }
                return Ok(Some(basic(credentials)));
            }
            Challenge::Bearer { realm, service, scope } => (realm, service, scope),
        };
        let refused =
            |why: &str| UpstreamError::new(UpstreamErrorKind::Other, format!("token realm refused: {why}"));
        let mut url = Url::parse(&realm).map_err(|_| refused("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused("not http or https"));
        }
        // A public registry must not send us, or our credentials, inside.
        let Some(origin) = remote.base_url() else { return Err(refused("a local repository")) };
        if !fetch.allows(origin, &url) {
            return Err(refused("a loopback or private address for a public registry"));
        }
        // Credentials go over TLS, or to a plain-HTTP realm of a plain-HTTP registry.
        let credentials = remote
            .credentials
            .as_ref()
            .filter(|_| url.scheme() == "https" || remote.base_url().is_some_and(|b| b.scheme() == "http"));
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope.as_deref().unwrap_or(&format!("repository:{repository}:pull")));
        }
        let (status, body) =
            fetch.fetch_small(origin, url, credentials, remote.tls.as_deref(), MAX_TOKEN_ANSWER).await?;
        if !status.is_success() {
            tracing::warn!(remote = %remote.name, %status, "the registry's token server refused a token");
            return Ok(None);
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::new(UpstreamErrorKind::Other, format!("token answer: {e}")))?;
        let token =
            answer.token.or(answer.access_token).filter(|t| !t.is_empty()).ok_or_else(|| {
                UpstreamError::new(UpstreamErrorKind::Other, "token answer without a token")
            })?;
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| UpstreamError::new(UpstreamErrorKind::Other, "token is not a valid header value"))?;
        let lifetime = answer.expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let usable = lifetime.saturating_sub(MARGIN.min(lifetime / 2));
        let key = Self::key(remote, repository);
        self.remember(key.clone(), value.clone(), usable);
        if let (Some(coordinator), Ok(text)) = (&self.coordinator, value.to_str()) {
            let shared = format!("{} {text}", now_ms().saturating_add(usable.as_millis() as i64));
            if let Err(e) = coordinator.share_value(&key, &shared, usable).await {
                tracing::debug!(error = %e, "could not share a registry token");
            }
        }
        Ok(Some(value))
    }

    fn remember(&self, key: String, value: HeaderValue, lifetime: Duration) {
        let mut tokens = self.by_scope.lock().expect("token lock");
        let now = Instant::now();
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, (_, until)| *until > now);
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        let mut value = value;
        value.set_sensitive(true);
        tokens.insert(key, (value, now + lifetime));
    }

    /// Forgets the token for `repository` on `remote` (upstream refused it).
    pub fn forget(&self, remote: &Remote, repository: &str) {
        self.by_scope.lock().expect("token lock").remove(&Self::key(remote, repository));
    }
}

fn basic(credentials: &artifactapi_layers::Credentials) -> HeaderValue {
    let raw = format!("{}:{}", credentials.username, credentials.password);
    let mut value = HeaderValue::from_str(&format!("Basic {}", base64(raw.as_bytes())))
        .expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull,push".into()),
            }
        );
        let c = parse_challenge("bearer realm=http://127.0.0.1:1/token, service=x").unwrap();
        assert!(
            matches!(c, Challenge::Bearer { realm, service: Some(s), scope: None } if realm == "http://127.0.0.1:1/token" && s == "x")
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Bearer service=x"), None, "a bearer challenge needs a realm");
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn basic_credentials_are_base64() {
        assert_eq!(base64(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}

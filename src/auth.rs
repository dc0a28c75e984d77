//! Write protection: with `ADMIN_TOKEN` set, uploads and deletions in local
//! repositories, `POST /cache-artifact` and `PUT /cache/flush` need
//! `Authorization: Bearer <token>` — 401 without it, 403 with a wrong one.
//! Reads stay open.

use std::sync::Arc;

use artifactapi_layers::{error::json_error, ArtifactBody};
use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Response, StatusCode},
    middleware::Next,
};
use subtle::ConstantTimeEq;

/// The configured token, if any.
#[derive(Clone)]
pub struct AdminToken(Option<Arc<str>>);

impl AdminToken {
    /// Protects writes with `token`; `None` leaves them open.
    pub fn new(token: Option<String>) -> Self {
        Self(token.map(Arc::from))
    }

    /// Whether a token is configured.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Checks a request's `Authorization` header.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let Some(expected) = &self.0 else { return Ok(()) };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        match presented {
            None => Err(Refused::Missing),
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(Refused::Wrong),
        }
    }
}

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No bearer token: 401.
    Missing,
    /// Not the token: 403.
    Wrong,
}

impl Refused {
    /// The answer to the client.
    pub fn response(self) -> Response<ArtifactBody> {
        match self {
            Refused::Missing => {
                let mut refusal =
                    json_error(StatusCode::UNAUTHORIZED, "this operation needs the admin token", "", "");
                refusal.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                refusal
            }
            Refused::Wrong => json_error(StatusCode::FORBIDDEN, "wrong admin token", "", ""),
        }
    }
}

/// Compares without an early exit, so the time taken does not tell how much
/// of a guess was right. Only a guess's length shows (`subtle` refuses
/// another length at once): a token's length tells little, its bytes
/// everything.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// axum middleware for the protected management routes.
pub async fn require_admin(State(token): State<AdminToken>, req: Request, next: Next) -> Response<Body> {
    match token.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.response().map(Body::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn missing_wrong_and_right_tokens() {
        let token = AdminToken::new(Some("s3cret".into()));
        assert_eq!(token.check(&headers(None)).unwrap_err().response().status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            token.check(&headers(Some("Basic s3cret"))).unwrap_err().response().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            token.check(&headers(Some("Bearer nope"))).unwrap_err().response().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            token.check(&headers(Some("Bearer s3cre"))).unwrap_err().response().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            token.check(&headers(Some("Bearer s3cret!"))).unwrap_err().response().status(),
            StatusCode::FORBIDDEN
        );
        assert!(token.check(&headers(Some("Bearer s3cret"))).is_ok());
        assert!(AdminToken::new(None).check(&headers(None)).is_ok());
    }

    #[test]
    fn constant_time_comparison_is_still_a_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}

//! Manifest media types, and which of them a client accepts.
//!
//! A registry negotiates manifests strictly on `Accept`, even by digest: an
//! OCI index is returned only to a client that accepts it, and a Docker
//! schema 2 manifest asked for without its type is converted to schema 1.
//! So the set of manifest types a client accepts decides the answer, and is
//! what the cache keys a manifest by (not the raw header: two clients that
//! accept the same types share one entry). Upstream is sent that set, in a
//! fixed order.

use http::{header, HeaderMap, HeaderValue};

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-arch).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-arch).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 1, signed: its digest covers the payload without the
/// signatures, so its bytes cannot be checked against it.
pub const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker schema 1, unsigned.
pub const DOCKER_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// The known types with their short names in cache keys, in the order sent upstream.
const KNOWN: [(&str, &str); 6] = [
    (OCI_INDEX, "oci-index"),
    (OCI_MANIFEST, "oci"),
    (DOCKER_LIST, "list"),
    (DOCKER_MANIFEST, "v2"),
    (DOCKER_V1_SIGNED, "v1-signed"),
    (DOCKER_V1, "v1"),
];

/// The manifest media types a client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted(u8);

impl Accepted {
    /// From every `Accept` header of a request (comma lists, parameters and
    /// `q=0` understood). Wildcards name no manifest type: registries do not
    /// read them either.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut mask = 0u8;
        for value in headers.get_all(header::ACCEPT) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let media_type = parts.next().unwrap_or_default().trim();
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                if refused {
                    continue;
                }
                if let Some(i) = KNOWN.iter().position(|(t, _)| t.eq_ignore_ascii_case(media_type)) {
                    mask |= 1 << i;
                }
            }
        }
        Self(mask)
    }

    /// Whether `media_type` is among them.
    pub fn accepts(&self, media_type: &str) -> bool {
        let media_type = media_type.split(';').next().unwrap_or_default().trim();
        KNOWN
            .iter()
            .enumerate()
            .any(|(i, (t, _))| self.0 & (1 << i) != 0 && t.eq_ignore_ascii_case(media_type))
    }

    /// The cache-key variant: the short names, in order (`accept:none` when none).
    pub fn variant(&self) -> String {
        let names: Vec<&str> = self.types().map(|(_, short)| short).collect();
        if names.is_empty() {
            "accept:none".to_owned()
        } else {
            format!("accept:{}", names.join(","))
        }
    }

    /// The `Accept` header to send upstream, or `None` when no type is accepted.
    pub fn header(&self) -> Option<HeaderValue> {
        let types: Vec<&str> = self.types().map(|(t, _)| t).collect();
        (!types.is_empty()).then(|| HeaderValue::from_str(&types.join(", ")).expect("media types are ASCII"))
    }

    fn types(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        KNOWN.iter().enumerate().filter(|(i, _)| self.0 & (1 << i) != 0).map(|(_, t)| *t)
    }
}

/// Whether a manifest of `media_type` is schema 1, whose digest is not the
/// digest of its bytes.
pub fn is_schema1(media_type: &str) -> bool {
    let media_type = media_type.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case(DOCKER_V1_SIGNED)
        || media_type.eq_ignore_ascii_case(DOCKER_V1)
        || media_type.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(values: &[&str]) -> Accepted {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        Accepted::from_headers(&headers)
    }

    #[test]
    fn the_same_types_in_any_form_are_one_variant() {
        let containerd =
            accepted(&[&format!("{DOCKER_MANIFEST}, {DOCKER_LIST}, {OCI_MANIFEST}, {OCI_INDEX}, */*")]);
        let skopeo = accepted(&[OCI_INDEX, DOCKER_LIST, &format!("{OCI_MANIFEST};q=0.9"), DOCKER_MANIFEST]);
        assert_eq!(containerd, skopeo);
        assert_eq!(containerd.variant(), "accept:oci-index,oci,list,v2");
        assert_eq!(
            containerd.header().unwrap(),
            format!("{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_LIST}, {DOCKER_MANIFEST}").as_str()
        );
        assert!(containerd.accepts(&format!("{OCI_INDEX}; charset=utf-8")));
        assert!(!containerd.accepts(DOCKER_V1_SIGNED));
    }

    #[test]
    fn refused_and_wildcard_types_are_not_accepted() {
        let a = accepted(&[&format!("{OCI_INDEX};q=0, {DOCKER_MANIFEST}"), "*/*", "application/json"]);
        assert_eq!(a.variant(), "accept:v2");
        let none = accepted(&[]);
        assert_eq!(none.variant(), "accept:none");
        assert!(none.header().is_none());
        assert!(is_schema1(DOCKER_V1_SIGNED) && !is_schema1(OCI_MANIFEST));
    }
}

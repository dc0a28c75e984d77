//! `tls:` of a remote: a private CA to trust besides the system's roots,
//! and a client certificate with its key for mutual TLS. The files are read
//! and checked (certificates parse, the key matches the certificate) when the
//! configuration is loaded or reloaded: what is wrong is a problem named by
//! its key, never a failure at the first request.

use std::sync::Arc;

use artifactapi_layers::remote::UpstreamTls;

use super::{file::TlsConfig, remote::Ctx};

impl Ctx<'_> {
    /// The remote's `tls:`, read and checked; only remotes with a `base_url`
    /// reach an upstream.
    pub(super) fn tls(&mut self, tls: Option<&TlsConfig>, has_upstream: bool) -> Option<Arc<UpstreamTls>> {
        let tls = tls?;
        if !has_upstream {
            self.problem("tls", "only a remote with a base_url talks to an upstream");
            return None;
        }
        let mut read = |key: &str, path: &Option<String>| -> Option<Vec<u8>> {
            let path = path.as_deref()?;
            match std::fs::read(path) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    self.problem(key, format!("cannot read {path}: {e}"));
                    None
                }
            }
        };
        let ca_pem = read("tls.ca_file", &tls.ca_file);
        let cert = read("tls.client_cert", &tls.client_cert);
        let key = read("tls.client_key", &tls.client_key);
        let identity_pem = match (&tls.client_cert, &tls.client_key) {
            (Some(_), None) => {
                self.problem("tls.client_key", "`client_cert` is set without `client_key`");
                return None;
            }
            (None, Some(_)) => {
                self.problem("tls.client_cert", "`client_key` is set without `client_cert`");
                return None;
            }
            (None, None) => None,
            (Some(_), Some(_)) => {
                let (mut cert, key) = (cert?, key?);
                cert.push(b'\n');
                cert.extend_from_slice(&key);
                Some(cert)
            }
        };
        if tls.ca_file.is_some() && ca_pem.is_none() {
            return None;
        }
        if ca_pem.is_none() && identity_pem.is_none() {
            self.problem("tls", "names neither `ca_file` nor `client_cert` and `client_key`");
            return None;
        }
        let files =
            [("ca_file", &tls.ca_file), ("client_cert", &tls.client_cert), ("client_key", &tls.client_key)]
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(", ");
        let tls = UpstreamTls { ca_pem, identity_pem, files };
        if let Err(e) = artifactapi_services::upstream_client::check_tls(&tls) {
            self.problem("tls", e);
            return None;
        }
        Some(Arc::new(tls))
    }
}

//! The HTTP clients upstream requests go out with: one for remotes that
//! trust the system's roots, and one per distinct `tls:` of a remote (a
//! private CA added to the system's roots, a client certificate for mutual
//! TLS), built when first needed and kept. A `tls:` is checked by building
//! its client when the configuration is loaded ([`check_tls`]), so a missing
//! file or a key that does not match its certificate stops start-up or a
//! reload with a message, never a request.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use artifactapi_layers::{
    error::{UpstreamError, UpstreamErrorKind},
    remote::UpstreamTls,
};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

use crate::{
    egress::{Egress, Resolver},
    upstream::{chain, RetryConnect, UpstreamConfig},
};

/// The clients of one process.
#[derive(Debug)]
pub(crate) struct Clients {
    default: ClientWithMiddleware,
    config: UpstreamConfig,
    egress: Arc<Egress>,
    with_tls: Mutex<HashMap<UpstreamTls, ClientWithMiddleware>>,
}

impl Clients {
    pub(crate) fn new(config: &UpstreamConfig, egress: Arc<Egress>) -> Result<Self, String> {
        Ok(Self {
            default: build(config, &egress, None)?,
            config: config.clone(),
            egress,
            with_tls: Mutex::default(),
        })
    }

    /// The client for a remote with `tls` (the default one without).
    pub(crate) fn get(&self, tls: Option<&UpstreamTls>) -> Result<ClientWithMiddleware, UpstreamError> {
        let Some(tls) = tls else { return Ok(self.default.clone()) };
        if let Some(client) = self.with_tls.lock().expect("clients lock").get(tls) {
            return Ok(client.clone());
        }
        let client = build(&self.config, &self.egress, Some(tls))
            .map_err(|e| UpstreamError::new(UpstreamErrorKind::Other, format!("tls ({}): {e}", tls.files)))?;
        self.with_tls.lock().expect("clients lock").insert(tls.clone(), client.clone());
        Ok(client)
    }
}

/// A client configured by `config`, trusting `tls`'s roots besides the
/// system's and presenting its certificate when asked.
fn build(
    config: &UpstreamConfig,
    egress: &Arc<Egress>,
    tls: Option<&UpstreamTls>,
) -> Result<ClientWithMiddleware, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout)
        // Redirects are followed by `UpstreamFetch::send`, hop by hop
        // through the egress gate, each with the client its origin gets.
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(Resolver(egress.clone())))
        .user_agent(concat!("artifactapi/", env!("CARGO_PKG_VERSION")));
    if let Some(tls) = tls {
        if let Some(pem) = &tls.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the CA file holds no usable certificate: {}", chain(&e)))?;
            if roots.is_empty() {
                return Err("the CA file holds no certificate".into());
            }
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        if let Some(pem) = &tls.identity_pem {
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|e| format!("the client certificate or key cannot be read: {}", chain(&e)))?;
            builder = builder.identity(identity);
        }
    }
    let client = builder.build().map_err(|e| {
        let e = chain(&e);
        if e.contains("KeyMismatch") {
            format!("the client_key does not match the client_cert ({e})")
        } else {
            e
        }
    })?;
    Ok(ClientBuilder::new(client).with(RetryConnect { retries: config.connect_retries }).build())
}

/// Whether a client can be built with `tls`: its certificates parse and its
/// key matches its certificate. The error says what is wrong.
pub fn check_tls(tls: &UpstreamTls) -> Result<(), String> {
    let config = UpstreamConfig::default();
    let egress = Egress::new(config.private_networks.clone(), Vec::new());
    build(&config, &egress, Some(tls)).map(|_| ())
}

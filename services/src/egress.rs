//! Where upstream requests may go: the no-open-proxy rules below the URL
//! checks.
//!
//! A request for a remote starts at its `base_url` (see
//! [`crate::upstream::upstream_url`]), but other URLs are fetched for it too:
//! a redirect, a registry's token realm, a checksum database, a URL that an
//! upstream document names (Cargo's `dl`, a Terraform provider's
//! `download_url`). Every one of them passes [`Egress::check`] before a byte
//! is sent: http or https only, and never into a private network — loopback,
//! RFC 1918, link-local (where cloud metadata answers), shared address space,
//! unique-local IPv6 — unless the remote's own `base_url` is in one (a mirror
//! inside the network may send clients to a blob store beside it). The
//! networks are `UPSTREAM_PRIVATE_NETWORKS`, [`PrivateNetworks::default`]
//! otherwise.
//!
//! The check is made twice: on the address written in the URL (IP literals
//! never reach a resolver), and on the addresses a host name resolves to,
//! when the connection is made (so a public name that resolves inside is
//! refused too). The resolver learns which remote a connection is for from a
//! task-local set around each upstream request ([`Egress::scope`]).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use ipnet::IpNet;
use url::{Host, Url};

/// A list of IP networks (CIDR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateNetworks(Vec<IpNet>);

impl Default for PrivateNetworks {
    /// Loopback, RFC 1918, link-local, shared address space (100.64/10),
    /// "this network", broadcast; IPv6 loopback, unspecified, unique-local
    /// and link-local. IPv4-mapped IPv6 addresses count as their IPv4 address.
    fn default() -> Self {
        Self::parse(
            "127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,100.64.0.0/10,\
             0.0.0.0/8,255.255.255.255/32,::1/128,::/128,fc00::/7,fe80::/10",
        )
        .expect("the default networks parse")
    }
}

impl PrivateNetworks {
    /// Parses comma-separated `address/prefix` networks (a bare address is
    /// one host). An empty list is an error: it would turn the rule off
    /// without saying so.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.split_once('/') {
                Some((addr, _)) => {
                    addr.parse::<IpAddr>().map_err(|_| format!("{item:?} is not address/prefix"))?;
                    item.parse::<IpNet>().map_err(|_| format!("{item:?}: bad prefix"))?
                }
                None => IpNet::from(
                    item.parse::<IpAddr>().map_err(|_| format!("{item:?} is not address/prefix"))?,
                ),
            };
            out.push(net);
        }
        if out.is_empty() {
            return Err("no network given".into());
        }
        Ok(Self(out))
    }

    /// Whether `ip` lies in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// How many resolved names are remembered.
const MAX_SEEN: usize = 10_000;

tokio::task_local! {
    /// The `base_url` of the remote the current upstream request is for.
    static ORIGIN: Url;
}

/// The egress rules of one upstream client, and what its resolver has learnt.
#[derive(Debug)]
pub struct Egress {
    networks: PrivateNetworks,
    pinned: Vec<(String, Vec<SocketAddr>)>,
    /// Host names resolved so far, and whether they resolved inside.
    seen: Mutex<HashMap<String, bool>>,
    /// The outbound proxies' hosts (`HTTPS_PROXY`, ...), inside or not.
    proxies: Vec<String>,
}

impl Egress {
    /// Rules for `networks`, with `pinned` names (`UPSTREAM_RESOLVE`).
    pub fn new(networks: PrivateNetworks, pinned: Vec<(String, Vec<SocketAddr>)>) -> Arc<Self> {
        let proxies = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .filter_map(|v| {
                let v = if v.contains("://") { v } else { format!("http://{v}") };
                Url::parse(&v).ok()?.host_str().map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            })
            .collect();
        Arc::new(Self { networks, pinned, seen: Mutex::new(HashMap::new()), proxies })
    }

    /// Runs `fut` (an upstream request) as one for the remote at `origin`.
    pub async fn scope<F: std::future::Future>(origin: Url, fut: F) -> F::Output {
        ORIGIN.scope(origin, fut).await
    }

    /// Whether `url`'s host is inside: by its address when it is one, by what
    /// it resolved (or is pinned) to when it is a name. A name not resolved
    /// here yet counts as outside; its addresses are checked when the
    /// connection is made.
    pub fn is_private(&self, url: &Url) -> bool {
        match url.host() {
            Some(Host::Ipv4(ip)) => self.networks.contains(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.networks.contains(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    return true;
                }
                if let Some((_, addrs)) = self.pinned.iter().find(|(h, _)| *h == name) {
                    return addrs.iter().any(|a| self.networks.contains(a.ip()));
                }
                self.seen.lock().expect("egress lock").get(&name).copied().unwrap_or(false)
            }
            None => false,
        }
    }

    /// Whether a request for the remote at `origin` may go to `target`.
    pub fn allows(&self, origin: &Url, target: &Url) -> bool {
        !self.is_private(target) || self.is_private(origin)
    }

    /// The one gate every URL passes before a byte is sent to it, whatever
    /// named it (a remote's configuration, a redirect, a document upstream
    /// sent, a token challenge): the scheme, then the address, IP literals
    /// included, for a request of the remote at `origin`. The error names
    /// the rule that refused it. (A name is judged again on the addresses
    /// it resolves to, when the connection is made.)
    pub fn check(&self, origin: &Url, target: &Url) -> Result<(), String> {
        if !matches!(target.scheme(), "http" | "https") {
            return Err(format!("{}: only http and https are fetched", target.scheme()));
        }
        let Some(host) = target.host_str() else {
            return Err("a URL without a host".into());
        };
        if !self.allows(origin, target) {
            return Err(format!(
                "into a private network refused: {host} is in UPSTREAM_PRIVATE_NETWORKS and the remote is outside"
            ));
        }
        Ok(())
    }

    /// Resolves `name` (pinned, or by the system) and applies the rule to the
    /// addresses found.
    async fn resolve(self: Arc<Self>, name: String, origin: Option<Url>) -> Result<Vec<SocketAddr>, String> {
        let addrs = match self.pinned.iter().find(|(h, _)| *h == name) {
            Some((_, addrs)) if addrs.is_empty() => {
                return Err(format!("{name} does not resolve (UPSTREAM_RESOLVE)"))
            }
            Some((_, addrs)) => addrs.clone(),
            None => tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map_err(|e| format!("{name} does not resolve: {e}"))?
                .collect(),
        };
        let inside = addrs.iter().any(|a| self.networks.contains(a.ip()));
        {
            let mut seen = self.seen.lock().expect("egress lock");
            if seen.len() >= MAX_SEEN && !seen.contains_key(&name) {
                // Bounded: names found outside are forgotten (they are judged
                // again when they connect); names found inside are kept, so a
                // pooled connection to one is still refused.
                seen.retain(|_, inside| *inside);
            }
            seen.insert(name.clone(), inside);
        }
        if let Some(origin) = origin {
            let own = origin.host_str().is_some_and(|h| h.trim_end_matches('.').eq_ignore_ascii_case(&name))
                || self.proxies.contains(&name);
            if inside && !own && !self.is_private(&origin) {
                return Err(format!(
                    "{name} resolves to a private address; a remote outside may not send requests there"
                ));
            }
        }
        Ok(addrs)
    }
}

/// The upstream client's resolver: [`Egress`] applied to every connection.
#[derive(Debug, Clone)]
pub(crate) struct Resolver(pub(crate) Arc<Egress>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        // Called while the request's task polls the connection; a connection
        // finished in the background after the request moved on has no
        // origin, and is only remembered (its name is checked on use).
        let origin = ORIGIN.try_with(Url::clone).ok();
        let egress = self.0.clone();
        Box::pin(async move {
            let addrs = egress.resolve(name, origin).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_networks_cover_loopback_private_link_local_and_metadata() {
        let nets = PrivateNetworks::default();
        for ip in [
            "127.0.0.1",
            "127.3.2.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(nets.contains(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "192.169.0.1", "2001:db8::1", "::ffff:1.1.1.1"] {
            assert!(!nets.contains(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn networks_parse_or_say_why_not() {
        let nets = PrivateNetworks::parse("127.0.0.2, 10.0.0.0/8").unwrap();
        assert!(nets.contains("127.0.0.2".parse().unwrap()));
        assert!(!nets.contains("127.0.0.1".parse().unwrap()));
        assert!(PrivateNetworks::parse("0.0.0.0/0").unwrap().contains("1.2.3.4".parse().unwrap()));
        for bad in ["", " , ", "10.0.0.0/33", "fc00::/129", "example.com/8", "10.0.0.0/x", "10.0.0.0/"] {
            assert!(PrivateNetworks::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_network_written_with_host_bits_covers_its_whole_prefix() {
        let nets = PrivateNetworks::parse("10.1.2.3/8,fd12::1/16,2001:db8::7").unwrap();
        assert!(nets.contains("10.200.0.1".parse().unwrap()));
        assert!(nets.contains("fd12:ffff::1".parse().unwrap()));
        assert!(!nets.contains("fd13::1".parse().unwrap()));
        assert!(nets.contains("2001:db8::7".parse().unwrap()));
        assert!(!nets.contains("2001:db8::8".parse().unwrap()));
        assert!(!nets.contains("11.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        let pinned = vec![
            ("inside.example.test".to_owned(), vec!["10.0.0.7:80".parse().unwrap()]),
            ("cdn.example.test".to_owned(), vec!["8.8.8.8:80".parse().unwrap()]),
            ("gone.example.test".to_owned(), vec![]),
        ];
        let egress = Egress::new(PrivateNetworks::default(), pinned);
        let public: Url = "https://registry.example.test/".parse().unwrap();
        let private: Url = "http://10.0.0.1:5000/".parse().unwrap();
        let inside: Url = "http://inside.example.test/x".parse().unwrap();
        let cdn: Url = "https://cdn.example.test/x".parse().unwrap();
        let metadata: Url = "http://169.254.169.254/latest/".parse().unwrap();
        assert!(!egress.allows(&public, &inside));
        assert!(!egress.allows(&public, &metadata));
        assert!(!egress.allows(&public, &"http://localhost:8080/".parse().unwrap()));
        assert!(egress.allows(&public, &cdn));
        assert!(egress.allows(&private, &inside));
        assert!(egress.allows(&private, &metadata));

        let e = egress.clone().resolve("inside.example.test".into(), Some(public.clone())).await;
        assert!(e.unwrap_err().contains("private address"));
        assert!(egress.clone().resolve("inside.example.test".into(), Some(private)).await.is_ok());
        assert!(egress.clone().resolve("cdn.example.test".into(), Some(public.clone())).await.is_ok());
        assert!(egress
            .clone()
            .resolve("gone.example.test".into(), None)
            .await
            .unwrap_err()
            .contains("UPSTREAM_RESOLVE"));
        // A name learnt to resolve inside is refused on use even over a
        // connection that is already open.
        egress.clone().resolve("localhost".into(), None).await.unwrap();
        assert!(!egress.allows(&public, &"http://localhost./".parse().unwrap()));
    }
}

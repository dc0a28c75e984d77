//! The upstream client honours HTTP(S)_PROXY and NO_PROXY. In its own test
//! binary, since it sets the process environment.

use crate::support::{client, Proxy, Upstream};

#[tokio::test]
async fn upstream_requests_go_through_the_configured_proxy_unless_excluded() {
    let forward_proxy = Upstream::start().await;
    let direct = Upstream::start().await;
    forward_proxy.put("/via/proxy.tgz", "through the proxy", &[]);
    direct.put("/direct.tgz", "direct", &[]);
    // Set before the proxy builds its client, which reads them once.
    std::env::set_var("HTTP_PROXY", forward_proxy.url());
    std::env::set_var("NO_PROXY", "127.0.0.1");
    let config = format!(
        "remotes:\n  far:\n    base_url: \"http://artifacts-upstream.test\"\n  near:\n    base_url: \"{}\"\n",
        direct.url()
    );
    let proxy = Proxy::start(&config, "").await;

    let res = client().get(proxy.url("/api/far/via/proxy.tgz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), "through the proxy");
    let seen = forward_proxy.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["host"], "artifacts-upstream.test");

    let res = client().get(proxy.url("/api/near/direct.tgz")).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap(), "direct");
    assert_eq!(direct.total(), 1, "NO_PROXY hosts are reached directly");
    assert_eq!(forward_proxy.total(), 1);
}

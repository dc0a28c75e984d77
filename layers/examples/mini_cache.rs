//! A small axum app that reuses the layers on its own routes: a read-through
//! cache in memory in front of a toy "upstream" that makes up file contents.
//!
//! ```text
//! cargo run -p artifactapi-layers --example mini_cache
//! curl -i localhost:3000/files/demo/hello.txt   # MISS, then HIT
//! curl -i localhost:3000/files/demo/secret.key  # 403: not allowed by the pattern
//! ```

use std::sync::Arc;

use artifactapi_layers::{
    body, rescue::RescueLayer, store::Store, ArtifactBody, ArtifactPath, BoxError, CacheLookupLayer,
    Classifier, Package, Pattern, PatternGuardLayer, Remote, RemoteResolveLayer, Remotes, S3TeeLayer,
};
use axum::{body::Body, http::Request, http::Response, Router};
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// A stand-in for an upstream that writes the path back.
async fn fake_upstream(req: Request<Body>) -> Result<Response<ArtifactBody>, BoxError> {
    let path = req.extensions().get::<ArtifactPath>().unwrap().decoded().to_owned();
    println!("upstream fetch: {path}");
    Ok(Response::new(body::full(format!("contents of {path}\n"))))
}

#[tokio::main]
async fn main() {
    // One remote, "demo", that allows only .txt files.
    let mut demo = Remote::proxy("demo", "http://upstream.invalid".parse().unwrap());
    demo.classifier = Classifier::new(Some(vec![Pattern::new(r"\.txt$").unwrap()]), vec![], Package::GENERIC);
    let remotes = Arc::new(Remotes::new([demo]));

    // The innermost service is anything that answers a response.
    let upstream = service_fn(fake_upstream);

    let store = Store::memory();
    let spool = std::env::temp_dir().join("mini-cache-spool");
    let cached = ServiceBuilder::new()
        // Every error below becomes its answer here, once (404, 403, 502...).
        .layer(RescueLayer::new())
        .layer(RemoteResolveLayer::new(remotes))
        .layer(PatternGuardLayer::new())
        .layer(CacheLookupLayer::new(store.clone()))
        .layer(S3TeeLayer::new(store, spool))
        .service(upstream)
        // axum wants its own body type.
        .map_response(|response| response.map(Body::new));

    let app = Router::new().nest_service("/files", cached);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
    println!("listening on http://127.0.0.1:3000/files/demo/hello.txt");
    axum::serve(listener, app).await.unwrap();
}

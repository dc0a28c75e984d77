//! Traces reach an OTLP receiver: a small collector in the test that takes
//! OTLP/HTTP (JSON) exports, as an OpenTelemetry Collector would on 4318.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::support::{client, Binary, Upstream};
use axum::{body::Bytes, extract::State, routing::post, Router};
use serde_json::Value;

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Value>>>);

/// One exported span: its name, trace, parent and attributes.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    attributes: Vec<(String, String)>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl Received {
    fn spans(&self) -> Vec<Span> {
        let mut out = Vec::new();
        for export in self.0.lock().unwrap().iter() {
            for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        let attributes = span["attributes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|a| {
                                let v = &a["value"];
                                let text = v["stringValue"]
                                    .as_str()
                                    .map(str::to_owned)
                                    .or_else(|| v["intValue"].as_str().map(str::to_owned))
                                    .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
                                    .or_else(|| v["boolValue"].as_bool().map(|b| b.to_string()))
                                    .or_else(|| v["doubleValue"].as_f64().map(|d| d.to_string()))
                                    .unwrap_or_default();
                                (a["key"].as_str().unwrap_or_default().to_owned(), text)
                            })
                            .collect();
                        let text = |k: &str| span[k].as_str().unwrap_or_default().to_owned();
                        out.push(Span {
                            name: text("name"),
                            trace: text("traceId"),
                            id: text("spanId"),
                            parent: text("parentSpanId"),
                            attributes,
                        });
                    }
                }
            }
        }
        out
    }

    fn service_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for export in self.0.lock().unwrap().iter() {
            for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                for a in resource["resource"]["attributes"].as_array().into_iter().flatten() {
                    if a["key"] == "service.name" {
                        out.push(a["value"]["stringValue"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
        }
        out
    }
}

async fn collector() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(r): State<Received>, body: Bytes| async move {
                let json: Value = serde_json::from_slice(&body).expect("OTLP/JSON");
                r.0.lock().unwrap().push(json);
                ([("content-type", "application/json")], "{}")
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_miss_and_a_hit_reach_an_otlp_receiver() {
    let upstream = Upstream::start().await;
    upstream.put("/tools/t.tgz", vec![1u8; 3000], &[]);
    let (endpoint, received) = collector().await;
    let env: Vec<(String, String)> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let proxy = Binary::start("remotes:\n  files:\n    base_url: \"{upstream}\"\n", &upstream.url(), &env);
    for expected in ["MISS", "HIT"] {
        let res = client().get(proxy.url("/api/files/tools/t.tgz")).send().await.unwrap();
        assert_eq!(res.headers()["x-cache-status"], expected);
        assert_eq!(res.bytes().await.unwrap().len(), 3000);
    }

    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = received.spans();
        let artifacts = spans.iter().filter(|s| s.name == "artifact" && s.attr("bytes").is_some()).count();
        if artifacts >= 2 && spans.iter().any(|s| s.name == "upstream") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let artifact = |cache: &str| {
        spans
            .iter()
            .find(|s| s.name == "artifact" && s.attr("cache") == Some(cache))
            .unwrap_or_else(|| panic!("no artifact span for a {cache}: {spans:#?}"))
            .clone()
    };
    let miss = artifact("miss");
    let hit = artifact("hit");
    for span in [&miss, &hit] {
        assert_eq!(span.attr("remote"), Some("files"));
        assert_eq!(span.attr("class"), Some("immutable"));
        assert_eq!(span.attr("status"), Some("200"));
        assert_eq!(span.attr("bytes"), Some("3000"));
    }
    // The miss fetched: a fill below it, and the upstream request below that.
    let fill = spans
        .iter()
        .find(|s| s.name == "fill" && s.trace == miss.trace)
        .unwrap_or_else(|| panic!("the miss's fill: {spans:#?}"));
    assert_eq!(fill.parent, miss.id);
    assert_eq!(fill.attr("outcome"), Some("stored"));
    assert_eq!(fill.attr("bytes"), Some("3000"));
    let up = spans
        .iter()
        .find(|s| s.name == "upstream" && s.trace == miss.trace)
        .expect("the miss's upstream request");
    assert_eq!(up.parent, fill.id);
    assert_eq!(up.attr("remote"), Some("files"));
    assert_eq!(up.attr("status"), Some("200"));
    assert!(up.attr("latency_ms").is_some());
    // The hit asked nobody.
    assert!(spans.iter().all(|s| s.trace != hit.trace || s.name == "artifact"), "{spans:#?}");
    assert!(received.service_names().iter().all(|n| n == "artifactapi"));
}

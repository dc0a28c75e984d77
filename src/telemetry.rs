//! Logs and traces.
//!
//! Logs go to standard output, plain (colours only on a terminal) or JSON
//! with `LOG_FORMAT=json`, filtered by `RUST_LOG` (default `info`). When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, spans are also exported over OTLP/HTTP — protobuf, or JSON with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/json` — in batches; the SDK reads the
//! other standard variables (`OTEL_SERVICE_NAME`, default `artifactapi`;
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`).
//!
//! The spans: `artifact` (one a request: remote, class, cache result,
//! status, bytes sent, whether it joined a fill in flight), `fill` (one
//! upstream fetch into the store: remote, path, bytes, outcome; a child of
//! the request that started it) and `upstream` (one request upstream:
//! remote, outcome, status, latency).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
use tracing_subscriber::{filter, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// What must be flushed before the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sets up logging, and trace export when an OTLP endpoint is configured.
    /// Call outside the async runtime (the exporter has its own thread).
    pub fn init() -> Self {
        let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        // Colours only for a person at a terminal, never into log collectors.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
        let logs = if json {
            tracing_subscriber::fmt::layer().json().boxed()
        } else {
            tracing_subscriber::fmt::layer().with_ansi(ansi).boxed()
        };
        let (provider, problem) = match exporter() {
            Ok(provider) => (provider, None),
            Err(e) => (None, Some(e)),
        };
        match &provider {
            Some(p) => {
                let traces = tracing_opentelemetry::layer().with_tracer(p.tracer("artifactapi"));
                tracing_subscriber::registry()
                    .with(logs.with_filter(filter()))
                    .with(traces.with_filter(filter()))
                    .init();
            }
            // No exporter: log lines are events, each with the fields it needs
            // (remote, path), and no span is made at all. Filtered for the
            // whole subscriber, not per layer: making and formatting a span
            // per request cost a hit a few per cent.
            None => tracing_subscriber::registry()
                .with(logs)
                .with(filter())
                .with(filter::filter_fn(|meta| meta.is_event()))
                .init(),
        }
        if let Some(e) = problem {
            tracing::error!("traces are not exported: {e}");
        } else if provider.is_some() {
            tracing::info!("exporting traces over OTLP");
        }
        Self { provider }
    }

    /// Flushes the spans not yet exported. Call outside the async runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("artifactapi: flushing traces failed: {e}");
            }
        }
    }
}

fn set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn exporter() -> Result<Option<SdkTracerProvider>, String> {
    if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
        return Ok(None);
    }
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
    let protocol = match protocol.as_deref() {
        None | Some("http/protobuf") => Protocol::HttpBinary,
        Some("http/json") => Protocol::HttpJson,
        Some(other) => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL {other:?} is not supported: use http/protobuf (port 4318) or http/json"
            ))
        }
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let mut resource = Resource::builder();
    if set("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("artifactapi");
    }
    let provider =
        SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    Ok(Some(provider))
}

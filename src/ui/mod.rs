//! The operator's page at `/ui/`: server-rendered HTML, a little inline CSS
//! and one small inline script (the purge button). No build step and no
//! asset from another host.
//!
//! - `/ui/`: every remote with its package type, entries and bytes, hit
//!   ratio, bytes served from the cache against bytes fetched upstream
//!   (since start and over the last hour), upstream errors, stale answers.
//! - `/ui/remotes/{remote}?prefix=&after=`: its entries, by path, a page at a
//!   time, with size, class, cached and expiry times, times served and when.
//! - `/ui/entries/{remote}/{path}`: an entry's variants with their stored
//!   headers, blob and digest, and a purge button. The script asks for the
//!   admin token when one is set, sends `DELETE /cache/{remote}/{path}` with
//!   it as a bearer token and keeps it nowhere.
//!
//! Pages only read; writing needs the token, as everywhere.

mod html;

use artifactapi_layers::{store::now_ms, RemoteKind};
use axum::{
    extract::{Path, Query, State as Shared},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use std::fmt::Write;

use crate::{manage::State, metrics::tally::Totals};
use html::{ago, bytes, escape, page, query_value, url_path};

/// Entries on one page of a remote.
const PAGE: usize = 50;

fn answer(status: StatusCode, title: &str, body: &str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        // Only this page's own inline style and script; nothing from elsewhere.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; form-action 'self'",
        ),
    ];
    (status, headers, page(title, body)).into_response()
}

fn ratio(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.0} %", part as f64 * 100.0 / whole as f64)
    }
}

/// `GET /ui/`: every remote at a glance.
pub(crate) async fn overview(Shared(state): Shared<State>) -> Response {
    let remotes = state.remotes.load();
    let usage = state.store.index.usage().await;
    let now = state.metrics.tally.now();
    let hour = state.metrics.tally.hour_ago();
    let mut body = String::new();
    if let Err(e) = &usage {
        let _ = write!(body, "<p class=\"note\">The index does not answer: {}</p>", escape(&e.to_string()));
    }
    let usage = usage.unwrap_or_default();
    let window = match &hour {
        Some((age, _)) if age.as_secs() >= 60 => format!("last {} min", age.as_secs() / 60),
        _ => "last hour".into(),
    };
    let _ = write!(
        body,
        "<table id=\"remotes\"><thead><tr><th>remote</th><th>package</th><th>type</th><th class=\"n\">entries</th>\
         <th class=\"n\">size</th><th class=\"n\">hit ratio</th><th class=\"n\">from cache / from upstream<br>since start</th>\
         <th class=\"n\">from cache / from upstream<br>{window}</th><th class=\"n\">upstream errors</th>\
         <th class=\"n\">stale answers</th></tr></thead><tbody>"
    );
    let zero: Totals = [0; 7];
    for remote in remotes.iter() {
        let name = &remote.name;
        let kind = match &remote.kind {
            RemoteKind::Remote { .. } => "remote",
            RemoteKind::Local => "local",
            RemoteKind::Group(_) => "group",
        };
        let used = usage.iter().find(|u| &u.remote == name);
        let t = now.get(name.as_str()).unwrap_or(&zero);
        let before = hour.as_ref().and_then(|(_, h)| h.get(name.as_str())).unwrap_or(&zero);
        let since = |i: usize| t[i].saturating_sub(before[i]);
        let _ = write!(
            body,
            "<tr><td><a href=\"/ui/remotes/{link}\">{name}</a></td><td>{package}</td><td>{kind}</td>\
             <td class=\"n\">{entries}</td><td class=\"n\">{size}</td><td class=\"n\">{hits}</td>\
             <td class=\"n\">{cache} / {upstream}</td><td class=\"n\">{cache_h} / {upstream_h}</td>\
             <td class=\"n\">{errors}</td><td class=\"n\">{stale}</td></tr>",
            link = query_value(name),
            name = escape(name),
            package = escape(remote.package.as_str()),
            entries = used.map_or(0, |u| u.entries),
            size = bytes(used.map_or(0, |u| u.bytes)),
            hits = ratio(t[1], t[1] + t[2]),
            cache = bytes(t[5]),
            upstream = bytes(t[6]),
            cache_h = bytes(since(5)),
            upstream_h = bytes(since(6)),
            errors = t[4],
            stale = t[3],
        );
    }
    body.push_str("</tbody></table><p class=\"muted\">Counts are this replica's since it started.</p>");
    answer(StatusCode::OK, "remotes", &body)
}

#[derive(Deserialize)]
pub(crate) struct RemoteQuery {
    prefix: Option<String>,
    after: Option<String>,
}

/// `GET /ui/remotes/{remote}`: a page of its entries.
pub(crate) async fn remote(
    Shared(state): Shared<State>,
    Path(name): Path<String>,
    Query(query): Query<RemoteQuery>,
) -> Response {
    if state.remotes.load().get(&name).is_none() {
        return answer(StatusCode::NOT_FOUND, "unknown remote", "<p>No remote of that name.</p>");
    }
    let prefix = query.prefix.unwrap_or_default();
    let listed = crate::listing::page(&state.store, &name, Some(&prefix), query.after.as_deref(), PAGE).await;
    let mut body = format!(
        "<form method=\"get\"><input type=\"search\" name=\"prefix\" placeholder=\"path prefix\" value=\"{}\"> \
         <button type=\"submit\">search</button></form>",
        escape(&prefix)
    );
    let page = match listed {
        Ok(page) => page,
        Err(e) => {
            let _ =
                write!(body, "<p class=\"note\">The index does not answer: {}</p>", escape(&e.to_string()));
            return answer(StatusCode::SERVICE_UNAVAILABLE, &name, &body);
        }
    };
    let now = now_ms();
    body.push_str(
        "<table id=\"entries\"><thead><tr><th>path</th><th class=\"n\">size</th><th>class</th><th>cached</th>\
         <th>expires</th><th class=\"n\">served</th><th>last served</th></tr></thead><tbody>",
    );
    for item in &page.items {
        let e = &item.entry;
        let _ = write!(
            body,
            "<tr><td class=\"path\"><a href=\"/ui/entries/{remote}/{link}\">{path}</a></td><td class=\"n\">{size}</td>\
             <td>{class}</td><td>{cached}</td><td>{expires}</td><td class=\"n\">{served}</td><td>{last}</td></tr>",
            remote = query_value(&name),
            link = url_path(&e.path),
            path = escape(&e.path),
            size = bytes(e.size),
            class = e.class.as_str(),
            cached = ago(e.cached_at_ms, now),
            expires = e.expires_at_ms.map_or_else(|| "never".into(), |at| ago(at, now)),
            served = item.served.map_or(0, |(n, _)| n),
            last = item.served.map_or_else(|| "–".into(), |(_, at)| ago(at, now)),
        );
    }
    body.push_str("</tbody></table>");
    if page.items.is_empty() {
        body.push_str("<p class=\"muted\">No entries.</p>");
    }
    if let Some(next) = page.next {
        let _ = write!(
            body,
            "<p><a id=\"next\" href=\"/ui/remotes/{}?prefix={}&amp;after={}\">next page</a></p>",
            query_value(&name),
            query_value(&prefix),
            query_value(&next)
        );
    }
    answer(StatusCode::OK, &name, &body)
}

/// `GET /ui/entries/{remote}/{path}`: an entry, each variant, and a purge button.
pub(crate) async fn entry(
    Shared(state): Shared<State>,
    Path((name, path)): Path<(String, String)>,
) -> Response {
    let path = path.trim_start_matches('/').to_owned();
    let found = state.store.index.find_path(&name, &path).await;
    let title = format!("{name}/{path}");
    let entries = match found {
        Ok(entries) if !entries.is_empty() => entries,
        Ok(_) => return answer(StatusCode::NOT_FOUND, &title, "<p>Not cached.</p>"),
        Err(e) => {
            let text = format!("<p class=\"note\">The index does not answer: {}</p>", escape(&e.to_string()));
            return answer(StatusCode::SERVICE_UNAVAILABLE, &title, &text);
        }
    };
    let keys: Vec<String> = entries.iter().map(|e| e.key.clone()).collect();
    let served = state.store.index.served(&keys).await.unwrap_or_default();
    let now = now_ms();
    let mut body = format!(
        "<p><a href=\"/ui/remotes/{}\">{}</a> / <span class=\"path\" id=\"path\">{}</span></p>",
        query_value(&name),
        escape(&name),
        escape(&path)
    );
    for e in &entries {
        let digest = e.blob.strip_prefix("cas/").map(|d| d.replacen('/', ":", 1));
        let (count, last) = served.get(&e.key).map_or((0, None), |(n, at)| (*n, Some(*at)));
        // `{remote}␟{path}` and, for a variant, `␟{what it varies by}`.
        let variant = e.key.split(artifactapi_layers::path::KEY_SEPARATOR).nth(2).unwrap_or("");
        let _ = write!(
            body,
            "<h2>{variant}</h2><table class=\"entry\"><tbody>\
             <tr><th>size</th><td>{size} ({raw} bytes)</td></tr><tr><th>class</th><td>{class}</td></tr>\
             <tr><th>cached</th><td>{cached}</td></tr><tr><th>expires</th><td>{expires}</td></tr>\
             <tr><th>served</th><td>{count} times, last {last}</td></tr>\
             <tr><th>blob</th><td><code>{blob}</code></td></tr><tr><th>digest</th><td><code>{digest}</code></td></tr>",
            variant = if variant.is_empty() { "entry".into() } else { format!("variant {}", escape(variant)) },
            size = bytes(e.size),
            raw = e.size,
            class = e.class.as_str(),
            cached = ago(e.cached_at_ms, now),
            expires = e.expires_at_ms.map_or_else(|| "never".into(), |at| ago(at, now)),
            last = last.map_or_else(|| "never".into(), |at| ago(at, now)),
            blob = escape(&e.blob),
            digest = escape(digest.as_deref().unwrap_or("–")),
        );
        for (name, value) in &e.headers {
            let _ = write!(body, "<tr><th>{}</th><td><code>{}</code></td></tr>", escape(name), escape(value));
        }
        body.push_str("</tbody></table>");
    }
    let _ = write!(
        body,
        "<p><button class=\"danger\" id=\"purge\" data-remote=\"{remote}\" data-path=\"{path}\" data-token=\"{token}\">\
         purge</button> <span id=\"purged\"></span></p><script>{PURGE}</script>",
        remote = escape(&name),
        path = escape(&path),
        token = if state.admin_required { "yes" } else { "no" },
    );
    answer(StatusCode::OK, &title, &body)
}

/// The purge button: asks for the token when one is needed, sends the
/// `DELETE`, says what happened. The token lives in a local variable only.
const PURGE: &str = r#"
document.getElementById('purge').addEventListener('click', async (event) => {
  const b = event.target, out = document.getElementById('purged');
  const headers = {};
  if (b.dataset.token === 'yes') {
    const token = window.prompt('Admin token');
    if (!token) return;
    headers['Authorization'] = 'Bearer ' + token;
  }
  const path = b.dataset.path.split('/').map(encodeURIComponent).join('/');
  const res = await fetch('/cache/' + encodeURIComponent(b.dataset.remote) + '/' + path, { method: 'DELETE', headers });
  out.textContent = res.ok ? 'purged' : 'not purged: ' + res.status + ' ' + (await res.text());
  if (res.ok) b.disabled = true;
});
"#;

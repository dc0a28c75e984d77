//! The audit trail of policy decisions: one JSON line per request and rule
//! that changed or would have changed an answer (hidden versions of one
//! document in one line), to `AUDIT_LOG` or, by default, as a tracing
//! event with `audit=true`; and the counts by remote, rule and action.

use std::{collections::BTreeMap, fs::File, io::Write, path::Path, sync::Mutex};

use serde::Serialize;

/// One decision.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// RFC 3339.
    pub time: String,
    /// The remote or group.
    pub remote: String,
    /// The package.
    pub package: String,
    /// The versions concerned.
    pub versions: Vec<String>,
    /// `min_release_age`, `deny`, or an OSV record's id.
    pub rule: String,
    /// `hidden`, `refused`, `allowed`, `would-hide` or `would-refuse`.
    pub action: &'static str,
    /// The client's address, as far as it is known.
    pub client: String,
}

/// Where audit lines go.
#[derive(Debug, Default)]
pub struct Audit {
    file: Option<Mutex<File>>,
}

impl Audit {
    /// Lines appended to `path`, or (`None`) written as tracing events.
    pub fn new(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(path) => Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)),
            None => None,
        };
        Ok(Self { file })
    }

    /// Writes `event`.
    pub fn write(&self, event: &AuditEvent) {
        let line = serde_json::to_string(event).unwrap_or_default();
        match &self.file {
            Some(file) => {
                let mut file = file.lock().expect("audit lock");
                if let Err(e) = writeln!(file, "{line}") {
                    tracing::warn!(error = %e, "cannot write the audit log");
                }
            }
            None => tracing::info!(audit = true, event = %line, "policy decision"),
        }
    }
}

/// Decisions counted by remote, rule and action.
#[derive(Debug, Default)]
pub struct PolicyStats(Mutex<BTreeMap<(String, String, &'static str), u64>>);

impl PolicyStats {
    /// Counts one decision.
    pub fn count(&self, remote: &str, rule: &str, action: &'static str) {
        *self
            .0
            .lock()
            .expect("stats lock")
            .entry((remote.to_owned(), rule.to_owned(), action))
            .or_default() += 1;
    }

    /// Every count so far.
    pub fn snapshot(&self) -> Vec<((String, String, &'static str), u64)> {
        self.0.lock().expect("stats lock").iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

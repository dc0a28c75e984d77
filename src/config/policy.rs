//! A remote's or a group's `policy:` block compiled: the cooldown, its
//! exceptions, the blocklist (entries and OSV records) and the mode.

use std::{path::Path, sync::Arc, time::Duration};

use artifactapi_layers::{
    format::{Format, Formats, ServedAt},
    policy::{osv, Denial, Mode, Policy, Range, Subject, Unclassified, Versions},
    Package,
};

use super::{file::PolicyConfig, remote::Ctx};

impl Ctx<'_> {
    /// The policy, if the remote has one. Reading `deny_file` happens here,
    /// so a reload reads it again.
    pub(super) fn policy(&mut self, written: Option<&PolicyConfig>, package: Package) -> Option<Arc<Policy>> {
        let written = written?;
        let format: &dyn Format = package.format();
        let spec = format.spec();
        if spec.served_at == ServedAt::Registry {
            self.problem(
                "policy",
                "registry remotes take no policy yet: their clients ask by tag and digest",
            );
        } else if !spec.names_files {
            self.problem(
                "policy",
                format!(
                    "`{}` files name no package version, so a policy could judge none of them \
                     (give the remote a package format that names them)",
                    package.as_str()
                ),
            );
        }
        let normalize = |name: &str| spec.normalize(name);
        let min_release_age = written.min_release_age.as_deref().and_then(|text| match duration(text) {
            Some(age) => Some(age),
            None => {
                self.problem(
                    "policy.min_release_age",
                    format!("{text:?} is not a duration such as 7d, 36h, 90m"),
                );
                None
            }
        });
        let gives_times = |f: &dyn Format| f.versions().is_some_and(|v| v.publish_times());
        if min_release_age.is_some() && !gives_times(format) {
            let formats = Formats::builtin();
            let those: Vec<_> = formats
                .names()
                .into_iter()
                .filter(|n| formats.get(n).is_some_and(|p| gives_times(p.format())))
                .collect();
            self.problem(
                "policy.min_release_age",
                format!("`{}` metadata gives no publish times ({} do)", package.as_str(), those.join(", ")),
            );
        }
        let allow = written
            .allow
            .iter()
            .flatten()
            .map(|entry| {
                let mut subject = Subject::parse(entry);
                subject.name = normalize(&subject.name);
                subject
            })
            .collect();
        let mut deny = Vec::new();
        for (i, entry) in written.deny.iter().flatten().enumerate() {
            let subject = Subject::parse(entry);
            let versions = match subject.version {
                None => Versions::All,
                Some(v) if v.contains(['<', '>', '=', '!', '|', ',', ' ']) => match Range::parse(&v) {
                    Ok(range) => Versions::Ranges(vec![range]),
                    Err(e) => {
                        self.problem(&format!("policy.deny[{i}]"), e);
                        continue;
                    }
                },
                Some(v) => Versions::Listed(vec![v]),
            };
            deny.push(Denial { name: normalize(&subject.name), versions, rule: "deny".into() });
        }
        if let Some(file) = &written.deny_file {
            match spec.osv_ecosystem {
                None => {
                    self.problem("policy.deny_file", format!("`{}` has no OSV ecosystem", package.as_str()))
                }
                Some(ecosystem) => match osv::load(Path::new(file), ecosystem, &normalize) {
                    Ok(denials) => deny.extend(denials),
                    Err(e) => self.problem("policy.deny_file", e),
                },
            }
        }
        let mode = match written.mode.as_deref() {
            None | Some("enforce") => Mode::Enforce,
            Some("report") => Mode::Report,
            Some(other) => {
                self.problem("policy.mode", format!("{other:?} is not `enforce` or `report`"));
                Mode::Enforce
            }
        };
        let unclassified = match written.unclassified.as_deref() {
            None | Some("refuse") => Unclassified::Refuse,
            Some("allow") => Unclassified::Allow,
            Some(other) => {
                self.problem("policy.unclassified", format!("{other:?} is not `refuse` or `allow`"));
                Unclassified::Refuse
            }
        };
        Some(Arc::new(Policy { min_release_age, allow, deny, mode, unclassified }))
    }
}

/// `7d`, `36h`, `90m`, `45s`, `2w`, or plain seconds.
fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let n: u64 = text[..split].parse().ok()?;
    let unit = match text[split..].trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(unit)?))
}

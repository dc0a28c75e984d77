//! `type: group`: its members (each named, or with the package names it may
//! answer) and how they combine (`resolve`).

use std::collections::BTreeMap;

use artifactapi_layers::{
    format::Groupable,
    remote::{Group, Member, Resolve},
    Package,
};

use super::{
    file::{MemberConfig, RemoteConfig},
    remote::Ctx,
};

impl Ctx<'_> {
    /// A group's members and `resolve`. Each member is an existing remote
    /// of the group's package type that is not itself a group; registries
    /// cannot be grouped (their clients name one registry per image).
    pub(super) fn group(&mut self, rc: &RemoteConfig, all: &BTreeMap<String, RemoteConfig>) -> Option<Group> {
        let resolve = match rc.resolve.as_deref() {
            None | Some("first") => Resolve::First,
            Some("merge") => Resolve::Merge,
            Some(other) => {
                self.problem("resolve", format!("{other:?} is not `first` or `merge`"));
                Resolve::First
            }
        };
        let package = rc.package.as_deref().unwrap_or("generic");
        let format = Package::parse(package).map(Package::format);
        if let Some(Groupable::No(why)) = format.map(|f| f.spec().grouping) {
            self.problem("type", why);
        }
        let Some(written) = rc.members.as_ref().filter(|m| !m.is_empty()) else {
            self.problem("members", "a group needs at least one member");
            return None;
        };
        let mut members = Vec::new();
        for (i, member) in written.iter().enumerate() {
            let key = format!("members[{i}]");
            let (name, only, except) = match member {
                MemberConfig::Name(name) => (name, None, None),
                MemberConfig::Filtered(f) => (&f.remote, f.only_names.clone(), f.except_names.clone()),
            };
            match all.get(name) {
                None => self.problem(&key, format!("names no remote: {name:?}")),
                Some(_) if name == self.name => self.problem(&key, "a group cannot be its own member"),
                Some(m) if m.kind.as_deref() == Some("group") => {
                    self.problem(&key, format!("{name:?} is a group; groups do not nest"))
                }
                Some(m) if m.package.as_deref().unwrap_or("generic") != package => self.problem(
                    &key,
                    format!(
                        "{name:?} is a `{}` remote, the group is `{package}`",
                        m.package.as_deref().unwrap_or("generic")
                    ),
                ),
                Some(_) => {}
            }
            if let Some(m) = all.get(name).filter(|m| rc.policy.is_some() && m.policy.is_none()) {
                // The group's links point at itself, but the member's own
                // URL (and its files remote's) still answers as that remote.
                self.warnings.push(format!(
                    "remotes.{}: the group has a policy that its member {name:?} lacks: \
                     /api/{name}/... serves what the group hides; give the member the policy too",
                    self.name
                ));
                let remote_keys =
                    format.and_then(|f| f.configured()).map(|c| c.remote_keys()).unwrap_or_default();
                let files = remote_keys.iter().filter_map(|k| m.format_keys.get(*k)?.as_str());
                for files in files.filter(|f| all.get(*f).is_some_and(|f| f.policy.is_none())) {
                    self.warnings.push(format!(
                        "remotes.{}: member {name:?} links files to {files:?}, which has no policy: \
                         those links bypass the group's policy",
                        self.name
                    ));
                }
            }
            if members.iter().any(|m: &Member| &m.remote == name) {
                self.problem(&key, format!("{name:?} is a member twice"));
            }
            let anchored =
                |list: Option<Vec<String>>| list.map(|l| l.iter().map(|p| format!("^(?:{p})$")).collect());
            let only_names = self.patterns(&format!("{key}.only_names"), anchored(only)).unwrap_or_default();
            let except_names =
                self.patterns(&format!("{key}.except_names"), anchored(except)).unwrap_or_default();
            members.push(Member { remote: name.clone(), only_names, except_names });
        }
        Some(Group { members, resolve })
    }

    /// `members` and `resolve` mean nothing outside a group.
    pub(super) fn group_keys_only_on_groups(&mut self, rc: &RemoteConfig) {
        if rc.kind.as_deref() == Some("group") {
            return;
        }
        if rc.members.is_some() {
            self.problem("members", "only a remote of `type: group` has members");
        }
        if rc.resolve.is_some() {
            self.problem("resolve", "only a remote of `type: group` has `resolve`");
        }
    }
}

//! One page of a remote's entries, by path, with how often each was served:
//! what `GET /artifacts/{remote}` answers and the operator page shows.

use artifactapi_layers::store::{Entry, Store, StoreError};

/// An entry with how many times it was served from the cache and when last
/// (`None`: never, or not yet written by the batch).
pub(crate) struct Listed {
    pub(crate) entry: Entry,
    pub(crate) served: Option<(u64, i64)>,
}

/// A page, and the path to go on after when there is more.
pub(crate) struct Page {
    pub(crate) items: Vec<Listed>,
    pub(crate) next: Option<String>,
}

/// A string below every path that starts with `prefix` and above nearly
/// every other path below them (paths sort bytewise, as code points).
fn below(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    let last = chars.pop()?;
    let previous = match last as u32 {
        0 => None,
        0xE000 => char::from_u32(0xD7FF),
        n => char::from_u32(n - 1),
    };
    if let Some(c) = previous {
        chars.push(c);
        chars.extend(std::iter::repeat_n('\u{10FFFF}', 4));
    }
    Some(chars.into_iter().collect())
}

/// Up to `limit` entries of `remote` after `after` (a path), only those
/// whose path starts with `prefix` when given.
pub(crate) async fn page(
    store: &Store,
    remote: &str,
    prefix: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<Page, StoreError> {
    let prefix = prefix.filter(|p| !p.is_empty());
    let start = match (after, prefix) {
        (Some(after), _) => Some(after.to_owned()),
        (None, Some(prefix)) => below(prefix),
        (None, None) => None,
    };
    let mut entries = store.index.list(remote, start.as_deref(), limit + 1).await?;
    let more = entries.len() > limit;
    entries.truncate(limit);
    let last_seen = entries.last().map(|e| e.path.clone());
    // Paths sort bytewise, so those under a prefix are one run: a path past
    // the prefix that is not under it ends the run.
    let ended = prefix.is_some_and(|p| entries.iter().any(|e| !e.path.starts_with(p) && e.path.as_str() > p));
    if let Some(prefix) = prefix {
        entries.retain(|e| e.path.starts_with(prefix));
    }
    let next = if more && !ended { last_seen } else { None };
    let keys: Vec<String> = entries.iter().map(|e| e.key.clone()).collect();
    let mut served = store.index.served(&keys).await.unwrap_or_default();
    let items =
        entries.into_iter().map(|entry| Listed { served: served.remove(&entry.key), entry }).collect();
    Ok(Page { items, next })
}

#[cfg(test)]
mod tests {
    use super::below;

    #[test]
    fn below_a_prefix_and_above_what_precedes_it() {
        for prefix in ["rel/", "a", "library/nginx/", "x\u{E000}"] {
            let b = below(prefix).unwrap();
            assert!(b.as_str() < prefix, "{b:?} < {prefix:?}");
            assert!(format!("{prefix}zzz") > b);
        }
        assert_eq!(below(""), None);
    }
}

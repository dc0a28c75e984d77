//! Budgets: how much work one upstream document or one integrity check may
//! cause, whatever upstream sends.
//!
//! A small document can describe a huge one (YAML aliases that expand to
//! gigabytes, a zip whose entries all inflate one stream), so the size of
//! what was read is not enough: a transform also counts what it would
//! produce (bytes, nesting, entries) and an integrity check what it would
//! inflate, and both stop at their budget with an error naming the setting
//! that sets it. Such an error is a 502, and nothing is cached.
//!
//! A little over 400 lines with its tests (from line 337): the document
//! budget and the YAML and JSON scans that apply it are one concern.

use std::{
    cell::Cell,
    fmt,
    sync::atomic::{AtomicBool, Ordering},
};

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

use crate::error::{UpstreamError, UpstreamErrorKind};

/// A limit was reached: which setting, and what went past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// The environment variable that sets the limit.
    pub setting: &'static str,
    /// What went past it, for the error message.
    pub what: String,
}

impl Exceeded {
    pub(crate) fn new(setting: &'static str, what: impl Into<String>) -> Self {
        Self { setting, what: what.into() }
    }
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (limit {})", self.what, self.setting)
    }
}

impl std::error::Error for Exceeded {}

impl From<Exceeded> for UpstreamError {
    fn from(e: Exceeded) -> Self {
        UpstreamError::new(UpstreamErrorKind::Other, e.to_string())
    }
}

/// What one metadata transform may produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentBudget {
    /// The most bytes a transformed (rewritten, composed, merged) document
    /// may have, YAML aliases counted expanded (`METADATA_MAX_OUTPUT_BYTES`).
    pub output_bytes: usize,
    /// The deepest nesting of mappings and sequences (`METADATA_MAX_DEPTH`).
    pub depth: usize,
    /// The most values (scalars, mappings, sequences) in one document,
    /// aliases counted expanded (`METADATA_MAX_ENTRIES`).
    pub entries: usize,
}

impl Default for DocumentBudget {
    /// 64 MiB out (the default input cap), 128 levels (serde_json's own
    /// recursion limit), a million values: a parsed value takes about a
    /// hundred bytes, so this bounds a document's memory near 100 MiB.
    fn default() -> Self {
        Self { output_bytes: 64 << 20, depth: 128, entries: 1_000_000 }
    }
}

impl DocumentBudget {
    /// Refuses a transformed document longer than the budget.
    pub fn check_output(&self, len: usize) -> Result<(), Exceeded> {
        match len > self.output_bytes {
            true => Err(Exceeded::new(
                "METADATA_MAX_OUTPUT_BYTES",
                format!("the transformed document would be {len} bytes, more than {}", self.output_bytes),
            )),
            false => Ok(()),
        }
    }

    /// Measures a document that reads as JSON (its first character opens
    /// an object or an array) with [`scan_json`](Self::scan_json); other
    /// text is left to its parser.
    pub fn scan(&self, bytes: &[u8]) -> Result<(), Exceeded> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => self.scan_json(bytes),
            _ => Ok(()),
        }
    }

    /// Measures a JSON document (or JSON lines) without parsing it: its
    /// nesting, and its values (each `{`, `[` and `,` outside strings starts
    /// one). Parsing it afterwards then takes memory within the budget.
    pub fn scan_json(&self, bytes: &[u8]) -> Result<(), Exceeded> {
        let (mut depth, mut entries, mut in_string, mut escaped) = (0usize, 0usize, false, false);
        for &b in bytes {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    entries += 1;
                    if depth > self.depth {
                        return Err(self.too_deep());
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                b',' => entries += 1,
                _ => continue,
            }
            if entries > self.entries {
                return Err(self.too_many());
            }
        }
        Ok(())
    }

    /// Walks a YAML document as a parser would deliver it, aliases
    /// expanded, without keeping any of it: refuses it past the budget's
    /// depth, values or output bytes (each value counted as block YAML
    /// would write it: its text, a separator, and its indentation), before
    /// anything of that size is built. A document that is not YAML is let
    /// through, for the parser that follows to refuse with its own words.
    pub fn scan_yaml(&self, bytes: &[u8]) -> Result<(), Exceeded> {
        let tally = Tally { budget: self, entries: Cell::new(0), bytes: Cell::new(0), over: Cell::new(None) };
        for document in serde_yaml_ng::Deserializer::from_slice(bytes) {
            if let Err(e) = (Walk { tally: &tally, depth: 0 }).deserialize(document) {
                if let Some(over) = tally.over.take() {
                    return Err(over);
                }
                // serde_yaml_ng's own guards, fixed in the crate: they are
                // these same limits, reached first.
                return match e.to_string() {
                    m if m.starts_with("recursion limit exceeded") => Err(self.too_deep()),
                    m if m.starts_with("repetition limit exceeded") => Err(Exceeded::new(
                        "METADATA_MAX_OUTPUT_BYTES",
                        "the document's aliases expand past the parser's repetition limit",
                    )),
                    _ => Ok(()),
                };
            }
        }
        Ok(())
    }

    fn too_deep(&self) -> Exceeded {
        Exceeded::new("METADATA_MAX_DEPTH", format!("the document nests deeper than {} levels", self.depth))
    }

    fn too_many(&self) -> Exceeded {
        Exceeded::new("METADATA_MAX_ENTRIES", format!("the document holds more than {} values", self.entries))
    }
}

/// What a YAML walk has counted so far.
struct Tally<'b> {
    budget: &'b DocumentBudget,
    entries: Cell<usize>,
    bytes: Cell<usize>,
    over: Cell<Option<Exceeded>>,
}

impl Tally<'_> {
    /// Counts one value of `len` bytes of text at `depth` (how many
    /// collections hold it); a collection opens one more level.
    fn count<E: de::Error>(&self, depth: usize, len: usize, collection: bool) -> Result<(), E> {
        let over = if collection && depth + 1 > self.budget.depth {
            Some(self.budget.too_deep())
        } else {
            self.entries.set(self.entries.get() + 1);
            self.bytes.set(self.bytes.get().saturating_add(len + 2 + 2 * depth));
            if self.entries.get() > self.budget.entries {
                Some(self.budget.too_many())
            } else if self.bytes.get() > self.budget.output_bytes {
                Some(Exceeded::new(
                    "METADATA_MAX_OUTPUT_BYTES",
                    format!(
                        "the document, aliases expanded, is more than {} bytes",
                        self.budget.output_bytes
                    ),
                ))
            } else {
                None
            }
        };
        match over {
            Some(over) => {
                let message = over.to_string();
                self.over.set(Some(over));
                Err(E::custom(message))
            }
            None => Ok(()),
        }
    }
}

/// One value of a YAML walk, at its depth.
#[derive(Clone, Copy)]
struct Walk<'t, 'b> {
    tally: &'t Tally<'b>,
    depth: usize,
}

impl Walk<'_, '_> {
    fn inner(self) -> Self {
        Self { depth: self.depth + 1, ..self }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.tally.count(self.depth, 5, false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.tally.count(self.depth, 20, false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.tally.count(self.depth, 20, false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.tally.count(self.depth, 24, false)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.tally.count(self.depth, s.len(), false)
    }

    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<(), E> {
        self.tally.count(self.depth, b.len(), false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.tally.count(self.depth, 4, false)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.tally.count(self.depth, 4, false)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.tally.count(self.depth, 0, true)?;
        while seq.next_element_seed(self.inner())?.is_some() {}
        Ok(())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.tally.count(self.depth, 0, true)?;
        while map.next_key_seed(self.inner())?.is_some() {
            map.next_value_seed(self.inner())?;
        }
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag value`): the tag, then the value.
        use de::VariantAccess;
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self.inner())
    }
}

/// What one integrity check over a zip may do: Go's own limits on a module
/// zip by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipBudget {
    /// The most bytes all entries may inflate to together
    /// (`INTEGRITY_MAX_INFLATED_BYTES`).
    pub inflated_bytes: u64,
    /// The most entries (`INTEGRITY_MAX_ENTRIES`).
    pub entries: usize,
}

impl Default for ZipBudget {
    /// 500 MiB inflated, as the go command refuses a larger module; 65 535
    /// entries, the most a zip without zip64 holds.
    fn default() -> Self {
        Self { inflated_bytes: 500 << 20, entries: 65_535 }
    }
}

/// Set when nobody waits for a piece of work any more: it stops at its next
/// chunk.
#[derive(Debug, Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the work should stop: an error to return when it should.
    pub fn check(&self) -> Result<(), String> {
        match self.0.load(Ordering::Relaxed) {
            true => Err("stopped: no client waits for it any more".into()),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> DocumentBudget {
        DocumentBudget { output_bytes: 10_000, depth: 8, entries: 1_000 }
    }

    /// Nine aliases of nine aliases of ...: `levels` deep, 9^levels strings.
    fn laughs(levels: usize) -> String {
        let mut yaml = String::from(
            "a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
        );
        for i in 1..=levels {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            yaml.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        yaml
    }

    #[test]
    fn yaml_aliases_count_expanded_and_are_refused_before_they_are_built() {
        let budget = DocumentBudget { depth: 128, ..small() };
        assert_eq!(budget.scan_yaml(laughs(1).as_bytes()), Ok(()), "ninety strings are within the budget");
        // Nine levels: 387 million strings from under a kilobyte. Walked
        // lazily, it stops at the budget at once.
        let started = std::time::Instant::now();
        let over = budget.scan_yaml(laughs(9).as_bytes()).unwrap_err();
        assert!(["METADATA_MAX_ENTRIES", "METADATA_MAX_OUTPUT_BYTES"].contains(&over.setting), "{over}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Past the output bytes with few values: long strings, repeated.
        let long = format!("a: &a \"{}\"\nb: [*a, *a, *a]\n", "x".repeat(3_000));
        assert_eq!(budget.scan_yaml(long.as_bytes()).unwrap_err().setting, "METADATA_MAX_OUTPUT_BYTES");
    }

    #[test]
    fn yaml_nesting_and_values_have_their_own_limits() {
        let budget = small();
        let deep = format!("{}{}", "[".repeat(9), "]".repeat(9));
        assert_eq!(budget.scan_yaml(deep.as_bytes()).unwrap_err().setting, "METADATA_MAX_DEPTH");
        let fine = format!("{}{}", "[".repeat(8), "]".repeat(8));
        assert_eq!(budget.scan_yaml(fine.as_bytes()), Ok(()));
        let many: String = (0..1_000).map(|i| format!("- {i}\n")).collect();
        let roomy = DocumentBudget { output_bytes: 1 << 20, ..budget };
        assert_eq!(
            roomy.scan_yaml(many.as_bytes()).unwrap_err().setting,
            "METADATA_MAX_ENTRIES",
            "with the list"
        );
        // Deeper than the parser's own fixed limit: refused, named as ours.
        let budget = DocumentBudget { depth: 1_000, output_bytes: 1 << 20, ..small() };
        let deeper = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(budget.scan_yaml(deeper.as_bytes()).unwrap_err().setting, "METADATA_MAX_DEPTH");
        // Not YAML at all: left to the parser that follows.
        assert_eq!(budget.scan_yaml(b"not: [yaml"), Ok(()));
    }

    #[test]
    fn json_nesting_and_values_are_measured_without_parsing() {
        let budget = small();
        let deep = format!("{}{}", "[".repeat(9), "]".repeat(9));
        assert_eq!(budget.scan_json(deep.as_bytes()).unwrap_err().setting, "METADATA_MAX_DEPTH");
        assert_eq!(budget.scan_json(br#"{"a": "[[[[[[[[[[[[", "b": "\"[[[[[[[[[["}"#), Ok(()), "strings");
        let many = format!("[{}]", vec!["1"; 1_001].join(","));
        assert_eq!(budget.scan_json(many.as_bytes()).unwrap_err().setting, "METADATA_MAX_ENTRIES");
        let lines: String = (0..10).map(|i| format!("{{\"v\":{i}}}\n")).collect();
        assert_eq!(budget.scan_json(lines.as_bytes()), Ok(()), "JSON lines");
    }

    #[test]
    fn output_is_capped() {
        let budget = small();
        assert_eq!(budget.check_output(10_000), Ok(()));
        let over = budget.check_output(10_001).unwrap_err();
        assert_eq!(over.setting, "METADATA_MAX_OUTPUT_BYTES");
        assert!(over.to_string().contains("METADATA_MAX_OUTPUT_BYTES"), "{over}");
    }
}

//! containerd's filter expressions, as `List` (`ctr snapshot ls`,
//! containerd's garbage collector) sends them: any of several filters may
//! match; a filter is selectors joined by `,`, all of which must match; a
//! selector is a field path (`name`, `parent`, `kind`,
//! `labels."containerd.io/gc.root"`) alone (the field is present) or
//! compared with `==` or `!=` to a value, quoted or bare. Regular
//! expressions (`~=`) are refused rather than matched wrongly.

use std::collections::BTreeMap;

/// One selector.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Selector {
    field: Vec<String>,
    test: Test,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Test {
    Present,
    Equal(String),
    NotEqual(String),
}

/// Parsed filters: a snapshot matches if any filter's selectors all match.
#[derive(Clone, Debug, Default)]
pub struct Filters(Vec<Vec<Selector>>);

/// What a filter is tested against.
pub struct Fields<'a> {
    /// The snapshot's key.
    pub name: &'a str,
    /// Its parent's, or empty.
    pub parent: &'a str,
    /// `view`, `active` or `committed`.
    pub kind: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

impl Filters {
    /// Parses `filters`; none matches everything.
    pub fn parse(filters: &[String]) -> Result<Filters, String> {
        filters
            .iter()
            .filter(|f| !f.trim().is_empty())
            .map(|f| parse_filter(f).map_err(|why| format!("filter {f:?}: {why}")))
            .collect::<Result<_, _>>()
            .map(Filters)
    }

    /// Whether a snapshot with these fields is listed.
    pub fn matches(&self, fields: &Fields) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|selectors| selectors.iter().all(|s| s.matches(fields)))
    }
}

impl Selector {
    fn matches(&self, fields: &Fields) -> bool {
        let value = match self.field.as_slice() {
            [f] if f == "name" => Some(fields.name),
            // containerd asks for `parent==""` for a bottom layer.
            [f] if f == "parent" => Some(fields.parent),
            [f] if f == "kind" => Some(fields.kind),
            [f, key] if f == "labels" => fields.labels.get(key).map(String::as_str),
            _ => None,
        };
        match (&self.test, value) {
            (Test::Present, value) => value.is_some_and(|v| !v.is_empty()),
            (Test::Equal(wanted), value) => value == Some(wanted.as_str()),
            (Test::NotEqual(wanted), value) => value != Some(wanted.as_str()),
        }
    }
}

/// One filter: selectors separated by `,` outside quotes.
fn parse_filter(text: &str) -> Result<Vec<Selector>, String> {
    let mut selectors = Vec::new();
    let mut rest = text.trim();
    loop {
        let (field, after) = field_path(rest)?;
        let after = after.trim_start();
        let (test, after) = if let Some(value) = after.strip_prefix("==") {
            let (value, after) = value_of(value.trim_start())?;
            (Test::Equal(value), after)
        } else if let Some(value) = after.strip_prefix("!=") {
            let (value, after) = value_of(value.trim_start())?;
            (Test::NotEqual(value), after)
        } else if after.starts_with("~=") {
            return Err("regular expressions (~=) are not supported".into());
        } else {
            (Test::Present, after)
        };
        selectors.push(Selector { field, test });
        let after = after.trim_start();
        if after.is_empty() {
            return Ok(selectors);
        }
        rest = after
            .strip_prefix(',')
            .ok_or_else(|| format!("unexpected {after:?}"))?
            .trim_start();
    }
}

/// `a.b."c.d"` and what follows it.
fn field_path(text: &str) -> Result<(Vec<String>, &str), String> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let (part, after) = if rest.starts_with('"') {
            quoted(rest)?
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(format!("expected a field name at {rest:?}"));
            }
            (rest[..end].to_string(), &rest[end..])
        };
        parts.push(part);
        match after.strip_prefix('.') {
            Some(next) => rest = next,
            None => return Ok((parts, after)),
        }
    }
}

/// A quoted or bare value and what follows it.
fn value_of(text: &str) -> Result<(String, &str), String> {
    if text.starts_with('"') {
        return quoted(text);
    }
    let end = text.find([',', ' ']).unwrap_or(text.len());
    Ok((text[..end].to_string(), &text[end..]))
}

/// A `"…"` string with `\"` and `\\` escapes, and what follows it.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(format!("unterminated quote in {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(labels: &'a BTreeMap<String, String>) -> Fields<'a> {
        Fields {
            name: "sha256:abc",
            parent: "",
            kind: "committed",
            labels,
        }
    }

    fn matches(filters: &[&str], labels: &BTreeMap<String, String>) -> bool {
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        Filters::parse(&filters).unwrap().matches(&fields(labels))
    }

    #[test]
    fn selectors_and_within_a_filter_and_or_between_filters() {
        let labels = BTreeMap::from([("containerd.io/gc.root".to_string(), "x".to_string())]);
        assert!(matches(&[], &labels));
        assert!(matches(&[r#"labels."containerd.io/gc.root""#], &labels));
        assert!(matches(
            &[r#"kind==committed,labels."containerd.io/gc.root"==x"#],
            &labels
        ));
        assert!(!matches(
            &[r#"kind==active,labels."containerd.io/gc.root""#],
            &labels
        ));
        assert!(matches(&["kind==active", "name==\"sha256:abc\""], &labels));
        assert!(matches(&["parent!=p"], &labels));
        assert!(matches(
            &[r#"labels."containerd.io/gc.root"==x,parent=="""#],
            &labels
        ));
        assert!(!matches(&["parent"], &labels));
        assert!(!matches(&["labels.other"], &labels));
    }

    #[test]
    fn what_cannot_be_matched_exactly_is_refused() {
        for bad in ["name~=^sha", "kind==active,", "\"open", "==x"] {
            assert!(Filters::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}

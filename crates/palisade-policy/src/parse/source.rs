//! A policy source's text and name, to turn byte spans into file:line:column sites.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use crate::error::Site;

/// The text of a policy source and its name, to turn byte spans into sites.
pub(super) struct SourceText<'a> {
    name: &'a str,
    text: &'a str,
    /// Byte offset of the start of each line, to turn a span into a line in O(log n).
    line_starts: Vec<usize>,
}

impl<'a> SourceText<'a> {
    pub(super) fn new(name: &'a str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        SourceText { name, text, line_starts }
    }

    pub(super) fn site(&self, span: Range<usize>, key: &str) -> Site {
        let start = span.start.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= start);
        let line_start = self.line_starts[line - 1];
        let column = self.text[line_start..start].chars().count() + 1;
        Site { source: self.name.to_owned(), line, column, key: key.to_owned() }
    }

    /// The dotted key whose key or value contains byte `pos` (best effort, for serde errors).
    pub(super) fn key_at(&self, pos: usize) -> String {
        fn in_value(v: &DeValue<'_>, pos: usize) -> Option<Vec<String>> {
            match v {
                DeValue::Table(t) => in_table(t, pos),
                DeValue::Array(a) => a.iter().enumerate().find_map(|(i, item)| {
                    let inner = in_value(item.get_ref(), pos);
                    let hit = inner.is_some() || item.span().contains(&pos);
                    hit.then(|| {
                        let mut p = vec![format!("[{i}]")];
                        p.extend(inner.unwrap_or_default());
                        p
                    })
                }),
                _ => None,
            }
        }
        fn in_table(t: &DeTable<'_>, pos: usize) -> Option<Vec<String>> {
            t.iter().find_map(|(k, v)| {
                let inner = in_value(v.get_ref(), pos);
                let hit = inner.is_some() || k.span().contains(&pos) || v.span().contains(&pos);
                hit.then(|| {
                    let mut p = vec![k.get_ref().to_string()];
                    p.extend(inner.unwrap_or_default());
                    p
                })
            })
        }
        let parts = DeTable::parse(self.text).ok().and_then(|doc| in_table(doc.get_ref(), pos));
        match parts {
            Some(parts) => parts.iter().fold(String::new(), |mut acc, p| {
                if !acc.is_empty() && !p.starts_with('[') {
                    acc.push('.');
                }
                acc.push_str(p);
                acc
            }),
            // The document does not parse (a syntax error, a duplicate key): take the key
            // written on the line of the error, if there is one.
            None => {
                let start = self.text[..pos.min(self.text.len())].rfind('\n').map_or(0, |i| i + 1);
                let line = self.text[start..].lines().next().unwrap_or("");
                match line.split_once('=') {
                    Some((k, _)) if !k.trim().is_empty() => k.trim().trim_matches('"').to_owned(),
                    _ => "(top level)".to_owned(),
                }
            }
        }
    }
}

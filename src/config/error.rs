//! A config error that names the file, line, column and dotted key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A config error that points at the place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `rate_limit.rules[1].period`; empty for syntax errors.
    pub key: String,
    pub message: String,
    /// The offending source line, for a caret display.
    pub source_line: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if !self.source_line.is_empty() {
            let pad = " ".repeat(self.column.saturating_sub(1));
            write!(f, "\n    | {}\n    | {}^", self.source_line, pad)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error with no place in a file (it could not be read, or the
    /// reload itself failed).
    pub fn unplaced(file: &Path, message: String) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message,
            source_line: String::new(),
        }
    }
}

/// Turn a byte span into a line/column error. Without a span (a check made
/// after parsing), the key's own line is looked up in the text.
pub(super) fn locate(
    path: &Path,
    text: &str,
    span: Option<Range<usize>>,
    key: &str,
    message: String,
) -> ConfigError {
    let offset = span.map(|s| s.start).or_else(|| find_key(text, key));
    let (line, column, source_line) = match offset {
        Some(off) => {
            let off = off.min(text.len());
            let before = &text[..off];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = text[line_start..off].chars().count() + 1;
            let source_line = text[line_start..].lines().next().unwrap_or("").to_string();
            (line, column, source_line)
        }
        None => (1, 1, String::new()),
    };
    ConfigError {
        file: path.to_path_buf(),
        line,
        column,
        key: key.to_string(),
        message,
        source_line,
    }
}

/// Best-effort position of a dotted key (`a.b[2].c`) in the text: finds the
/// table header, then the leaf key inside it.
fn find_key(text: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    let (table, leaf) = match key.rsplit_once('.') {
        Some((t, l)) => (t, l),
        None => ("", key),
    };
    // `rate_limit.rules[1]` -> header `[[rate_limit.rules]]`, 2nd occurrence.
    let (table_name, nth) = match table.rsplit_once('[') {
        Some((t, rest)) => (t, rest.trim_end_matches(']').parse::<usize>().unwrap_or(0)),
        None => (table, 0),
    };
    let mut offset = 0;
    let mut in_table = table_name.is_empty();
    let mut seen = 0usize;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            let name = t.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = false;
            if name == table_name {
                if seen == nth {
                    in_table = true;
                }
                seen += 1;
            }
        } else if in_table {
            let k = t.split('=').next().unwrap_or("").trim();
            if k == leaf {
                return Some(offset + line.find(leaf).unwrap_or(0));
            }
        }
        offset += line.len();
    }
    None
}

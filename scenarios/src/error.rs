//! `ScenarioError`: every way a scenario file can be refused, in one positioned form.
//!
//! A malformed file is never half-run (docs/scenarios.md "Bad input"), so the loader stops at
//! the first problem and says where it is, which key, what it wanted and what it saw:
//! `scenarios/x.toml:12:9: machine.cpus: expected an integer 1..=4096, found "two"`.

/// What kind of problem a [`ScenarioError`] reports. The message has the same shape for
/// all of them; the kind lets a caller (the CLI's exit code, a test) tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read; `found` is the OS error.
    Io,
    /// The text is not UTF-8 or not TOML; `found` is the decoder's or parser's message.
    Syntax,
    /// Valid TOML that is not a valid scenario: unknown key, wrong type, out of range...
    Invalid,
}

/// One error, positioned. Display is `FILE:LINE:COL: KEY: expected EXPECTED, found FOUND`;
/// when no key applies (an unreadable file, a syntax error before any key) the `KEY: `
/// part is left out rather than printed empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    pub kind: ErrorKind,
    /// The path as the caller named it.
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted path of the offending key, with indices for arrays: `task[1].steps[0].page`.
    pub key: String,
    pub expected: String,
    /// The offending value as written in the file (strings keep their quotes), the key
    /// itself for an unknown key, or `nothing` for a missing one.
    pub found: String,
}

impl std::fmt::Display for ScenarioError {
    /// Every part is [`printable`]: a hostile path or key cannot move the terminal's cursor.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", printable(&self.file), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", printable(&self.key))?;
        }
        write!(f, "expected {}, found {}", printable(&self.expected), printable(&self.found))
    }
}

/// `text` with control characters (ANSI escapes, newlines, NUL) and bidirectional overrides
/// written as Rust escapes (`\u{1b}`, `\n`), so a name from a file prints as what it is and
/// cannot change the terminal. Text without them is returned as is.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let needs_escape = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// `text` cut to `max_chars` characters, with `…` when something was cut.
pub fn shortened(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..end])),
    }
}

impl ScenarioError {
    /// The file could not be read at all.
    pub fn io(file: &str, error: &std::io::Error) -> ScenarioError {
        ScenarioError {
            kind: ErrorKind::Io,
            file: file.to_owned(),
            line: 1,
            column: 1,
            key: String::new(),
            expected: "a readable scenario file".to_owned(),
            found: error.to_string(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `bytes`. Offsets past the
/// end or inside a UTF-8 sequence are clamped rather than trusted.
pub fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    // Count characters, not bytes: continuation bytes are 0b10xx_xxxx.
    let column = 1 + before[line_start..].iter().filter(|&&b| b & 0xC0 != 0x80).count();
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_and_clamps() {
        let text = "ab\ncé d\n";
        assert_eq!(line_column(text.as_bytes(), 0), (1, 1));
        assert_eq!(line_column(text.as_bytes(), 3), (2, 1));
        // 'd' is at byte 7 but character 4 of line 2.
        assert_eq!(line_column(text.as_bytes(), 7), (2, 4));
        assert_eq!(line_column(text.as_bytes(), 1000), (3, 1));
    }

    #[test]
    fn control_characters_and_overrides_print_escaped() {
        assert_eq!(printable("rw[A]"), "rw[A]");
        assert_eq!(printable("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(shortened("abcdef", 3), "abc…");
        assert_eq!(shortened("abc", 3), "abc");
    }

    #[test]
    fn display_leaves_out_an_empty_key() {
        let mut error = ScenarioError {
            kind: ErrorKind::Invalid,
            file: "x.toml".to_owned(),
            line: 12,
            column: 9,
            key: "machine.cpus".to_owned(),
            expected: "an integer 1..=4096".to_owned(),
            found: "\"two\"".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "x.toml:12:9: machine.cpus: expected an integer 1..=4096, found \"two\""
        );
        error.key.clear();
        assert_eq!(error.to_string(), "x.toml:12:9: expected an integer 1..=4096, found \"two\"");
    }
}

//! Positioned errors: what was expected and what was found, and where.

use super::*;

impl Loader<'_> {
    pub(super) fn error(
        &self,
        span: Range<usize>,
        key: &str,
        expected: &str,
        found: String,
    ) -> ScenarioError {
        let (line, column) = line_column(self.text.as_bytes(), span.start);
        ScenarioError {
            kind: ErrorKind::Invalid,
            file: self.file.to_owned(),
            line,
            column,
            key: shortened(key, KEY_CHARS_MAX).into_owned(),
            expected: expected.to_owned(),
            found,
        }
    }

    /// `value` (as written) is not what `key` takes.
    pub(super) fn invalid(&self, value: Option<&Value<'_>>, key: &str, expected: &str) -> ScenarioError {
        match value {
            Some(value) => self.error(value.span(), key, expected, self.found(value)),
            None => self.error(0..0, key, expected, "nothing".to_owned()),
        }
    }

    /// A required key is absent: point at the table that should hold it.
    pub(super) fn missing(&self, table: &Table<'_, '_>, name: &str, expected: &str) -> ScenarioError {
        self.error(table.span.clone(), &table.key(name), expected, "nothing".to_owned())
    }

    pub(super) fn found(&self, value: &Value<'_>) -> String {
        self.raw(value.span())
    }

    /// The source text of `span` on one line, cut to `FOUND_CHARS_MAX` characters.
    pub(super) fn raw(&self, span: Range<usize>) -> String {
        let text = self.text.get(span).unwrap_or("");
        // Fold a multi-line value (an array of steps) onto one line; keep spaces inside a
        // line as written, so `"  "` is not shown as `" "`.
        let one_line = text.lines().map(str::trim).filter(|line| !line.is_empty());
        let one_line = one_line.collect::<Vec<_>>().join(" ");
        if one_line.is_empty() {
            return "nothing".to_owned();
        }
        if one_line.chars().count() <= FOUND_CHARS_MAX {
            return one_line;
        }
        let cut: String = one_line.chars().take(FOUND_CHARS_MAX).collect();
        format!("{cut}…")
    }

    /// A TOML syntax error, positioned, with the key it is nearest to.
    pub(super) fn syntax_error(&self, error: &toml::de::Error) -> ScenarioError {
        if error.span().is_none()
            && let Some((span, parts)) = deep_dotted_key(self.text)
        {
            let (line, column) = line_column(self.text.as_bytes(), span.start);
            return ScenarioError {
                kind: ErrorKind::Syntax,
                file: self.file.to_owned(),
                line,
                column,
                key: shortened(&self.text[span.clone()], KEY_CHARS_MAX).into_owned(),
                expected: format!("a key of fewer than {TOML_KEY_PARTS_MAX} dotted parts"),
                found: format!("{parts} parts"),
            };
        }
        let offset = error.span().map_or(0, |span| span.start);
        let (line, column) = line_column(self.text.as_bytes(), offset);
        let message = error.message().split_whitespace().collect::<Vec<_>>().join(" ");
        ScenarioError {
            kind: ErrorKind::Syntax,
            file: self.file.to_owned(),
            line,
            column,
            key: shortened(&nearest_key(self.text, offset), KEY_CHARS_MAX).into_owned(),
            expected: "valid TOML".to_owned(),
            found: shortened(&message, 200).into_owned(),
        }
    }
}

/// The first dotted key (in a header, before `=`, or in an inline table) with at least
/// [`TOML_KEY_PARTS_MAX`] parts: its byte span and number of parts. toml reports such a key
/// as "recursion limit" with no position; this finds it.
pub(super) fn deep_dotted_key(text: &str) -> Option<(Range<usize>, usize)> {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\'');
    let mut start = None;
    for (offset, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        match (is_key_char(c), start) {
            (true, None) => start = Some(offset),
            (false, Some(begin)) => {
                let parts = text[begin..offset].matches('.').count() + 1;
                if parts >= TOML_KEY_PARTS_MAX {
                    return Some((begin..offset, parts));
                }
                start = None;
            }
            _ => {}
        }
    }
    None
}

/// A best guess at the key a syntax error at `offset` belongs to: the last table header
/// before it and the `key =` on its line, e.g. `machine.cpus`; "" when there is neither.
pub(super) fn nearest_key(text: &str, offset: usize) -> String {
    let bytes = text.as_bytes();
    let offset = offset.min(bytes.len());
    let line_start = bytes[..offset].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line_end = bytes[offset..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| offset + i);
    let is_bare_key = |key: &str| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let header = String::from_utf8_lossy(&bytes[..line_start])
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|line| line.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
        .filter(|header| is_bare_key(header));
    let line = String::from_utf8_lossy(&bytes[line_start..line_end]).into_owned();
    let key = line.split_once('=').map(|(key, _)| key.trim().to_owned()).filter(|key| is_bare_key(key));
    match (header, key) {
        (Some(header), Some(key)) => format!("{header}.{key}"),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => String::new(),
    }
}

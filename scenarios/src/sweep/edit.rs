//! Axis keys and how a value lands in the base scenario's TOML document.
//!
//! A key is the scenario key in TOML's dotted form, with array elements by index:
//! `machine.cpus`, `module.costs."TDH.PHYMEM.PAMT.ADD"`, `task.0.repeat` or `task[0].repeat`,
//! `task.0.steps.1.page`. `*` (or `[*]`) means every element of an array
//! (`task.*.repeat`), and `len` after an array keeps its first N elements (`task.len`), so a
//! scripted scenario listing a task per CPU can be swept over how many of them run. The
//! value replaces what the base file has there (keeping its layout) or is added, creating
//! the tables on the way; the edited document is then loaded like any scenario file, so
//! every check of the loader applies to every point.

use toml_edit::{ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

/// One part of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A table key; on an array, digits are an index and `len` its length.
    Key(String),
    /// `[N]`.
    Index(usize),
    /// `*` or `[*]`: every element.
    All,
}

/// A parsed axis key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPath {
    pub segments: Vec<Segment>,
}

/// Why a key did not fit the base document: the key itself, or the value given to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EditError {
    Key(String),
    Value(String),
}

/// The largest index or `len` a key may name.
const MAX_INDEX: usize = 1 << 20;

impl KeyPath {
    /// Parses a key; `Err` says what is wrong with it.
    pub fn parse(text: &str) -> Result<KeyPath, String> {
        let mut segments = Vec::new();
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err("an empty key".to_string());
        }
        loop {
            rest = rest.trim_start();
            if let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
                let body = &rest[1..];
                let end = body.find(quote).ok_or_else(|| format!("an unterminated {quote}"))?;
                segments.push(Segment::Key(body[..end].to_string()));
                rest = &body[end + 1..];
            } else {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                let bare = rest[..end].trim();
                if bare == "*" {
                    segments.push(Segment::All);
                } else if !bare.is_empty() {
                    if !bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                        return Err(format!("{bare:?} is not a bare key (quote it)"));
                    }
                    segments.push(Segment::Key(bare.to_string()));
                } else if !rest.starts_with('[') {
                    return Err("an empty part".to_string());
                }
                rest = &rest[end..];
            }
            while let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']').ok_or("an unterminated [")?;
                let inside = after[..end].trim();
                segments.push(if inside == "*" {
                    Segment::All
                } else {
                    let index: usize = inside.parse().map_err(|_| format!("[{inside}] is not an index"))?;
                    if index > MAX_INDEX {
                        return Err(format!("index {index} is larger than {MAX_INDEX}"));
                    }
                    Segment::Index(index)
                });
                rest = &after[end + 1..];
            }
            rest = rest.trim_start();
            if rest.is_empty() {
                break;
            }
            rest = rest.strip_prefix('.').ok_or_else(|| format!("{rest:?} after a key"))?;
        }
        Ok(KeyPath { segments })
    }

    /// The key as the loader names it in messages (`task[0].steps[1].page`), for matching
    /// its errors to an axis.
    pub fn loader_key(&self) -> String {
        let mut key = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Key(name) if name.chars().all(|c| c.is_ascii_digit()) => key += &format!("[{name}]"),
                Segment::Key(name) => {
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key += name;
                }
                Segment::Index(index) => key += &format!("[{index}]"),
                Segment::All => key += "[",
            }
        }
        key
    }

    /// Whether this key sets an array's length (`task.len`).
    pub fn is_len(&self) -> bool {
        matches!(self.segments.last(), Some(Segment::Key(name)) if name == "len")
    }
}

/// Puts `value` at `path` in `document`.
pub fn apply(document: &mut DocumentMut, path: &KeyPath, value: &Value) -> Result<(), EditError> {
    apply_table(document.as_table_mut(), &path.segments, value, "")
}

fn apply_table(table: &mut Table, path: &[Segment], value: &Value, at: &str) -> Result<(), EditError> {
    let (first, rest) = path.split_first().expect("apply_* is never called with an empty path");
    let Segment::Key(name) = first else {
        return Err(EditError::Key(format!("{} is a table, not an array", name_of(at))));
    };
    let at = join(at, name);
    if rest.is_empty() {
        match table.get_mut(name) {
            Some(Item::Value(old)) => replace(old, value),
            _ => {
                table.insert(name, Item::Value(fresh(value)));
            }
        }
        return Ok(());
    }
    let child = table.entry(name).or_insert_with(|| {
        let mut table = Table::new();
        table.set_implicit(true);
        Item::Table(table)
    });
    apply_item(child, rest, value, &at)
}

fn apply_item(item: &mut Item, path: &[Segment], value: &Value, at: &str) -> Result<(), EditError> {
    match item {
        Item::Table(table) => apply_table(table, path, value, at),
        Item::ArrayOfTables(array) => apply_array_of_tables(array, path, value, at),
        Item::Value(inner) => apply_value(inner, path, value, at),
        Item::None => Err(EditError::Key(format!("{} is empty", name_of(at)))),
    }
}

/// What an array segment selects.
enum Select {
    One(usize),
    All,
    Len,
}

fn select(segment: &Segment, rest: &[Segment], len: usize, at: &str) -> Result<Select, EditError> {
    let selected = match segment {
        Segment::Index(index) => Select::One(*index),
        Segment::All => Select::All,
        Segment::Key(name) if name == "len" => Select::Len,
        Segment::Key(name) => match name.parse::<usize>() {
            Ok(index) => Select::One(index),
            Err(_) => {
                return Err(EditError::Key(format!(
                    "{} is an array: index it (.0, [0], .*) or set its .len",
                    name_of(at)
                )));
            }
        },
    };
    match selected {
        Select::One(index) if index >= len => {
            Err(EditError::Key(format!("{} has {len} entries; there is no entry {index}", name_of(at))))
        }
        Select::Len if !rest.is_empty() => Err(EditError::Key("len is the last part of a key".to_string())),
        other => Ok(other),
    }
}

/// The new length a `len` value asks for, checked against the base's.
fn new_len(value: &Value, len: usize, at: &str) -> Result<usize, EditError> {
    match value.as_integer() {
        Some(wanted) if wanted >= 1 && wanted as usize <= len => Ok(wanted as usize),
        _ => Err(EditError::Value(format!(
            "{}.len takes an integer 1..={len} (the base has {len})",
            name_of(at)
        ))),
    }
}

fn apply_array_of_tables(
    array: &mut ArrayOfTables,
    path: &[Segment],
    value: &Value,
    at: &str,
) -> Result<(), EditError> {
    let (first, rest) = path.split_first().expect("never empty");
    match select(first, rest, array.len(), at)? {
        Select::One(index) => {
            let at = format!("{at}[{index}]");
            require_more(rest, &at)?;
            apply_table(array.get_mut(index).expect("checked"), rest, value, &at)
        }
        Select::All => {
            require_more(rest, at)?;
            let at = format!("{at}[*]");
            array.iter_mut().try_for_each(|table| apply_table(table, rest, value, &at))
        }
        Select::Len => {
            let keep = new_len(value, array.len(), at)?;
            let mut kept = 0;
            array.retain(|_| {
                kept += 1;
                kept <= keep
            });
            Ok(())
        }
    }
}

fn apply_value(target: &mut Value, path: &[Segment], value: &Value, at: &str) -> Result<(), EditError> {
    let Some((first, rest)) = path.split_first() else {
        replace(target, value);
        return Ok(());
    };
    match target {
        Value::InlineTable(table) => apply_inline(table, first, rest, value, at),
        Value::Array(array) => match select(first, rest, array.len(), at)? {
            Select::One(index) => {
                let at = format!("{at}[{index}]");
                apply_value(array.get_mut(index).expect("checked"), rest, value, &at)
            }
            Select::All => {
                let at = format!("{at}[*]");
                array.iter_mut().try_for_each(|element| apply_value(element, rest, value, &at))
            }
            Select::Len => {
                let keep = new_len(value, array.len(), at)?;
                let mut kept = 0;
                array.retain(|_| {
                    kept += 1;
                    kept <= keep
                });
                Ok(())
            }
        },
        other => {
            let kind = other.type_name();
            let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
            Err(EditError::Key(format!("{} is {article} {kind}, not a table or an array", name_of(at))))
        }
    }
}

fn apply_inline(
    table: &mut InlineTable,
    first: &Segment,
    rest: &[Segment],
    value: &Value,
    at: &str,
) -> Result<(), EditError> {
    let Segment::Key(name) = first else {
        return Err(EditError::Key(format!("{} is a table, not an array", name_of(at))));
    };
    let at = join(at, name);
    if rest.is_empty() {
        match table.get_mut(name) {
            Some(old) => replace(old, value),
            None => {
                table.insert(name, fresh(value));
            }
        }
        return Ok(());
    }
    let child = table.entry(name.as_str()).or_insert_with(|| Value::InlineTable(InlineTable::new()));
    apply_value(child, rest, value, &at)
}

fn require_more(rest: &[Segment], at: &str) -> Result<(), EditError> {
    if rest.is_empty() {
        return Err(EditError::Key(format!("{} is a table: name one of its keys", name_of(at))));
    }
    Ok(())
}

/// `value` without the spacing it had where it was written.
fn fresh(value: &Value) -> Value {
    let mut value = value.clone();
    value.decor_mut().clear();
    value
}

/// Replaces `old` by `value`, keeping `old`'s spacing and comments.
fn replace(old: &mut Value, value: &Value) {
    let decor = old.decor().clone();
    *old = fresh(value);
    *old.decor_mut() = decor;
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() { name.to_string() } else { format!("{at}.{name}") }
}

fn name_of(at: &str) -> String {
    if at.is_empty() { "the top level".to_string() } else { format!("`{at}`") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edited(base: &str, key: &str, value: &str) -> Result<String, EditError> {
        let mut document: DocumentMut = base.parse().unwrap();
        let value: Value = value.parse().unwrap();
        apply(&mut document, &KeyPath::parse(key).unwrap(), &value)?;
        Ok(document.to_string())
    }

    #[test]
    fn keys_parse_dotted_quoted_and_indexed() {
        let path = KeyPath::parse(r#"module.costs."TDH.PHYMEM.PAMT.ADD""#).unwrap();
        assert_eq!(
            path.segments,
            [
                Segment::Key("module".into()),
                Segment::Key("costs".into()),
                Segment::Key("TDH.PHYMEM.PAMT.ADD".into())
            ]
        );
        assert_eq!(path.loader_key(), "module.costs.TDH.PHYMEM.PAMT.ADD");
        assert_eq!(KeyPath::parse("task[0].steps[1].page").unwrap().loader_key(), "task[0].steps[1].page");
        assert_eq!(KeyPath::parse("task.0.steps.1.page").unwrap().loader_key(), "task[0].steps[1].page");
        assert_eq!(KeyPath::parse("task.*.repeat").unwrap().segments[1], Segment::All);
        assert!(KeyPath::parse("task.len").unwrap().is_len());
        for bad in ["", "machine..cpus", "a.\"b", "task[x]", "a b", "task[0"] {
            assert!(KeyPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_value_replaces_in_place_or_is_added_with_its_tables() {
        let base = "name = \"t\"\n[machine]\ncpus = 2 # two\n";
        assert_eq!(edited(base, "machine.cpus", "8").unwrap(), "name = \"t\"\n[machine]\ncpus = 8 # two\n");
        let added = edited(base, r#"module.costs."TDH.PHYMEM.PAMT.ADD""#, "4000").unwrap();
        assert!(added.contains("[module.costs]\n\"TDH.PHYMEM.PAMT.ADD\" = 4000"), "{added}");
        assert!(!added.contains("[module]\n"), "the intermediate table stays implicit: {added}");
    }

    #[test]
    fn arrays_take_indices_wildcards_and_len() {
        let base = "[[task]]\ncpu = 0\nsteps = [{ call = \"a\" }, { call = \"b\" }]\n[[task]]\ncpu = 1\nsteps = [{ call = \"c\" }]\n";
        let one = edited(base, "task.1.cpu", "5").unwrap();
        assert!(one.contains("cpu = 5") && one.contains("cpu = 0"));
        let inner = edited(base, "task[0].steps[1].call", "\"z\"").unwrap();
        assert!(inner.contains("{ call = \"z\" }"), "{inner}");
        let all = edited(base, "task.*.repeat", "3").unwrap();
        assert_eq!(all.matches("repeat = 3").count(), 2);
        let kept = edited(base, "task.len", "1").unwrap();
        assert_eq!(kept.matches("[[task]]").count(), 1);
        assert!(kept.contains("cpu = 0"));
        let steps = edited(base, "task.0.steps.len", "1").unwrap();
        assert!(!steps.contains("\"b\""));
    }

    #[test]
    fn a_key_that_does_not_fit_says_why() {
        let base = "[[task]]\ncpu = 0\n[machine]\ncpus = 2\n";
        assert_eq!(
            edited(base, "task.3.cpu", "1"),
            Err(EditError::Key("`task` has 1 entries; there is no entry 3".into()))
        );
        assert_eq!(
            edited(base, "task.cpu", "1"),
            Err(EditError::Key("`task` is an array: index it (.0, [0], .*) or set its .len".into()))
        );
        assert_eq!(
            edited(base, "machine.cpus.x", "1"),
            Err(EditError::Key("`machine.cpus` is an integer, not a table or an array".into()))
        );
        assert_eq!(
            edited(base, "task.len", "2"),
            Err(EditError::Value("`task`.len takes an integer 1..=1 (the base has 1)".into()))
        );
        assert_eq!(
            edited(base, "machine[0]", "1"),
            Err(EditError::Key("`machine` is a table, not an array".into()))
        );
    }
}

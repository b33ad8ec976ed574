//! The `tdxsim replay …` lines tdxsim prints: complete (every option that decides the run,
//! the strategy included, even when it is the default) and quoted so a shell runs them as
//! printed, whatever the path holds.

use std::path::Path;

use crate::schema::Strategy;

/// `tdxsim replay FILE --seed N --strategy S[ --table]`: the run of `file` from `seed` under
/// `strategy` (schedule number `seed` for `exhaustive`).
pub fn replay_seed_command(file: &str, seed: u64, strategy: Strategy, table: bool) -> String {
    let table = if table { " --table" } else { "" };
    format!("tdxsim replay {} --seed {seed} --strategy {}{table}", quote(file), strategy.name())
}

/// `tdxsim replay BUNDLE`.
pub fn replay_bundle_command(bundle: &Path) -> String {
    format!("tdxsim replay {}", quote(&bundle.to_string_lossy()))
}

/// `text` as one shell word: as is when it holds only characters no shell treats specially,
/// in single quotes otherwise, and as `$'…'` with `\xHH` escapes when it holds control
/// characters (so printing it cannot drive the terminal, and bash still reads it back).
pub fn quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_owned();
    }
    if !text.chars().any(|c| c.is_control()) {
        return format!("'{}'", text.replace('\'', r"'\''"));
    }
    let mut quoted = String::from("$'");
    for c in text.chars() {
        match c {
            '\\' => quoted.push_str(r"\\"),
            '\'' => quoted.push_str(r"\'"),
            c if c.is_control() => {
                let mut bytes = [0; 4];
                for byte in c.encode_utf8(&mut bytes).bytes() {
                    quoted.push_str(&format!("\\x{byte:02x}"));
                }
            }
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_a_shell_needs_it() {
        assert_eq!(quote("library/dpamt/s-d5.toml"), "library/dpamt/s-d5.toml");
        assert_eq!(quote("my file.toml"), "'my file.toml'");
        assert_eq!(quote("it's.toml"), r"'it'\''s.toml'");
        assert_eq!(quote("a\u{1b}[2Jb'\\"), r"$'a\x1b[2Jb\'\\'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn a_replay_line_names_the_strategy_even_when_it_is_the_default() {
        assert_eq!(
            replay_seed_command("x.toml", 5, Strategy::Random, false),
            "tdxsim replay x.toml --seed 5 --strategy random"
        );
        assert_eq!(
            replay_seed_command("x.toml", 5, Strategy::Pct, true),
            "tdxsim replay x.toml --seed 5 --strategy pct --table"
        );
    }
}

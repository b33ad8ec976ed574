//! Units in scenario strings: sizes (`"64M"`), times (`"50us"`) and addresses (`"0x200000"`).
//!
//! Pure functions returning `None` on anything they do not accept; the loader turns that
//! into a positioned error. They are strict on purpose: no spaces, no lowercase size
//! units, no exponents, so a typo is an error and not a different number.

use sim_core::Clock;

/// Binary size suffixes (`K` = 1024 bytes).
pub const SIZE_UNITS: &[(&str, u64)] = &[("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)];

/// Time suffixes with their length in nanoseconds.
pub const TIME_UNITS: &[(&str, f64)] = &[("ns", 1.0), ("us", 1e3), ("ms", 1e6), ("s", 1e9)];

/// Bytes of `"64M"`, `"16K"`, `"1T"` or a plain `"4096"`; `None` if malformed or too big.
pub fn parse_size(text: &str) -> Option<u64> {
    let (number, multiplier) = SIZE_UNITS
        .iter()
        .find_map(|(suffix, multiplier)| Some((text.strip_suffix(suffix)?, *multiplier)))
        .unwrap_or((text, 1));
    parse_decimal(number)?.checked_mul(multiplier)
}

/// Cycles of `"50us"`, `"1.5ms"`, `"1s"` at `clock`, rounded to the nearest cycle;
/// `None` if malformed, unitless, or more cycles than a `u64` holds.
pub fn parse_time(text: &str, clock: Clock) -> Option<u64> {
    // "ns", "us", "ms" before "s": the longest suffix that matches wins.
    let (number, ns_per_unit) = TIME_UNITS
        .iter()
        .rev()
        .filter_map(|(suffix, ns)| Some((text.strip_suffix(suffix)?, *ns)))
        .min_by_key(|(number, _)| number.len())?;
    let valid = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.chars().filter(|&c| c == '.').count() <= 1
        && number.starts_with(|c: char| c.is_ascii_digit())
        && number.ends_with(|c: char| c.is_ascii_digit());
    if !valid {
        return None;
    }
    let ns = number.parse::<f64>().ok()? * ns_per_unit;
    let cycles = ns * clock.ghz;
    // 2^64 as f64; anything at or above it would saturate in the cast.
    if !cycles.is_finite() || cycles < 0.0 || cycles.round() >= 18_446_744_073_709_551_616.0 {
        return None;
    }
    Some(clock.ns_to_cycles(ns))
}

/// An address written as a string: `"0x200000"` (hex, `_` separators allowed) or decimal.
pub fn parse_address(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => {
            let digits: String = hex.chars().filter(|&c| c != '_').collect();
            if hex.starts_with('_') || hex.ends_with('_') || digits.is_empty() {
                return None;
            }
            if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            u64::from_str_radix(&digits, 16).ok()
        }
        None => parse_decimal(text),
    }
}

/// Digits only (`u64::from_str` would also take a leading `+`).
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GHZ_2: Clock = Clock { ghz: 2.0 };

    #[test]
    fn sizes_are_binary() {
        assert_eq!(parse_size("64M"), Some(67_108_864));
        assert_eq!(parse_size("16K"), Some(16_384));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("4096"), Some(4096));
        for bad in ["", "M", "64m", "64 M", "1.5G", "-1M", "+1M", "64MB", "99999999999T"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_convert_with_the_clock() {
        assert_eq!(parse_time("1s", GHZ_2), Some(2_000_000_000));
        assert_eq!(parse_time("20ms", GHZ_2), Some(40_000_000));
        assert_eq!(parse_time("50us", GHZ_2), Some(100_000));
        assert_eq!(parse_time("1.5ns", GHZ_2), Some(3));
        assert_eq!(parse_time("0us", GHZ_2), Some(0));
        assert_eq!(parse_time("7us", Clock { ghz: 2.2 }), Some(15_400));
        for bad in
            ["", "s", "1", "1 s", ".5s", "5.s", "1.2.3s", "1e3ns", "-1s", "1h", "inf s", "99999999999999999s"]
        {
            assert_eq!(parse_time(bad, GHZ_2), None, "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_hex_or_decimal() {
        assert_eq!(parse_address("0x200000"), Some(0x20_0000));
        assert_eq!(parse_address("0x20_0000"), Some(0x20_0000));
        assert_eq!(parse_address("2097152"), Some(0x20_0000));
        for bad in ["", "0x", "0x_1", "0xg", "A1", "-1", "0x1_0000_0000_0000_0000", "2M"] {
            assert_eq!(parse_address(bad), None, "{bad:?}");
        }
    }
}

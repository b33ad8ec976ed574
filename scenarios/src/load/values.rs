//! Values: tables, keys, integers, floats, strings, choices, sizes, times, addresses.

use super::*;

impl<'t> Loader<'t> {
    /// `top[name]` as a table whose keys must be in `allowed`, if present.
    pub(super) fn subtable<'a, 'i>(
        &self,
        top: &Table<'a, 'i>,
        name: &str,
        allowed: &[&str],
    ) -> Result<Option<Table<'a, 'i>>> {
        top.get(name).map(|value| self.table(top.key(name), value, Some(allowed))).transpose()
    }

    /// `value` as a table; with `allowed`, an unknown key is an error.
    pub(super) fn table<'a, 'i>(
        &self,
        path: String,
        value: &'a Value<'i>,
        allowed: Option<&[&str]>,
    ) -> Result<Table<'a, 'i>> {
        let DeValue::Table(table) = value.get_ref() else {
            let expected = match allowed {
                Some(allowed) => format!("a table with keys {}", allowed.join(", ")),
                None => "a table".to_owned(),
            };
            return Err(self.invalid(Some(value), &path, &expected));
        };
        let table = Self::entries(path, value.span(), table);
        if let Some(allowed) = allowed {
            self.check_keys(&table, allowed)?;
        }
        Ok(table)
    }

    pub(super) fn table_entries<'a, 'i>(
        &self,
        path: String,
        span: Range<usize>,
        table: &'a DeTable<'i>,
        allowed: &[&str],
    ) -> Result<Table<'a, 'i>> {
        let table = Self::entries(path, span, table);
        self.check_keys(&table, allowed)?;
        Ok(table)
    }

    /// The entries in file order: toml's map is sorted by key, which would make "the
    /// first error" depend on spelling rather than position.
    pub(super) fn entries<'a, 'i>(path: String, span: Range<usize>, table: &'a DeTable<'i>) -> Table<'a, 'i> {
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        Table { path, span, entries }
    }

    pub(super) fn check_keys(&self, table: &Table<'_, '_>, allowed: &[&str]) -> Result<()> {
        for (key, _) in &table.entries {
            if !allowed.contains(&key.get_ref().as_ref()) {
                let expected = format!("one of the keys {}", allowed.join(", "));
                return Err(self.error(
                    key.span(),
                    &table.key(key.get_ref()),
                    &expected,
                    self.raw(key.span()),
                ));
            }
        }
        Ok(())
    }

    /// An integer `min..=max`; floats, strings, negatives and huge values are refused
    /// with the same expectation.
    pub(super) fn int(&self, key: &str, value: &Value<'_>, min: u64, max: u64) -> Result<u64> {
        let expected = match (min, max) {
            (0, u64::MAX) => "a non-negative integer".to_owned(),
            (min, u64::MAX) => format!("an integer >= {min}"),
            (min, max) => format!("an integer {min}..={max}"),
        };
        let DeValue::Integer(integer) = value.get_ref() else {
            return Err(self.invalid(Some(value), key, &expected));
        };
        let digits: String = integer.as_str().chars().filter(|&c| c != '_').collect();
        let digits = digits.strip_prefix('+').unwrap_or(&digits);
        match u64::from_str_radix(digits, integer.radix()) {
            Ok(number) if (min..=max).contains(&number) => Ok(number),
            _ => Err(self.invalid(Some(value), key, &expected)),
        }
    }

    /// A finite number (an integer is accepted: `ghz = 2`) for which `valid` holds.
    pub(super) fn float(
        &self,
        key: &str,
        value: &Value<'_>,
        expected: &str,
        valid: impl Fn(f64) -> bool,
    ) -> Result<f64> {
        let number = match value.get_ref() {
            DeValue::Float(float) => float.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Integer(integer) if integer.radix() == 10 => {
                integer.as_str().replace('_', "").parse::<i64>().ok().map(|number| number as f64)
            }
            _ => None,
        };
        match number {
            Some(number) if number.is_finite() && valid(number) => Ok(number),
            _ => Err(self.invalid(Some(value), key, expected)),
        }
    }

    pub(super) fn boolean(&self, key: &str, value: &Value<'_>) -> Result<bool> {
        value.get_ref().as_bool().ok_or_else(|| self.invalid(Some(value), key, "true or false"))
    }

    pub(super) fn string<'v>(&self, key: &str, value: &'v Value<'_>, expected: &str) -> Result<&'v str> {
        value.get_ref().as_str().ok_or_else(|| self.invalid(Some(value), key, expected))
    }

    /// A string from `choices`; the error lists them all.
    pub(super) fn choice<'c>(&self, key: &str, value: &Value<'_>, choices: &[&'c str]) -> Result<&'c str> {
        let text = value.get_ref().as_str();
        choices.iter().copied().find(|choice| Some(*choice) == text).ok_or_else(|| {
            let expected = format!("one of {}", choices.join(" | "));
            self.invalid(Some(value), key, &expected)
        })
    }

    /// Bytes: an integer, or a string with a K/M/G/T suffix.
    pub(super) fn size(&self, key: &str, value: &Value<'_>, expected: &str) -> Result<u64> {
        let bytes = match value.get_ref() {
            DeValue::Integer(_) => self.int(key, value, 0, u64::MAX).ok(),
            DeValue::String(text) => parse_size(text),
            _ => None,
        };
        bytes.ok_or_else(|| self.invalid(Some(value), key, expected))
    }

    /// Cycles: an integer, or a string with a ns/us/ms/s suffix converted at `clock`.
    pub(super) fn time(&self, key: &str, value: &Value<'_>, clock: Clock, expected: &str) -> Result<u64> {
        let cycles = match value.get_ref() {
            DeValue::Integer(_) => self.int(key, value, 0, u64::MAX).ok(),
            DeValue::String(text) => parse_time(text, clock),
            _ => None,
        };
        cycles.ok_or_else(|| self.invalid(Some(value), key, expected))
    }

    /// A time (see [`Loader::time`]) of at least `minimum` cycles and at most
    /// [`max::TIME_NS`] at `clock`; the message says which end was crossed.
    pub(super) fn bounded_time(
        &self,
        key: &str,
        value: &Value<'_>,
        clock: Clock,
        minimum: u64,
        expected: &str,
    ) -> Result<u64> {
        let cycles = self.time(key, value, clock, expected)?;
        let maximum = clock.ns_to_cycles(max::TIME_NS as f64);
        if cycles > maximum {
            let expected = format!(
                "{expected}, at most {}s ({maximum} cycles at {} GHz)",
                max::TIME_NS / 1_000_000_000,
                clock.ghz
            );
            return Err(self.invalid(Some(value), key, &expected));
        }
        if cycles < minimum {
            let converted = match value.get_ref() {
                DeValue::String(_) => {
                    format!(" ({} is {cycles} cycles at {} GHz)", self.found(value), clock.ghz)
                }
                _ => String::new(),
            };
            let expected = format!("a time of at least {minimum} cycle{converted}");
            return Err(self.invalid(Some(value), key, &expected));
        }
        Ok(cycles)
    }

    /// An address: an integer or a string like "0x200000".
    pub(super) fn address(&self, key: &str, value: &Value<'_>) -> Result<u64> {
        let address = match value.get_ref() {
            DeValue::Integer(_) => self.int(key, value, 0, u64::MAX).ok(),
            DeValue::String(text) => parse_address(text),
            _ => None,
        };
        address.ok_or_else(|| {
            self.invalid(Some(value), key, "an address: an integer or a string like \"0x200000\"")
        })
    }
}

//! A task's steps: each call with its arguments, raw SEAMCALLs, `at` and `returns`.

use super::*;

impl Loader<'_> {
    /// One step: its call, then `at` and `returns`, which every call accepts.
    pub(super) fn step(
        &self,
        path: &str,
        value: &Value<'_>,
        space: &StepSpace<'_>,
        clock: Clock,
    ) -> Result<Step> {
        let expected = "a step: an inline table like { call = \"sleep\", for = \"1us\" }";
        if !value.get_ref().is_table() {
            return Err(self.invalid(Some(value), path, expected));
        }
        let table = self.table(path.to_owned(), value, None)?;
        let call = self.call(&table, space, clock)?;
        let at = match table.get("at") {
            Some(value) => {
                Some(Cycle(self.bounded_time(&table.key("at"), value, clock, 0, TIME_EXPECTED)?))
            }
            None => None,
        };
        let returns = match table.get("returns") {
            Some(value) => {
                let key = table.key("returns");
                let possible = call.possible_returns();
                let names: Vec<&str> = possible.iter().map(String::as_str).collect();
                let name = self.choice(&key, value, &names)?;
                Some(Returns::parse(name).expect("possible_returns() lists parseable values"))
            }
            None => None,
        };
        let (line, column) = self.position(value.span().start);
        Ok(Step { call, at, returns, line, column })
    }

    /// A step's `call` and the arguments that call takes; another call's argument is an
    /// unknown key.
    fn call(&self, table: &Table<'_, '_>, space: &StepSpace<'_>, clock: Clock) -> Result<Call> {
        let Some(call_value) = table.get("call") else {
            return Err(self.missing(table, "call", &format!("a call name ({})", call_names())));
        };
        let call_key = table.key("call");
        let name = self.string(&call_key, call_value, &format!("a call name ({})", call_names()))?;
        if name != "seamcall"
            && let Some(arguments) = keys::call_arguments(name)
        {
            self.check_keys(table, &step_keys(arguments))?;
        }
        if let Some(call) = self.kvm_call(name, table, space, clock)? {
            return Ok(call);
        }
        let call = match name {
            "seamcall" => self.seamcall(table, space)?,
            "tdx_pamt_get" | "tdx_pamt_put" | "tdp_fault" | "zap" => self.memory_call(name, table, space)?,
            "tdx_enable" | "tdx_cpu_enable" => {
                if name == "tdx_enable" {
                    Call::TdxEnable
                } else {
                    Call::TdxCpuEnable
                }
            }
            "cpu_up" | "cpu_down" => {
                let Some(target_value) = table.get("target") else {
                    let expected = format!(
                        "a CPU 0..={} (below machine.possible_cpus, required)",
                        space.possible_cpus - 1
                    );
                    return Err(self.missing(table, "target", &expected));
                };
                let target = self.cpu(&table.key("target"), target_value, space.possible_cpus)?;
                if name == "cpu_up" { Call::CpuUp { target } } else { Call::CpuDown { target } }
            }
            "seamldr_install_module" => self.install_call(table)?,
            "sleep" | "spin" => {
                let Some(for_value) = table.get("for") else {
                    return Err(self.missing(table, "for", "a time (required)"));
                };
                let cycles = self.bounded_time(&table.key("for"), for_value, clock, 0, TIME_EXPECTED)?;
                if name == "sleep" { Call::Sleep { cycles } } else { Call::Spin { cycles } }
            }
            _ if CALLS_NOT_AVAILABLE.contains(&name) => {
                let expected = format!(
                    "a call this version runs ({}); {name} is not available in this version",
                    call_names()
                );
                return Err(self.invalid(Some(call_value), &call_key, &expected));
            }
            _ => {
                let expected = format!("a known call ({})", call_names());
                return Err(self.invalid(Some(call_value), &call_key, &expected));
            }
        };
        Ok(call)
    }

    /// `seamldr_install_module`, with the step a fault is injected at, if any.
    fn install_call(&self, table: &Table<'_, '_>) -> Result<Call> {
        let fail_step = match table.get("fail_step") {
            Some(value) => {
                let names: Vec<&str> = FailStep::ALL.iter().map(|step| step.name()).collect();
                let name = self.choice(&table.key("fail_step"), value, &names)?;
                Some(FailStep::from_name(name).expect("choice() returned a listed name"))
            }
            None => None,
        };
        Ok(Call::SeamldrInstallModule { fail_step })
    }

    /// The calls that take pages: DPAMT get/put, a TDP fault, a zap.
    fn memory_call(&self, name: &str, table: &Table<'_, '_>, space: &StepSpace<'_>) -> Result<Call> {
        Ok(match name {
            "tdx_pamt_get" => {
                let page = self.required_page(table, "page", 1, space)?;
                let pair = match table.get("pair") {
                    Some(value) => Some(self.pair(&table.key("pair"), value, space)?),
                    None => None,
                };
                Call::TdxPamtGet { page, pair }
            }
            "tdx_pamt_put" => {
                let page = self.required_page(table, "page", 1, space)?;
                let pair = match table.get("pair") {
                    Some(value) => Some(self.pair(&table.key("pair"), value, space)?),
                    None => None,
                };
                Call::TdxPamtPut { page, pair }
            }
            "tdp_fault" => {
                let td = self.required_td(table)?;
                let count = self.count(table, space)?;
                let gpa = self.gpa(table, count)?;
                let page = match table.get("page") {
                    Some(value) => Some(self.page(&table.key("page"), value, count, space)?),
                    None => None,
                };
                Call::TdpFault { td, gpa, count, page }
            }
            "zap" => {
                let td = self.required_td(table)?;
                let count = self.count(table, space)?;
                Call::Zap { td, gpa: self.gpa(table, count)?, count }
            }
            _ => unreachable!("memory_call() is called for its four names only"),
        })
    }

    /// `{ call = "seamcall", leaf = ..., operands }` -> the typed `LeafCall`. Operands are
    /// kept as given (PAMT.ADD's `hpa` is not rounded to 2MB: the module checks that).
    pub(super) fn seamcall(&self, table: &Table<'_, '_>, space: &StepSpace<'_>) -> Result<Call> {
        let modelled: Vec<&str> = Leaf::ALL
            .iter()
            .filter(|leaf| leaf.is_modelled() && raw_operands(**leaf).is_some())
            .map(|leaf| leaf.name())
            .collect();
        let modelled = modelled.join(", ");
        let Some(leaf_value) = table.get("leaf") else {
            return Err(self.missing(table, "leaf", &format!("a leaf name ({modelled})")));
        };
        let leaf_key = table.key("leaf");
        let leaf_name = self.string(&leaf_key, leaf_value, &format!("a leaf name ({modelled})"))?;
        let Some(leaf) = Leaf::from_name(leaf_name) else {
            let expected = format!("a SEAMCALL leaf name ({modelled})");
            return Err(self.invalid(Some(leaf_value), &leaf_key, &expected));
        };
        let not_modelled = || {
            let expected = format!("a leaf this version models ({modelled})");
            self.invalid(Some(leaf_value), &leaf_key, &expected)
        };
        if !leaf.is_modelled() {
            return Err(not_modelled());
        }
        let Some(operands) = raw_operands(leaf) else {
            return Err(not_modelled());
        };
        let arguments: Vec<&str> = ["leaf"].into_iter().chain(operands.iter().copied()).collect();
        self.check_keys(table, &step_keys(&arguments))?;
        let td = || self.required_td(table).map(TdId);
        let gpa = || self.gpa(table, 1).map(Gpa);
        let page = |name| self.required_page(table, name, 1, space).map(Hpa);
        let call = match leaf {
            Leaf::PhymemPamtAdd => {
                let hpa = page("hpa")?;
                let Some(pair_value) = table.get("pair") else {
                    return Err(self.missing(table, "pair", "two pages (required)"));
                };
                let pair = self.pair(&table.key("pair"), pair_value, space)?;
                LeafCall::PamtAdd { hpa, pair: [Hpa(pair[0]), Hpa(pair[1])] }
            }
            Leaf::PhymemPamtRemove => LeafCall::PamtRemove { hpa: page("hpa")? },
            Leaf::MemPageAug => LeafCall::PageAug { td: td()?, gpa: gpa()?, page: page("page")? },
            Leaf::MemPageRemove => LeafCall::PageRemove { td: td()?, gpa: gpa()? },
            Leaf::MemRangeBlock => LeafCall::RangeBlock { td: td()?, gpa: gpa()? },
            Leaf::MemTrack => LeafCall::Track { td: td()? },
            Leaf::PhymemPageWbinvd => LeafCall::PageWbinvd { page: page("page")? },
            Leaf::SysRd => LeafCall::SysRd { field: seam_model::call::metadata::FIELD_MODULE_HV },
            Leaf::SysInit => LeafCall::SysInit,
            Leaf::SysLpInit => LeafCall::SysLpInit,
            Leaf::SeamldrInfo => LeafCall::SeamldrInfo,
            _ => return Err(not_modelled()),
        };
        Ok(Call::Seamcall(call))
    }
}

/// The keys a step of a call with `arguments` may have: `call`, the arguments, then the
/// other keys of every step ([`keys::STEP`]).
pub(super) fn step_keys<'k>(arguments: &[&'k str]) -> Vec<&'k str> {
    let (call, common) = keys::STEP.split_first().expect("keys::STEP starts with call");
    std::iter::once(*call).chain(arguments.iter().copied()).chain(common.iter().copied()).collect()
}

pub(super) fn call_names() -> String {
    CALLS.iter().map(|(name, _, _)| *name).collect::<Vec<_>>().join(", ")
}

/// Step arguments: CPUs, td, gpa, count, pages.
impl Loader<'_> {
    /// A CPU number below `possible_cpus`: a task's `cpu`, `cpu_up`'s and `cpu_down`'s `target`.
    pub(super) fn cpu(&self, key: &str, value: &Value<'_>, possible_cpus: u32) -> Result<u32> {
        let last = u64::from(possible_cpus) - 1;
        let expected = format!("an integer 0..={last} (below machine.possible_cpus)");
        let cpu = self.int(key, value, 0, last).map_err(|error| ScenarioError { expected, ..error })?;
        Ok(cpu as u32)
    }

    pub(super) fn required_td(&self, table: &Table<'_, '_>) -> Result<u32> {
        let Some(value) = table.get("td") else {
            return Err(self.missing(table, "td", "a TD number (required)"));
        };
        Ok(self.int(&table.key("td"), value, 0, u64::from(u32::MAX))? as u32)
    }

    /// A number of 4K pages, at most the pages of `machine.memory`.
    pub(super) fn count(&self, table: &Table<'_, '_>, space: &StepSpace<'_>) -> Result<u32> {
        let pages = space.memory_bytes / PAGE_SIZE;
        match table.get("count") {
            Some(value) => {
                let count =
                    self.int(&table.key("count"), value, 1, pages).map_err(|error| ScenarioError {
                        expected: format!("an integer 1..={pages} (at most the 4K pages of machine.memory)"),
                        ..error
                    })?;
                Ok(count as u32)
            }
            None => Ok(1),
        }
    }

    /// A 4K-aligned guest address with room for `count` pages after it.
    pub(super) fn gpa(&self, table: &Table<'_, '_>, count: u32) -> Result<u64> {
        let Some(value) = table.get("gpa") else {
            return Err(self.missing(table, "gpa", "a guest physical address (required)"));
        };
        let key = table.key("gpa");
        let gpa = self.address(&key, value)?;
        let fits = u64::from(count).checked_mul(PAGE_SIZE).and_then(|bytes| gpa.checked_add(bytes));
        if !gpa.is_multiple_of(PAGE_SIZE) || fits.is_none() {
            return Err(self.invalid(Some(value), &key, "a 4K-aligned guest physical address"));
        }
        Ok(gpa)
    }

    pub(super) fn required_page(
        &self,
        table: &Table<'_, '_>,
        name: &str,
        count: u32,
        space: &StepSpace<'_>,
    ) -> Result<u64> {
        let Some(value) = table.get(name) else {
            return Err(self.missing(table, name, "a page: a name from [pages] or an address (required)"));
        };
        self.page(&table.key(name), value, count, space)
    }

    /// `[P1, P2]`: exactly two pages.
    pub(super) fn pair(&self, key: &str, value: &Value<'_>, space: &StepSpace<'_>) -> Result<[u64; 2]> {
        let expected = "two pages, like [\"B1\", \"0x600000\"]";
        match value.get_ref() {
            DeValue::Array(items) if items.len() == 2 => Ok([
                self.page(&format!("{key}[0]"), &items[0], 1, space)?,
                self.page(&format!("{key}[1]"), &items[1], 1, space)?,
            ]),
            _ => Err(self.invalid(Some(value), key, expected)),
        }
    }

    /// A page name from `[pages]`, an integer or an address string, checked to start
    /// `count` 4K pages that all lie inside `machine.memory`.
    pub(super) fn page(
        &self,
        key: &str,
        value: &Value<'_>,
        count: u32,
        space: &StepSpace<'_>,
    ) -> Result<u64> {
        let names: Vec<&str> = space.pages.keys().map(String::as_str).collect();
        let names = if names.is_empty() { "none defined".to_owned() } else { names.join(", ") };
        let expected = format!("a page: a name from [pages] ({names}) or an address like \"0x200000\"");
        let address = match value.get_ref() {
            DeValue::String(text) => match (parse_address(text), space.pages.get(text.as_ref())) {
                (Some(address), _) => address,
                // Named pages were checked where [pages] defines them.
                (None, Some(address)) if count == 1 => return Ok(*address),
                (None, Some(address)) => *address,
                (None, None) => return Err(self.invalid(Some(value), key, &expected)),
            },
            DeValue::Integer(_) => self.int(key, value, 0, u64::MAX)?,
            _ => return Err(self.invalid(Some(value), key, &expected)),
        };
        self.check_page(key, value, address, count, space.memory_bytes)?;
        Ok(address)
    }

    pub(super) fn check_page(
        &self,
        key: &str,
        value: &Value<'_>,
        address: u64,
        count: u32,
        memory_bytes: u64,
    ) -> Result<()> {
        if !address.is_multiple_of(PAGE_SIZE) {
            return Err(self.invalid(Some(value), key, "a 4K-aligned address"));
        }
        let end = u64::from(count).checked_mul(PAGE_SIZE).and_then(|bytes| address.checked_add(bytes));
        if end.is_none_or(|end| end > memory_bytes) {
            let expected = if count == 1 {
                format!("an address inside machine.memory (below {memory_bytes:#x})")
            } else {
                format!("an address with {count} pages inside machine.memory (below {memory_bytes:#x})")
            };
            return Err(self.invalid(Some(value), key, &expected));
        }
        Ok(())
    }
}

//! Scenario files: schema, loader, runner, expectations.

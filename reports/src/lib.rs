//! Rendering of `tdxsim sweep` results (CSV to SVG plots and a report).
//!
//! Sweeps arrive with the contention-curves work; committed reports go in `reports/`.

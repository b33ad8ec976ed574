//! Property tests over workloads, schedules and lock orderings live in `fuzz/tests/`.

//! Lock-order checking in the manner of lockdep: every time a task takes a lock while
//! holding others, the "held -> taken" edge is added to a graph over lock instances and one
//! over lock classes. A new edge that closes a cycle is an inversion: two paths take the same
//! locks in opposite orders, so some interleaving deadlocks, whether or not this run did.
//! Checking goes on after the first finding; each inversion is reported once.

use std::collections::{BTreeMap, BTreeSet};

use crate::{CpuId, Cycle, TaskId};

/// Who first took `to` while holding `from`.
#[derive(Clone, Debug)]
struct Witness {
    cpu: CpuId,
    task: TaskId,
    cycle: Cycle,
}

#[derive(Default)]
struct Graph {
    edges: BTreeMap<u32, BTreeMap<u32, Witness>>,
}

impl Graph {
    /// A path `from ->* to`, as its edges.
    fn path(&self, from: u32, to: u32) -> Option<Vec<(u32, u32)>> {
        let mut stack = vec![(from, Vec::new())];
        let mut seen = BTreeSet::from([from]);
        while let Some((node, path)) = stack.pop() {
            let Some(next) = self.edges.get(&node) else { continue };
            for &target in next.keys() {
                let mut path = path.clone();
                path.push((node, target));
                if target == to {
                    return Some(path);
                }
                if seen.insert(target) {
                    stack.push((target, path));
                }
            }
        }
        None
    }

    fn witness(&self, from: u32, to: u32) -> &Witness {
        &self.edges[&from][&to]
    }
}

/// The two graphs and what they found.
#[derive(Default)]
pub struct LockOrder {
    instances: Graph,
    classes: Graph,
    class_ids: BTreeMap<String, u32>,
    class_names: Vec<String>,
    reported: BTreeSet<(bool, u32, u32)>,
    findings: Vec<String>,
}

/// What the checker needs to know of one lock.
pub struct LockRef<'a> {
    pub id: u32,
    pub name: &'a str,
    pub class: &'a str,
}

impl LockOrder {
    fn class_id(&mut self, class: &str) -> u32 {
        if let Some(&id) = self.class_ids.get(class) {
            return id;
        }
        let id = self.class_names.len() as u32;
        self.class_names.push(class.to_string());
        self.class_ids.insert(class.to_string(), id);
        id
    }

    /// Records that `task` on `cpu` takes `taken` while holding `held`.
    pub fn on_acquire(
        &mut self,
        cpu: CpuId,
        task: TaskId,
        cycle: Cycle,
        held: &[LockRef<'_>],
        taken: &LockRef<'_>,
        names: &dyn Fn(u32) -> String,
    ) {
        let witness = Witness { cpu, task, cycle };
        for lock in held {
            if lock.id == taken.id {
                continue;
            }
            self.add_edge(false, lock.id, taken.id, &witness, names);
            let (held_class, taken_class) = (self.class_id(lock.class), self.class_id(taken.class));
            // Nesting within one class is ordered by instance; only cross-class edges here.
            if held_class != taken_class {
                let class_names = self.class_names.clone();
                self.add_edge(true, held_class, taken_class, &witness, &|id| {
                    format!("class {}", class_names[id as usize])
                });
            }
        }
    }

    fn add_edge(
        &mut self,
        class: bool,
        from: u32,
        to: u32,
        witness: &Witness,
        names: &dyn Fn(u32) -> String,
    ) {
        let graph = if class { &self.classes } else { &self.instances };
        if graph.edges.get(&from).is_some_and(|next| next.contains_key(&to)) {
            return;
        }
        if let Some(reverse) = graph.path(to, from) {
            let key = (class, from.min(to), from.max(to));
            if self.reported.insert(key) {
                let earlier: Vec<String> = reverse
                    .iter()
                    .map(|&(a, b)| {
                        let w = graph.witness(a, b);
                        format!(
                            "{} (task {}) took {} while holding {} at cycle {}",
                            w.cpu,
                            w.task.0,
                            names(b),
                            names(a),
                            w.cycle.0
                        )
                    })
                    .collect();
                self.findings.push(format!(
                    "lock-order inversion: {} (task {}) takes {} while holding {} at cycle {}, but {}",
                    witness.cpu,
                    witness.task.0,
                    names(to),
                    names(from),
                    witness.cycle.0,
                    earlier.join(", and ")
                ));
            }
        }
        let graph = if class { &mut self.classes } else { &mut self.instances };
        graph.edges.entry(from).or_default().insert(to, witness.clone());
    }

    pub fn findings(&self) -> &[String] {
        &self.findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(id: u32, class: &'static str) -> LockRef<'static> {
        LockRef { id, name: "", class }
    }

    #[test]
    fn opposite_orders_are_an_inversion_reported_once() {
        let mut order = LockOrder::default();
        let names = |id: u32| ["A", "B", "C"][id as usize].to_string();
        order.on_acquire(CpuId(0), TaskId(0), Cycle(1), &[lock(0, "rw")], &lock(1, "rw"), &names);
        assert!(order.findings().is_empty());
        order.on_acquire(CpuId(1), TaskId(1), Cycle(5), &[lock(1, "rw")], &lock(0, "rw"), &names);
        assert_eq!(order.findings().len(), 1);
        assert_eq!(
            order.findings()[0],
            "lock-order inversion: CPU 1 (task 1) takes A while holding B at cycle 5, but CPU 0 (task 0) took B while holding A at cycle 1"
        );
        order.on_acquire(CpuId(1), TaskId(1), Cycle(9), &[lock(1, "rw")], &lock(0, "rw"), &names);
        assert_eq!(order.findings().len(), 1, "reported once");
    }

    #[test]
    fn a_consistent_order_and_a_longer_cycle() {
        let mut order = LockOrder::default();
        let names = |id: u32| ["A", "B", "C"][id as usize].to_string();
        order.on_acquire(CpuId(0), TaskId(0), Cycle(1), &[lock(0, "x")], &lock(1, "y"), &names);
        order.on_acquire(CpuId(0), TaskId(0), Cycle(2), &[lock(0, "x")], &lock(1, "y"), &names);
        order.on_acquire(CpuId(1), TaskId(1), Cycle(3), &[lock(1, "y")], &lock(2, "z"), &names);
        assert!(order.findings().is_empty());
        // C then A closes A -> B -> C -> A, on instances and on classes.
        order.on_acquire(CpuId(2), TaskId(2), Cycle(4), &[lock(2, "z")], &lock(0, "x"), &names);
        assert_eq!(order.findings().len(), 2, "{:?}", order.findings());
        assert!(
            order.findings()[0].contains("took B while holding A")
                && order.findings()[0].contains("took C while holding B")
        );
    }
}

//! Lock-order checking in the manner of lockdep: every time a task takes a lock while
//! holding others, the "held -> taken" edge is added to a graph over lock instances and one
//! over lock classes. A new edge that closes a cycle is an inversion: two paths take the same
//! locks in opposite orders, so some interleaving deadlocks, whether or not this run did.
//! Checking goes on after the first finding; each inversion is reported once.
//!
//! An attempt allocates nothing unless it adds an edge the graphs have not seen: the caller
//! passes the task's held locks (which the engine keeps per task), and edges are looked up
//! in a list sorted by (from, to).

use std::collections::BTreeSet;

use crate::outcome::OrderEdge;
use crate::resource::ResourceId;
use crate::{CpuId, Cycle, TaskId};

/// Edges `from -> to` over lock instances or classes, each with the instance edge that
/// first made it. One list sorted by the pair: a run adds a handful of edges, found by a
/// binary search and walked, a source's edges in target order, without a tree's nodes.
#[derive(Default)]
struct Graph {
    /// invariant: sorted by key, each key once.
    edges: Vec<((u32, u32), OrderEdge)>,
}

impl Graph {
    fn contains(&self, from: u32, to: u32) -> bool {
        self.edges.binary_search_by_key(&(from, to), |(key, _)| *key).is_ok()
    }

    /// Adds the edge `from -> to`, or gives an existing one this witness.
    fn insert(&mut self, from: u32, to: u32, witness: OrderEdge) {
        match self.edges.binary_search_by_key(&(from, to), |(key, _)| *key) {
            Ok(index) => self.edges[index].1 = witness,
            Err(index) => self.edges.insert(index, ((from, to), witness)),
        }
    }

    /// The edges out of `from`, by target.
    fn out_of(&self, from: u32) -> impl Iterator<Item = (u32, &OrderEdge)> {
        let start = self.edges.partition_point(|((source, _), _)| *source < from);
        let end = start + self.edges[start..].partition_point(|((source, _), _)| *source == from);
        self.edges[start..end].iter().map(|&((_, target), ref witness)| (target, witness))
    }

    /// A path `from ->* to`, as the witnesses of its edges.
    fn path(&self, from: u32, to: u32) -> Option<Vec<OrderEdge>> {
        // The usual case, a lock nothing was ever taken under: no search, no allocation.
        self.out_of(from).next()?;
        let mut stack = vec![(from, Vec::new())];
        let mut seen = BTreeSet::from([from]);
        while let Some((node, path)) = stack.pop() {
            for (target, witness) in self.out_of(node) {
                let mut path: Vec<OrderEdge> = path.clone();
                path.push(witness.clone());
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
}

/// An inversion: `taking` closed a cycle made of the `earlier` edges; `classes` when it is
/// a cycle over lock classes only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inversion {
    pub taking: OrderEdge,
    pub earlier: Vec<OrderEdge>,
    pub classes: bool,
}

/// The two graphs and what they found.
#[derive(Default)]
pub struct LockOrder {
    instances: Graph,
    classes: Graph,
    reported: BTreeSet<(bool, u32, u32)>,
    findings: Vec<Inversion>,
}

impl LockOrder {
    /// Back to the state before any acquisition, keeping the graphs' allocations (a reset
    /// engine's next run starts from it).
    pub(crate) fn clear(&mut self) {
        let LockOrder { instances, classes, reported, findings } = self;
        instances.edges.clear();
        classes.edges.clear();
        reported.clear();
        findings.clear();
    }

    /// Records that `task` on `cpu` takes `taken` (of class `class_of(taken)`) while holding
    /// `held`.
    pub fn on_acquire(
        &mut self,
        (cpu, task, cycle): (CpuId, TaskId, Cycle),
        held: &[ResourceId],
        taken: ResourceId,
        class_of: impl Fn(ResourceId) -> u32,
    ) {
        for &lock in held {
            if lock == taken {
                continue;
            }
            let witness = OrderEdge { task, cpu, cycle, from: lock, to: taken };
            if !self.instances.contains(lock.0, taken.0) {
                self.add_edge(false, lock.0, taken.0, &witness);
            }
            let (held_class, taken_class) = (class_of(lock), class_of(taken));
            // Nesting within one class is ordered by instance; only cross-class edges here.
            if held_class != taken_class && !self.classes.contains(held_class, taken_class) {
                self.add_edge(true, held_class, taken_class, &witness);
            }
        }
    }

    fn add_edge(&mut self, class: bool, from: u32, to: u32, witness: &OrderEdge) {
        let graph = if class { &self.classes } else { &self.instances };
        if let Some(reverse) = graph.path(to, from) {
            let key = (class, from.min(to), from.max(to));
            // A class cycle that an instance cycle already reported says nothing new.
            let instance_twin = class && self.instances.path(witness.to.0, witness.from.0).is_some();
            if !instance_twin && self.reported.insert(key) {
                self.findings.push(Inversion { taking: witness.clone(), earlier: reverse, classes: class });
            }
        }
        let graph = if class { &mut self.classes } else { &mut self.instances };
        graph.insert(from, to, witness.clone());
    }

    pub fn findings(&self) -> &[Inversion] {
        &self.findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ResourceId = ResourceId(0);
    const B: ResourceId = ResourceId(1);
    const C: ResourceId = ResourceId(2);

    fn at(cpu: u32, cycle: u64) -> (CpuId, TaskId, Cycle) {
        (CpuId(cpu), TaskId(cpu), Cycle(cycle))
    }

    #[test]
    fn opposite_orders_are_an_inversion_reported_once() {
        let mut order = LockOrder::default();
        let one_class = |_| 7;
        order.on_acquire(at(0, 1), &[A], B, one_class);
        assert!(order.findings().is_empty());
        order.on_acquire(at(1, 5), &[B], A, one_class);
        assert_eq!(order.findings().len(), 1);
        let inversion = &order.findings()[0];
        assert_eq!((inversion.taking.from, inversion.taking.to, inversion.taking.cpu), (B, A, CpuId(1)));
        assert_eq!(inversion.earlier.len(), 1);
        assert_eq!((inversion.earlier[0].from, inversion.earlier[0].to), (A, B));
        assert_eq!(inversion.earlier[0].cycle, Cycle(1));
        assert!(!inversion.classes);
        order.on_acquire(at(1, 9), &[B], A, one_class);
        assert_eq!(order.findings().len(), 1, "reported once");
    }

    #[test]
    fn a_consistent_order_and_a_longer_cycle() {
        let mut order = LockOrder::default();
        let class = |lock: ResourceId| lock.0 + 10;
        order.on_acquire(at(0, 1), &[A], B, class);
        order.on_acquire(at(0, 2), &[A], B, class);
        order.on_acquire(at(1, 3), &[B], C, class);
        assert!(order.findings().is_empty());
        // C then A closes A -> B -> C -> A over instances; the class cycle is the same one.
        order.on_acquire(at(2, 4), &[C], A, class);
        assert_eq!(order.findings().len(), 1, "{:?}", order.findings());
        let earlier: Vec<(ResourceId, ResourceId)> =
            order.findings()[0].earlier.iter().map(|edge| (edge.from, edge.to)).collect();
        assert_eq!(earlier, [(A, B), (B, C)]);
    }

    #[test]
    fn a_class_inversion_between_different_instances() {
        // rw[A] (class x) then lock L (class y) on one CPU; lock M (class y) then rw[B]
        // (class x) on another: no instance cycle, but classes x and y are inverted.
        let mut order = LockOrder::default();
        let class = |lock: ResourceId| if lock.0 < 2 { 1 } else { 2 };
        order.on_acquire(at(0, 1), &[ResourceId(0)], ResourceId(2), class);
        order.on_acquire(at(1, 2), &[ResourceId(3)], ResourceId(1), class);
        assert_eq!(order.findings().len(), 1);
        assert!(order.findings()[0].classes);
    }
}

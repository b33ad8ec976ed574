//! `Narrow512`: 512 `u32` values at two bytes each while their high parts (`value >> 9`)
//! take at most [`GROUPS`] distinct values, and at four bytes each once they do not.
//!
//! Made for per-page tables of one 2MB range of GPA (512 entries) whose values are page
//! frame numbers, perhaps with flags above them: a host allocator hands a guest its pages
//! mostly from one 2MB range after another, so a table's pfns fall in a few ranges. A
//! narrow slot is the value's low 9 bits (the page's place in its range) and the place of
//! its high part in the table's list of groups.

/// Values in a table.
pub const LEN: usize = 512;
/// Distinct high parts a narrow table holds.
pub const GROUPS: usize = 16;
/// Bits of a value a narrow slot keeps itself.
const LOW_BITS: u32 = 9;
const LOW_MASK: u32 = (1 << LOW_BITS) - 1;

/// 512 values; a slot never set reads as some value (the caller knows which are set).
#[derive(Clone, Debug)]
pub struct Narrow512 {
    /// The high parts narrow slots name, `groups[..used]`.
    groups: [u32; GROUPS],
    used: u8,
    slots: Slots,
}

#[derive(Clone, Debug)]
enum Slots {
    /// Bits 0..9 the value's low bits, 9..13 its group's place.
    Narrow(Box<[u16; LEN]>),
    /// The values themselves: they came to have more than [`GROUPS`] high parts.
    Wide(Box<[u32; LEN]>),
}

impl Default for Narrow512 {
    fn default() -> Self {
        Narrow512 { groups: [0; GROUPS], used: 0, slots: Slots::Narrow(Box::new([0; LEN])) }
    }
}

impl Narrow512 {
    /// The value of slot `index`.
    #[inline]
    pub fn get(&self, index: usize) -> u32 {
        match &self.slots {
            Slots::Narrow(slots) => {
                let slot = u32::from(slots[index]);
                (self.groups[(slot >> LOW_BITS) as usize % GROUPS] << LOW_BITS) | (slot & LOW_MASK)
            }
            Slots::Wide(slots) => slots[index],
        }
    }

    /// Slot `index` now holds `value`.
    #[inline]
    pub fn set(&mut self, index: usize, value: u32) {
        let place = match self.slots {
            Slots::Narrow(_) => self.group_place(value >> LOW_BITS),
            Slots::Wide(_) => None,
        };
        if place.is_none() && matches!(self.slots, Slots::Narrow(_)) {
            self.widen();
        }
        match (&mut self.slots, place) {
            (Slots::Narrow(slots), Some(place)) => {
                slots[index] = ((place << LOW_BITS) | (value & LOW_MASK)) as u16
            }
            (Slots::Wide(slots), _) => slots[index] = value,
            (Slots::Narrow(_), None) => unreachable!("narrow: a narrow table with no place for a group"),
        }
    }

    /// Whether the table keeps its values whole.
    pub fn is_wide(&self) -> bool {
        matches!(self.slots, Slots::Wide(_))
    }

    /// Heap bytes the table owns.
    pub fn heap_bytes(&self) -> usize {
        match self.slots {
            Slots::Narrow(_) => std::mem::size_of::<[u16; LEN]>(),
            Slots::Wide(_) => std::mem::size_of::<[u32; LEN]>(),
        }
    }

    /// The place of high part `group` in the list, added if there is room.
    fn group_place(&mut self, group: u32) -> Option<u32> {
        let used = usize::from(self.used);
        // The group the last value set used is most often the next one's.
        if let Some(place) = self.groups[..used].iter().rposition(|&known| known == group) {
            return Some(place as u32);
        }
        if used == GROUPS {
            return None;
        }
        self.groups[used] = group;
        self.used += 1;
        Some(used as u32)
    }

    /// The table keeps its values whole from now on.
    fn widen(&mut self) {
        let wide: Box<[u32; LEN]> = Box::new(std::array::from_fn(|index| self.get(index)));
        self.slots = Slots::Wide(wide);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_few_groups_are_narrow_and_a_seventeenth_group_widens_the_table_keeping_every_value() {
        let mut table = Narrow512::default();
        // Slot k: low part k, group 3k, so slot k has a group of its own.
        let value = |k: usize| ((3 * k as u32) << LOW_BITS) | k as u32;
        for k in 0..GROUPS {
            table.set(k, value(k));
        }
        table.set(100, (3 << LOW_BITS) | LOW_MASK);
        assert!(!table.is_wide());
        assert_eq!(table.heap_bytes(), 2 * LEN);
        assert_eq!(table.get(100), (3 << LOW_BITS) | LOW_MASK);
        table.set(GROUPS, value(GROUPS));
        assert!(table.is_wide(), "the seventeenth group");
        assert_eq!(table.heap_bytes(), 4 * LEN);
        for k in 0..=GROUPS {
            assert_eq!(table.get(k), value(k), "slot {k}");
        }
        assert_eq!(table.get(100), (3 << LOW_BITS) | LOW_MASK);
        table.set(7, u32::MAX);
        assert_eq!(table.get(7), u32::MAX);
    }

    #[test]
    fn a_value_set_again_takes_its_new_group() {
        let mut table = Narrow512::default();
        table.set(0, u32::MAX);
        table.set(0, 1 << LOW_BITS);
        table.set(1, 0);
        assert_eq!((table.get(0), table.get(1)), (1 << LOW_BITS, 0));
        assert!(!table.is_wide());
    }
}

//! A map from GFN to a small value, for TDs of millions of pages: the per-page state of
//! KVM's mirror S-EPT leaves and of guest_memfd. Where the kernel keeps an SPTE (8 bytes) or
//! a folio pointer per page, the model keeps a value of 32 bits, the pfn and a few flags, in
//! chunks of 512 GFNs (one 2MB range of GPA) with a bitmap of the ones present. The values
//! are a `Narrow512`: 2 bytes a GFN while the chunk's pages fall in a few host 2MB ranges (a
//! booting TD's, whose allocator mostly stays in a range), 4 once they scatter wider. A
//! chunk is allocated when its first GFN is inserted and freed when its last is removed.
//! Chunks of the first [`DENSE_CHUNKS`] (the GPAs below 2 TiB, where a TD's memory is) are
//! found by index in a vector grown to the highest one used, one pointer a chunk; any
//! above, in a `BTreeMap`. Iteration is in GFN order.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::Range;

use seam_model::{Hpa, PAGE_SIZE};
use sim_core::Narrow512;

/// GFNs per chunk.
const CHUNK: u64 = 512;
/// Chunks found by index in a vector: GPAs below 2 TiB. A boot's faults come one after
/// another, so the lookup a fault makes in the mirror and in guest_memfd is one load, not
/// a walk of a tree of thousands of chunks.
const DENSE_CHUNKS: u64 = 1 << 20;

/// Bits of a packed value that hold the pfn: 2^29 pages is 2 TiB, above `machine.memory`'s
/// maximum (1 TiB), so every page a run can name fits.
const PFN_BITS: u32 = 29;
const PFN_MASK: u32 = (1 << PFN_BITS) - 1;
/// The first flag bit above the pfn.
pub const FLAG_0: u32 = 1 << PFN_BITS;
pub const FLAG_1: u32 = 1 << (PFN_BITS + 1);

/// A value stored in 32 bits.
pub trait Packed: Copy {
    fn pack(self) -> u32;
    fn unpack(bits: u32) -> Self;
}

/// The pfn bits of `page`. invariant: every page of a run is below 2 TiB.
pub fn pack_pfn(page: Hpa) -> u32 {
    let pfn = page.0 / PAGE_SIZE;
    assert!(pfn <= u64::from(PFN_MASK), "page {:#x} above the 2 TiB a GfnMap holds", page.0);
    pfn as u32
}

/// The page of packed `bits`.
pub fn unpack_pfn(bits: u32) -> Hpa {
    Hpa(u64::from(bits & PFN_MASK) * PAGE_SIZE)
}

/// A guest_memfd entry: the page, and whether guest_memfd allocated it (a step may hand it
/// a page it names instead).
impl Packed for (Hpa, bool) {
    fn pack(self) -> u32 {
        pack_pfn(self.0) | if self.1 { FLAG_0 } else { 0 }
    }

    fn unpack(bits: u32) -> Self {
        (unpack_pfn(bits), bits & FLAG_0 != 0)
    }
}

struct Chunk {
    present: [u64; (CHUNK / 64) as usize],
    count: u32,
    /// The packed values; a slot that is not present holds anything.
    slots: Narrow512,
}

impl Chunk {
    fn new() -> Box<Chunk> {
        Box::new(Chunk { present: [0; (CHUNK / 64) as usize], count: 0, slots: Narrow512::default() })
    }

    fn has(&self, slot: usize) -> bool {
        self.present[slot / 64] & (1 << (slot % 64)) != 0
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Chunk>() + self.slots.heap_bytes()
    }

    /// The first present slot at or after `slot`.
    fn next_from(&self, slot: usize) -> Option<usize> {
        let mut word = slot / 64;
        let mut bits = self.present.get(word)? & (!0u64 << (slot % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            bits = *self.present.get(word)?;
        }
    }
}

/// GFN -> `V`, ordered.
pub struct GfnMap<V: Packed> {
    /// Chunks below [`DENSE_CHUNKS`] by index; `None` where none is allocated.
    dense: Vec<Option<Box<Chunk>>>,
    /// Chunks at or above [`DENSE_CHUNKS`].
    sparse: BTreeMap<u64, Box<Chunk>>,
    /// Chunks allocated.
    chunks: usize,
    len: u64,
    value: PhantomData<V>,
}

impl<V: Packed> Default for GfnMap<V> {
    fn default() -> Self {
        GfnMap { dense: Vec::new(), sparse: BTreeMap::new(), chunks: 0, len: 0, value: PhantomData }
    }
}

impl<V: Packed> std::fmt::Debug for GfnMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GfnMap({} GFNs in {} chunks)", self.len, self.chunks)
    }
}

fn split(gfn: u64) -> (u64, usize) {
    (gfn / CHUNK, (gfn % CHUNK) as usize)
}

impl<V: Packed> GfnMap<V> {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn chunk(&self, index: u64) -> Option<&Chunk> {
        match index < DENSE_CHUNKS {
            true => self.dense.get(index as usize)?.as_deref(),
            false => self.sparse.get(&index).map(|chunk| &**chunk),
        }
    }

    fn chunk_mut(&mut self, index: u64) -> Option<&mut Chunk> {
        match index < DENSE_CHUNKS {
            true => self.dense.get_mut(index as usize)?.as_deref_mut(),
            false => self.sparse.get_mut(&index).map(|chunk| &mut **chunk),
        }
    }

    /// The chunk of `index`, allocated if there is none.
    fn chunk_or_new(&mut self, index: u64) -> &mut Chunk {
        if index >= DENSE_CHUNKS {
            let chunks = &mut self.chunks;
            return self.sparse.entry(index).or_insert_with(|| {
                *chunks += 1;
                Chunk::new()
            });
        }
        let at = index as usize;
        if self.dense.len() <= at {
            self.dense.resize_with(at + 1, || None);
        }
        let chunks = &mut self.chunks;
        self.dense[at].get_or_insert_with(|| {
            *chunks += 1;
            Chunk::new()
        })
    }

    fn free_chunk(&mut self, index: u64) {
        match index < DENSE_CHUNKS {
            true => self.dense[index as usize] = None,
            false => {
                self.sparse.remove(&index);
            }
        }
        self.chunks -= 1;
    }

    pub fn get(&self, gfn: u64) -> Option<V> {
        let (index, slot) = split(gfn);
        let chunk = self.chunk(index)?;
        chunk.has(slot).then(|| V::unpack(chunk.slots.get(slot)))
    }

    pub fn contains_key(&self, gfn: u64) -> bool {
        let (index, slot) = split(gfn);
        self.chunk(index).is_some_and(|chunk| chunk.has(slot))
    }

    /// Sets `gfn` to `value`; what it held before.
    pub fn insert(&mut self, gfn: u64, value: V) -> Option<V> {
        let (index, slot) = split(gfn);
        let chunk = self.chunk_or_new(index);
        let old = chunk.has(slot).then(|| V::unpack(chunk.slots.get(slot)));
        if old.is_none() {
            chunk.present[slot / 64] |= 1 << (slot % 64);
            chunk.count += 1;
        }
        chunk.slots.set(slot, value.pack());
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `gfn`; what it held.
    pub fn remove(&mut self, gfn: u64) -> Option<V> {
        let (index, slot) = split(gfn);
        let chunk = self.chunk_mut(index)?;
        if !chunk.has(slot) {
            return None;
        }
        chunk.present[slot / 64] &= !(1 << (slot % 64));
        chunk.count -= 1;
        let value = V::unpack(chunk.slots.get(slot));
        let emptied = chunk.count == 0;
        self.len -= 1;
        if emptied {
            self.free_chunk(index);
        }
        Some(value)
    }

    /// The first GFN in `range` that is present, with its value.
    pub fn first_in(&self, range: Range<u64>) -> Option<(u64, V)> {
        self.range(range).next()
    }

    /// The present GFNs in `range`, in order, with their values.
    pub fn range(&self, range: Range<u64>) -> impl Iterator<Item = (u64, V)> + '_ {
        let Range { start, end } = range;
        let (first, _) = split(start);
        let last = if start < end { Some((end - 1) / CHUNK) } else { None };
        // The dense chunks from `first` to `last` (below DENSE_CHUNKS), then the sparse ones.
        let dense_end = last.map_or(0, |last| (last + 1).min(DENSE_CHUNKS).min(self.dense.len() as u64));
        let dense = (first.min(dense_end)..dense_end)
            .filter_map(move |index| self.dense[index as usize].as_deref().map(|chunk| (index, chunk)));
        let sparse_from = first.max(DENSE_CHUNKS);
        let sparse = match last {
            Some(last) if sparse_from <= last => self.sparse.range(sparse_from..=last),
            _ => self.sparse.range(1..1),
        };
        dense.chain(sparse.map(|(&index, chunk)| (index, &**chunk))).flat_map(move |(index, chunk)| {
            let base = index * CHUNK;
            let from = start.saturating_sub(base).min(CHUNK) as usize;
            let mut slot = from;
            std::iter::from_fn(move || {
                let next = chunk.next_from(slot)?;
                slot = next + 1;
                Some((base + next as u64, V::unpack(chunk.slots.get(next))))
            })
            .take_while(move |&(gfn, _)| gfn < end)
        })
    }

    /// Every present GFN, in order, with its value.
    pub fn iter(&self) -> impl Iterator<Item = (u64, V)> + '_ {
        self.range(0..u64::MAX)
    }

    pub fn clear(&mut self) {
        self.dense.clear();
        self.sparse.clear();
        self.chunks = 0;
        self.len = 0;
    }

    /// Heap bytes the map owns: its chunks and the dense index (the `BTreeMap`'s nodes not
    /// counted).
    pub fn heap_bytes(&self) -> usize {
        let chunks = self.dense.iter().flatten().chain(self.sparse.values());
        chunks.map(|chunk| chunk.heap_bytes()).sum::<usize>()
            + self.dense.capacity() * std::mem::size_of::<Option<Box<Chunk>>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gfn_map_keeps_values_in_gfn_order_and_frees_empty_chunks() {
        let mut map: GfnMap<(Hpa, bool)> = GfnMap::default();
        assert_eq!(map.insert(5, (Hpa(0x1000), true)), None);
        assert_eq!(map.insert(1030, (Hpa(0x7fff_f000), false)), None);
        assert_eq!(map.insert(511, (Hpa(0x2000), false)), None);
        assert_eq!(map.insert(5, (Hpa(0x3000), false)), Some((Hpa(0x1000), true)));
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(5), Some((Hpa(0x3000), false)));
        assert!(!map.contains_key(6) && map.contains_key(1030));
        let all: Vec<u64> = map.iter().map(|(gfn, _)| gfn).collect();
        assert_eq!(all, vec![5, 511, 1030]);
        assert_eq!(map.first_in(6..1030), Some((511, (Hpa(0x2000), false))));
        assert_eq!(map.first_in(512..1030), None);
        assert_eq!(map.range(0..512).count(), 2);
        assert_eq!(map.range(7..7).count(), 0);
        assert_eq!(map.remove(1030), Some((Hpa(0x7fff_f000), false)));
        assert_eq!(map.remove(1030), None);
        let index = map.dense.capacity() * std::mem::size_of::<Option<Box<Chunk>>>();
        let narrow = std::mem::size_of::<Chunk>() + 2 * CHUNK as usize;
        assert_eq!(map.heap_bytes(), narrow + index, "the emptied chunk is freed, the other is narrow");
        // GFNs above the dense index: kept in order after the dense ones.
        let high = DENSE_CHUNKS * CHUNK + 3;
        assert_eq!(map.insert(high, (Hpa(0x4000), true)), None);
        assert_eq!(map.get(high), Some((Hpa(0x4000), true)));
        let all: Vec<u64> = map.iter().map(|(gfn, _)| gfn).collect();
        assert_eq!(all, vec![5, 511, high]);
        assert_eq!(map.range(600..high).count(), 0);
        assert_eq!(map.first_in(6..u64::MAX), Some((511, (Hpa(0x2000), false))));
        assert_eq!(map.remove(high), Some((Hpa(0x4000), true)));
        map.clear();
        assert!(map.is_empty() && map.iter().next().is_none());
    }

    #[test]
    fn a_chunk_whose_pages_fall_in_more_ranges_than_its_table_holds_keeps_every_value() {
        let mut map: GfnMap<(Hpa, bool)> = GfnMap::default();
        // GFN k: a page of host range 3 * k, page k of it, allocated for odd k.
        let value = |k: u64| (Hpa((3 * k * 512 + k) * PAGE_SIZE), k % 2 == 1);
        for k in 0..sim_core::narrow::GROUPS as u64 {
            map.insert(k, value(k));
        }
        let narrow = map.heap_bytes();
        map.insert(sim_core::narrow::GROUPS as u64, value(sim_core::narrow::GROUPS as u64));
        assert!(map.heap_bytes() > narrow, "the seventeenth range widens the chunk");
        map.insert(0, (Hpa(0x7fff_f000), true));
        assert!(map.dense[0].as_ref().unwrap().slots.is_wide());
        let all: Vec<(u64, (Hpa, bool))> = map.iter().collect();
        let expected: Vec<(u64, (Hpa, bool))> = std::iter::once((0, (Hpa(0x7fff_f000), true)))
            .chain((1..=sim_core::narrow::GROUPS as u64).map(|k| (k, value(k))))
            .collect();
        assert_eq!(all, expected);
        // A narrow chunk: every flag and every place in a range survives.
        let mut map: GfnMap<(Hpa, bool)> = GfnMap::default();
        map.insert(600, (Hpa(511 * PAGE_SIZE), true));
        map.insert(601, (Hpa(512 * PAGE_SIZE), false));
        assert_eq!(map.get(600), Some((Hpa(511 * PAGE_SIZE), true)));
        assert_eq!(map.get(601), Some((Hpa(512 * PAGE_SIZE), false)));
    }
}

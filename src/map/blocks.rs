//! Hashed voxel blocks (as Bonxai and VDB): the world is cut into blocks of
//! 8^3 voxels, a block exists once one of its voxels is observed, and a
//! hash map from the packed block key finds it.
//!
//! A voxel is stored as four relaxed atomics, so rays traced on several
//! threads update one shared map without locks and without `unsafe`: a
//! thread claims a voxel for the frame by swapping in the frame number
//! ([`Slot::claim`]), and only the claimant writes the state. Reads and
//! writes are ordered by the joins of the parallel loop that makes them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::evidence::Cell;
use super::ray::Key;

/// Voxels per block edge.
pub const EDGE: i32 = 8;
/// Voxels per block.
pub const CELLS: usize = (EDGE * EDGE * EDGE) as usize;

/// One voxel's storage: a [`Cell`] as atomics (f32 state bits, time bits,
/// frame).
#[derive(Debug, Default)]
pub struct Slot {
    a: AtomicU32,
    b: AtomicU32,
    t: AtomicU32,
    frame: AtomicU32,
}

impl Slot {
    /// The voxel's value.
    #[inline]
    pub fn load(&self) -> Cell {
        Cell {
            a: f32::from_bits(self.a.load(Relaxed)),
            b: f32::from_bits(self.b.load(Relaxed)),
            t: f32::from_bits(self.t.load(Relaxed)),
            frame: self.frame.load(Relaxed),
        }
    }

    /// Writes the state and time (the frame stamp is the claim's).
    #[inline]
    pub fn store(&self, c: Cell) {
        self.a.store(c.a.to_bits(), Relaxed);
        self.b.store(c.b.to_bits(), Relaxed);
        self.t.store(c.t.to_bits(), Relaxed);
        self.frame.store(c.frame, Relaxed);
    }

    /// Claims the voxel for `frame`: the value before the claim, or `None`
    /// when the voxel is already this frame's (claimed by another ray).
    #[inline]
    pub fn claim(&self, frame: u32) -> Option<Cell> {
        if self.frame.load(Relaxed) == frame {
            return None;
        }
        let before = self.frame.swap(frame, Relaxed);
        (before != frame).then(|| Cell { frame: before, ..self.load() })
    }

    /// Whether the voxel was ever observed.
    pub fn known(&self) -> bool {
        self.frame.load(Relaxed) != 0
    }
}

impl Clone for Slot {
    fn clone(&self) -> Slot {
        let s = Slot::default();
        s.store(self.load());
        s
    }
}

/// One block's voxels, x-major (`(x * 8 + y) * 8 + z` within the block).
pub type Block = [Slot; CELLS];

/// A multiplicative hash of packed block keys (one multiply; the keys are
/// already well spread integers, SipHash would cost more than the lookup).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, k: u64) {
        self.0 = (self.0 ^ k).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}

/// The block of a voxel, packed into 63 bits (21 bits an axis: blocks
/// within +-2^20 of the origin, +-1,677 km at 0.2 m voxels).
pub fn block_of(k: Key) -> u64 {
    let pack = |v: i32| (((v >> 3) + (1 << 20)) as u64) & ((1 << 21) - 1);
    (pack(k[0]) << 42) | (pack(k[1]) << 21) | pack(k[2])
}

/// The packed key of block coordinates `b` (in blocks).
pub fn block_key(b: [i32; 3]) -> u64 {
    block_of(b.map(|v| v.wrapping_mul(EDGE)))
}

/// The block coordinates (in blocks) of a packed key.
pub fn unpack(b: u64) -> [i32; 3] {
    let un = |v: u64| (v & ((1 << 21) - 1)) as i32 - (1 << 20);
    [un(b >> 42), un(b >> 21), un(b)]
}

/// A voxel's index within its block.
pub fn local(k: Key) -> usize {
    (((k[0] & 7) * EDGE + (k[1] & 7)) * EDGE + (k[2] & 7)) as usize
}

/// The voxel key of cell `i` of block `b`.
pub fn voxel_of(b: u64, i: usize) -> Key {
    let o = unpack(b);
    let i = i as i32;
    [o[0] * EDGE + i / 64, o[1] * EDGE + i / 8 % 8, o[2] * EDGE + i % 8]
}

/// Whether voxel key `k` is packable (within +-2^23 voxels of the origin).
pub fn in_range(k: Key) -> bool {
    k.iter().all(|v| v.unsigned_abs() < 1 << 23)
}

/// The block storage.
#[derive(Debug, Clone, Default)]
pub struct Blocks {
    map: HashMap<u64, Box<Block>, BuildHasherDefault<KeyHasher>>,
}

impl Blocks {
    /// The block `b`, created (all unknown) if absent.
    pub fn get_or_insert(&mut self, b: u64) -> &Block {
        self.map.entry(b).or_insert_with(|| Box::new(std::array::from_fn(|_| Slot::default())))
    }

    /// Room for `n` more blocks.
    pub fn reserve(&mut self, n: usize) {
        self.map.reserve(n);
    }

    /// The cell of voxel `k`, if its block exists.
    pub fn cell(&self, k: Key) -> Option<Cell> {
        self.map.get(&block_of(k)).map(|b| b[local(k)].load())
    }

    /// The block `b`, if it exists.
    pub fn block(&self, b: u64) -> Option<&Block> {
        self.map.get(&b).map(|b| &**b)
    }

    /// Every block, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Block)> {
        self.map.iter().map(|(&k, b)| (k, &**b))
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there is no block.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Heap bytes held: the blocks and the table's slots.
    pub fn bytes(&self) -> usize {
        self.map.len() * std::mem::size_of::<Block>()
            + self.map.capacity() * (std::mem::size_of::<(u64, Box<Block>)>() + 1)
    }

    /// Drops the blocks `keep` refuses; returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) -> usize {
        let before = self.map.len();
        self.map.retain(|&b, _| keep(b));
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pack_and_unpack() {
        for k in [[0, 0, 0], [-1, -1, -1], [7, 8, -9], [-8_388_607, 8_388_607, 12345]] {
            assert!(in_range(k));
            let (b, i) = (block_of(k), local(k));
            assert_eq!(voxel_of(b, i), k);
            assert_eq!(unpack(b), k.map(|v| v.div_euclid(8)));
            assert_eq!(block_key(unpack(b)), b);
        }
        assert_ne!(block_of([-1, 0, 0]), block_of([0, 0, 0]));
        assert!(!in_range([1 << 23, 0, 0]));
    }
}

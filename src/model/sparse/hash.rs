//! Coordinate hashing: a site `(b, z, y, x)` packed into one 64-bit key
//! (16 bits each, batch highest, so keys sort as the tuples do) and an
//! open-addressing table from keys to row numbers. Built once per
//! coordinate set; looked up from many threads at once (it is read-only
//! after [`SiteTable::new`]).

use crate::sys::seed::mix_seed;

/// The largest coordinate (and batch index) a key holds.
pub const MAX_COORD: i64 = u16::MAX as i64;

/// The key of site `(b, z, y, x)`; every part in `0..=MAX_COORD`.
#[inline]
pub fn pack(site: [i64; 4]) -> u64 {
    site.iter().fold(0u64, |k, &v| (k << 16) | (v as u64 & 0xffff))
}

/// The site of a key (inverse of [`pack`]).
#[inline]
pub fn unpack(key: u64) -> [i64; 4] {
    [(key >> 48) as i64, (key >> 32 & 0xffff) as i64, (key >> 16 & 0xffff) as i64, (key & 0xffff) as i64]
}

const EMPTY: u64 = u64::MAX;

/// Key -> row table with linear probing, at most half full.
#[derive(Debug, Clone)]
pub struct SiteTable {
    keys: Vec<u64>,
    rows: Vec<u32>,
    mask: usize,
}

impl SiteTable {
    /// The table of `keys` (distinct), row `i` for `keys[i]`.
    pub fn new(keys: &[u64]) -> SiteTable {
        let cap = (2 * keys.len()).next_power_of_two().max(16);
        let mut t = SiteTable { keys: vec![EMPTY; cap], rows: vec![0; cap], mask: cap - 1 };
        for (row, &k) in keys.iter().enumerate() {
            let mut slot = t.slot(k);
            while t.keys[slot] != EMPTY {
                slot = (slot + 1) & t.mask;
            }
            t.keys[slot] = k;
            t.rows[slot] = row as u32;
        }
        t
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        mix_seed(key, 1) as usize & self.mask
    }

    /// The row of `key`, if the set holds it.
    #[inline]
    pub fn get(&self, key: u64) -> Option<u32> {
        let mut slot = self.slot(key);
        loop {
            match self.keys[slot] {
                EMPTY => return None,
                k if k == key => return Some(self.rows[slot]),
                _ => slot = (slot + 1) & self.mask,
            }
        }
    }

    /// The row of site `(b, z, y, x)`, `None` outside `0..shape` or absent.
    #[inline]
    pub fn find(&self, site: [i64; 4], shape: [i64; 3]) -> Option<u32> {
        let inside = (0..3).all(|a| site[a + 1] >= 0 && site[a + 1] < shape[a]);
        if inside {
            self.get(pack(site))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_round_trip_and_sort_as_tuples() {
        let a = [1, 0, 65535, 3];
        assert_eq!(unpack(pack(a)), a);
        assert!(pack([0, 9, 9, 9]) < pack([1, 0, 0, 0]));
        assert!(pack([0, 1, 0, 0]) > pack([0, 0, 65535, 65535]));
    }

    #[test]
    fn the_table_agrees_with_a_hash_map() {
        let mut keys: Vec<u64> = (0..5000u64)
            .map(|i| pack([i as i64 % 3, (i * 7 % 101) as i64, i as i64 % 250, (i * 13 % 97) as i64]))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let t = SiteTable::new(&keys);
        let reference: HashMap<u64, u32> = keys.iter().enumerate().map(|(i, &k)| (k, i as u32)).collect();
        for probe in 0..20000u64 {
            let k = pack([probe as i64 % 3, (probe % 101) as i64, (probe * 3 % 250) as i64, (probe % 97) as i64]);
            assert_eq!(t.get(k), reference.get(&k).copied(), "key {k:#x}");
        }
        assert_eq!(t.find([0, -1, 0, 0], [10, 10, 10]), None);
        assert_eq!(t.find(unpack(keys[7]), [200, 300, 200]), Some(7));
    }
}

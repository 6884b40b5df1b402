//! A coordinate set: the active sites of a batch at one level of a sparse
//! network, sorted by `(b, z, y, x)`, hashed once, with the coarser sets
//! and kernel maps derived from it cached inside it. Every layer that runs
//! on the same set (an `Rc<Coords>`) therefore shares one hash table, one
//! down-sampled set per stride and one kernel map per (kind, device).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use tch::{Device, Tensor};

use super::hash::{pack, unpack, SiteTable, MAX_COORD};
use super::kmap::{KernelMap, MapKind};
use crate::model::ModelError;

/// `[z, y, x]` triple (shapes, strides).
pub type Dims3 = [i64; 3];

/// The active sites of a batch at one level.
pub struct Coords {
    id: u64,
    keys: Vec<u64>,
    table: SiteTable,
    batch: i64,
    shape: Dims3,
    stride: Dims3,
    coarser: RefCell<HashMap<Dims3, Rc<Coords>>>,
    maps: RefCell<HashMap<(MapKind, u64, Device), Rc<KernelMap>>>,
    tensors: RefCell<HashMap<Device, Tensor>>,
}

impl std::fmt::Debug for Coords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Coords({} sites, batch {}, grid {:?}, stride {:?})", self.len(), self.batch, self.shape, self.stride)
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Coords {
    /// The set of `sites` (`[b, z, y, x]`, any order) of a batch of `batch`
    /// grids of `shape` at `stride` from the native grid. Refuses sites
    /// outside the grid or the batch, duplicates, and grids a key cannot hold.
    pub fn new(sites: &[[i64; 4]], batch: i64, shape: Dims3, stride: Dims3) -> Result<Rc<Coords>, ModelError> {
        let err = |rule: String| ModelError::Sites { sites: sites.len(), batch, grid: shape, rule };
        let axis = 1..=MAX_COORD + 1;
        if !axis.contains(&batch) || shape.iter().any(|s| !axis.contains(s)) {
            return Err(err(format!("batch and every axis must be in 1..={}", MAX_COORD + 1)));
        }
        if stride.iter().any(|&s| s < 1) {
            return Err(err(format!("stride {stride:?} must be >= 1 on every axis")));
        }
        let mut keys = Vec::with_capacity(sites.len());
        for s in sites {
            let inside = s[0] >= 0 && s[0] < batch && (0..3).all(|a| s[a + 1] >= 0 && s[a + 1] < shape[a]);
            if !inside {
                return Err(err(format!("site {s:?} lies outside the batch or the grid")));
            }
            keys.push(pack(*s));
        }
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(err(format!("site {:?} is listed twice", unpack(w[0]))));
        }
        Ok(Coords::from_sorted(keys, batch, shape, stride))
    }

    /// Every site of the grid (a dense level as a sparse set).
    pub fn full(batch: i64, shape: Dims3, stride: Dims3) -> Result<Rc<Coords>, ModelError> {
        let mut sites = Vec::with_capacity((batch * shape.iter().product::<i64>()) as usize);
        for b in 0..batch {
            for z in 0..shape[0] {
                for y in 0..shape[1] {
                    sites.extend((0..shape[2]).map(|x| [b, z, y, x]));
                }
            }
        }
        Coords::new(&sites, batch, shape, stride)
    }

    /// From keys already sorted and distinct, inside the grid.
    pub(super) fn from_sorted(keys: Vec<u64>, batch: i64, shape: Dims3, stride: Dims3) -> Rc<Coords> {
        let table = SiteTable::new(&keys);
        Rc::new(Coords {
            id: next_id(),
            keys,
            table,
            batch,
            shape,
            stride,
            coarser: RefCell::default(),
            maps: RefCell::default(),
            tensors: RefCell::default(),
        })
    }

    /// Number of sites.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no site.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Batch size.
    pub fn batch(&self) -> i64 {
        self.batch
    }

    /// The grid `[Z, Y, X]` of this level.
    pub fn shape(&self) -> Dims3 {
        self.shape
    }

    /// Stride of this level from the native grid, per axis.
    pub fn stride(&self) -> Dims3 {
        self.stride
    }

    /// A number no other set of this process has (kernel maps between two
    /// sets are cached under it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Site `i` as `[b, z, y, x]`.
    pub fn site(&self, i: usize) -> [i64; 4] {
        unpack(self.keys[i])
    }

    /// The sorted packed keys (see [`super::hash::pack`]).
    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// The row of `site`, if active.
    pub fn find(&self, site: [i64; 4]) -> Option<u32> {
        self.table.find(site, self.shape)
    }

    /// The keys and the hash table alone, to share across threads (the set
    /// itself holds caches of tensors, which cannot be).
    pub(super) fn view(&self) -> SiteView<'_> {
        SiteView { keys: &self.keys, table: &self.table, shape: self.shape }
    }

    /// The set one level coarser by `s` per axis: the parents
    /// `floor(p / s)` of every site, on a grid of `ceil(shape / s)`. Cached:
    /// every call with the same `s` returns the same set.
    pub fn down(&self, s: Dims3) -> Rc<Coords> {
        let mut cache = self.coarser.borrow_mut();
        cache
            .entry(s)
            .or_insert_with(|| {
                let mut keys: Vec<u64> = self.keys.iter().map(|&k| pack(parent(unpack(k), s))).collect();
                keys.sort_unstable();
                keys.dedup();
                let shape = [0, 1, 2].map(|a| (self.shape[a] + s[a] - 1) / s[a]);
                let stride = [0, 1, 2].map(|a| self.stride[a] * s[a]);
                Coords::from_sorted(keys, self.batch, shape, stride)
            })
            .clone()
    }

    /// Every child `s * q + d` (`d` in `[0, s)` per axis) of every site,
    /// inside the finer grid `shape` (which must round up to this one):
    /// the candidates a generative level predicts the occupancy of.
    pub fn children(&self, s: Dims3, shape: Dims3) -> Result<Rc<Coords>, ModelError> {
        if (0..3).any(|a| (shape[a] + s[a] - 1) / s[a] != self.shape[a]) {
            return Err(ModelError::Sites {
                sites: self.len(),
                batch: self.batch,
                grid: self.shape,
                rule: format!("a finer grid {shape:?} at scale {s:?} does not round up to this grid"),
            });
        }
        let mut keys = Vec::with_capacity(self.len() * s.iter().product::<i64>() as usize);
        for &k in &self.keys {
            let [b, z, y, x] = unpack(k);
            for dz in 0..s[0] {
                for dy in 0..s[1] {
                    for dx in 0..s[2] {
                        let c = [b, z * s[0] + dz, y * s[1] + dy, x * s[2] + dx];
                        if (0..3).all(|a| c[a + 1] < shape[a]) {
                            keys.push(pack(c));
                        }
                    }
                }
            }
        }
        keys.sort_unstable();
        let stride = [0, 1, 2].map(|a| self.stride[a] / s[a]);
        Ok(Coords::from_sorted(keys, self.batch, shape, stride))
    }

    /// The subset of the rows where `keep` is true (pruning), same grid.
    pub fn select(&self, keep: &[bool]) -> Rc<Coords> {
        let keys = self.keys.iter().zip(keep).filter(|(_, &k)| k).map(|(&k, _)| k).collect();
        Coords::from_sorted(keys, self.batch, self.shape, self.stride)
    }

    /// `(N, 4)` int64 `[b, z, y, x]` rows on `device` (cached).
    pub fn tensor(&self, device: Device) -> Tensor {
        let mut cache = self.tensors.borrow_mut();
        cache
            .entry(device)
            .or_insert_with(|| {
                let flat: Vec<i64> = self.keys.iter().flat_map(|&k| unpack(k)).collect();
                Tensor::from_slice(&flat).view([self.len() as i64, 4]).to_device(device)
            })
            .shallow_clone()
    }

    /// The batch index of every row, `(N,)` int64 on `device`.
    pub fn batch_index(&self, device: Device) -> Tensor {
        self.tensor(device).select(1, 0)
    }

    /// The kernel map of `kind` from the set `from` to this one, on
    /// `device`; built once per (kind, `from`, device) and cached here.
    pub fn kernel_map(&self, kind: MapKind, from: &Coords, device: Device) -> Rc<KernelMap> {
        let mut cache = self.maps.borrow_mut();
        let key = (kind, from.id, device);
        cache.entry(key).or_insert_with(|| Rc::new(KernelMap::build(kind, from, self, device))).clone()
    }
}

/// A set's sites and hash table, borrowed for a parallel map build.
#[derive(Clone, Copy)]
pub(super) struct SiteView<'a> {
    pub keys: &'a [u64],
    table: &'a SiteTable,
    shape: Dims3,
}

impl SiteView<'_> {
    /// Site `i` as `[b, z, y, x]`.
    pub fn site(&self, i: usize) -> [i64; 4] {
        unpack(self.keys[i])
    }

    /// The row of `site`, if active.
    pub fn find(&self, site: [i64; 4]) -> Option<u32> {
        self.table.find(site, self.shape)
    }
}

/// The parent `floor(p / s)` of site `p` one level coarser.
#[inline]
pub(super) fn parent(p: [i64; 4], s: Dims3) -> [i64; 4] {
    [p[0], p[1] / s[0], p[2] / s[1], p[3] / s[2]]
}

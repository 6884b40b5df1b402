//! The sparse layer against libtorch's dense ops with the same weights on
//! the same grid, read at the sites each rule defines (`shared/spec/sparse.md`):
//! forward, input and weight gradients, float32, relative error <= 1e-5, on
//! random grids at ~1 % occupancy, odd sizes, batch 2. GroupNorm against
//! the masked formula written out here in f64.

use std::rc::Rc;

use radvox::model::sparse::{ConvKind, Coords, MapKind, SparseConv3d, SparseGroupNorm, SparseResBlock, SparseTensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn, Device, Kind, Tensor};

const TOL: f64 = 1e-5;

/// ~`occ` of the grid active per sample, half of it in small blobs (so
/// sites have neighbours, as surfaces do) and half scattered.
fn random_sites(seed: u64, batch: i64, shape: [i64; 3], occ: f64) -> Vec<[i64; 4]> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let want = (occ * shape.iter().product::<i64>() as f64) as usize;
    let mut sites = std::collections::BTreeSet::new();
    for b in 0..batch {
        let start = sites.len();
        while sites.len() - start < want {
            let c = [0, 1, 2].map(|a| rng.random_range(0..shape[a]));
            if rng.random_bool(0.5) {
                sites.insert([b, c[0], c[1], c[2]]);
            } else {
                for d in 0..4 {
                    let p = [0, 1, 2].map(|a| (c[a] + (d >> a & 1)).min(shape[a] - 1));
                    sites.insert([b, p[0], p[1], p[2]]);
                }
            }
        }
    }
    sites.into_iter().collect()
}

fn rand_feats(seed: i64, n: usize, c: i64) -> Tensor {
    radvox::sys::normal(seed as u64, &[n as i64, c], Device::Cpu)
}

/// The dense `(B, C, Z, Y, X)` grid of `feats` at `sites`, written without the crate.
fn densify(sites: &[[i64; 4]], feats: &Tensor, batch: i64, shape: [i64; 3]) -> Tensor {
    let c = feats.size()[1];
    let vals = Vec::<f32>::try_from(feats.contiguous().view([-1])).unwrap();
    let mut grid = vec![0f32; (batch * shape.iter().product::<i64>() * c) as usize];
    for (r, s) in sites.iter().enumerate() {
        for ch in 0..c {
            let i = ((((s[0] * c + ch) * shape[0] + s[1]) * shape[1] + s[2]) * shape[2] + s[3]) as usize;
            grid[i] = vals[r * c as usize + ch as usize];
        }
    }
    Tensor::from_slice(&grid).view([batch, c, shape[0], shape[1], shape[2]])
}

/// Rows of a dense `(B, C, Z', Y', X')` tensor at `sites`, in their order.
fn read_at(dense: &Tensor, sites: &[[i64; 4]]) -> Tensor {
    let s = dense.size();
    let flat: Vec<i64> = sites.iter().map(|p| ((p[0] * s[2] + p[1]) * s[3] + p[2]) * s[4] + p[3]).collect();
    dense.permute([0, 2, 3, 4, 1]).reshape([-1, s[1]]).index_select(0, &Tensor::from_slice(&flat))
}

fn sites_of(c: &Coords) -> Vec<[i64; 4]> {
    (0..c.len()).map(|i| c.site(i)).collect()
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).norm().double_value(&[]);
    let n = b.norm().double_value(&[]);
    if n == 0.0 {
        d
    } else {
        d / n
    }
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.size(), b.size(), "{what}: shapes");
    let e = rel(a, b);
    eprintln!("{what}: relative error {e:.2e}");
    assert!(e <= TOL, "{what}: relative error {e:.3e} > {TOL:e}");
    assert!(b.abs().max().double_value(&[]) > 0.0, "{what}: the reference is all zeros, the check proves nothing");
}

/// One sparse layer and its dense reference, forward and backward.
struct Case {
    kind: ConvKind,
    shape: [i64; 3],
    cin: i64,
    cout: i64,
    seed: u64,
}

impl Case {
    fn run(&self) {
        let batch = 2;
        let sites = random_sites(self.seed, batch, self.shape, 0.01);
        let coords = Coords::new(&sites, batch, self.shape, [1; 3]).unwrap();
        let sites = sites_of(&coords); // the set's order
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = radvox::sys::with_init_seed(self.seed, || {
            SparseConv3d::new(vs.root(), self.cin, self.cout, self.kind).unwrap()
        });
        // a coarse input for the transposed case: the parents of the sites
        let (in_coords, in_sites) = match self.kind {
            ConvKind::Up(s) => {
                let c = coords.down(s);
                let ss = sites_of(&c);
                (c, ss)
            }
            _ => (coords.clone(), sites.clone()),
        };
        let feats = rand_feats(self.seed as i64 + 1, in_sites.len(), self.cin).set_requires_grad(true);
        let x = SparseTensor::new(in_coords.clone(), feats.shallow_clone()).unwrap();

        // sparse
        let (y, out_sites) = match self.kind {
            ConvKind::Up(s) => {
                // onto every child, then onto the finer set the parents came from
                let all = in_coords.children(s, self.shape).unwrap();
                let y_all = conv.up(&x, &all).unwrap();
                let y = conv.up(&x, &coords).unwrap();
                let dense_all = self.dense(&conv, &densify(&in_sites, &feats.detach(), batch, in_coords.shape()));
                assert_close(
                    &format!("{:?} forward onto every child", self.kind),
                    &y_all.feats,
                    &read_at(&dense_all, &sites_of(&all)),
                );
                (y, sites.clone())
            }
            _ => {
                let y = conv.forward(&x).unwrap();
                let s = sites_of(&y.coords);
                (y, s)
            }
        };
        if let ConvKind::Down(s) = self.kind {
            let mut want: Vec<[i64; 4]> = sites.iter().map(|p| [p[0], p[1] / s[0], p[2] / s[1], p[3] / s[2]]).collect();
            want.sort();
            want.dedup();
            assert_eq!(out_sites, want, "down-sampled sites are the parents");
            assert_eq!(y.coords.shape(), [0, 1, 2].map(|a| (self.shape[a] + s[a] - 1) / s[a]));
        }
        let r = rand_feats(self.seed as i64 + 2, out_sites.len(), self.cout);
        (&y.feats * &r).sum(Kind::Float).backward();

        // dense, same weights
        let xd = densify(&in_sites, &feats.detach(), batch, in_coords.shape()).set_requires_grad(true);
        let w = conv.weight.detach().copy().set_requires_grad(true);
        let b = conv.bias.detach().copy().set_requires_grad(true);
        let yd = self.dense_with(&xd, &w, &b);
        let yd_sites = read_at(&yd, &out_sites);
        (&yd_sites * &r).sum(Kind::Float).backward();

        let name = format!("{:?} on {:?}", self.kind, self.shape);
        assert_close(&format!("{name} forward"), &y.feats, &yd_sites);
        assert_close(&format!("{name} input gradient"), &feats.grad(), &read_at(&xd.grad(), &in_sites));
        assert_close(&format!("{name} weight gradient"), &conv.weight.grad(), &w.grad());
        assert_close(&format!("{name} bias gradient"), &conv.bias.grad(), &b.grad());
    }

    fn dense(&self, conv: &SparseConv3d, x: &Tensor) -> Tensor {
        self.dense_with(x, &conv.weight.detach(), &conv.bias.detach())
    }

    /// libtorch's dense op; odd sizes padded with zeros to the stride first.
    fn dense_with(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        match self.kind {
            ConvKind::Submanifold(k) => x.conv3d(w, Some(b), [1; 3], [k / 2; 3], [1; 3], 1),
            ConvKind::Down(s) => {
                let sz = x.size();
                let pad = [2, 1, 0].map(|a| (s[a] - sz[2 + a] % s[a]) % s[a]);
                let xp = x.constant_pad_nd([0, pad[0], 0, pad[1], 0, pad[2]]);
                xp.conv3d(w, Some(b), s, [0; 3], [1; 3], 1)
            }
            ConvKind::Up(s) => x.conv_transpose3d(w, Some(b), s, [0; 3], [0; 3], 1, [1; 3]),
        }
    }
}

#[test]
fn submanifold_convolutions_equal_dense_conv3d_at_the_sites() {
    for (k, shape, seed) in [(3, [15, 33, 27], 1), (3, [9, 41, 23], 2), (1, [15, 33, 27], 3), (5, [13, 21, 17], 4)] {
        Case { kind: ConvKind::Submanifold(k), shape, cin: 3, cout: 5, seed }.run();
    }
}

#[test]
fn strided_convolutions_equal_dense_conv3d_at_the_parents() {
    for (s, shape, seed) in [([2, 2, 2], [15, 33, 27], 5), ([1, 2, 2], [9, 41, 23], 6), ([2, 2, 2], [16, 32, 24], 7)] {
        Case { kind: ConvKind::Down(s), shape, cin: 4, cout: 6, seed }.run();
    }
}

#[test]
fn transposed_convolutions_equal_dense_conv_transpose3d_at_the_children() {
    for (s, shape, seed) in [([2, 2, 2], [15, 33, 27], 8), ([1, 2, 2], [9, 41, 23], 9)] {
        Case { kind: ConvKind::Up(s), shape, cin: 6, cout: 4, seed }.run();
    }
}

#[test]
fn group_norm_normalises_over_the_active_sites_of_each_sample() {
    let shape = [15, 33, 27];
    let sites = random_sites(11, 2, shape, 0.01);
    let coords = Coords::new(&sites, 2, shape, [1; 3]).unwrap();
    // 48 channels: 24 groups of 2 (norm_groups: the largest divisor <= 32)
    let c = 48i64;
    let vs = nn::VarStore::new(Device::Cpu);
    let norm = SparseGroupNorm::new(vs.root(), c);
    assert_eq!(norm.groups(), 24);
    // affine parameters that are not the identity
    tch::no_grad(|| {
        for (name, t) in vs.variables() {
            t.shallow_clone().copy_(&(rand_feats(name.len() as i64, 1, c).view([c]) * 0.5 + 1.0));
        }
    });
    let feats = rand_feats(12, coords.len(), c) * 3.0 + 2.0;
    let y = norm.forward(&SparseTensor::new(coords.clone(), feats.shallow_clone()).unwrap());
    let x = Vec::<f32>::try_from(feats.view([-1])).unwrap();
    let got = Vec::<f32>::try_from(y.feats.view([-1])).unwrap();
    let vars = vs.variables();
    let w = Vec::<f32>::try_from(&vars["weight"]).unwrap();
    let bias = Vec::<f32>::try_from(&vars["bias"]).unwrap();
    let g = norm.groups();
    let per = (c / g) as usize;
    let mut worst = 0f64;
    for b in 0..2 {
        let rows: Vec<usize> = (0..coords.len()).filter(|&i| coords.site(i)[0] == b).collect();
        assert!(rows.len() > 100);
        for grp in 0..g as usize {
            let x = &x;
            let vals: Vec<f64> =
                rows.iter().flat_map(|&r| (0..per).map(move |j| x[r * c as usize + grp * per + j] as f64)).collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            for &r in &rows {
                for j in 0..per {
                    let ch = grp * per + j;
                    let i = r * c as usize + ch;
                    let want = (x[i] as f64 - mean) / (var + 1e-5).sqrt() * w[ch] as f64 + bias[ch] as f64;
                    worst = worst.max((got[i] as f64 - want).abs() / want.abs().max(1.0));
                }
            }
        }
    }
    assert!(worst < 1e-5, "worst error {worst:.3e}");
    // the dense GroupNorm over the zero-filled grid is not the same thing
    let dense =
        densify(&sites_of(&coords), &feats, 2, shape).group_norm(g, None::<Tensor>, None::<Tensor>, 1e-5, false);
    let dense_at = read_at(&dense, &sites_of(&coords)) * Tensor::from_slice(&w) + Tensor::from_slice(&bias);
    assert!(rel(&y.feats, &dense_at) > 0.1, "a dense GroupNorm counts the empty voxels");
}

#[test]
fn sparse_and_dense_round_trip() {
    let shape = [9, 17, 13];
    let sites = random_sites(13, 2, shape, 0.02);
    let coords = Coords::new(&sites, 2, shape, [1; 3]).unwrap();
    let feats = rand_feats(14, coords.len(), 3);
    let x = SparseTensor::new(coords.clone(), feats.shallow_clone()).unwrap();
    let dense = x.to_dense();
    assert_eq!(dense.size(), [2, 3, 9, 17, 13]);
    assert_eq!(rel(&dense, &densify(&sites_of(&coords), &feats, 2, shape)), 0.0);
    let back = SparseTensor::from_dense(&dense, [1; 3]).unwrap();
    assert_eq!(sites_of(&back.coords), sites_of(&coords));
    assert_eq!(rel(&back.feats, &feats), 0.0);
    // gradients flow through both directions
    let f = feats.set_requires_grad(true);
    let y = SparseTensor::new(coords.clone(), f.shallow_clone()).unwrap().to_dense();
    let again = SparseTensor::gather(&(y * 2.0), &coords).unwrap();
    again.feats.sum(Kind::Float).backward();
    assert_eq!(rel(&f.grad(), &Tensor::full([coords.len() as i64, 3], 2.0, (Kind::Float, Device::Cpu))), 0.0);
}

#[test]
fn kernel_maps_and_coarser_sets_are_built_once_and_shared() {
    let shape = [15, 33, 27];
    let sites = random_sites(15, 2, shape, 0.01);
    let coords = Coords::new(&sites, 2, shape, [1; 3]).unwrap();
    let kind = MapKind::Submanifold { k: 3 };
    let a = coords.kernel_map(kind, &coords, Device::Cpu);
    let b = coords.kernel_map(kind, &coords, Device::Cpu);
    assert!(Rc::ptr_eq(&a, &b));
    assert!(Rc::ptr_eq(&coords.down([2, 2, 2]), &coords.down([2, 2, 2])));
    assert!(!Rc::ptr_eq(&coords.down([2, 2, 2]), &coords.down([1, 2, 2])));
    // the map's pairs are exactly the active neighbour pairs (brute force)
    let set: std::collections::HashSet<[i64; 4]> = sites.iter().copied().collect();
    let mut brute = 0i64;
    for p in &sites {
        for d in 0..27 {
            let q = [p[0], p[1] + d / 9 - 1, p[2] + d / 3 % 3 - 1, p[3] + d % 3 - 1];
            brute += set.contains(&q) as i64;
        }
    }
    assert_eq!(a.pairs(), brute);
    assert_eq!(a.identity, Some(13));
    // two layers on one set run on that one map: a third lookup after them is still the first map
    let vs = nn::VarStore::new(Device::Cpu);
    let c1 = SparseConv3d::new(vs.root() / "a", 2, 2, ConvKind::Submanifold(3)).unwrap();
    let c2 = SparseConv3d::new(vs.root() / "b", 2, 2, ConvKind::Submanifold(3)).unwrap();
    let x = SparseTensor::new(coords.clone(), rand_feats(1, coords.len(), 2)).unwrap();
    let y = c2.forward(&c1.forward(&x).unwrap()).unwrap();
    assert!(Rc::ptr_eq(&y.coords, &coords));
    assert!(Rc::ptr_eq(&coords.kernel_map(kind, &coords, Device::Cpu), &a));
}

#[test]
fn residual_blocks_keep_the_sites_and_train_every_parameter() {
    let shape = [9, 17, 13];
    let sites = random_sites(16, 2, shape, 0.02);
    let coords = Coords::new(&sites, 2, shape, [1; 3]).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let block = SparseResBlock::new(vs.root(), 4, 8).unwrap();
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "conv1.bias",
            "conv1.weight",
            "conv2.bias",
            "conv2.weight",
            "norm1.bias",
            "norm1.weight",
            "norm2.bias",
            "norm2.weight",
            "skip.bias",
            "skip.weight"
        ]
    );
    let x = SparseTensor::new(coords.clone(), rand_feats(17, coords.len(), 4)).unwrap();
    let y = block.forward(&x).unwrap();
    assert!(Rc::ptr_eq(&y.coords, &coords));
    assert_eq!(y.feats.size(), [coords.len() as i64, 8]);
    (&y.feats * rand_feats(18, coords.len(), 8)).sum(Kind::Float).backward();
    for (name, t) in vs.variables() {
        assert!(t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "{name} got no gradient");
    }
}

#[test]
fn bad_sites_are_refused_with_the_rule_they_break() {
    let e = Coords::new(&[[0, 1, 2, 3], [0, 1, 2, 3]], 1, [4, 4, 4], [1; 3]).unwrap_err().to_string();
    assert!(e.contains("listed twice"), "{e}");
    let e = Coords::new(&[[0, 4, 0, 0]], 1, [4, 4, 4], [1; 3]).unwrap_err().to_string();
    assert!(e.contains("outside"), "{e}");
    let e = Coords::new(&[[1, 0, 0, 0]], 1, [4, 4, 4], [1; 3]).unwrap_err().to_string();
    assert!(e.contains("outside"), "{e}");
    assert!(Coords::new(&[], 1, [70000, 4, 4], [1; 3]).is_err());
    let c = Coords::new(&[[0, 1, 1, 1]], 1, [4, 4, 4], [1; 3]).unwrap();
    assert!(SparseTensor::new(c.clone(), Tensor::zeros([2, 3], (Kind::Float, Device::Cpu))).is_err());
    let vs = nn::VarStore::new(Device::Cpu);
    let up = SparseConv3d::new(vs.root(), 3, 3, ConvKind::Up([2, 2, 2])).unwrap();
    let x = SparseTensor::new(c.clone(), Tensor::zeros([1, 3], (Kind::Float, Device::Cpu))).unwrap();
    let e = up.up(&x, &c).unwrap_err().to_string();
    assert!(e.contains("one level finer"), "{e}");
    assert!(up.forward(&x).is_err());
    assert!(SparseConv3d::new(vs.root() / "even", 3, 3, ConvKind::Submanifold(2)).is_err());
    assert!(SparseTensor::from_dense(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)), [1; 3]).is_err());
}

//! Seeded randomness that never touches libtorch's global generator: SplitMix64
//! mixing of a seed with counters (every draw site gets its own stream), noise
//! tensors drawn in Rust from those streams, and the seed that model
//! initialisation draws from, per variable path.
//!
//! libtorch has one generator per process, shared by every thread: any
//! `Tensor::randn` or `tch::manual_seed` anywhere (a test running beside a
//! training run, a second trainer) shifts it. Drawing in Rust instead makes a
//! run's initial weights and noise a function of its seed alone, the same on
//! a CPU and a GPU, whatever else the process does.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::cell::Cell;
use tch::{Device, Kind, Tensor};

/// SplitMix64 finaliser of `seed ^ a * φ ^ b * c`: independent seeds per
/// `(a, b)` draw site (e.g. epoch and position).
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, a stable 64-bit hash of bytes (the same in every process and
/// build): variable paths as draw sites, and identities ranks compare.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// [`mix`] of a seed and one counter.
pub fn mix_seed(seed: u64, n: u64) -> u64 {
    mix(seed, n, 0)
}

fn from_vec(v: Vec<f32>, shape: &[i64], device: Device) -> Tensor {
    Tensor::from_slice(&v).view(shape).to(device)
}

/// Standard-normal float32 noise of `shape` on `device`, a function of
/// `seed` alone (ChaCha8 stream, drawn on the host).
pub fn normal(seed: u64, shape: &[i64], device: Device) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: i64 = shape.iter().product();
    from_vec((0..n).map(|_| rng.sample::<f32, _>(StandardNormal)).collect(), shape, device)
}

/// Float32 noise uniform in `[lo, hi)` of `shape` on `device`, from `seed`.
pub fn uniform(seed: u64, shape: &[i64], lo: f64, hi: f64, device: Device) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: i64 = shape.iter().product();
    from_vec((0..n).map(|_| rng.random_range(lo as f32..hi as f32)).collect(), shape, device)
}

/// `n` int64 integers uniform in `0 .. high` (`high >= 1`) on `device`, from `seed`.
pub fn integers(seed: u64, n: i64, high: i64, device: Device) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<i64> = (0..n).map(|_| rng.random_range(0..high.max(1))).collect();
    Tensor::from_slice(&v).to_kind(Kind::Int64).to(device)
}

thread_local! {
    static INIT_SEED: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` (typically a model's constructor) with `seed` as the seed that
/// [`init_seed`] mixes into every variable's stream, on this thread; the
/// previous seed (0 by default) is restored afterwards, also on a panic.
pub fn with_init_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            INIT_SEED.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(INIT_SEED.with(|s| s.replace(seed)));
    f()
}

/// The seed of the variable at `path` (its full var-store key): the
/// current [`with_init_seed`] seed mixed with a hash of the path, so each
/// variable's initial values depend on the seed and its name only, not on
/// construction order.
pub fn init_seed(path: &str) -> u64 {
    mix(INIT_SEED.with(Cell::get), fnv1a(path.as_bytes()), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_site_and_repeat_by_seed() {
        assert_eq!(mix(7, 1, 2), mix(7, 1, 2));
        assert_ne!(mix(7, 1, 2), mix(7, 2, 1));
        assert_ne!(mix_seed(7, 1), mix_seed(8, 1));
        assert_eq!(mix_seed(7, 3), mix(7, 3, 0));
    }

    #[test]
    fn draws_repeat_by_seed_whatever_libtorch_generator_does() {
        tch::manual_seed(1);
        let a = normal(5, &[3, 1000], Device::Cpu);
        let _ = Tensor::randn([100], (Kind::Float, Device::Cpu));
        tch::manual_seed(2);
        assert!(a.equal(&normal(5, &[3, 1000], Device::Cpu)));
        assert!(!a.equal(&normal(6, &[3, 1000], Device::Cpu)));
        let (m, s) = (a.mean(Kind::Float).double_value(&[]), a.std(true).double_value(&[]));
        assert!(m.abs() < 0.06 && (s - 1.0).abs() < 0.05, "mean {m} std {s}");
        let u = uniform(1, &[4000], -0.5, 2.0, Device::Cpu);
        let (lo, hi) = (u.min().double_value(&[]), u.max().double_value(&[]));
        assert!((-0.5..-0.49).contains(&lo) && (1.99..2.0).contains(&hi), "{lo} {hi}");
        let k = integers(1, 4000, 3, Device::Cpu);
        assert_eq!((k.min().int64_value(&[]), k.max().int64_value(&[])), (0, 2));
    }

    #[test]
    fn init_seeds_depend_on_scope_seed_and_path_and_are_restored() {
        let base = init_seed("a.weight");
        let inner = with_init_seed(3, || (init_seed("a.weight"), init_seed("b.weight")));
        assert_ne!(inner.0, base);
        assert_ne!(inner.0, inner.1);
        assert_eq!(init_seed("a.weight"), base);
        let r = std::panic::catch_unwind(|| with_init_seed(4, || panic!("inside")));
        assert!(r.is_err());
        assert_eq!(init_seed("a.weight"), base);
    }
}

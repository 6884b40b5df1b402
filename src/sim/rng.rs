//! Deterministic random streams: one ChaCha8 generator per (seed, scene,
//! purpose, frame), independent of thread scheduling.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a stream is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Scene layout.
    Layout = 1,
    /// LiDAR frames.
    Lidar = 2,
    /// Radar frames.
    Radar = 3,
    /// LiDAR frames of a rescan ([`super::SimConfig::lidar_rescan`] > 0).
    LidarRescan = 4,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit seed for `(seed, scene, purpose)`.
pub fn derive_seed(seed: u64, scene: usize, purpose: Purpose) -> u64 {
    splitmix(splitmix(splitmix(seed) ^ scene as u64) ^ purpose as u64)
}

/// The generator of one frame: the derived seed, stream = frame number.
pub fn frame_rng(seed: u64, scene: usize, purpose: Purpose, frame: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, scene, purpose));
    rng.set_stream(frame as u64);
    rng
}

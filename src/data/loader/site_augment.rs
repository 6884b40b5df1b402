//! The voxel augmentations and the cutout on a frame's sites: the same
//! effect, in the same order and from the same random draws as
//! [`Augmentation::apply_sample`] on the dense grid, so a sparse run and a
//! dense one with one seed see the same augmented frames (the test holds
//! the sites of the augmented grid equal to the augmented sites).
//!
//! Flips and rotations move the sites over the padded `(H, W)` plane (a
//! 90/270-degree rotation needs a square one, as on the dense grid); noise
//! and dropout change the radar's occupied sites (a site whose occupancy
//! falls to <= 0 or is zeroed leaves the set: the frame's sites are its
//! voxels with channel 0 > 0); the intensity and Doppler jitters change
//! the features; a cutout removes the radar's sites inside its boxes.
//! Mixup blends two frames into fractional occupancy and is refused.

use half::f16;
use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::data::augment::{cutout_box, uniform, Applied, Augmentation, Axis};
use crate::data::sites::FrameSites;
use crate::data::DataError;

/// Refuses what sites cannot take (mixup) and what the grid cannot
/// (`Augmentation::validate` with its `(H, W)`: 90/270-degree rotations of
/// a non-square plane), naming it.
pub fn check(aug: &Augmentation, grid: [usize; 3]) -> Result<(), DataError> {
    if aug.mixup.is_some() {
        return Err(DataError::Config(
            "mixup blends two frames into fractional occupancy, which sparse frames do not have: remove [mixup]".into(),
        ));
    }
    aug.validate(Some((grid[1], grid[2]))).map_err(|e| DataError::Config(e.to_string()))
}

/// Augments one frame's target sites and (when loaded) its radar sites in
/// place, as [`Augmentation::apply_sample`] does the dense pair with the
/// same `rng` (without the radar, the draws of the radar-only steps are
/// not made). Returns what was applied.
pub fn augment_sites(
    aug: &Augmentation,
    target: &mut FrameSites,
    mut radar: Option<&mut FrameSites>,
    rng: &mut impl Rng,
) -> Applied {
    let mut applied = Applied::default();
    if let Some(v) = &aug.voxel {
        if v.enable_flip && rng.random::<f32>() < v.flip_prob {
            let along_w = rng.random::<f32>() < 0.5;
            both(target, &mut radar, |s| flip(s, along_w));
            applied.flip = Some(if along_w { Axis::W } else { Axis::H });
        }
        if v.enable_rotate && rng.random::<f32>() < v.rotate_prob {
            let k = rng.random_range(1..=3u8);
            both(target, &mut radar, |s| rotate(s, k));
            applied.rotate = Some(k);
        }
        if let Some(r) = radar.as_deref_mut() {
            if v.enable_noise && rng.random::<f32>() < v.noise_prob {
                let normal = Normal::new(0.0, v.noise_std).expect("validated std");
                raster_order(r);
                for vals in r.feats.chunks_exact_mut(r.channels) {
                    vals.iter_mut().for_each(|x| add(x, normal.sample(rng)));
                }
                keep(r, |_, vals| vals[0] > 0.0);
                applied.noise = true;
            }
            if v.enable_dropout && rng.random::<f32>() < v.dropout_prob {
                let rate = v.point_dropout_rate;
                raster_order(r);
                keep(r, |_, _| rng.random::<f32>() >= rate);
                applied.dropout = true;
            }
        }
        let c = target.channels;
        if v.enable_intensity_jitter && rng.random::<f32>() < v.intensity_jitter_prob && c > 1 {
            let u = uniform(rng, v.intensity_scale_range);
            both(target, &mut radar, |s| {
                for vals in s.feats.chunks_exact_mut(s.channels) {
                    vals[1] = f16::from_f32(vals[1] * u).to_f32();
                }
            });
            applied.intensity_scale = Some(u);
        }
        if v.enable_doppler_jitter && rng.random::<f32>() < v.doppler_jitter_prob && c > 2 {
            let shift = uniform(rng, v.doppler_shift_range);
            both(target, &mut radar, |s| s.feats.chunks_exact_mut(s.channels).for_each(|v| add(&mut v[2], shift)));
            applied.doppler_shift = Some(shift);
        }
    }
    if let Some(cut) = &aug.cutout {
        if rng.random::<f32>() < cut.prob {
            let [z, h, w] = target.grid;
            for _ in 0..cut.num_cutouts {
                let bx = cutout_box([target.channels, z, h, w], cut.cutout_size_range, rng);
                if let Some(r) = radar.as_deref_mut() {
                    keep(r, |s, _| !(0..3).all(|k| (bx[k].0..bx[k].1).contains(&(s[k] as usize))));
                }
                applied.cutouts.push(bx);
            }
        }
    }
    applied
}

/// `f` on the target, then on the radar when there is one.
fn both(target: &mut FrameSites, radar: &mut Option<&mut FrameSites>, mut f: impl FnMut(&mut FrameSites)) {
    f(target);
    if let Some(r) = radar.as_deref_mut() {
        f(r);
    }
}

/// `x` + `d` rounded to float16, as the dense grid stores it.
fn add(x: &mut f32, d: f32) {
    *x = f16::from_f32(*x + d).to_f32();
}

fn flip(s: &mut FrameSites, along_w: bool) {
    let [_, h, w] = s.grid.map(|v| v as u32);
    for site in &mut s.sites {
        if along_w {
            site[2] = w - 1 - site[2];
        } else {
            site[1] = h - 1 - site[1];
        }
    }
}

/// `k * 90` degrees counter-clockwise in the (H, W) plane, as the dense
/// `rotate` (`torch.rot90(x, k, (-2, -1))`).
fn rotate(s: &mut FrameSites, k: u8) {
    let [_, h, w] = s.grid.map(|v| v as u32);
    for site in &mut s.sites {
        let (a, b) = (site[1], site[2]);
        (site[1], site[2]) = match k % 4 {
            1 => (w - 1 - b, a),
            2 => (h - 1 - a, w - 1 - b),
            3 => (b, h - 1 - a),
            _ => (a, b),
        };
    }
}

/// Sorts the sites (and their features) by raster index, the order the
/// dense grid visits its voxels in.
fn raster_order(s: &mut FrameSites) {
    let c = s.channels;
    let mut order: Vec<usize> = (0..s.sites.len()).collect();
    order.sort_unstable_by_key(|&i| s.sites[i]);
    s.sites = order.iter().map(|&i| s.sites[i]).collect();
    s.feats = order.iter().flat_map(|&i| s.feats[i * c..(i + 1) * c].iter().copied()).collect();
}

/// Keeps the sites that `pred(site, features)` accepts, called in site order.
fn keep(s: &mut FrameSites, mut pred: impl FnMut([u32; 3], &[f32]) -> bool) {
    let c = s.channels;
    let (mut sites, mut feats) = (Vec::with_capacity(s.sites.len()), Vec::with_capacity(s.feats.len()));
    for (site, vals) in s.sites.iter().zip(s.feats.chunks_exact(c)) {
        if pred(*site, vals) {
            sites.push(*site);
            feats.extend_from_slice(vals);
        }
    }
    (s.sites, s.feats) = (sites, feats);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::augment::{CutoutAugmentation, VoxelAugmentation};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A random `(C, D, H, W)` grid at ~`share` occupancy (float16 values;
    /// an occupied voxel has channel 0 > 0 and all four channels set).
    fn grid(shape: [usize; 4], share: f32, seed: u64) -> Vec<f16> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let [c, d, h, w] = shape;
        let plane = d * h * w;
        let mut g = vec![f16::ZERO; c * plane];
        for i in 0..plane {
            if rng.random::<f32>() < share {
                g[i] = f16::from_f32(rng.random_range(0.01..1.0));
                for ch in 1..c {
                    g[ch * plane + i] = f16::from_f32(rng.random_range(-2.0..2.0));
                }
            }
        }
        g
    }

    /// The sites of a dense grid: voxels with channel 0 > 0, raster order.
    fn sites_of(g: &[f16], [c, d, h, w]: [usize; 4]) -> FrameSites {
        let plane = d * h * w;
        let mut s = FrameSites { grid: [d, h, w], native: [d, h, w], channels: c, ..Default::default() };
        for i in 0..plane {
            if g[i].to_f32() > 0.0 {
                s.sites.push([(i / (h * w)) as u32, ((i / w) % h) as u32, (i % w) as u32]);
                s.feats.extend((0..c).map(|ch| g[ch * plane + i].to_f32()));
            }
        }
        s
    }

    /// Augmenting the sites equals taking the sites of the augmented grid,
    /// with the same draws: over 300 seeds of every step at probability
    /// 0.5 (both flips, all three rotations, noise driving occupancy to 0,
    /// dropout, both jitters, cutouts), features equal to the bit.
    #[test]
    fn sites_augment_as_the_dense_grid_does() {
        let aug = Augmentation {
            voxel: Some(VoxelAugmentation {
                flip_prob: 0.5,
                rotate_prob: 0.5,
                noise_prob: 0.5,
                noise_std: 0.3,
                dropout_prob: 0.5,
                point_dropout_rate: 0.3,
                intensity_jitter_prob: 0.5,
                doppler_jitter_prob: 0.5,
                ..Default::default()
            }),
            cutout: Some(CutoutAugmentation { prob: 0.5, ..Default::default() }),
            mixup: None,
        };
        let shape = [4, 3, 6, 6];
        let mut seen = Applied::default();
        let mut rotations = [false; 3];
        for seed in 0..300u64 {
            let (mut t, mut r) = (grid(shape, 0.3, seed), grid(shape, 0.2, seed + 1000));
            let (mut ts, mut rs) = (sites_of(&t, shape), sites_of(&r, shape));
            let dense = aug.apply_sample(shape, &mut t, &mut r, &mut ChaCha8Rng::seed_from_u64(seed));
            let sparse = augment_sites(&aug, &mut ts, Some(&mut rs), &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(dense, sparse, "seed {seed}: the same steps with the same draws");
            for (s, g, name) in [(&mut ts, &t, "target"), (&mut rs, &r, "radar")] {
                raster_order(s);
                let want = sites_of(g, shape);
                assert_eq!(s.sites, want.sites, "seed {seed} {name}: sites");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&s.feats), bits(&want.feats), "seed {seed} {name}: features");
            }
            seen.noise |= dense.noise;
            seen.dropout |= dense.dropout;
            seen.flip = seen.flip.or(dense.flip);
            seen.cutouts.extend(dense.cutouts);
            if let Some(k) = dense.rotate {
                rotations[k as usize - 1] = true;
            }
        }
        assert!(seen.noise && seen.dropout && seen.flip.is_some() && !seen.cutouts.is_empty());
        assert_eq!(rotations, [true; 3], "every rotation was exercised");
    }

    #[test]
    fn mixup_and_quarter_turns_of_a_non_square_plane_are_refused_by_name() {
        let rot = Augmentation { voxel: Some(VoxelAugmentation::default()), ..Default::default() };
        let err = check(&rot, [32, 64, 32]).unwrap_err().to_string();
        assert!(err.contains("rotate_prob") && err.contains("64 x 32"), "{err}");
        assert!(check(&rot, [32, 32, 32]).is_ok());
        let mix = Augmentation { mixup: Some(Default::default()), ..Default::default() };
        assert!(check(&mix, [32, 32, 32]).unwrap_err().to_string().contains("mixup"));
    }
}

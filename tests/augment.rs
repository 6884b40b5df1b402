//! The augmentation API: exact parameter names through TOML/JSON/CLI, the
//! legacy names the reference used refused with a suggestion, validation,
//! paired geometry, condition-only effects and the statistics of each draw.

use half::f16;
use radvox::data::augment::{
    serialized_fields, AugmentError, Augmentation, Axis, CutoutAugmentation, MixupAugmentation, VoxelAugmentation,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn every_field_changed() -> Augmentation {
    Augmentation {
        voxel: Some(VoxelAugmentation {
            enable_flip: false,
            flip_prob: 0.11,
            enable_rotate: false,
            rotate_prob: 0.12,
            enable_noise: false,
            noise_prob: 0.13,
            noise_std: 0.014,
            enable_dropout: false,
            dropout_prob: 0.15,
            point_dropout_rate: 0.16,
            enable_intensity_jitter: false,
            intensity_jitter_prob: 0.17,
            intensity_scale_range: (0.8, 1.25),
            enable_doppler_jitter: false,
            doppler_jitter_prob: 0.18,
            doppler_shift_range: (-0.25, 0.5),
        }),
        cutout: Some(CutoutAugmentation { prob: 0.19, cutout_size_range: (0.05, 0.5), num_cutouts: 3 }),
        mixup: Some(MixupAugmentation { alpha: 0.4, prob: 0.21 }),
    }
}

#[test]
fn field_lists_match_the_structs() {
    let mut v: Vec<String> = VoxelAugmentation::FIELDS.iter().map(|s| s.to_string()).collect();
    v.sort();
    assert_eq!(serialized_fields(&VoxelAugmentation::default()), v);
    let mut c: Vec<String> = CutoutAugmentation::FIELDS.iter().map(|s| s.to_string()).collect();
    c.sort();
    assert_eq!(serialized_fields(&CutoutAugmentation::default()), c);
    let mut m: Vec<String> = MixupAugmentation::FIELDS.iter().map(|s| s.to_string()).collect();
    m.sort();
    assert_eq!(serialized_fields(&MixupAugmentation::default()), m);
}

#[test]
fn every_parameter_round_trips_through_toml_and_json() {
    let aug = every_field_changed();
    let toml_text = aug.to_toml();
    for name in VoxelAugmentation::FIELDS.iter().chain(CutoutAugmentation::FIELDS).chain(MixupAugmentation::FIELDS) {
        assert!(toml_text.contains(&format!("{name} = ")), "{name} missing from\n{toml_text}");
    }
    assert_eq!(Augmentation::from_toml(&toml_text).unwrap(), aug);
    let json = serde_json::to_string(&aug).unwrap();
    assert_eq!(Augmentation::from_json(&json).unwrap(), aug);
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("a.toml", toml_text.as_str()), ("a.json", json.as_str())] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        assert_eq!(Augmentation::from_file(&p).unwrap(), aug);
    }
    // A partial section keeps the spec's defaults for the rest.
    let partial = Augmentation::from_toml("[voxel]\nflip_prob = 0.9\n").unwrap();
    assert_eq!(partial.voxel, Some(VoxelAugmentation { flip_prob: 0.9, ..Default::default() }));
    assert!(partial.cutout.is_none() && partial.mixup.is_none());
}

#[test]
fn the_command_line_uses_kebab_case_names() {
    let mut aug = Augmentation::default();
    aug.set_cli("flip-prob", "0.25").unwrap();
    aug.set_cli("intensity-scale-range", "0.5,2.0").unwrap();
    aug.set_cli("enable-rotate", "false").unwrap();
    aug.set_cli("cutout.num-cutouts", "2").unwrap();
    aug.set_cli("mixup.alpha", "0.7").unwrap();
    let v = aug.voxel.as_ref().unwrap();
    assert_eq!((v.flip_prob, v.intensity_scale_range, v.enable_rotate), (0.25, (0.5, 2.0), false));
    assert_eq!(aug.cutout.as_ref().unwrap().num_cutouts, 2);
    assert_eq!(aug.mixup.as_ref().unwrap().alpha, 0.7);
    match aug.set_cli("rotation-prob", "0.3") {
        Err(AugmentError::UnknownParameter { name, closest, .. }) => {
            assert_eq!(name, "rotation_prob");
            assert_eq!(closest.as_deref(), Some("rotate_prob"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn legacy_names_are_refused_with_the_closest_valid_name() {
    for (legacy, want) in [
        ("rotation_prob", "rotate_prob"),
        ("dropout_rate", "point_dropout_rate"),
        ("flip_probability", "flip_prob"),
        ("noise_sigma", "noise_std"),
    ] {
        let text = format!("[voxel]\n{legacy} = 0.1\n");
        let err = Augmentation::from_toml(&text).unwrap_err();
        assert_eq!(
            err,
            AugmentError::UnknownParameter { section: "voxel".into(), name: legacy.into(), closest: Some(want.into()) }
        );
        assert!(err.to_string().contains(&format!("did you mean `{want}`")), "{err}");
        let json = format!("{{\"voxel\": {{\"{legacy}\": 0.1}}}}");
        assert!(matches!(Augmentation::from_json(&json), Err(AugmentError::UnknownParameter { .. })));
    }
    let err = Augmentation::from_toml("[cutout]\ncutout_size = [0.1, 0.2]\n").unwrap_err();
    assert!(matches!(err, AugmentError::UnknownParameter { closest: Some(ref c), .. } if c == "cutout_size_range"));
    let err = Augmentation::from_toml("[voxels]\nflip_prob = 0.1\n").unwrap_err();
    assert!(matches!(err, AugmentError::UnknownParameter { closest: Some(ref c), .. } if c == "voxel"));
}

#[test]
fn bad_values_are_refused() {
    for (text, name) in [
        ("[voxel]\nflip_prob = 1.5", "flip_prob"),
        ("[voxel]\nnoise_prob = -0.1", "noise_prob"),
        ("[voxel]\npoint_dropout_rate = 2.0", "point_dropout_rate"),
        ("[voxel]\nnoise_std = -1.0", "noise_std"),
        ("[cutout]\nprob = 3.0", "prob"),
        ("[cutout]\ncutout_size_range = [0.5, 1.5]", "cutout_size_range"),
        ("[mixup]\nalpha = 0.0", "alpha"),
    ] {
        match Augmentation::from_toml(text) {
            Err(AugmentError::OutOfRange { name: n, .. }) => assert_eq!(n, name, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    for (text, name) in [
        ("[voxel]\nintensity_scale_range = [1.1, 0.9]", "intensity_scale_range"),
        ("[voxel]\ndoppler_shift_range = [0.1, -0.1]", "doppler_shift_range"),
        ("[cutout]\ncutout_size_range = [0.3, 0.1]", "cutout_size_range"),
    ] {
        assert!(
            matches!(Augmentation::from_toml(text), Err(AugmentError::InvertedRange { name: n, .. }) if n == name),
            "{text}"
        );
    }
    let aug = Augmentation { voxel: Some(VoxelAugmentation::default()), ..Default::default() };
    assert_eq!(aug.validate(Some((608, 224))), Err(AugmentError::NonSquareRotation { h: 608, w: 224 }));
    assert_eq!(aug.validate(Some((128, 128))), Ok(()));
    let no_rotate = Augmentation {
        voxel: Some(VoxelAugmentation { enable_rotate: false, ..Default::default() }),
        ..Default::default()
    };
    assert_eq!(no_rotate.validate(Some((608, 224))), Ok(()));
}

const SHAPE: [usize; 4] = [4, 2, 6, 6];

/// A grid with a few occupied voxels carrying distinct features.
fn grid(seed: usize) -> Vec<f16> {
    let plane = SHAPE[1] * SHAPE[2] * SHAPE[3];
    let mut g = vec![f16::ZERO; SHAPE[0] * plane];
    for k in 0..5 {
        let i = (seed * 7 + k * 13) % plane;
        g[i] = f16::ONE;
        for c in 1..4 {
            g[c * plane + i] = f16::from_f32((k * 4 + c + seed) as f32 * 0.5);
        }
    }
    g
}

fn just(f: impl FnOnce(&mut VoxelAugmentation)) -> Augmentation {
    let mut v = VoxelAugmentation {
        enable_flip: false,
        enable_rotate: false,
        enable_noise: false,
        enable_dropout: false,
        enable_intensity_jitter: false,
        enable_doppler_jitter: false,
        ..Default::default()
    };
    f(&mut v);
    Augmentation { voxel: Some(v), ..Default::default() }
}

fn at(g: &[f16], c: usize, d: usize, h: usize, w: usize) -> f16 {
    g[((c * SHAPE[1] + d) * SHAPE[2] + h) * SHAPE[3] + w]
}

#[test]
fn geometry_moves_target_and_radar_together() {
    for aug in
        [just(|v| (v.enable_flip, v.flip_prob) = (true, 1.0)), just(|v| (v.enable_rotate, v.rotate_prob) = (true, 1.0))]
    {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..60u64 {
            let (mut t, mut r) = (grid(1), grid(1));
            let orig = grid(1);
            let applied = aug.apply_sample(SHAPE, &mut t, &mut r, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(t, r, "target and radar must stay aligned");
            assert_ne!(t, orig);
            seen.insert(format!("{:?}{:?}", applied.flip, applied.rotate));
            // Each voxel lands where the applied transform says.
            let (h, w) = (SHAPE[2], SHAPE[3]);
            for c in 0..4 {
                for d in 0..2 {
                    for y in 0..h {
                        for x in 0..w {
                            let (sy, sx) = match (applied.flip, applied.rotate) {
                                (Some(Axis::W), _) => (y, w - 1 - x),
                                (Some(Axis::H), _) => (h - 1 - y, x),
                                (_, Some(1)) => (x, w - 1 - y),
                                (_, Some(2)) => (h - 1 - y, w - 1 - x),
                                (_, Some(3)) => (h - 1 - x, y),
                                other => panic!("{other:?}"),
                            };
                            assert_eq!(at(&t, c, d, y, x), at(&orig, c, d, sy, sx));
                        }
                    }
                }
            }
        }
        assert!(seen.len() >= 2, "{seen:?}");
    }
}

#[test]
fn noise_and_dropout_touch_only_occupied_condition_voxels() {
    let noise = just(|v| (v.enable_noise, v.noise_prob, v.noise_std) = (true, 1.0, 0.5));
    let dropout = just(|v| (v.enable_dropout, v.dropout_prob, v.point_dropout_rate) = (true, 1.0, 1.0));
    let plane = SHAPE[1] * SHAPE[2] * SHAPE[3];
    for (aug, is_noise) in [(noise, true), (dropout, false)] {
        let (mut t, mut r) = (grid(2), grid(3));
        let (t0, r0) = (t.clone(), r.clone());
        aug.apply_sample(SHAPE, &mut t, &mut r, &mut ChaCha8Rng::seed_from_u64(5));
        assert_eq!(t, t0, "the target is never noised or dropped");
        for i in 0..plane {
            let occupied = r0[i].to_f32() > 0.0;
            for c in 0..4 {
                let (before, after) = (r0[c * plane + i], r[c * plane + i]);
                match (occupied, is_noise) {
                    (false, _) => assert_eq!(before, after, "empty voxel changed"),
                    (true, true) => assert_ne!(before, after, "occupied voxel not noised"),
                    (true, false) => assert_eq!(after, f16::ZERO, "dropout rate 1 keeps a voxel"),
                }
            }
        }
    }
}

#[test]
fn jitter_scales_and_shifts_both_grids() {
    let aug = just(|v| {
        (v.enable_intensity_jitter, v.intensity_jitter_prob) = (true, 1.0);
        (v.enable_doppler_jitter, v.doppler_jitter_prob) = (true, 1.0);
    });
    let plane = SHAPE[1] * SHAPE[2] * SHAPE[3];
    let (mut t, mut r) = (grid(4), grid(5));
    let (t0, r0) = (t.clone(), r.clone());
    let applied = aug.apply_sample(SHAPE, &mut t, &mut r, &mut ChaCha8Rng::seed_from_u64(9));
    let (u, s) = (applied.intensity_scale.unwrap(), applied.doppler_shift.unwrap());
    assert!((0.9..1.1).contains(&u) && (-0.1..0.1).contains(&s));
    for (g, g0) in [(&t, &t0), (&r, &r0)] {
        for i in 0..plane {
            assert_eq!(g[plane + i], f16::from_f32(g0[plane + i].to_f32() * u));
            let want =
                if g0[i].to_f32() > 0.0 { f16::from_f32(g0[2 * plane + i].to_f32() + s) } else { g0[2 * plane + i] };
            assert_eq!(g[2 * plane + i], want);
            assert_eq!(g[3 * plane + i], g0[3 * plane + i]);
        }
    }
}

#[test]
fn cutout_zeroes_a_condition_box_and_mixup_blends_pairs() {
    let aug = Augmentation {
        cutout: Some(CutoutAugmentation { prob: 1.0, cutout_size_range: (0.5, 0.5), num_cutouts: 1 }),
        ..Default::default()
    };
    let (mut t, mut r) = (grid(1), vec![f16::ONE; SHAPE.iter().product()]);
    let t0 = t.clone();
    let applied = aug.apply_sample(SHAPE, &mut t, &mut r, &mut ChaCha8Rng::seed_from_u64(1));
    assert_eq!(t, t0);
    let [(z0, z1), (y0, y1), (x0, x1)] = applied.cutouts[0];
    assert_eq!((z1 - z0, y1 - y0, x1 - x0), (1, 3, 3));
    let zeros = r.iter().filter(|v| **v == f16::ZERO).count();
    assert_eq!(zeros, 4 * 9);

    let mix = Augmentation { mixup: Some(MixupAugmentation { alpha: 0.4, prob: 1.0 }), ..Default::default() };
    let per: usize = SHAPE.iter().product();
    let (a, b) = (grid(1), grid(2));
    let mut t: Vec<f16> = a.iter().chain(&b).copied().collect();
    let mut r = t.clone();
    let lams = mix.apply_batch(2, &mut t, &mut r, &mut ChaCha8Rng::seed_from_u64(3));
    let lam0 = lams[0].unwrap();
    for k in 0..per {
        let want = f16::from_f32(lam0 * a[k].to_f32() + (1.0 - lam0) * b[k].to_f32());
        assert_eq!(t[k], want);
        assert_eq!(r[k], want, "target and condition share lam");
    }
}

/// Fraction of `n` seeded draws for which `hit` holds, within 4.5 sigma of `p`.
fn check_rate(name: &str, p: f64, n: usize, hit: impl Fn(u64) -> bool) {
    let k = (0..n as u64).filter(|&s| hit(s)).count() as f64;
    let sigma = (p * (1.0 - p) / n as f64).sqrt();
    let rate = k / n as f64;
    assert!((rate - p).abs() <= 4.5 * sigma + 1e-9, "{name}: rate {rate} vs p {p}");
}

#[test]
fn each_probability_holds_over_many_seeded_draws() {
    let v = VoxelAugmentation::dataset_defaults();
    let aug = Augmentation {
        voxel: Some(v.clone()),
        cutout: Some(CutoutAugmentation { prob: 0.3, ..Default::default() }),
        mixup: Some(MixupAugmentation { alpha: 0.2, prob: 0.3 }),
    };
    let shape = [4, 2, 6, 6];
    let draw = |s: u64| {
        let (mut t, mut r) = (grid(1), grid(2));
        aug.apply_sample(shape, &mut t, &mut r, &mut ChaCha8Rng::seed_from_u64(s))
    };
    let n = 3000;
    let draws: Vec<_> = (0..n as u64).map(draw).collect();
    let get = |s: u64| &draws[s as usize];
    check_rate("flip_prob", v.flip_prob as f64, n, |s| get(s).flip.is_some());
    check_rate("rotate_prob", v.rotate_prob as f64, n, |s| get(s).rotate.is_some());
    check_rate("noise_prob", v.noise_prob as f64, n, |s| get(s).noise);
    check_rate("dropout_prob", v.dropout_prob as f64, n, |s| get(s).dropout);
    check_rate("intensity_jitter_prob", v.intensity_jitter_prob as f64, n, |s| get(s).intensity_scale.is_some());
    check_rate("doppler_jitter_prob", v.doppler_jitter_prob as f64, n, |s| get(s).doppler_shift.is_some());
    check_rate("cutout prob", 0.3, n, |s| !get(s).cutouts.is_empty());
    // Conditional draws: flip axis W half the time, k uniform on {1, 2, 3}.
    let flips: Vec<_> = draws.iter().filter_map(|a| a.flip).collect();
    check_rate("flip along W", 0.5, flips.len(), |s| flips[s as usize] == Axis::W);
    let ks: Vec<_> = draws.iter().filter_map(|a| a.rotate).collect();
    for k in 1..=3 {
        check_rate("rotate k", 1.0 / 3.0, ks.len(), |s| ks[s as usize] == k);
    }
    // Point dropout rate: fraction of occupied condition voxels zeroed.
    let drop = just(|v| (v.enable_dropout, v.dropout_prob, v.point_dropout_rate) = (true, 1.0, 0.3));
    let plane = shape[1] * shape[2] * shape[3];
    let (mut kept, mut total) = (0usize, 0usize);
    for s in 0..600u64 {
        let (mut t, mut r) = (grid(1), grid(2));
        drop.apply_sample(shape, &mut t, &mut r, &mut ChaCha8Rng::seed_from_u64(s));
        total += 5;
        kept += (0..plane).filter(|&i| r[plane + i] != f16::ZERO).count();
    }
    let rate = 1.0 - kept as f64 / total as f64;
    assert!((rate - 0.3).abs() < 4.5 * (0.3f64 * 0.7 / total as f64).sqrt(), "point_dropout_rate {rate}");
    // Mixup prob and lam's Beta(alpha, alpha) mean 0.5.
    let mix = Augmentation { mixup: Some(MixupAugmentation { alpha: 0.2, prob: 0.3 }), ..Default::default() };
    let lams: Vec<Option<f32>> = (0..n as u64)
        .flat_map(|s| {
            let (mut t, mut r) = (vec![f16::ZERO; 2 * 4], vec![f16::ZERO; 2 * 4]);
            mix.apply_batch(2, &mut t, &mut r, &mut ChaCha8Rng::seed_from_u64(s))
        })
        .collect();
    check_rate("mixup prob", 0.3, lams.len(), |s| lams[s as usize].is_some());
    let mixed: Vec<f32> = lams.iter().flatten().copied().collect();
    let mean = mixed.iter().sum::<f32>() / mixed.len() as f32;
    // Var of Beta(a, a) = 1 / (4 (2a + 1)).
    let sd = (1.0 / (4.0 * 1.4) / mixed.len() as f32).sqrt();
    assert!((mean - 0.5).abs() < 4.5 * sd, "lam mean {mean}");
}

#[test]
fn same_seed_same_result() {
    let aug = every_field_changed();
    let aug = Augmentation {
        voxel: aug.voxel.map(|v| VoxelAugmentation {
            enable_flip: true,
            enable_noise: true,
            enable_dropout: true,
            ..v
        }),
        ..aug
    };
    let run = |seed| {
        let (mut t, mut r) = (grid(1), grid(2));
        aug.apply_sample(SHAPE, &mut t, &mut r, &mut ChaCha8Rng::seed_from_u64(seed));
        (t, r)
    };
    assert_eq!(run(4), run(4));
    assert!((0..20).any(|s| run(s) != run(4)));
}

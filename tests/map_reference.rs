//! The map's updates against the independent numpy implementation
//! `fixtures/map/make_map_reference.py` (brute-force free space, float64):
//! log-odds with clamping and Dempster-Shafer, probabilities and
//! reliability, duplicates, occupied-wins, decay, max range, negative
//! coordinates.

use radvox::map::{DempsterShafer, Evidence, LogOdds, MapConfig, Observation, VoxelMap};
use serde_json::Value;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn xyz(v: &Value) -> [f64; 3] {
    let a = v.as_array().unwrap();
    [f(&a[0]), f(&a[1]), f(&a[2])]
}

fn config(c: &Value) -> MapConfig {
    let evidence = match c["model"].as_str().unwrap() {
        "log_odds" => Evidence::LogOdds(LogOdds {
            p_hit: f(&c["p_hit"]),
            p_miss: f(&c["p_miss"]),
            clamp_min: f(&c["clamp_min"]),
            clamp_max: f(&c["clamp_max"]),
        }),
        _ => Evidence::DempsterShafer(DempsterShafer { ds_hit: f(&c["ds_hit"]), ds_miss: f(&c["ds_miss"]) }),
    };
    MapConfig {
        voxel: f(&c["voxel"]),
        evidence,
        decay_s: c["decay_s"].as_f64(),
        max_range: c["max_range"].as_f64(),
        window: None,
        ..MapConfig::default()
    }
}

#[test]
fn updates_equal_the_numpy_reference() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/map/map_reference.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut map = VoxelMap::new(config(&case["config"])).unwrap();
        let want = &case["expected"];
        for (j, fr) in case["frames"].as_array().unwrap().iter().enumerate() {
            let points: Vec<[f64; 3]> = fr["points"].as_array().unwrap().iter().map(xyz).collect();
            let probs: Vec<f32> = fr["probs"].as_array().unwrap().iter().map(|p| f(p) as f32).collect();
            let obs = Observation {
                time: f(&fr["time"]),
                origin: xyz(&fr["origin"]),
                points: &points,
                probs: Some(&probs),
                reliability: f(&fr["reliability"]),
            };
            let s = map.insert(&obs).unwrap();
            let u = &want["updates"][j];
            assert_eq!(
                [s.occupied, s.free],
                [u[0].as_u64().unwrap() as usize, u[1].as_u64().unwrap() as usize],
                "{name} frame {j}"
            );
        }
        let mut got: Vec<_> = map.voxels().collect();
        got.sort_unstable_by_key(|v| v.0);
        let keys: Vec<[i32; 3]> = got.iter().map(|v| v.0).collect();
        let want_keys: Vec<[i32; 3]> = (want["voxels"].as_array().unwrap().iter())
            .map(|k| std::array::from_fn(|i| k[i].as_i64().unwrap() as i32))
            .collect();
        assert_eq!(keys, want_keys, "{name}: observed voxels");
        let (rule, now) = (map.update_rule(), map.now());
        for (i, (k, cell)) in got.iter().enumerate() {
            let (a, b) = rule.decayed(cell, now);
            let (wa, wb) = (f(&want["state"][i][0]), f(&want["state"][i][1]));
            assert!((a - wa).abs() < 2e-5 && (b - wb).abs() < 2e-5, "{name} {k:?}: state ({a}, {b}) vs ({wa}, {wb})");
            let p = map.probability(*k);
            assert!((p - f(&want["probability"][i])).abs() < 1e-5, "{name} {k:?}: p {p}");
        }
    }
}

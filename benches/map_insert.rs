//! Map insertion throughput on the quality benchmark's held-out scenes
//! (scene10-11 LiDAR frames, ground removed, at native 0.2 m voxels, in the
//! world by the scenes' poses; scene11 shifted 1 km in y so both scenes make
//! one stream), ray casting on, OctoMap's defaults (hit 0.7, miss 0.4,
//! clamping 0.1192 / 0.971), no window, no decay: radvox on one thread and on
//! every core, and, when `RADVOX_OCTOMAP` names the program that
//! `scripts/map_bench.sh` builds (`benches/map/octomap_insert.cpp`),
//! OctoMap's `insertPointCloud` on the same points in the same run, with
//! the agreement of the two maps' occupied voxels.
//!
//! `bash scripts/map_bench.sh` (installs OctoMap, builds its program, runs
//! this); or `cargo bench --bench map_insert` for radvox alone. Not in CI.

use std::collections::HashSet;
use std::io::Write;
use std::process::Command;

use radvox::data::Layout;
use radvox::map::{FrameSource, MapConfig, Observation, SceneFrames, VoxelMap};

mod common;

struct Frame {
    origin: [f64; 3],
    time: f64,
    points: Vec<[f64; 3]>,
}

fn frames() -> Vec<Frame> {
    let root = common::quality_root();
    let mut out = Vec::new();
    for (s, scene) in ["scene10", "scene11"].iter().enumerate() {
        let sf = SceneFrames::open(&root, scene, FrameSource::Lidar, Layout::default(), 0.5).expect("the quality root");
        let shift = |p: [f64; 3]| [p[0], p[1] + 1000.0 * s as f64, p[2]];
        for j in 0..sf.len() {
            let f = sf.frame(j).unwrap();
            let points = f.points.into_iter().map(shift).collect();
            out.push(Frame {
                origin: shift(f.pose.t),
                time: f.pose.stamp - 3600.0 * s as f64 + 10.0 * s as f64,
                points,
            });
        }
    }
    out
}

/// One pass: (seconds inserting, per-frame seconds sorted, voxel updates, the map).
fn run(frames: &[Frame], threads: usize) -> (f64, Vec<f64>, usize, VoxelMap) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let mut m = VoxelMap::new(MapConfig { window: None, ..MapConfig::default() }).unwrap();
        let (mut secs, mut each, mut updates) = (0.0, Vec::new(), 0);
        for f in frames {
            let s = m
                .insert(&Observation {
                    time: f.time,
                    origin: f.origin,
                    points: &f.points,
                    probs: None,
                    reliability: 1.0,
                })
                .unwrap();
            secs += s.seconds;
            each.push(s.seconds);
            updates += s.updates();
        }
        each.sort_by(f64::total_cmp);
        (secs, each, updates, m)
    })
}

fn write_points(frames: &[Frame], path: &std::path::Path) {
    let mut b = Vec::new();
    b.extend_from_slice(b"RVXPTS1\0");
    b.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for f in frames {
        for v in f.origin {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(f.points.len() as u32).to_le_bytes());
        for p in &f.points {
            for v in p {
                b.extend_from_slice(&(*v as f32).to_le_bytes());
            }
        }
    }
    std::fs::File::create(path).unwrap().write_all(&b).unwrap();
}

fn read_centres(path: &std::path::Path) -> Vec<[f32; 3]> {
    let b = std::fs::read(path).unwrap();
    let n = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| {
            std::array::from_fn(|k| f32::from_le_bytes(b[4 + 12 * i + 4 * k..8 + 12 * i + 4 * k].try_into().unwrap()))
        })
        .collect()
}

fn main() {
    let frames = frames();
    let points: usize = frames.iter().map(|f| f.points.len()).sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let flags = ["avx512_bf16", "amx_bf16", "avx512f", "avx2"]
        .into_iter()
        .filter(|f| std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.split_whitespace().any(|w| w == *f)))
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "{} frames, {points} points ({:.0} a frame), {cores} cores, cpu flags: {flags}",
        frames.len(),
        points as f64 / frames.len() as f64
    );
    println!("| tool | threads | insert s (best of 3) | M points/s | M voxel updates/s | mean ms/frame | median / p95 / worst ms | memory MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut ours = None;
    let mut one_core = 0.0;
    for threads in [1, cores] {
        let mut best: Option<(f64, Vec<f64>, usize, VoxelMap)> = None;
        for _ in 0..3 {
            let r = run(&frames, threads);
            if best.as_ref().is_none_or(|b| r.0 < b.0) {
                best = Some(r);
            }
        }
        let (secs, each, updates, map) = best.unwrap();
        let q = |f: f64| each[((each.len() - 1) as f64 * f).round() as usize] * 1e3;
        if threads == 1 {
            one_core = points as f64 / secs;
        }
        println!(
            "| radvox | {threads} | {secs:.3} | {:.3} | {:.2} | {:.1} | {:.1} / {:.1} / {:.1} | {:.1} |",
            points as f64 / secs / 1e6,
            updates as f64 / secs / 1e6,
            secs / frames.len() as f64 * 1e3,
            q(0.5),
            q(0.95),
            q(1.0),
            map.bytes() as f64 / (1 << 20) as f64
        );
        ours = Some(map);
    }
    let Some(octomap) = std::env::var_os("RADVOX_OCTOMAP") else {
        println!("(RADVOX_OCTOMAP unset: run scripts/map_bench.sh for OctoMap beside it)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("radvox-map-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pts, occ) = (dir.join("points.bin"), dir.join("occupied.bin"));
    write_points(&frames, &pts);
    let o = Command::new(&octomap)
        .arg(&pts)
        .args(["--res", "0.2", "--count-updates", "--out-occupied"])
        .arg(&occ)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("running the OctoMap program");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = String::from_utf8_lossy(&o.stdout);
    let j: serde_json::Value = serde_json::from_str(line.trim()).expect("OctoMap's JSON line");
    let secs = j["insert_s"].as_f64().unwrap();
    println!(
        "| OctoMap {} | 1 | {secs:.3} | {:.3} | {:.2} | {:.1} | - | {:.1} |",
        j["version"].as_str().unwrap_or("?"),
        points as f64 / secs / 1e6,
        j["updates"].as_f64().unwrap_or(f64::NAN) / secs / 1e6,
        secs / frames.len() as f64 * 1e3,
        j["memory_bytes"].as_f64().unwrap_or(f64::NAN) / (1 << 20) as f64
    );
    println!("radvox 1 thread / OctoMap: {:.1}x the points per second", one_core / (points as f64 / secs));
    let theirs: HashSet<[i32; 3]> =
        read_centres(&occ).iter().map(|c| radvox::map::ray::key(c.map(f64::from), 0.2)).collect();
    let mine: HashSet<[i32; 3]> = ours.unwrap().occupied().into_iter().map(|v| v.0).collect();
    let both = mine.intersection(&theirs).count();
    println!(
        "occupied voxels: radvox {}, OctoMap {}, both {both} (IoU {:.4})",
        mine.len(),
        theirs.len(),
        both as f64 / (mine.len() + theirs.len() - both) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

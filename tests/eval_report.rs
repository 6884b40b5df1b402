//! Report flags, summaries, `metrics.csv` and `report.md` on constructed frames.

use radvox::eval::csv::columns;
use radvox::eval::summary::Scope;
use radvox::eval::*;
use radvox::eval::{Region, RegionConfig};

/// 1 m voxels from the origin: voxel `i` has its centre at `i + 0.5`.
const GEOM: GridGeometry = GridGeometry { dims: [60, 20, 20], min: [0.0; 3], voxel: [1.0; 3] };

fn block(x: std::ops::Range<u32>, y: std::ops::Range<u32>, z: std::ops::Range<u32>) -> Vec<Coord> {
    let mut v = Vec::new();
    for i in x {
        for j in y.clone() {
            for k in z.clone() {
                v.push([i, j, k]);
            }
        }
    }
    v
}

/// Target: a 10 x 5 x 6 block (300 voxels).
fn target() -> VoxelSet {
    VoxelSet::new(block(10..20, 5..10, 2..8))
}

/// Radar: every 4th target voxel (F1 0.4).
fn radar() -> VoxelSet {
    VoxelSet::new(target().coords().iter().copied().step_by(4).collect())
}

struct Case {
    frame: &'static str,
    scene: &'static str,
    pred: VoxelSet,
    radar: VoxelSet,
    target: VoxelSet,
}

fn cases() -> Vec<Case> {
    let t = target();
    let case = |frame, scene, pred| Case { frame, scene, pred, radar: radar(), target: target() };
    vec![
        case("frame_perfect", "scene_a", t.clone()),
        case("frame_sparse", "scene_a", VoxelSet::new(t.coords()[..10].to_vec())),
        case("frame_dilated", "scene_a", VoxelSet::new(block(9..21, 4..11, 1..9))),
        case("frame_flat", "scene_b", VoxelSet::new(block(10..20, 5..10, 4..6))),
        case("frame_shifted", "scene_b", VoxelSet::new(block(13..23, 5..10, 2..8))),
        Case {
            frame: "frame_worse",
            scene: "scene_b",
            pred: VoxelSet::new(
                t.coords().iter().copied().enumerate().filter(|(i, _)| i % 10 >= 3).map(|(_, c)| c).collect(),
            ),
            radar: target(),
            target: target(),
        },
        Case {
            frame: "frame_empty_pred",
            scene: "scene_c",
            pred: VoxelSet::default(),
            radar: radar(),
            target: target(),
        },
        Case {
            frame: "frame_all_empty",
            scene: "scene_c",
            pred: VoxelSet::default(),
            radar: VoxelSet::default(),
            target: VoxelSet::default(),
        },
    ]
}

fn records() -> Vec<FrameRecord> {
    let cases = cases();
    let preds: Vec<Prediction> = cases.iter().map(|c| Prediction::from_set(&c.pred)).collect();
    let inputs: Vec<FrameInput> = cases
        .iter()
        .zip(&preds)
        .map(|(c, p)| FrameInput { frame: c.frame, scene: c.scene, prediction: p, radar: &c.radar, target: &c.target })
        .collect();
    evaluate_frames(&GEOM, &inputs, &EvalConfig::default()).unwrap()
}

fn flags_of(records: &[FrameRecord], frame: &str) -> Vec<Flag> {
    frame_flags(records.iter().find(|r| r.frame == frame).unwrap(), &ReportConfig::default())
}

#[test]
fn flags_fire_on_constructed_frames_and_not_on_the_perfect_one() {
    let r = records();
    assert_eq!(flags_of(&r, "frame_perfect"), vec![]);
    assert!(flags_of(&r, "frame_sparse").contains(&Flag::TooSparse));
    assert_eq!(flags_of(&r, "frame_dilated"), vec![Flag::OverDilated]);
    assert_eq!(flags_of(&r, "frame_flat"), vec![Flag::HeightCompressed]);
    assert_eq!(flags_of(&r, "frame_shifted"), vec![Flag::Offset]);
    assert_eq!(flags_of(&r, "frame_worse"), vec![Flag::WorseThanRadar]);
    assert_eq!(flags_of(&r, "frame_empty_pred"), vec![Flag::TooSparse, Flag::WorseThanRadar]);
    assert_eq!(flags_of(&r, "frame_all_empty"), vec![]);
    // Thresholds come from the config.
    let loose = ReportConfig { max_centroid_offset_m: 5.0, ..Default::default() };
    assert!(frame_flags(r.iter().find(|r| r.frame == "frame_shifted").unwrap(), &loose).is_empty());
}

#[test]
fn shape_values_of_constructed_frames() {
    let r = records();
    let get = |f: &str| r.iter().find(|r| r.frame == f).unwrap();
    let shifted = &get("frame_shifted").prediction.shape;
    assert_eq!(shifted.centroid_offset, Some([3.0, 0.0, 0.0]));
    assert!((get("frame_dilated").prediction.shape.count_ratio.unwrap() - 672.0 / 300.0).abs() < 1e-12);
    let flat = get("frame_flat").prediction.shape.z_spread_ratio.unwrap();
    assert!((flat - 0.5 / (35.0f64 / 12.0).sqrt()).abs() < 1e-12);
    assert!((get("frame_perfect").radar.voxel.scores.f1.unwrap() - 0.4).abs() < 1e-12);
}

#[test]
fn summaries_per_scene_and_overall() {
    let r = records();
    let rows = summarize(&r);
    let scopes: Vec<&Scope> = rows.iter().map(|s| &s.scope).collect();
    assert_eq!(
        scopes,
        vec![
            &Scope::Scene("scene_a".into()),
            &Scope::Scene("scene_b".into()),
            &Scope::Scene("scene_c".into()),
            &Scope::Overall
        ]
    );
    let overall = rows.last().unwrap();
    assert_eq!((overall.frames, overall.target_empty, overall.prediction.empty_frames), (8, 1, 2));
    assert_eq!(overall.prediction.voxel.both_empty, 1);
    // Macro F1 over the 7 defined frames equals the mean of the frame values.
    let f1s: Vec<f64> = r.iter().filter_map(|r| r.prediction.voxel.scores.f1).collect();
    assert_eq!(f1s.len(), 7);
    let mean = f1s.iter().sum::<f64>() / 7.0;
    assert!((overall.prediction.voxel.f1.mean.unwrap() - mean).abs() < 1e-12);
    // Chamfer undefined for the empty-prediction and all-empty frames.
    assert_eq!(overall.prediction.chamfer.n, 6);
    let scene_c = &rows[2];
    assert_eq!(scene_c.prediction.chamfer.mean, None);
    assert_eq!(summarize(&[]).len(), 1);
}

#[test]
fn csv_and_markdown_reports() {
    let r = records();
    let dir = tempfile::tempdir().unwrap();
    let paths = write_report(dir.path(), &r, &ReportConfig::default()).unwrap();
    let csv = std::fs::read_to_string(&paths.csv).unwrap();
    let lower = csv.to_lowercase();
    assert!(!lower.contains("nan") && !lower.contains("inf"), "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 8 + 3 + 1);
    let header: Vec<&str> = lines[0].split(',').collect();
    let regions = RegionConfig::default().regions().iter().map(Region::name).collect::<Vec<_>>();
    assert_eq!(header, columns(&[0.5, 1.0], &regions, &[1.0, 2.0]));
    assert!(header.contains(&"pred_x0_20_match@2m") && header.contains(&"radar_visible_bev_iou"));
    assert!(header.contains(&"target_z-1_2") && header.contains(&"brier"));
    assert!(header.contains(&"pred_f@0.5m") && header.contains(&"radar_chamfer"));
    for line in &lines[1..] {
        assert_eq!(line.split(',').count(), header.len(), "{line}");
    }
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let perfect: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(
        (perfect[col("frame")], perfect[col("pred_f1")], perfect[col("pred_chamfer")]),
        ("frame_perfect", "1.000000", "0.000000")
    );
    let all_empty: Vec<&str> = lines.iter().find(|l| l.contains("frame_all_empty")).unwrap().split(',').collect();
    assert_eq!((all_empty[col("pred_iou")], all_empty[col("pred_chamfer")]), ("", ""));
    let overall: Vec<&str> = lines.last().unwrap().split(',').collect();
    assert_eq!((overall[col("row_kind")], overall[col("frames")]), ("overall", "8"));
    assert!(lines[2].contains("too_sparse"));

    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    for id in ["frame_sparse", "frame_dilated", "frame_flat", "frame_shifted", "frame_worse", "frame_empty_pred"] {
        assert!(md.contains(&format!("| {id} |")), "{id} missing:\n{md}");
    }
    assert!(!md.contains("frame_perfect") && !md.contains("frame_all_empty"));
    assert!(md.contains("## Flagged frames (6 of 8)"));
    assert!(md.contains("| **all** | prediction | 8 |") && md.contains("| **all** | radar | 8 |"));
    assert!(!md.to_lowercase().contains("nan"));
}

#[test]
fn reports_reject_a_missing_tau_and_handle_no_frames() {
    let r = records();
    let cfg = ReportConfig { worse_than_radar_tau_m: 0.3, ..Default::default() };
    assert!(matches!(write_report(tempfile::tempdir().unwrap().path(), &r, &cfg), Err(EvalError::Config(_))));
    let dir = tempfile::tempdir().unwrap();
    let paths = write_report(dir.path(), &[], &ReportConfig::default()).unwrap();
    let csv = std::fs::read_to_string(paths.csv).unwrap();
    assert_eq!(csv.lines().count(), 2);
    assert!(std::fs::read_to_string(paths.markdown).unwrap().contains("No frame flagged."));
}

#[test]
fn csv_quotes_awkward_names() {
    let t = target();
    let p = Prediction::from_set(&t);
    let input = FrameInput { frame: "a,\"b\"", scene: "s", prediction: &p, radar: &t, target: &t };
    let r = evaluate_frames(&GEOM, &[input], &EvalConfig::default()).unwrap();
    let csv = radvox::eval::csv::metrics_csv(&r, &summarize(&r), &ReportConfig::default());
    assert!(csv.contains("\"a,\"\"b\"\"\""));
}

#[test]
fn records_round_trip_through_json() {
    let r = records();
    let json = radvox::eval::report::records_json(&r).unwrap();
    assert!(json.contains("\"chamfer\": null"));
    let back: Vec<FrameRecord> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

//! End to end on the NTU4DRadLM geometry: sweep a threshold on validation
//! frames, select per frame (adaptive + fallback), evaluate, report, picture.

use radvox::eval::projection::{save_projection, Layer};
use radvox::eval::*;

/// A frame: a ground patch plus a wall as target, a noisy prediction with
/// target voxels valued 0.8 and distractors valued 0.4, radar every 5th target voxel.
fn frame(seed: u32) -> (Prediction, VoxelSet, VoxelSet) {
    let mut target = Vec::new();
    for x in 100..160 {
        for y in 80..120 {
            target.push([x, y, 30]);
        }
        for z in 30..45 {
            target.push([x, 130 + seed % 3, z]);
        }
    }
    let target = VoxelSet::new(target);
    let radar = VoxelSet::new(target.coords().iter().copied().step_by(5).collect());
    let mut coords: Vec<Coord> = target.coords().to_vec();
    let mut values = vec![0.8; coords.len()];
    for i in 0..500u32 {
        coords.push([200 + i % 50, 20 + (i * 7 + seed) % 100, 10 + i % 20]);
        values.push(0.4);
    }
    (Prediction::new(coords, values).unwrap(), radar, target)
}

#[test]
fn sweep_select_evaluate_report_picture() {
    let geom = GridGeometry::NTU4DRADLM;
    let frames: Vec<_> = (0..3).map(frame).collect();
    let sweep_frames: Vec<SweepFrame> =
        frames.iter().map(|(p, _, t)| SweepFrame { prediction: p, target: t }).collect();
    let result = sweep(&sweep_frames, &SweepConfig { thresholds: Thresholds::Even(9), ..Default::default() }).unwrap();
    let best = result.best_threshold().unwrap();
    assert_eq!(best, 0.4, "lowest threshold that removes the 0.4 distractors");
    assert_eq!(result.best_point().unwrap().micro.f1, Some(1.0));

    let selection = SelectionConfig { mode: ThresholdMode::Fixed(0.9), top_k_fallback: Some(100) };
    let cfg = EvalConfig { selection, points: PointConfig::default(), ..Default::default() };
    let names: Vec<String> = (0..3).map(|i| format!("{i:06}")).collect();
    let inputs: Vec<FrameInput> = frames
        .iter()
        .zip(&names)
        .map(|((p, r, t), n)| FrameInput { frame: n, scene: "loop_1", prediction: p, radar: r, target: t })
        .collect();
    let records = evaluate_frames(&geom, &inputs, &cfg).unwrap();
    assert!(records.iter().all(|r| r.selection == SelectionKind::TopKFallback && r.prediction.count == 100));

    let cfg = EvalConfig {
        selection: SelectionConfig {
            mode: ThresholdMode::MatchCount(ExpectedCount::RadarRatio(5.0)),
            top_k_fallback: None,
        },
        points: PointConfig::default(),
        ..Default::default()
    };
    let records = evaluate_frames(&geom, &inputs, &cfg).unwrap();
    for (r, (_, radar, target)) in records.iter().zip(&frames) {
        assert_eq!(r.prediction.count, 5 * radar.len());
        assert!(r.prediction.count <= target.len() + 4);
    }

    let dir = tempfile::tempdir().unwrap();
    let paths = write_report(dir.path(), &records, &ReportConfig::default()).unwrap();
    assert!(std::fs::read_to_string(paths.csv).unwrap().lines().count() == 1 + 3 + 1 + 1);
    let (p, r, t) = &frames[0];
    let png = dir.path().join("proj.png");
    save_projection(
        &png,
        &geom,
        "LOOP_1/000000",
        [Layer::Set(r), Layer::Values(p), Layer::Set(t)],
        &Default::default(),
    )
    .unwrap();
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    result.chart().save_png(&dir.path().join("sweep.png")).unwrap();
}

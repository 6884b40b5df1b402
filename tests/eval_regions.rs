//! The region (range/height bands, shared-visible, BEV, match ratios) and
//! calibration metrics against the independent numpy implementation in
//! `fixtures/eval_regions/make_eval_regions.py` (its `regions.json`), to 1e-6;
//! and the report's band table, band plot and reliability diagram.

use std::path::Path;

use radvox::eval::{
    evaluate_frame, summarize, write_report, EvalConfig, FrameInput, GridGeometry, Prediction, RegionConfig,
    ReportConfig, VoxelSet,
};
use serde_json::Value;

fn fixture() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/eval_regions/regions.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn coords(v: &Value) -> Vec<[u32; 3]> {
    v.as_array().unwrap().iter().map(|c| [0, 1, 2].map(|k| c[k].as_u64().unwrap() as u32)).collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn close(what: &str, got: Option<f64>, want: &Value) {
    match (got, want.as_f64()) {
        (None, None) => {}
        (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-6, "{what}: radvox {g} vs numpy {w}"),
        (g, _) => panic!("{what}: radvox {g:?} vs numpy {want}"),
    }
}

struct Frame {
    prediction: Prediction,
    radar: VoxelSet,
    target: VoxelSet,
}

fn setup() -> (Value, GridGeometry, EvalConfig, Vec<Frame>) {
    let doc = fixture();
    let g = &doc["geometry"];
    let f32s = |v: &Value| f64s(v).iter().map(|&x| x as f32).collect::<Vec<_>>();
    let (min, voxel) = (f32s(&g["min"]), f32s(&g["voxel"]));
    let dims: Vec<usize> = f64s(&g["dims"]).iter().map(|&d| d as usize).collect();
    let geom = GridGeometry {
        dims: [dims[0], dims[1], dims[2]],
        min: [min[0], min[1], min[2]],
        voxel: [voxel[0], voxel[1], voxel[2]],
    };
    let c = &doc["config"];
    let regions = RegionConfig {
        range_edges: f64s(&c["range_edges"]),
        height_edges: f64s(&c["height_edges"]),
        z_min: c["z_min"].as_f64(),
        visible_radius: Some(c["visible_radius"].as_u64().unwrap() as u32),
        match_taus: f64s(&c["match_taus"]),
    };
    let cfg = EvalConfig { regions, ..Default::default() };
    let frames = doc["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Frame {
            prediction: Prediction::new(
                coords(&f["prediction"]["coords"]),
                f64s(&f["prediction"]["values"]).iter().map(|&v| v as f32).collect(),
            )
            .unwrap(),
            radar: VoxelSet::new(coords(&f["radar"])),
            target: VoxelSet::new(coords(&f["target"])),
        })
        .collect();
    (doc, geom, cfg, frames)
}

#[test]
fn region_and_calibration_metrics_equal_the_numpy_reference() {
    let (doc, geom, cfg, frames) = setup();
    let mut records = Vec::new();
    for (k, (f, want)) in frames.iter().zip(doc["frames"].as_array().unwrap()).enumerate() {
        let input =
            FrameInput { frame: "f", scene: "s", prediction: &f.prediction, radar: &f.radar, target: &f.target };
        let r = evaluate_frame(&geom, &input, &cfg).unwrap();
        for (method, m) in [("prediction", &r.prediction), ("radar", &r.radar)] {
            let want = &want["regions"][method];
            assert_eq!(m.regions.len(), want.as_object().unwrap().len(), "{method}: regions");
            for g in &m.regions {
                let w = &want[&g.region];
                let what = |x: &str| format!("frame {k} {method} {} {x}", g.region);
                assert_eq!(g.count as u64, w["count"].as_u64().unwrap(), "{}", what("count"));
                assert_eq!(g.target_count as u64, w["target_count"].as_u64().unwrap(), "{}", what("target"));
                close(&what("iou"), g.voxel.iou, &w["iou"]);
                close(&what("precision"), g.voxel.precision, &w["precision"]);
                close(&what("recall"), g.voxel.recall, &w["recall"]);
                close(&what("f1"), g.voxel.f1, &w["f1"]);
                close(&what("chamfer"), g.chamfer, &w["chamfer"]);
                close(&what("hausdorff"), g.hausdorff, &w["hausdorff"]);
                close(&what("nn"), g.nn, &w["nn"]);
                for tau in &cfg.regions.match_taus {
                    let f = g.at(*tau).unwrap();
                    close(&what("match"), f.precision, &w[format!("match@{tau:.1}")]);
                    close(&what("rmatch"), f.recall, &w[format!("rmatch@{tau:.1}")]);
                    close(&what("f@tau"), f.fscore, &w[format!("f@{tau:.1}")]);
                }
                close(&what("bev_iou"), g.bev.iou, &w["bev_iou"]);
                close(&what("bev_f1"), g.bev.f1, &w["bev_f1"]);
            }
        }
        let c = &want["calibration"];
        assert_eq!(r.calibration.voxels(), c["voxels"].as_u64().unwrap(), "frame {k} calibration voxels");
        close(&format!("frame {k} brier"), r.calibration.brier(), &c["brier"]);
        close(&format!("frame {k} ece"), r.calibration.ece(), &c["ece"]);
        close(&format!("frame {k} brier_grid"), r.calibration.brier_grid(), &c["brier_grid"]);
        close(&format!("frame {k} ece_grid"), r.calibration.ece_grid(), &c["ece_grid"]);
        records.push(r);
    }
    let overall = summarize(&records).pop().unwrap();
    let pooled = &doc["pooled_calibration"];
    close("pooled brier", overall.calibration.brier(), &pooled["brier"]);
    close("pooled ece", overall.calibration.ece(), &pooled["ece"]);
    close("pooled brier_grid", overall.calibration.brier_grid(), &pooled["brier_grid"]);
    close("pooled ece_grid", overall.calibration.ece_grid(), &pooled["ece_grid"]);
    let n: Vec<u64> = pooled["n"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(overall.calibration.n.to_vec(), n);
    // the summary's share of the target per region sums over frames
    let targets: u64 = overall.prediction.regions.iter().find(|g| g.region == "visible").unwrap().target_count;
    let want: u64 = doc["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["regions"]["radar"]["visible"]["target_count"].as_u64().unwrap())
        .sum();
    assert_eq!(targets, want);
}

#[test]
fn the_report_has_the_band_table_the_band_plot_and_the_reliability_diagram() {
    let (_, geom, cfg, frames) = setup();
    let records: Vec<_> = frames
        .iter()
        .map(|f| {
            let input =
                FrameInput { frame: "f", scene: "s", prediction: &f.prediction, radar: &f.radar, target: &f.target };
            evaluate_frame(&geom, &input, &cfg).unwrap()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let paths = write_report(dir.path(), &records, &ReportConfig::default()).unwrap();
    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    for want in ["## By region", "| x0_20 |", "| visible |", "| z-1_2 |", "match@2 m", "## Calibration", "Brier"] {
        assert!(md.contains(want), "report.md lacks {want:?}:\n{md}");
    }
    for png in [paths.bands.unwrap(), paths.reliability.unwrap()] {
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{}", png.display());
    }
    let csv = std::fs::read_to_string(&paths.csv).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"));
    let (iou, target) = (col("radar_x40_80_iou"), col("target_x40_80"));
    let r = &records[0].radar.regions.iter().find(|g| g.region == "x40_80").unwrap();
    assert_eq!(rows[0][target], r.target_count.to_string());
    assert_eq!(rows[0][iou], format!("{:.6}", r.voxel.iou.unwrap()));
    assert_eq!(rows[0][col("brier")], format!("{:.6}", records[0].calibration.brier().unwrap()));
}

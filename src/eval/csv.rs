//! `metrics.csv`: one row per frame, one summary row per scene, one overall row.
//!
//! # Columns
//! Leading columns:
//! * `row_kind`: `frame`, `scene` or `overall`;
//! * `scene`: scene name (empty on the overall row); `frame`: frame id (frame rows only);
//! * `frames`: 1 on frame rows, the number of frames on summary rows;
//! * `threshold`: the prediction's threshold (frame rows; see `Selection::threshold`);
//! * `selection`: `fixed`, `match_count` or `top_k_fallback` (frame rows);
//! * `fallback_frames`: 1/0 on frame rows, a count on summary rows;
//! * `target_count`: target voxels (summed on summary rows);
//! * `target_empty`: 1/0, or the number of frames with an empty target;
//! * `flags`: the frame's report flags, `;`-separated (`too_sparse`, `over_dilated`,
//!   `height_compressed`, `offset`, `worse_than_radar`; empty on summary rows).
//!
//! Then the same block twice, prefixed `pred_` (prediction) and `radar_` (radar baseline):
//! * `count` (occupied voxels, summed), `empty` (1/0, or frames with an empty set),
//!   `tp`, `fp`, `fn` (summed on summary rows);
//! * `iou`, `precision`, `recall`, `f1`: the frame's values; on summary rows the
//!   macro mean over frames where defined;
//! * `iou_micro`, `precision_micro`, `recall_micro`, `f1_micro`: scores of the
//!   pooled counts (equal to the frame's values on frame rows);
//! * `chamfer` (mean of the two directional mean NN distances, m), `chamfer_sum`,
//!   `hausdorff` (m): frame values or means over frames where defined;
//! * per tau (e.g. `0.5`, `1`): `precision@{tau}m`, `recall@{tau}m`, `f@{tau}m`;
//! * `centroid_dx`, `centroid_dy`, `centroid_dz`, `centroid_offset` (m, prediction - target),
//!   `count_ratio`, `z_spread_ratio`: frame values or means over frames where defined.
//!
//! Then the prediction's calibration ([`super::calibration`]; pooled over the
//! voxels on summary rows): `calibration_voxels`, `brier`, `ece` over the
//! voxels the prediction lists or the target occupies, `brier_grid`,
//! `ece_grid` over the whole grid.
//!
//! Then per region ([`super::regions`]: range bands `x{lo}_{hi}`, height
//! bands `z{lo}_{hi}`, `visible`): `target_{region}` (target voxels in it,
//! summed on summary rows); then for `pred` and `radar`, per region:
//! `{method}_{region}_count` (summed), `_iou`, `_precision`, `_recall`,
//! `_f1`, `_chamfer`, `_hausdorff`, `_nn`, per match tolerance
//! `_match@{tau}m`, `_rmatch@{tau}m` and `_f@{tau}m`, `_bev_iou`, `_bev_f1`
//! (frame values, or means over frames where defined).
//!
//! Undefined values are empty cells; numbers use 6 decimals; never NaN or inf.
//! Text cells are quoted when they contain `,`, `"` or a line break.

use super::calibration::Calibration;
use super::flags::{frame_flags, ReportConfig};
use super::record::{FrameRecord, MethodMetrics};
use super::regions::RegionMetrics;
use super::summary::{MethodSummary, RegionSummary, Scope, SummaryRow};
use super::voxel::Counts;

/// One CSV cell.
enum Cell {
    Text(String),
    Int(u64),
    Num(Option<f64>),
}

impl Cell {
    fn render(&self) -> String {
        match self {
            Cell::Text(s) => quote(s),
            Cell::Int(v) => v.to_string(),
            Cell::Num(Some(v)) if v.is_finite() => format!("{v:.6}"),
            Cell::Num(_) => String::new(),
        }
    }
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The regions of the records and their match tolerances (from the first record).
pub fn regions_of(records: &[FrameRecord]) -> (Vec<String>, Vec<f64>) {
    let regions = records.first().map(|r| r.prediction.regions.as_slice()).unwrap_or_default();
    let taus = regions.first().map(|r| r.matches.iter().map(|f| f.tau).collect()).unwrap_or_default();
    (regions.iter().map(|r| r.region.clone()).collect(), taus)
}

/// The column names for tolerances `taus`, `regions` and match tolerances `match_taus`.
pub fn columns(taus: &[f64], regions: &[String], match_taus: &[f64]) -> Vec<String> {
    let mut names: Vec<String> = [
        "row_kind",
        "scene",
        "frame",
        "frames",
        "threshold",
        "selection",
        "fallback_frames",
        "target_count",
        "target_empty",
        "flags",
    ]
    .map(String::from)
    .to_vec();
    let mut block: Vec<String> =
        ["count", "empty", "tp", "fp", "fn", "iou", "precision", "recall", "f1"].map(String::from).to_vec();
    block.extend(
        ["iou_micro", "precision_micro", "recall_micro", "f1_micro", "chamfer", "chamfer_sum", "hausdorff"]
            .map(String::from),
    );
    for t in taus {
        block.extend([format!("precision@{t}m"), format!("recall@{t}m"), format!("f@{t}m")]);
    }
    block.extend(
        ["centroid_dx", "centroid_dy", "centroid_dz", "centroid_offset", "count_ratio", "z_spread_ratio"]
            .map(String::from),
    );
    for prefix in ["pred", "radar"] {
        names.extend(block.iter().map(|b| format!("{prefix}_{b}")));
    }
    names.extend(["calibration_voxels", "brier", "ece", "brier_grid", "ece_grid"].map(String::from));
    names.extend(regions.iter().map(|r| format!("target_{r}")));
    let mut region_block: Vec<String> =
        ["count", "iou", "precision", "recall", "f1", "chamfer", "hausdorff", "nn"].map(String::from).to_vec();
    for t in match_taus {
        region_block.extend([format!("match@{t}m"), format!("rmatch@{t}m"), format!("f@{t}m")]);
    }
    region_block.extend(["bev_iou", "bev_f1"].map(String::from));
    for prefix in ["pred", "radar"] {
        for r in regions {
            names.extend(region_block.iter().map(|b| format!("{prefix}_{r}_{b}")));
        }
    }
    names
}

/// The whole `metrics.csv` text (header, frame rows, `summaries` rows);
/// `cfg` sets the flags column.
pub fn metrics_csv(records: &[FrameRecord], summaries: &[SummaryRow], cfg: &ReportConfig) -> String {
    let taus = taus_of(records);
    let (regions, match_taus) = regions_of(records);
    let mut out = columns(&taus, &regions, &match_taus).join(",");
    out.push('\n');
    let rows = records
        .iter()
        .map(|r| frame_cells(r, &taus, &match_taus, cfg))
        .chain(summaries.iter().map(|s| summary_cells(s, &taus, &match_taus)));
    for row in rows {
        out.push_str(&row.iter().map(Cell::render).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// The tolerances of the records (from the first one; empty without records).
pub fn taus_of(records: &[FrameRecord]) -> Vec<f64> {
    records.first().map(|r| r.prediction.points.fscores.iter().map(|f| f.tau).collect()).unwrap_or_default()
}

fn frame_cells(r: &FrameRecord, taus: &[f64], match_taus: &[f64], cfg: &ReportConfig) -> Vec<Cell> {
    let fallback = r.selection == super::adaptive::SelectionKind::TopKFallback;
    let mut cells = vec![
        Cell::Text("frame".into()),
        Cell::Text(r.scene.clone()),
        Cell::Text(r.frame.clone()),
        Cell::Int(1),
        Cell::Num(r.threshold.map(f64::from)),
        Cell::Text(r.selection.name().into()),
        Cell::Int(u64::from(fallback)),
        Cell::Int(r.target_count as u64),
        Cell::Int(u64::from(r.target_count == 0)),
        Cell::Text(frame_flags(r, cfg).iter().map(|f| f.name()).collect::<Vec<_>>().join(";")),
    ];
    for m in [&r.prediction, &r.radar] {
        cells.extend(frame_method(m, taus));
    }
    cells.extend(calibration(&r.calibration));
    cells.extend(r.prediction.regions.iter().map(|g| Cell::Int(g.target_count as u64)));
    for m in [&r.prediction, &r.radar] {
        for g in &m.regions {
            cells.extend(frame_region(g, match_taus));
        }
    }
    cells
}

fn calibration(c: &Calibration) -> [Cell; 5] {
    [
        Cell::Int(c.voxels()),
        Cell::Num(c.brier()),
        Cell::Num(c.ece()),
        Cell::Num(c.brier_grid()),
        Cell::Num(c.ece_grid()),
    ]
}

fn frame_region(g: &RegionMetrics, match_taus: &[f64]) -> Vec<Cell> {
    let mut c = vec![Cell::Int(g.count as u64)];
    let v = g.voxel;
    c.extend([v.iou, v.precision, v.recall, v.f1, g.chamfer, g.hausdorff, g.nn].map(Cell::Num));
    for &t in match_taus {
        let f = g.at(t);
        c.extend([f.and_then(|f| f.precision), f.and_then(|f| f.recall), f.and_then(|f| f.fscore)].map(Cell::Num));
    }
    c.extend([g.bev.iou, g.bev.f1].map(Cell::Num));
    c
}

fn summary_region(g: &RegionSummary, match_taus: &[f64]) -> Vec<Cell> {
    let mut c = vec![Cell::Int(g.count)];
    c.extend(
        [g.iou.mean, g.precision.mean, g.recall.mean, g.f1.mean, g.chamfer.mean, g.hausdorff.mean, g.nn.mean]
            .map(Cell::Num),
    );
    for &t in match_taus {
        let m = g.at(t);
        c.extend(
            [m.and_then(|m| m.0.mean), m.and_then(|m| m.1.mean), g.fscore_at(t).and_then(|f| f.mean)].map(Cell::Num),
        );
    }
    c.extend([g.bev_iou.mean, g.bev_f1.mean].map(Cell::Num));
    c
}

fn frame_method(m: &MethodMetrics, taus: &[f64]) -> Vec<Cell> {
    let s = m.voxel.scores;
    let mut c = vec![Cell::Int(m.count as u64), Cell::Int(u64::from(m.count == 0))];
    c.extend(counts(m.voxel.counts));
    let scores = [s.iou, s.precision, s.recall, s.f1];
    c.extend(scores.iter().chain(&scores).map(|v| Cell::Num(*v)));
    c.extend([m.points.chamfer, m.points.chamfer_sum, m.points.hausdorff].map(Cell::Num));
    for &t in taus {
        let f = m.points.at(t);
        c.extend([f.and_then(|f| f.precision), f.and_then(|f| f.recall), f.and_then(|f| f.fscore)].map(Cell::Num));
    }
    let off = m.shape.centroid_offset;
    c.extend((0..3).map(|k| Cell::Num(off.map(|d| d[k]))));
    c.extend([m.shape.centroid_distance, m.shape.count_ratio, m.shape.z_spread_ratio].map(Cell::Num));
    c
}

fn summary_cells(s: &SummaryRow, taus: &[f64], match_taus: &[f64]) -> Vec<Cell> {
    let (kind, scene) = match &s.scope {
        Scope::Scene(name) => ("scene", name.clone()),
        Scope::Overall => ("overall", String::new()),
    };
    let mut cells = vec![
        Cell::Text(kind.into()),
        Cell::Text(scene),
        Cell::Text(String::new()),
        Cell::Int(s.frames as u64),
        Cell::Num(None),
        Cell::Text(String::new()),
        Cell::Int(s.fallback_frames as u64),
        Cell::Int(s.target_count),
        Cell::Int(s.target_empty as u64),
        Cell::Text(String::new()),
    ];
    for m in [&s.prediction, &s.radar] {
        cells.extend(summary_method(m, taus));
    }
    cells.extend(calibration(&s.calibration));
    cells.extend(s.prediction.regions.iter().map(|g| Cell::Int(g.target_count)));
    for m in [&s.prediction, &s.radar] {
        for g in &m.regions {
            cells.extend(summary_region(g, match_taus));
        }
    }
    cells
}

fn summary_method(m: &MethodSummary, taus: &[f64]) -> Vec<Cell> {
    let v = &m.voxel;
    let mut c = vec![Cell::Int(m.count), Cell::Int(m.empty_frames as u64)];
    c.extend(counts(v.counts));
    c.extend([v.iou.mean, v.precision.mean, v.recall.mean, v.f1.mean].map(Cell::Num));
    c.extend([v.micro.iou, v.micro.precision, v.micro.recall, v.micro.f1].map(Cell::Num));
    c.extend([m.chamfer.mean, m.chamfer_sum.mean, m.hausdorff.mean].map(Cell::Num));
    for &t in taus {
        let f = m.at(t);
        c.extend(
            [f.and_then(|f| f.precision.mean), f.and_then(|f| f.recall.mean), f.and_then(|f| f.fscore.mean)]
                .map(Cell::Num),
        );
    }
    c.extend(m.centroid_offset.iter().map(|s| Cell::Num(s.mean)));
    c.extend([m.centroid_distance.mean, m.count_ratio.mean, m.z_spread_ratio.mean].map(Cell::Num));
    c
}

fn counts(k: Counts) -> [Cell; 3] {
    [Cell::Int(k.tp), Cell::Int(k.fp), Cell::Int(k.fn_)]
}

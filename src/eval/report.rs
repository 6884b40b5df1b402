//! `report.md` (summary table, the region and calibration sections of
//! [`super::region_report`], flagged frames) and the writer of the report
//! files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::csv::{metrics_csv, taus_of};
use super::flags::{frame_flags, Flag, ReportConfig};
use super::record::FrameRecord;
use super::region_report;
use super::summary::{summarize, MethodSummary, Scope, SummaryRow};
use super::EvalError;
use crate::io::write_atomic;

/// Paths of the written report files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPaths {
    /// `metrics.csv`.
    pub csv: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `bands.png`: IoU and match ratio by range band (when there are range bands).
    pub bands: Option<PathBuf>,
    /// `reliability.png`: the reliability diagram (when any voxel was scored).
    pub reliability: Option<PathBuf>,
}

/// Writes `metrics.csv`, `report.md`, `bands.png` and `reliability.png` into `dir`.
pub fn write_report(dir: &Path, records: &[FrameRecord], cfg: &ReportConfig) -> Result<ReportPaths, EvalError> {
    let summaries = summarize(records);
    let markdown = report_markdown(records, &summaries, cfg)?;
    let mut paths =
        ReportPaths { csv: dir.join("metrics.csv"), markdown: dir.join("report.md"), bands: None, reliability: None };
    write_atomic(&paths.csv, metrics_csv(records, &summaries, cfg).as_bytes())?;
    write_atomic(&paths.markdown, markdown.as_bytes())?;
    if let Some(o) = summaries.iter().find(|s| s.scope == Scope::Overall) {
        if let Some(chart) = region_report::band_chart(o) {
            let p = dir.join("bands.png");
            chart.save_png(&p)?;
            paths.bands = Some(p);
        }
        if o.calibration.voxels() > 0 {
            let p = dir.join("reliability.png");
            o.calibration.diagram("RELIABILITY").save_png(&p)?;
            paths.reliability = Some(p);
        }
    }
    Ok(paths)
}

/// The records as pretty JSON (undefined values are `null`), e.g. for a
/// `records.json` next to the report.
pub fn records_json(records: &[FrameRecord]) -> Result<String, EvalError> {
    Ok(serde_json::to_string_pretty(records)?)
}

/// The `report.md` text. Errors when `cfg` is invalid or its
/// `worse_than_radar_tau_m` is not among the records' tolerances.
pub fn report_markdown(
    records: &[FrameRecord],
    summaries: &[SummaryRow],
    cfg: &ReportConfig,
) -> Result<String, EvalError> {
    cfg.validate()?;
    let taus = taus_of(records);
    if !records.is_empty() && !taus.iter().any(|t| (t - cfg.worse_than_radar_tau_m).abs() < 1e-9) {
        return Err(EvalError::Config(format!(
            "worse_than_radar_tau_m = {} is not among the evaluated tolerances {taus:?}",
            cfg.worse_than_radar_tau_m
        )));
    }
    let mut md = String::new();
    let overall = summaries.iter().find(|s| s.scope == Scope::Overall);
    let scenes = summaries.iter().filter(|s| matches!(s.scope, Scope::Scene(_))).count();
    md.push_str("# Evaluation report\n\n");
    if let Some(o) = overall {
        let both_empty = o.prediction.voxel.both_empty;
        let _ = writeln!(md, "- Frames: {} in {scenes} scene(s)", o.frames);
        let _ = writeln!(md, "- Frames with an empty target: {}", o.target_empty);
        let _ = writeln!(md, "- Frames with empty prediction and target (voxel scores undefined): {both_empty}");
        let _ = writeln!(md, "- Frames with an empty prediction: {}", o.prediction.empty_frames);
        let _ = writeln!(md, "- Frames using the top-k fallback: {}\n", o.fallback_frames);
    }
    summary_table(&mut md, summaries, &taus);
    if let Some(o) = overall {
        region_report::region_table(&mut md, o);
        if o.calibration.voxels() > 0 {
            region_report::calibration_section(&mut md, &o.calibration);
        }
    }
    flagged_frames(&mut md, records, cfg);
    Ok(md)
}

fn summary_table(md: &mut String, summaries: &[SummaryRow], taus: &[f64]) {
    md.push_str("## Summary: prediction vs radar baseline\n\n");
    md.push_str("IoU, F1, Chamfer and F@tau are means over the frames where they are defined ");
    md.push_str("(undefined when prediction and target are both empty; Chamfer also when either is empty); ");
    md.push_str("micro columns pool the voxel counts. Chamfer = mean of the two directional mean ");
    md.push_str("nearest-neighbour distances, in metres. n/a = undefined.\n\n");
    let mut header = String::from(
        "| Scope | Method | Frames | IoU | F1 | IoU (micro) | F1 (micro) | Chamfer (m) | Chamfer frames |",
    );
    let mut rule = String::from("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for t in taus {
        let _ = write!(header, " F@{t} m |");
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    let ordered = summaries
        .iter()
        .filter(|s| s.scope == Scope::Overall)
        .chain(summaries.iter().filter(|s| s.scope != Scope::Overall));
    for s in ordered {
        let scope = match &s.scope {
            Scope::Overall => "**all**".to_string(),
            Scope::Scene(name) => escape(name),
        };
        for (method, m) in [("prediction", &s.prediction), ("radar", &s.radar)] {
            let _ = writeln!(md, "| {scope} | {method} | {} | {} |", s.frames, method_cells(m, taus).join(" | "));
        }
    }
    md.push('\n');
}

fn method_cells(m: &MethodSummary, taus: &[f64]) -> Vec<String> {
    let v = &m.voxel;
    let mut cells = vec![num(v.iou.mean), num(v.f1.mean), num(v.micro.iou), num(v.micro.f1), num(m.chamfer.mean)];
    cells.push(m.chamfer.n.to_string());
    cells.extend(taus.iter().map(|&t| num(m.at(t).and_then(|f| f.fscore.mean))));
    cells
}

fn flagged_frames(md: &mut String, records: &[FrameRecord], cfg: &ReportConfig) {
    md.push_str("## Flags\n\n| Flag | Rule | Frames |\n|---|---|---:|\n");
    let flagged: Vec<(&FrameRecord, Vec<Flag>)> =
        records.iter().map(|r| (r, frame_flags(r, cfg))).filter(|(_, f)| !f.is_empty()).collect();
    for flag in Flag::ALL {
        let n = flagged.iter().filter(|(_, f)| f.contains(&flag)).count();
        let _ = writeln!(md, "| {} | {} | {n} |", flag.name(), escape(&flag.rule(cfg)));
    }
    let _ = writeln!(md, "\n## Flagged frames ({} of {})\n", flagged.len(), records.len());
    if flagged.is_empty() {
        md.push_str("No frame flagged.\n");
        return;
    }
    let tau = cfg.worse_than_radar_tau_m;
    let _ = writeln!(
        md,
        "| Frame | Scene | Flags | Count ratio | z-spread ratio | Centroid offset (m) | F1 pred / radar | F@{tau} m pred / radar |"
    );
    md.push_str("|---|---|---|---:|---:|---:|---:|---:|\n");
    for (r, flags) in flagged {
        let (p, q) = (&r.prediction, &r.radar);
        let f_at = |m: &super::record::MethodMetrics| num(m.points.at(tau).and_then(|f| f.fscore));
        let names: Vec<&str> = flags.iter().map(|f| f.name()).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} / {} |",
            escape(&r.frame),
            escape(&r.scene),
            names.join(", "),
            num(p.shape.count_ratio),
            num(p.shape.z_spread_ratio),
            num(p.shape.centroid_distance),
            num(p.voxel.scores.f1),
            num(q.voxel.scores.f1),
            f_at(p),
            f_at(q),
        );
    }
}

/// A report cell: three decimals, `n/a` when undefined.
pub(super) fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "n/a".into(),
    }
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

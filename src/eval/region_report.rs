//! The report's region and calibration sections: the band table (prediction
//! beside radar per range band, height band and the shared-visible region),
//! the band plot, and the calibration block with its reliability diagram.

use std::fmt::Write as _;

use super::calibration::Calibration;
use super::report::num;
use super::summary::{RegionSummary, SummaryRow};
use crate::io::chart::{line_chart, Series, COLORS};
use crate::io::png::Canvas;

/// The band table of the overall row `o` into `md`.
pub fn region_table(md: &mut String, o: &SummaryRow) {
    let Some(first) = o.prediction.regions.first() else { return };
    let tau = largest_tau(first);
    md.push_str("## By region: range bands (x), height bands (z), shared-visible\n\n");
    md.push_str("Prediction, radar and target restricted to each region (voxel centre in [lo, hi) m; ");
    md.push_str("`visible` = within the radius of a radar voxel), then scored as whole frames are; ");
    md.push_str("means over the frames where defined. Share = the region's share of all target voxels. ");
    let _ = writeln!(
        md,
        "NN = mean distance from the method's points to the target's (m); match@{tau} m = share of the method's \
         points with a target point within {tau} m, rmatch the reverse; BEV = occupied (x, y) columns.\n"
    );
    let _ = writeln!(
        md,
        "| Region | Target voxels | Share | Method | IoU | F1 | Chamfer (m) | NN (m) | match@{tau} m | rmatch@{tau} m | BEV IoU | BEV F1 |"
    );
    md.push_str("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (p, r) in o.prediction.regions.iter().zip(&o.radar.regions) {
        let share = if o.target_count > 0 { p.target_count as f64 / o.target_count as f64 } else { f64::NAN };
        for (method, g) in [("prediction", p), ("radar", r)] {
            let m = g.at(tau);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {method} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.region,
                p.target_count,
                num(Some(share)),
                num(g.iou.mean),
                num(g.f1.mean),
                num(g.chamfer.mean),
                num(g.nn.mean),
                num(m.and_then(|m| m.0.mean)),
                num(m.and_then(|m| m.1.mean)),
                num(g.bev_iou.mean),
                num(g.bev_f1.mean),
            );
        }
    }
    md.push_str("\n![IoU and match ratio by range band](bands.png)\n\n");
}

/// IoU and the largest-tolerance match ratio against the range band's
/// midpoint, prediction and radar; `None` without range bands.
pub fn band_chart(o: &SummaryRow) -> Option<Canvas> {
    let (pred, radar) = (ranges(&o.prediction.regions), ranges(&o.radar.regions));
    if pred.is_empty() {
        return None;
    }
    let tau = largest_tau(pred[0].1);
    let line = |name: &str, rs: &[(f64, &RegionSummary)], f: &dyn Fn(&RegionSummary) -> Option<f64>, k: usize| Series {
        name: name.into(),
        points: rs.iter().filter_map(|(x, r)| f(r).map(|v| (*x, v))).collect(),
        color: COLORS[k],
    };
    let iou = |r: &RegionSummary| r.iou.mean;
    let matched = |r: &RegionSummary| r.at(tau).and_then(|m| m.0.mean);
    let series = [
        line("PRED IOU", &pred, &iou, 0),
        line("RADAR IOU", &radar, &iou, 1),
        line(&format!("PRED MATCH {tau}M"), &pred, &matched, 2),
        line(&format!("RADAR MATCH {tau}M"), &radar, &matched, 3),
    ];
    Some(line_chart("BY RANGE BAND", "RANGE BAND MIDPOINT (M)", &series, false))
}

/// The largest match tolerance of a region (the one the table and plot show).
fn largest_tau(r: &RegionSummary) -> f64 {
    r.matches.iter().map(|m| m.0).fold(f64::NAN, f64::max)
}

/// The range bands of `rs` with their midpoints.
fn ranges(rs: &[RegionSummary]) -> Vec<(f64, &RegionSummary)> {
    rs.iter().filter_map(|r| range_mid(&r.region).map(|x| (x, r))).collect()
}

/// The midpoint of a range band's name `x{lo}_{hi}`.
fn range_mid(name: &str) -> Option<f64> {
    let (lo, hi) = name.strip_prefix('x')?.split_once('_')?;
    Some(0.5 * (lo.parse::<f64>().ok()? + hi.parse::<f64>().ok()?))
}

/// The calibration block of the pooled sums `c` into `md`.
pub fn calibration_section(md: &mut String, c: &Calibration) {
    md.push_str("## Calibration of the predicted values\n\n");
    let _ = writeln!(
        md,
        "Over the {} voxels the prediction scores or the target occupies (value clamped to [0, 1]): \
         Brier {}, ECE ({} bins) {}. Over the whole grid ({} more voxels, p = 0, empty; comparable \
         between models that list different voxels): Brier {}, ECE {}.\n",
        c.voxels(),
        num(c.brier()),
        super::calibration::BINS,
        num(c.ece()),
        c.unscored,
        sci(c.brier_grid()),
        sci(c.ece_grid())
    );
    md.push_str("| p bin | Voxels | Mean p | Observed |\n|---|---:|---:|---:|\n");
    for b in c.bins() {
        let step = 1.0 / super::calibration::BINS as f64;
        let _ = writeln!(
            md,
            "| {:.1}-{:.1} | {} | {} | {} |",
            b.lo,
            b.lo + step,
            b.n,
            num(Some(b.mean_p)),
            num(Some(b.observed))
        );
    }
    md.push_str("\n![Reliability diagram](reliability.png)\n\n");
}

fn sci(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.3e}"),
        _ => "n/a".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_band_names_give_their_midpoints() {
        assert_eq!(range_mid("x0_20"), Some(10.0));
        assert_eq!(range_mid("x80_120"), Some(100.0));
        assert_eq!(range_mid("z-1_2"), None);
        assert_eq!(range_mid("visible"), None);
    }
}

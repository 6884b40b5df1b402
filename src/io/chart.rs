//! Line charts (loss curves, metrics per epoch) on a [`Canvas`].

use super::png::Canvas;

/// One named series of `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points; non-finite values are skipped.
    pub points: Vec<(f64, f64)>,
    /// Line colour.
    pub color: [u8; 3],
}

/// Distinct line colours.
pub const COLORS: [[u8; 3]; 5] = [[31, 119, 180], [214, 39, 40], [44, 160, 44], [148, 103, 189], [255, 127, 14]];

/// Number formatting for axis labels.
fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 || v.abs() < 1e-2 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Draws a line chart of `series` (y on a log10 axis when `log_y` and all
/// values are positive) with a title and a legend.
pub fn line_chart(title: &str, x_label: &str, series: &[Series], log_y: bool) -> Canvas {
    let (w, h) = (900usize, 540usize);
    let (left, right, top, bottom) = (90i64, 20i64, 50i64, 60i64);
    let mut c = Canvas::new(w, h);
    c.text(left, 15, title, [0, 0, 0], 3);
    let pts: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    let log = log_y && !pts.is_empty() && pts.iter().all(|p| p.1 > 0.0);
    let ty = |y: f64| if log { y.log10() } else { y };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(ty(y)), y1.max(ty(y)));
    }
    if pts.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    let (pw, ph) = (w as i64 - left - right, h as i64 - top - bottom);
    let px = |x: f64| left + ((x - x0) / (x1 - x0) * pw as f64).round() as i64;
    let py = |y: f64| top + ph - ((ty(y) - y0) / (y1 - y0) * ph as f64).round() as i64;
    let grey = [200, 200, 200];
    for k in 0..=4 {
        let fy = y0 + (y1 - y0) * k as f64 / 4.0;
        let yy = top + ph - (ph * k / 4);
        c.line((left, yy), (left + pw, yy), grey, 1);
        let v = if log { 10f64.powf(fy) } else { fy };
        c.text(4, yy - 7, &label(v), [0, 0, 0], 2);
        let fx = x0 + (x1 - x0) * k as f64 / 4.0;
        let xx = left + pw * k / 4;
        c.line((xx, top), (xx, top + ph), grey, 1);
        let text = label(fx);
        let width = 12 * text.len() as i64; // 6 px per glyph at scale 2
        let x_text = if k == 4 { xx - width } else { xx - width / 2 };
        c.text(x_text, top + ph + 8, &text, [0, 0, 0], 2);
    }
    c.line((left, top), (left, top + ph), [0, 0, 0], 2);
    c.line((left, top + ph), (left + pw, top + ph), [0, 0, 0], 2);
    c.text(left + pw / 2 - 20, top + ph + 32, x_label, [0, 0, 0], 2);
    for (k, s) in series.iter().enumerate() {
        let mut prev: Option<(i64, i64)> = None;
        for &(x, y) in &s.points {
            if !(x.is_finite() && y.is_finite()) || (log && y <= 0.0) {
                prev = None;
                continue;
            }
            let p = (px(x), py(y));
            match prev {
                Some(q) => c.line(q, p, s.color, 2),
                None => c.line(p, p, s.color, 3),
            }
            prev = Some(p);
        }
        let ly = top + 8 + 20 * k as i64;
        c.line((left + pw - 230, ly + 6), (left + pw - 200, ly + 6), s.color, 3);
        c.text(left + pw - 190, ly, &s.name, s.color, 2);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_draws_each_series_in_its_colour() {
        let s = |name: &str, k: usize, f: fn(f64) -> f64| Series {
            name: name.into(),
            points: (1..50).map(|i| (i as f64, f(i as f64))).collect(),
            color: COLORS[k],
        };
        let chart = line_chart("loss", "step", &[s("a", 0, |x| 1.0 / x), s("b", 1, |x| 2.0 / x)], true);
        for color in [COLORS[0], COLORS[1]] {
            let n = chart.pixels.chunks(3).filter(|p| p == &color).count();
            assert!(n > 200, "series drawn: {n} pixels of {color:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.png");
        chart.save_png(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}

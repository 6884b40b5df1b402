//! Minimal PNG line charts (loss curves) and images, drawn into an RGB
//! buffer with a built-in 5x7 font: no font files, no plotting stack.

use std::path::Path;

/// An RGB image.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major RGB bytes.
    pub pixels: Vec<u8>,
}

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

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas { width, height, pixels: vec![255; width * height * 3] }
    }

    /// Sets one pixel (ignored outside the canvas).
    pub fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line (Bresenham), `thick` pixels wide.
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for t in 0..thick {
                self.put(x, y + t, c);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text in the built-in font, `scale` pixels per font pixel.
    pub fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3], scale: i64) {
        for (k, ch) in s.chars().enumerate() {
            let rows = glyph(ch.to_ascii_uppercase());
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits >> (4 - col) & 1 == 1 {
                        for a in 0..scale {
                            for b in 0..scale {
                                self.put(x + (k as i64 * 6 + col) * scale + a, y + r as i64 * scale + b, c);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Copies `other` to `(x, y)`.
    pub fn blit(&mut self, other: &Canvas, x: usize, y: usize) {
        for r in 0..other.height {
            for col in 0..other.width {
                let i = (r * other.width + col) * 3;
                let px = [other.pixels[i], other.pixels[i + 1], other.pixels[i + 2]];
                self.put((x + col) as i64, (y + r) as i64, px);
            }
        }
    }

    /// Writes the canvas as an 8-bit RGB PNG.
    pub fn save_png(&self, path: &Path) -> std::io::Result<()> {
        let mut data = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut data, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(std::io::Error::other)?;
            w.write_image_data(&self.pixels).map_err(std::io::Error::other)?;
        }
        crate::weights::write_atomic(path, &data)
    }
}

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

/// 5x7 glyphs (each row's low 5 bits, left pixel first); unknown chars blank.
fn glyph(ch: char) -> [u8; 7] {
    match ch {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 17, 10, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '/' => [0, 1, 2, 4, 8, 16, 0],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        _ => [0; 7],
    }
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

//! Projection pictures of one frame: 3x3 panels, rows top (x-y), side (x-z)
//! and front (y-z) views, columns radar | prediction | target. Each panel
//! max-projects occupancy (sets count as 1, predictions show their values
//! clamped to [0, 1]) along the collapsed axis.
//!
//! Orientation: top view x to the right, +y up; side view x to the right,
//! +z up; front view (seen from behind the sensor, looking along +x) +y to
//! the left, +z up. Voxels outside the grid are skipped.

use std::path::Path;

use super::geometry::{Coord, GridGeometry};
use super::voxels::{Prediction, VoxelSet};
use super::EvalError;
use crate::io::png::Canvas;

/// What a panel shows.
#[derive(Debug, Clone, Copy)]
pub enum Layer<'a> {
    /// Occupied voxels (value 1).
    Set(&'a VoxelSet),
    /// Predicted values, max-projected.
    Values(&'a Prediction),
}

impl Layer<'_> {
    fn voxels(&self) -> Box<dyn Iterator<Item = (Coord, f32)> + '_> {
        match self {
            Layer::Set(s) => Box::new(s.coords().iter().map(|&c| (c, 1.0))),
            Layer::Values(p) => Box::new(p.coords().iter().copied().zip(p.values().iter().copied())),
        }
    }

    fn len(&self) -> usize {
        match self {
            Layer::Set(s) => s.len(),
            Layer::Values(p) => p.len(),
        }
    }
}

/// A projection direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Looking down: x-y plane.
    Top,
    /// From the side: x-z plane.
    Side,
    /// From behind: y-z plane.
    Front,
}

impl View {
    /// The three views in row order.
    pub const ALL: [View; 3] = [View::Top, View::Side, View::Front];

    /// Panel size in voxels `(width, height)`.
    pub fn size(&self, dims: [usize; 3]) -> (usize, usize) {
        match self {
            View::Top => (dims[0], dims[1]),
            View::Side => (dims[0], dims[2]),
            View::Front => (dims[1], dims[2]),
        }
    }

    /// Panel cell `(column, row)` of voxel `c` (row 0 at the top).
    fn cell(&self, c: Coord, dims: [usize; 3]) -> (usize, usize) {
        let [x, y, z] = c.map(|v| v as usize);
        match self {
            View::Top => (x, dims[1] - 1 - y),
            View::Side => (x, dims[2] - 1 - z),
            View::Front => (dims[1] - 1 - y, dims[2] - 1 - z),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            View::Top => "TOP X-Y",
            View::Side => "SIDE X-Z",
            View::Front => "FRONT Y-Z",
        }
    }
}

/// Max projection of `layer` along `view`: row-major `(width, height)` values in [0, 1].
pub fn project(geom: &GridGeometry, layer: Layer<'_>, view: View) -> (usize, usize, Vec<f32>) {
    let (w, h) = view.size(geom.dims);
    let mut img = vec![0.0f32; w * h];
    for (c, v) in layer.voxels().filter(|(c, _)| geom.contains(*c)) {
        let (col, row) = view.cell(c, geom.dims);
        let px = &mut img[row * w + col];
        *px = px.max(v.clamp(0.0, 1.0));
    }
    (w, h, img)
}

/// Layout settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProjectionConfig {
    /// Panels are scaled by an integer factor up to this width in pixels (default 600).
    pub panel_px: usize,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        ProjectionConfig { panel_px: 600 }
    }
}

const COLUMN_COLORS: [[u8; 3]; 3] = [[214, 39, 40], [31, 119, 180], [44, 160, 44]];
const BLACK: [u8; 3] = [0, 0, 0];

/// Draws the 3x3 panel picture of one frame titled `title`.
pub fn projection_canvas(
    geom: &GridGeometry,
    title: &str,
    [radar, prediction, target]: [Layer<'_>; 3],
    cfg: &ProjectionConfig,
) -> Canvas {
    let dims = geom.dims.map(|d| d.max(1));
    let geom = GridGeometry { dims, ..*geom };
    let scale = (cfg.panel_px / dims[0].max(dims[1])).max(1);
    let (left, top, gap, label_h) = (130usize, 70usize, 16usize, 22usize);
    let col_w = scale * dims[0].max(dims[1]);
    let row_h: Vec<usize> = View::ALL.iter().map(|v| scale * v.size(dims).1).collect();
    let width = left + 3 * (col_w + gap);
    let height = top + row_h.iter().map(|h| h + gap + label_h).sum::<usize>();
    let mut c = Canvas::new(width, height);
    c.text(10, 10, title, BLACK, 2);
    let layers = [("RADAR", radar), ("PREDICTION", prediction), ("TARGET", target)];
    for (k, (name, layer)) in layers.iter().enumerate() {
        let x = (left + k * (col_w + gap)) as i64;
        c.text(x, 40, &format!("{name} N={}", layer.len()), COLUMN_COLORS[k], 2);
    }
    let mut y = top;
    for (r, view) in View::ALL.iter().enumerate() {
        c.text(10, (y + row_h[r] / 2) as i64 - 7, view.label(), BLACK, 2);
        for (k, (_, layer)) in layers.iter().enumerate() {
            let x = left + k * (col_w + gap);
            draw_panel(&mut c, &geom, *layer, *view, (x, y), scale, COLUMN_COLORS[k]);
        }
        y += row_h[r] + gap + label_h;
    }
    c
}

fn draw_panel(
    c: &mut Canvas,
    geom: &GridGeometry,
    layer: Layer<'_>,
    view: View,
    (x0, y0): (usize, usize),
    scale: usize,
    color: [u8; 3],
) {
    let (w, h, img) = project(geom, layer, view);
    for row in 0..h * scale {
        for col in 0..w * scale {
            let v = img[(row / scale) * w + col / scale];
            let px = if v > 0.0 {
                let a = 0.2 + 0.8 * v;
                std::array::from_fn(|k| (255.0 * (1.0 - a) + color[k] as f32 * a).round() as u8)
            } else {
                [242, 242, 242]
            };
            c.put((x0 + col) as i64, (y0 + row) as i64, px);
        }
    }
    let (x1, y1) = ((x0 + w * scale) as i64, (y0 + h * scale) as i64);
    let (x0, y0) = (x0 as i64 - 1, y0 as i64 - 1);
    let grey = [120, 120, 120];
    for (a, b) in [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))] {
        c.line(a, b, grey, 1);
    }
}

/// Draws and saves the projection picture of one frame as a PNG.
pub fn save_projection(
    path: &Path,
    geom: &GridGeometry,
    title: &str,
    layers: [Layer<'_>; 3],
    cfg: &ProjectionConfig,
) -> Result<(), EvalError> {
    geom.validate()?;
    projection_canvas(geom, title, layers, cfg).save_png(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_take_the_max_and_orient_axes() {
        let g = GridGeometry { dims: [4, 3, 2], min: [0.0; 3], voxel: [1.0; 3] };
        let p = Prediction::new(vec![[1, 0, 0], [1, 0, 1], [3, 2, 1]], vec![0.2, 0.7, 1.5]).unwrap();
        let (w, h, top) = project(&g, Layer::Values(&p), View::Top);
        assert_eq!((w, h), (4, 3));
        assert_eq!(top[2 * 4 + 1], 0.7); // y = 0 is the bottom row
        assert_eq!(top[3], 1.0); // clamped, y = 2 top row
        let (w, _, front) = project(&g, Layer::Values(&p), View::Front);
        assert_eq!(front[w + 2], 0.2); // z = 0 bottom row, y = 0 on the right
        let outside = VoxelSet::new(vec![[9, 9, 9]]);
        assert!(project(&g, Layer::Set(&outside), View::Side).2.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn picture_has_nine_panels_and_saves() {
        let g = GridGeometry::NTU4DRADLM.resampled([128, 128, 32]).unwrap();
        let t = VoxelSet::new((0..50).map(|i| [i, 64, 10]).collect());
        let p = Prediction::from_set(&t);
        let e = VoxelSet::default();
        let canvas = projection_canvas(
            &g,
            "SCENE/000001",
            [Layer::Set(&e), Layer::Values(&p), Layer::Set(&t)],
            &Default::default(),
        );
        for color in [COLUMN_COLORS[1], COLUMN_COLORS[2]] {
            assert!(canvas.pixels.chunks(3).filter(|px| *px == color).count() > 100);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.png");
        save_projection(&path, &g, "T", [Layer::Set(&e), Layer::Values(&p), Layer::Set(&t)], &Default::default())
            .unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[1..4], b"PNG");
    }
}

//! Exact nearest-neighbour search: an implicit, balanced 3-D KD-tree.
//!
//! The points are reordered in place so that each subtree is a contiguous
//! slice whose middle element is the splitting point (split on the axis of
//! largest spread). Queries descend into the near side first and visit the
//! far side only when the splitting plane is strictly closer than the best
//! distance so far, so results are exact (the same squared distances as a
//! brute-force scan).

use super::geometry::Point;

/// Slices of at most this many points are scanned linearly.
const LEAF: usize = 8;

/// A KD-tree over 3-D points (metres).
#[derive(Debug, Clone, Default)]
pub struct KdTree {
    points: Vec<Point>,
    axes: Vec<u8>,
}

/// Squared Euclidean distance.
pub fn dist2(a: &Point, b: &Point) -> f64 {
    let (dx, dy, dz) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    dx * dx + dy * dy + dz * dz
}

impl KdTree {
    /// Builds the tree (O(n log n)); non-finite points are dropped.
    pub fn new(mut points: Vec<Point>) -> KdTree {
        points.retain(|p| p.iter().all(|v| v.is_finite()));
        let mut axes = vec![0u8; points.len()];
        build(&mut points, &mut axes);
        KdTree { points, axes }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when the tree holds no point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The points (in tree order).
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// The nearest point to `q` and its squared distance; None when the tree
    /// is empty or `q` is not finite.
    pub fn nearest(&self, q: &Point) -> Option<(Point, f64)> {
        if self.points.is_empty() || !q.iter().all(|v| v.is_finite()) {
            return None;
        }
        let mut best = (f64::INFINITY, 0usize);
        search(&self.points, &self.axes, 0, q, &mut best);
        Some((self.points[best.1], best.0))
    }

    /// Distance (not squared) from `q` to the nearest point.
    pub fn nearest_distance(&self, q: &Point) -> Option<f64> {
        self.nearest(q).map(|(_, d2)| d2.sqrt())
    }
}

fn build(points: &mut [Point], axes: &mut [u8]) {
    if points.len() <= LEAF {
        return;
    }
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for p in points.iter() {
        for k in 0..3 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let spread = |k: usize| hi[k] - lo[k];
    let axis = (0..3).fold(0, |best, k| if spread(k) > spread(best) { k } else { best });
    let mid = points.len() / 2;
    points.select_nth_unstable_by(mid, |a, b| a[axis].total_cmp(&b[axis]));
    axes[mid] = axis as u8;
    let (left, rest) = points.split_at_mut(mid);
    let (left_axes, rest_axes) = axes.split_at_mut(mid);
    build(left, left_axes);
    build(&mut rest[1..], &mut rest_axes[1..]);
}

/// Updates `best` = (squared distance, index) with the points of
/// `points`, which start at `offset` in the whole tree.
fn search(points: &[Point], axes: &[u8], offset: usize, q: &Point, best: &mut (f64, usize)) {
    if points.len() <= LEAF {
        for (i, p) in points.iter().enumerate() {
            let d = dist2(p, q);
            if d < best.0 {
                *best = (d, offset + i);
            }
        }
        return;
    }
    let mid = points.len() / 2;
    let axis = axes[mid] as usize;
    let split = &points[mid];
    let d = dist2(split, q);
    if d < best.0 {
        *best = (d, offset + mid);
    }
    let diff = q[axis] - split[axis];
    let (left, right) = (0..mid, mid + 1..points.len());
    let (near, far) = if diff < 0.0 { (left, right) } else { (right, left) };
    search(&points[near.clone()], &axes[near.clone()], offset + near.start, q, best);
    if diff * diff < best.0 {
        search(&points[far.clone()], &axes[far.clone()], offset + far.start, q, best);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute(points: &[Point], q: &Point) -> Option<f64> {
        points.iter().map(|p| dist2(p, q)).min_by(|a, b| a.total_cmp(b))
    }

    #[test]
    fn empty_and_single() {
        assert!(KdTree::new(vec![]).nearest(&[0.0; 3]).is_none());
        let t = KdTree::new(vec![[1.0, 2.0, 2.0]]);
        assert_eq!(t.nearest_distance(&[0.0; 3]), Some(3.0));
        assert!(t.nearest(&[f64::NAN, 0.0, 0.0]).is_none());
        assert_eq!(KdTree::new(vec![[f64::NAN, 0.0, 0.0]]).len(), 0);
    }

    #[test]
    fn duplicates_and_lattice_points() {
        let pts: Vec<Point> = (0..200).map(|i| [(i % 5) as f64 * 0.2, (i % 3) as f64 * 0.2, 0.0]).collect();
        let t = KdTree::new(pts.clone());
        for q in &pts {
            assert_eq!(t.nearest(q).unwrap().1, 0.0);
        }
        let q = [0.1, 0.1, 0.1];
        assert_eq!(t.nearest(&q).map(|x| x.1), brute(&pts, &q));
    }

    fn cloud(max_len: usize) -> impl Strategy<Value = Vec<Point>> {
        prop::collection::vec(prop::array::uniform3(-50.0f64..50.0), 0..max_len)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_brute_force(points in cloud(300), queries in cloud(50)) {
            let t = KdTree::new(points.clone());
            for q in &queries {
                prop_assert_eq!(t.nearest(q).map(|x| x.1), brute(&points, q));
            }
        }

        #[test]
        fn matches_brute_force_on_voxel_lattices(
            a in prop::collection::vec(prop::array::uniform3(0u32..20), 1..300),
            b in prop::collection::vec(prop::array::uniform3(0u32..20), 1..100),
        ) {
            let c = |v: &[u32; 3]| -> Point { std::array::from_fn(|k| -3.0 + (v[k] as f64 + 0.5) * 0.2) };
            let points: Vec<Point> = a.iter().map(c).collect();
            let t = KdTree::new(points.clone());
            for q in b.iter().map(c) {
                prop_assert_eq!(t.nearest(&q).map(|x| x.1), brute(&points, &q));
            }
        }
    }
}

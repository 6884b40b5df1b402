//! Sparse frame data: occupied voxel sets and valued predictions.

use serde::{Deserialize, Serialize};

use super::geometry::{Coord, GridGeometry, Point};
use super::EvalError;

/// A set of occupied voxels (target, radar baseline, or a thresholded
/// prediction), kept sorted by coordinate and free of duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoxelSet {
    coords: Vec<Coord>,
}

impl VoxelSet {
    /// The set of `coords` (sorted and deduplicated here).
    pub fn new(mut coords: Vec<Coord>) -> VoxelSet {
        coords.sort_unstable();
        coords.dedup();
        VoxelSet { coords }
    }

    /// Voxels of a dense `(Z, X, Y)` buffer (radvox `(Z, H, W)`) whose value is `> threshold`.
    pub fn from_dense_zhw(geom: &GridGeometry, data: &[f32], threshold: f32) -> Result<VoxelSet, EvalError> {
        check_dense(geom, data.len())?;
        let coords = data.iter().enumerate().filter(|(_, v)| **v > threshold);
        Ok(VoxelSet::new(coords.map(|(i, _)| geom.coord_from_dense_zhw(i)).collect()))
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.coords.len()
    }

    /// True when no voxel is occupied.
    pub fn is_empty(&self) -> bool {
        self.coords.is_empty()
    }

    /// The voxels, sorted.
    pub fn coords(&self) -> &[Coord] {
        &self.coords
    }

    /// The voxels for which `keep` holds (a subset of a sorted set stays sorted).
    pub fn filter(&self, keep: impl Fn(&Coord) -> bool) -> VoxelSet {
        VoxelSet { coords: self.coords.iter().filter(|c| keep(c)).copied().collect() }
    }

    /// True when `c` is in the set (binary search).
    pub fn contains(&self, c: Coord) -> bool {
        self.coords.binary_search(&c).is_ok()
    }

    /// Voxel centres in metres.
    pub fn centres(&self, geom: &GridGeometry) -> Vec<Point> {
        geom.centres(&self.coords)
    }

    /// Errors on the first voxel outside `geom`; `what` names the set in the error.
    pub fn check_bounds(&self, geom: &GridGeometry, what: &'static str) -> Result<(), EvalError> {
        check_bounds(&self.coords, geom, what)
    }
}

/// A sparse prediction: voxels with a probability/occupancy value each,
/// sorted by coordinate, duplicates merged by keeping the larger value.
/// Voxels not listed have value 0 (never occupied at a threshold >= 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    coords: Vec<Coord>,
    values: Vec<f32>,
}

impl Prediction {
    /// A prediction from parallel lists; errors on a length mismatch or a NaN/infinite value.
    pub fn new(coords: Vec<Coord>, values: Vec<f32>) -> Result<Prediction, EvalError> {
        if coords.len() != values.len() {
            return Err(EvalError::LengthMismatch { coords: coords.len(), values: values.len() });
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::NonFiniteValue { coord: coords[i], value: values[i] });
        }
        let mut pairs: Vec<(Coord, f32)> = coords.into_iter().zip(values).collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        pairs.dedup_by(|later, first| later.0 == first.0);
        let (coords, values) = pairs.into_iter().unzip();
        Ok(Prediction { coords, values })
    }

    /// Voxels of a dense `(Z, X, Y)` buffer (radvox `(Z, H, W)`) with value `> min_value`
    /// (use e.g. 0.0 or 1e-3 to keep the prediction sparse).
    pub fn from_dense_zhw(geom: &GridGeometry, data: &[f32], min_value: f32) -> Result<Prediction, EvalError> {
        check_dense(geom, data.len())?;
        let kept = data.iter().enumerate().filter(|(_, v)| !v.is_finite() || **v > min_value);
        let (coords, values) = kept.map(|(i, v)| (geom.coord_from_dense_zhw(i), *v)).unzip();
        Prediction::new(coords, values)
    }

    /// A prediction with value 1 on every voxel of `set`.
    pub fn from_set(set: &VoxelSet) -> Prediction {
        Prediction { coords: set.coords.clone(), values: vec![1.0; set.len()] }
    }

    /// Number of listed voxels.
    pub fn len(&self) -> usize {
        self.coords.len()
    }

    /// True when no voxel is listed.
    pub fn is_empty(&self) -> bool {
        self.coords.is_empty()
    }

    /// The voxels, sorted.
    pub fn coords(&self) -> &[Coord] {
        &self.coords
    }

    /// The values, parallel to [`Prediction::coords`].
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The voxels whose value is strictly greater than `threshold`.
    pub fn occupied(&self, threshold: f32) -> VoxelSet {
        let coords = self.coords.iter().zip(&self.values).filter(|(_, v)| **v > threshold).map(|(c, _)| *c);
        VoxelSet { coords: coords.collect() }
    }

    /// The `k` highest-valued voxels (all when `k >= len`); ties at the cut
    /// are broken by coordinate order (smaller coordinate first), so exactly
    /// `min(k, len)` voxels come back. Also returns the lowest selected value.
    pub fn top_k(&self, k: usize) -> (VoxelSet, Option<f32>) {
        let k = k.min(self.len());
        if k == 0 {
            return (VoxelSet::default(), None);
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        let by_rank = |a: &usize, b: &usize| self.values[*b].total_cmp(&self.values[*a]).then(a.cmp(b));
        if k < order.len() {
            order.select_nth_unstable_by(k - 1, by_rank);
            order.truncate(k);
        }
        let lowest = order.iter().map(|&i| self.values[i]).min_by(|a, b| a.total_cmp(b));
        (VoxelSet::new(order.into_iter().map(|i| self.coords[i]).collect()), lowest)
    }

    /// Errors on the first voxel outside `geom`.
    pub fn check_bounds(&self, geom: &GridGeometry) -> Result<(), EvalError> {
        check_bounds(&self.coords, geom, "prediction")
    }
}

/// Which side of a comparison is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EmptyCase {
    /// Both sets have voxels.
    Neither,
    /// Only the prediction (or radar) set is empty.
    Prediction,
    /// Only the target set is empty.
    Target,
    /// Both sets are empty: scores are undefined (None).
    Both,
}

impl EmptyCase {
    /// The case for sets of `n_pred` and `n_target` elements.
    pub fn of(n_pred: usize, n_target: usize) -> EmptyCase {
        match (n_pred == 0, n_target == 0) {
            (false, false) => EmptyCase::Neither,
            (true, false) => EmptyCase::Prediction,
            (false, true) => EmptyCase::Target,
            (true, true) => EmptyCase::Both,
        }
    }
}

fn check_dense(geom: &GridGeometry, got: usize) -> Result<(), EvalError> {
    geom.validate()?;
    if got != geom.len() {
        return Err(EvalError::DenseSize { expected: geom.len(), got });
    }
    Ok(())
}

fn check_bounds(coords: &[Coord], geom: &GridGeometry, what: &'static str) -> Result<(), EvalError> {
    match coords.iter().find(|c| !geom.contains(**c)) {
        Some(&coord) => Err(EvalError::OutOfBounds { what, coord, dims: geom.dims }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_sort_and_dedup() {
        let s = VoxelSet::new(vec![[2, 0, 0], [1, 0, 0], [2, 0, 0]]);
        assert_eq!(s.coords(), &[[1, 0, 0], [2, 0, 0]]);
        assert!(s.contains([2, 0, 0]) && !s.contains([3, 0, 0]));
    }

    #[test]
    fn prediction_merges_duplicates_by_max_and_rejects_bad_input() {
        let p = Prediction::new(vec![[1, 0, 0], [0, 0, 0], [1, 0, 0]], vec![0.2, 0.5, 0.9]).unwrap();
        assert_eq!(p.coords(), &[[0, 0, 0], [1, 0, 0]]);
        assert_eq!(p.values(), &[0.5, 0.9]);
        assert!(Prediction::new(vec![[0, 0, 0]], vec![]).is_err());
        assert!(Prediction::new(vec![[0, 0, 0]], vec![f32::NAN]).is_err());
    }

    #[test]
    fn occupied_is_strictly_above_threshold() {
        let p = Prediction::new(vec![[0, 0, 0], [1, 0, 0], [2, 0, 0]], vec![0.5, 0.6, 0.4]).unwrap();
        assert_eq!(p.occupied(0.5).coords(), &[[1, 0, 0]]);
        assert!(p.occupied(1.0).is_empty());
    }

    #[test]
    fn top_k_is_exact_with_ties() {
        let p = Prediction::new(vec![[3, 0, 0], [0, 0, 0], [1, 0, 0], [2, 0, 0]], vec![0.5, 0.9, 0.5, 0.5]).unwrap();
        let (s, low) = p.top_k(2);
        assert_eq!(s.coords(), &[[0, 0, 0], [1, 0, 0]]);
        assert_eq!(low, Some(0.5));
        assert_eq!(p.top_k(10).0.len(), 4);
        assert!(p.top_k(0).0.is_empty());
        assert!(Prediction::default().top_k(3).0.is_empty());
    }

    #[test]
    fn dense_constructors_use_zhw_order() {
        let g = GridGeometry { dims: [2, 3, 2], min: [0.0; 3], voxel: [1.0; 3] };
        let mut data = vec![0.0f32; g.len()];
        data[g.dense_index_zhw([1, 2, 1]).unwrap()] = 0.8;
        let s = VoxelSet::from_dense_zhw(&g, &data, 0.5).unwrap();
        assert_eq!(s.coords(), &[[1, 2, 1]]);
        let p = Prediction::from_dense_zhw(&g, &data, 0.0).unwrap();
        assert_eq!(p.values(), &[0.8]);
        assert!(VoxelSet::from_dense_zhw(&g, &data[1..], 0.5).is_err());
        assert!(s.check_bounds(&g, "target").is_ok());
        assert!(VoxelSet::new(vec![[2, 0, 0]]).check_bounds(&g, "target").is_err());
    }
}

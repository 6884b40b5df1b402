//! Means over frames that skip undefined values.

use serde::{Deserialize, Serialize};

/// A running mean that ignores undefined (`None`) and non-finite values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeanAcc {
    sum: f64,
    n: usize,
}

impl MeanAcc {
    /// Adds `v` when it is defined and finite.
    pub fn push(&mut self, v: Option<f64>) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            self.sum += v;
            self.n += 1;
        }
    }

    /// The mean and how many values it covers.
    pub fn stat(&self) -> Stat {
        Stat { mean: (self.n > 0).then(|| self.sum / self.n as f64), n: self.n }
    }
}

/// A mean over the frames where a value was defined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// The mean; None when no frame had a defined value.
    pub mean: Option<f64>,
    /// Frames that contributed.
    pub n: usize,
}

/// `num / den`, or None when `den` is 0.
pub fn ratio(num: f64, den: f64) -> Option<f64> {
    (den != 0.0).then(|| num / den)
}

/// Harmonic mean of `p` and `r`, 0 when both are 0.
pub fn harmonic(p: f64, r: f64) -> f64 {
    if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_skips_undefined() {
        let mut m = MeanAcc::default();
        assert_eq!(m.stat(), Stat { mean: None, n: 0 });
        for v in [Some(1.0), None, Some(f64::INFINITY), Some(f64::NAN), Some(3.0)] {
            m.push(v);
        }
        assert_eq!(m.stat(), Stat { mean: Some(2.0), n: 2 });
        assert_eq!(harmonic(0.0, 0.0), 0.0);
        assert_eq!(ratio(1.0, 0.0), None);
    }
}

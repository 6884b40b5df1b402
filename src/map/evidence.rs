//! What one voxel knows and how an observation changes it: log-odds with
//! clamping (OctoMap's model) or Dempster-Shafer masses (occupied / free /
//! unknown), both decaying towards unknown with time.
//!
//! Rules (`fixtures/map/make_map_reference.py` implements them in numpy):
//! - an occupied observation has confidence `c = reliability * p` (`p` the
//!   source's occupancy probability of the voxel), a free one `r =
//!   reliability`;
//! - before an update the state decays from its last update: factor `f =
//!   exp(-(t - t_last) / decay_s)` (1 without decay);
//! - log-odds `l` (unknown 0): hit `l = clamp(f l + logit(0.5 + c (p_hit -
//!   0.5)))`, miss `l = clamp(f l + logit(0.5 - r (0.5 - p_miss)))`, the clamp
//!   to `[logit(clamp_min), logit(clamp_max)]`; probability `sigmoid(l)`;
//! - Dempster-Shafer masses `(o, fr)`, `u = 1 - o - fr` (unknown `(0, 0)`):
//!   decay scales `o` and `fr` by `f`; a hit observes `(c ds_hit, 0)`, a miss
//!   `(0, r ds_miss)`; Dempster's rule with conflict `K = o fr' + fr o'`:
//!   `o = (o o' + o u' + u o') / (1 - K)`, `fr = (fr fr' + fr u' + u fr') / (1
//!   - K)`; probability is the pignistic `o + u / 2`.

use serde::{Deserialize, Serialize};

use super::MapError;

/// Log-odds parameters (OctoMap's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogOdds {
    /// Probability a hit observes (0.7).
    pub p_hit: f64,
    /// Probability a miss observes (0.4).
    pub p_miss: f64,
    /// Lower clamp as a probability (0.1192).
    pub clamp_min: f64,
    /// Upper clamp as a probability (0.971).
    pub clamp_max: f64,
}

impl Default for LogOdds {
    fn default() -> Self {
        LogOdds { p_hit: 0.7, p_miss: 0.4, clamp_min: 0.1192, clamp_max: 0.971 }
    }
}

/// Dempster-Shafer parameters: the masses one full-confidence observation
/// puts on occupied (hit) or free (miss). The defaults, 0.4 and 0.2, give
/// a first observation the same probability as OctoMap's 0.7 and 0.4.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DempsterShafer {
    /// Occupied mass of a hit (0.4).
    pub ds_hit: f64,
    /// Free mass of a miss (0.2).
    pub ds_miss: f64,
}

impl Default for DempsterShafer {
    fn default() -> Self {
        DempsterShafer { ds_hit: 0.4, ds_miss: 0.2 }
    }
}

/// The evidence model of a map.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum Evidence {
    /// Log-odds with clamping.
    LogOdds(LogOdds),
    /// Dempster-Shafer masses.
    DempsterShafer(DempsterShafer),
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence::LogOdds(LogOdds::default())
    }
}

/// One voxel: the model's state `(a, b)` (log-odds: `(l, 0)`; Dempster-
/// Shafer: `(o, fr)`), the time of its last update (seconds since the map's
/// first frame) and the frame that last touched it (0 = never).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cell {
    /// First state value.
    pub a: f32,
    /// Second state value.
    pub b: f32,
    /// Last update time (s since the map's start).
    pub t: f32,
    /// Frame number of the last update (1-based; 0 = never updated).
    pub frame: u32,
}

impl Cell {
    /// Whether the voxel was ever observed.
    pub fn known(&self) -> bool {
        self.frame != 0
    }
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// One observation's evidence ([`Update::observation`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed(f64, f64);

/// An [`Evidence`] model with its update constants precomputed.
#[derive(Debug, Clone, Copy)]
pub struct Update {
    model: Evidence,
    /// `p_hit - 0.5`, `0.5 - p_miss`, clamp bounds in log-odds.
    lo: [f64; 4],
    /// `1 / decay_s` (0 without decay).
    inv_tau: f64,
}

impl Update {
    /// The update rule of `model` with time constant `decay_s` (`None`: no
    /// decay); checks the parameters.
    pub fn new(model: Evidence, decay_s: Option<f64>) -> Result<Update, MapError> {
        let bad = |what: String| Err(MapError::Config(what));
        let open = |x: f64| x > 0.0 && x < 1.0;
        match model {
            Evidence::LogOdds(p) => {
                if !(open(p.clamp_min) && open(p.clamp_max) && p.clamp_min < 0.5 && p.clamp_max > 0.5) {
                    return bad(format!(
                        "clamp_min {} / clamp_max {}: need 0 < min < 0.5 < max < 1",
                        p.clamp_min, p.clamp_max
                    ));
                }
                if !(p.p_hit > 0.5 && p.p_hit < 1.0 && p.p_miss > 0.0 && p.p_miss < 0.5) {
                    return bad(format!(
                        "p_hit {} / p_miss {}: need 0.5 < p_hit < 1, 0 < p_miss < 0.5",
                        p.p_hit, p.p_miss
                    ));
                }
            }
            Evidence::DempsterShafer(d) => {
                if !(open(d.ds_hit) && open(d.ds_miss)) {
                    return bad(format!("ds_hit {} / ds_miss {}: need masses in (0, 1)", d.ds_hit, d.ds_miss));
                }
            }
        }
        if let Some(tau) = decay_s.filter(|t| !(t.is_finite() && *t > 0.0)) {
            return bad(format!("decay time {tau} s: need a positive number of seconds"));
        }
        let lo = match model {
            Evidence::LogOdds(p) => [p.p_hit - 0.5, 0.5 - p.p_miss, logit(p.clamp_min), logit(p.clamp_max)],
            Evidence::DempsterShafer(_) => [0.0; 4],
        };
        Ok(Update { model, lo, inv_tau: decay_s.map_or(0.0, |t| 1.0 / t) })
    }

    /// The model.
    pub fn model(&self) -> Evidence {
        self.model
    }

    fn factor(&self, cell: &Cell, t: f32) -> f64 {
        if self.inv_tau == 0.0 || !cell.known() {
            1.0
        } else {
            (-(f64::from(t) - f64::from(cell.t)).max(0.0) * self.inv_tau).exp()
        }
    }

    /// The evidence of one observation: occupied with confidence `c` when
    /// `hit`, else free with reliability `c` (log-odds: the increment;
    /// Dempster-Shafer: the observed masses).
    pub fn observation(&self, hit: bool, c: f64) -> Observed {
        match self.model {
            Evidence::LogOdds(_) => {
                let l = if hit { logit(0.5 + c * self.lo[0]) } else { logit(0.5 - c * self.lo[1]) };
                Observed(l, 0.0)
            }
            Evidence::DempsterShafer(d) => {
                if hit {
                    Observed(c * d.ds_hit, 0.0)
                } else {
                    Observed(0.0, c * d.ds_miss)
                }
            }
        }
    }

    /// Applies an observation at time `t` in frame `frame`.
    pub fn apply(&self, cell: &mut Cell, obs: Observed, t: f32, frame: u32) {
        let f = self.factor(cell, t);
        let (a, b) = (f64::from(cell.a) * f, f64::from(cell.b) * f);
        let (a, b) = match self.model {
            Evidence::LogOdds(_) => ((a + obs.0).clamp(self.lo[2], self.lo[3]), 0.0),
            Evidence::DempsterShafer(_) => {
                let (o2, f2) = (obs.0, obs.1);
                let (u, u2) = (1.0 - a - b, 1.0 - o2 - f2);
                let norm = 1.0 - (a * f2 + b * o2);
                ((a * o2 + a * u2 + u * o2) / norm, (b * f2 + b * u2 + u * f2) / norm)
            }
        };
        *cell = Cell { a: a as f32, b: b as f32, t, frame };
    }

    /// The state of `cell` decayed to time `t` (unchanged without decay).
    pub fn decayed(&self, cell: &Cell, t: f32) -> (f64, f64) {
        let f = self.factor(cell, t);
        (f64::from(cell.a) * f, f64::from(cell.b) * f)
    }

    /// The occupancy probability of `cell` at time `t` (0.5 if unknown).
    pub fn probability(&self, cell: &Cell, t: f32) -> f64 {
        let (a, b) = self.decayed(cell, t);
        match self.model {
            Evidence::LogOdds(_) => 1.0 / (1.0 + (-a).exp()),
            Evidence::DempsterShafer(_) => a + (1.0 - a - b) / 2.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_observations_agree_between_models_and_clamp() {
        let lo = Update::new(Evidence::default(), None).unwrap();
        let ds = Update::new(Evidence::DempsterShafer(DempsterShafer::default()), None).unwrap();
        for (hit, want) in [(true, 0.7), (false, 0.4)] {
            for u in [&lo, &ds] {
                let mut c = Cell::default();
                u.apply(&mut c, u.observation(hit, 1.0), 0.0, 1);
                assert!((u.probability(&c, 0.0) - want).abs() < 1e-6);
            }
        }
        let mut c = Cell::default();
        for k in 0..50 {
            lo.apply(&mut c, lo.observation(true, 1.0), k as f32, k + 1);
        }
        assert!((lo.probability(&c, 49.0) - 0.971).abs() < 1e-6);
        // zero confidence observes nothing
        let mut c = Cell::default();
        lo.apply(&mut c, lo.observation(true, 0.0), 0.0, 1);
        assert_eq!((c.a, c.known()), (0.0, true));
    }

    #[test]
    fn decay_moves_towards_unknown() {
        let u = Update::new(Evidence::DempsterShafer(DempsterShafer::default()), Some(2.0)).unwrap();
        let mut c = Cell::default();
        u.apply(&mut c, u.observation(true, 1.0), 0.0, 1);
        let (o, _) = u.decayed(&c, 2.0);
        assert!((o - 0.4 * (-1f64).exp()).abs() < 1e-6);
        assert!(u.probability(&c, 1e6) - 0.5 < 1e-9);
        assert!(Update::new(Evidence::default(), Some(0.0)).is_err());
        assert!(Update::new(Evidence::LogOdds(LogOdds { clamp_min: 0.6, ..LogOdds::default() }), None).is_err());
    }
}

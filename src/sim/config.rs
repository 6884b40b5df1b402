//! Simulation settings (serde, so runs can be recorded and replayed).

use serde::{Deserialize, Serialize};

/// Everything a simulation run needs; the same config and seed give the same
/// bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Master seed (ChaCha8 streams are derived from it per scene, sensor and
    /// frame).
    pub seed: u64,
    /// Number of scenes.
    pub scenes: usize,
    /// LiDAR frames per scene (the radar produces as many as its rate gives
    /// over the same time span).
    pub frames_per_scene: usize,
    /// Unix time of the first LiDAR frame of scene 0 (seconds); scene `k`
    /// starts `k * 3600` s later.
    pub start_time: i64,
    /// LiDAR frame rate (Hz).
    pub lidar_hz: f64,
    /// Radar frame rate (Hz).
    pub radar_hz: f64,
    /// Radar clock offset relative to the LiDAR (seconds).
    pub radar_offset: f64,
    /// Ego motion.
    pub ego: EgoConfig,
    /// Scene layout.
    pub scene: SceneConfig,
    /// LiDAR model.
    pub lidar: LidarConfig,
    /// Radar model.
    pub radar: RadarConfig,
    /// Which draw of the LiDAR's chance: 0 is the recording; `k > 0` scans
    /// the same scenes along the same path again, the rosette continuing
    /// `k * frames_per_scene` frames later and dropout, range noise and
    /// reflectivity drawn from a stream of their own (layout, poses and
    /// radar unchanged). Not a sensor-model change: the oracle that votes
    /// over rescans (`examples/rescan_oracle.rs`) measures how much of a
    /// frame is the scan's chance, which no model of the scene can predict.
    pub lidar_rescan: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 7,
            scenes: 1,
            frames_per_scene: 100,
            start_time: 1_650_000_000,
            lidar_hz: 10.0,
            radar_hz: 13.0,
            radar_offset: 0.021,
            ego: EgoConfig::default(),
            scene: SceneConfig::default(),
            lidar: LidarConfig::default(),
            radar: RadarConfig::default(),
            lidar_rescan: 0,
        }
    }
}

/// Ego trajectory: along the world +x road in the right-hand lane, weaving
/// gently; the sensors sit `sensor_height` above the ground.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EgoConfig {
    /// Forward speed (m/s).
    pub speed: f64,
    /// Lane centre (world y, metres).
    pub lane_y: f64,
    /// Lateral weave amplitude (m).
    pub weave_amplitude: f64,
    /// Weave period (s).
    pub weave_period: f64,
    /// Sensor height above the ground (m): the ground appears near
    /// `z = -sensor_height` in the sensor frame.
    pub sensor_height: f64,
}

impl Default for EgoConfig {
    fn default() -> Self {
        EgoConfig { speed: 4.0, lane_y: -1.75, weave_amplitude: 0.5, weave_period: 20.0, sensor_height: 1.8 }
    }
}

/// Procedural layout of a campus street scene (ranges are `[lo, hi]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SceneConfig {
    /// Largest ground slope along x and y (rise over run).
    pub max_slope: [f64; 2],
    /// Facade distance from the road centre (m).
    pub building_setback: [f64; 2],
    /// Building length along the road (m).
    pub building_length: [f64; 2],
    /// Gap between buildings (m).
    pub building_gap: [f64; 2],
    /// Building height (m).
    pub building_height: [f64; 2],
    /// Probability of a low wall in a gap between buildings.
    pub wall_probability: f64,
    /// Spacing of poles along each side (m).
    pub pole_spacing: [f64; 2],
    /// Spacing of trees along each side (m).
    pub tree_spacing: [f64; 2],
    /// Probability of a bush next to each tree.
    pub bush_probability: f64,
    /// Probability that a 6 m kerb slot holds a parked vehicle.
    pub parked_probability: f64,
    /// Number of moving vehicles.
    pub moving_vehicles: usize,
}

impl Default for SceneConfig {
    fn default() -> Self {
        SceneConfig {
            max_slope: [0.02, 0.01],
            building_setback: [9.0, 16.0],
            building_length: [10.0, 40.0],
            building_gap: [2.0, 8.0],
            building_height: [5.0, 18.0],
            wall_probability: 0.5,
            pole_spacing: [8.0, 16.0],
            tree_spacing: [5.0, 11.0],
            bush_probability: 0.7,
            parked_probability: 0.55,
            moving_vehicles: 4,
        }
    }
}

/// LiDAR model: a Livox-like non-repetitive rosette (two counter-rotating
/// prisms) over a forward field of view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LidarConfig {
    /// Emitted rays per frame.
    pub points_per_frame: usize,
    /// Horizontal field of view (degrees).
    pub h_fov_deg: f64,
    /// Vertical field of view (degrees).
    pub v_fov_deg: f64,
    /// Samples per revolution of the two prisms (opposite signs rotate in
    /// opposite directions; an irrational ratio never repeats).
    pub prism_periods: [f64; 2],
    /// Range noise standard deviation (m).
    pub range_sigma: f64,
    /// Dropout probability of every return (on top of the surface's).
    pub dropout: f64,
    /// Minimum and maximum range (m).
    pub range: [f64; 2],
}

impl Default for LidarConfig {
    fn default() -> Self {
        LidarConfig {
            points_per_frame: 100_000,
            h_fov_deg: 81.7,
            v_fov_deg: 25.1,
            prism_periods: [211.7, -283.3],
            range_sigma: 0.02,
            dropout: 0.02,
            range: [0.5, 200.0],
        }
    }
}

/// Radar model (Oculii-Eagle-like 4D imaging radar).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RadarConfig {
    /// Horizontal field of view (degrees).
    pub h_fov_deg: f64,
    /// Vertical field of view (degrees).
    pub v_fov_deg: f64,
    /// Angular step of the probe rays (azimuth, elevation; degrees).
    pub probe_step_deg: [f64; 2],
    /// Multiplies every surface's detection probability.
    pub detect_scale: f64,
    /// Detection probability of a hit near a vertical box edge (corner).
    pub corner_detect: f64,
    /// Range noise (m, 1 sigma).
    pub range_sigma: f64,
    /// Azimuth noise (degrees, 1 sigma).
    pub azimuth_sigma_deg: f64,
    /// Elevation noise (degrees, 1 sigma).
    pub elevation_sigma_deg: f64,
    /// Probability that a detection's noise is `outlier_scale` times larger.
    pub outlier_probability: f64,
    /// Noise multiplier of outliers.
    pub outlier_scale: f64,
    /// Doppler noise (m/s, 1 sigma).
    pub doppler_sigma: f64,
    /// Probability that a detection on a strong reflector spawns a multipath
    /// ghost further along the same ray.
    pub ghost_probability: f64,
    /// Extra range of ghosts (m).
    pub ghost_range: [f64; 2],
    /// Clutter detections per frame.
    pub clutter_points: usize,
    /// Maximum detection range (m).
    pub max_range: f64,
}

impl Default for RadarConfig {
    fn default() -> Self {
        RadarConfig {
            h_fov_deg: 100.0,
            v_fov_deg: 30.0,
            probe_step_deg: [0.25, 0.5],
            detect_scale: 0.85,
            corner_detect: 0.6,
            range_sigma: 0.08,
            azimuth_sigma_deg: 0.25,
            elevation_sigma_deg: 0.6,
            outlier_probability: 0.08,
            outlier_scale: 5.0,
            doppler_sigma: 0.05,
            ghost_probability: 0.03,
            ghost_range: [1.0, 8.0],
            clutter_points: 60,
            max_range: 150.0,
        }
    }
}

/// A configuration value the simulator cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid simulation config: {0}")]
pub struct ConfigError(pub String);

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError(what()))
    }
}

fn positive(name: &str, v: f64) -> Result<(), ConfigError> {
    check(v.is_finite() && v > 0.0, || format!("{name} must be finite and > 0, got {v}"))
}

fn non_negative(name: &str, v: f64) -> Result<(), ConfigError> {
    check(v.is_finite() && v >= 0.0, || format!("{name} must be finite and >= 0, got {v}"))
}

fn probability(name: &str, v: f64) -> Result<(), ConfigError> {
    check((0.0..=1.0).contains(&v), || format!("{name} must be a probability, got {v}"))
}

fn interval(name: &str, r: [f64; 2], min_lo: f64) -> Result<(), ConfigError> {
    check(r.iter().all(|v| v.is_finite()) && r[0] >= min_lo && r[0] <= r[1], || {
        format!("{name} must be [lo, hi] with {min_lo} <= lo <= hi, got {r:?}")
    })
}

impl SimConfig {
    /// Checks every value the simulator relies on (rates, ranges, steps,
    /// probabilities), so that no setting can make it loop forever, divide by
    /// zero or panic.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(self.frames_per_scene <= 1_000_000, || "frames_per_scene must be <= 1e6".into())?;
        check(self.lidar_rescan <= 1000, || format!("lidar_rescan must be <= 1000, got {}", self.lidar_rescan))?;
        check(self.start_time.checked_add(3600 * self.scenes as i64 + 1_000_000).is_some(), || {
            "start_time too large".into()
        })?;
        positive("lidar_hz", self.lidar_hz)?;
        positive("radar_hz", self.radar_hz)?;
        check(self.radar_offset.is_finite() && self.radar_offset.abs() <= 1.0, || {
            format!("radar_offset must be within +-1 s, got {}", self.radar_offset)
        })?;
        let e = &self.ego;
        non_negative("ego.speed", e.speed)?;
        non_negative("ego.weave_amplitude", e.weave_amplitude)?;
        positive("ego.weave_period", e.weave_period)?;
        check(e.lane_y.is_finite() && e.sensor_height.is_finite(), || {
            "ego lane_y/sensor_height must be finite".into()
        })?;
        let s = &self.scene;
        for (k, m) in s.max_slope.iter().enumerate() {
            check(m.is_finite() && (0.0..=0.3).contains(m), || format!("scene.max_slope[{k}] must be in [0, 0.3]"))?;
        }
        interval("scene.building_setback", s.building_setback, 0.0)?;
        interval("scene.building_length", s.building_length, 0.5)?;
        interval("scene.building_gap", s.building_gap, 0.0)?;
        interval("scene.building_height", s.building_height, 0.0)?;
        interval("scene.pole_spacing", s.pole_spacing, 0.5)?;
        interval("scene.tree_spacing", s.tree_spacing, 0.5)?;
        probability("scene.wall_probability", s.wall_probability)?;
        probability("scene.bush_probability", s.bush_probability)?;
        probability("scene.parked_probability", s.parked_probability)?;
        check(s.moving_vehicles <= 10_000, || "scene.moving_vehicles must be <= 1e4".into())?;
        let l = &self.lidar;
        check(l.points_per_frame <= 10_000_000, || "lidar.points_per_frame must be <= 1e7".into())?;
        check(l.h_fov_deg > 0.0 && l.h_fov_deg <= 360.0, || "lidar.h_fov_deg must be in (0, 360]".into())?;
        check(l.v_fov_deg > 0.0 && l.v_fov_deg <= 180.0, || "lidar.v_fov_deg must be in (0, 180]".into())?;
        for p in l.prism_periods {
            check(p.is_finite() && p.abs() >= 2.0, || format!("lidar.prism_periods must be finite, |p| >= 2: {p}"))?;
        }
        non_negative("lidar.range_sigma", l.range_sigma)?;
        probability("lidar.dropout", l.dropout)?;
        interval("lidar.range", l.range, 0.0)?;
        let r = &self.radar;
        check(r.h_fov_deg > 0.0 && r.h_fov_deg <= 360.0, || "radar.h_fov_deg must be in (0, 360]".into())?;
        check(r.v_fov_deg > 0.0 && r.v_fov_deg <= 180.0, || "radar.v_fov_deg must be in (0, 180]".into())?;
        for (k, step) in r.probe_step_deg.iter().enumerate() {
            check(step.is_finite() && *step >= 0.01, || format!("radar.probe_step_deg[{k}] must be >= 0.01"))?;
        }
        non_negative("radar.detect_scale", r.detect_scale)?;
        probability("radar.corner_detect", r.corner_detect)?;
        non_negative("radar.range_sigma", r.range_sigma)?;
        non_negative("radar.azimuth_sigma_deg", r.azimuth_sigma_deg)?;
        non_negative("radar.elevation_sigma_deg", r.elevation_sigma_deg)?;
        probability("radar.outlier_probability", r.outlier_probability)?;
        non_negative("radar.outlier_scale", r.outlier_scale)?;
        non_negative("radar.doppler_sigma", r.doppler_sigma)?;
        probability("radar.ghost_probability", r.ghost_probability)?;
        interval("radar.ghost_range", r.ghost_range, 0.0)?;
        check(r.clutter_points <= 1_000_000, || "radar.clutter_points must be <= 1e6".into())?;
        check(r.max_range.is_finite() && r.max_range > 3.0, || "radar.max_range must be > 3 m".into())
    }
}

//! Surface classes and their sensor responses.
//!
//! LiDAR reflectivity is on the Livox 0-255 scale; radar "intensity" is an
//! SNR-like value in dB: `rcs_db + 100 - 40 log10(range) + 10 log10(cos
//! incidence)` (radar equation), so it falls with range and grazing angle.

use serde::{Deserialize, Serialize};

/// What a surface is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Surface {
    /// Road and terrain.
    Ground,
    /// Building facades.
    Building,
    /// Low walls and fences.
    Wall,
    /// Street lights, sign posts.
    Pole,
    /// Parked and moving vehicles.
    Vehicle,
    /// Tree trunks.
    Trunk,
    /// Tree crowns and bushes (partly transparent to the LiDAR).
    Foliage,
}

impl Surface {
    /// Mean LiDAR reflectivity (0-255) at normal incidence.
    pub fn reflectivity(self) -> f64 {
        match self {
            Surface::Ground => 14.0,
            Surface::Building => 60.0,
            Surface::Wall => 45.0,
            Surface::Pole => 95.0,
            Surface::Vehicle => 35.0,
            Surface::Trunk => 30.0,
            Surface::Foliage => 24.0,
        }
    }

    /// Extra LiDAR dropout probability (dark or absorbing surfaces).
    pub fn lidar_dropout(self) -> f64 {
        match self {
            Surface::Ground => 0.10,
            Surface::Vehicle => 0.08,
            Surface::Foliage => 0.15,
            _ => 0.02,
        }
    }

    /// Radar detection probability of one probe hit at normal incidence.
    pub fn radar_detect(self) -> f64 {
        match self {
            Surface::Ground => 0.004,
            Surface::Building => 0.08,
            Surface::Wall => 0.10,
            Surface::Pole => 0.75,
            Surface::Vehicle => 0.55,
            Surface::Trunk => 0.25,
            Surface::Foliage => 0.05,
        }
    }

    /// Radar cross-section scale in dB.
    pub fn rcs_db(self) -> f64 {
        match self {
            Surface::Ground => -15.0,
            Surface::Building => 5.0,
            Surface::Wall => 0.0,
            Surface::Pole => 8.0,
            Surface::Vehicle => 12.0,
            Surface::Trunk => -2.0,
            Surface::Foliage => -8.0,
        }
    }

    /// Whether radar multipath ghosts may arise from this surface.
    pub fn ghosts(self) -> bool {
        matches!(self, Surface::Vehicle | Surface::Pole | Surface::Building)
    }
}

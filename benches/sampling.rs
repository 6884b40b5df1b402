//! Sampling cost per frame: the LDM's Heun 18 steps (35 network calls)
//! beside consistency sampling in 1, 2 and 4 calls, with the default UNet
//! (f32, CPU), at the real latent size `(1, 4, 48, 152, 56)` and at the
//! latent of the quality benchmark's resampled grid `(8, 64, 32)`
//! (`ultra_lightweight` VAE). The weights are random: the cost does not
//! depend on them. Prints one JSON line per case.
//!
//! `cargo bench --bench sampling` (`RADVOX_SKIP_FULL=1` skips the real size)

use std::time::Instant;

use radvox::diffusion::{Consistency, EdmConfig, Sampler, Solver};
use radvox::model::{Unet3d, UnetConfig, Vae3d, VaeConfig};
use tch::{nn, Device, Kind, Tensor};

/// Seconds of `f`, the best of `repeats`.
fn best(repeats: usize, f: &dyn Fn() -> Tensor) -> f64 {
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            let _ = f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let unet = Unet3d::new(&vs.root(), &UnetConfig::default()).unwrap();
    let edm = EdmConfig::default();
    let sampler = Sampler::new(vs, unet, edm);
    let cd = Consistency { edm };
    let resampled = {
        let vs = nn::VarStore::new(Device::Cpu);
        Vae3d::new(&vs.root(), &VaeConfig::ultra_lightweight()).unwrap().latent_shape([1, 4, 8, 64, 32])
    };
    let mut latents = vec![("resampled", resampled)];
    if std::env::var("RADVOX_SKIP_FULL").is_err() {
        latents.push(("real", [1, 4, 48, 152, 56]));
    }
    for (name, shape) in latents {
        let cond = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let repeats = if name == "real" { 1 } else { 5 };
        let heun = best(repeats, &|| sampler.sample(&cond, 18, Solver::Heun, 0));
        println!(
            r#"{{"latent": "{name}", "shape": {shape:?}, "method": "heun18", "calls": 35, "seconds": {heun:.3}, "vs_heun18": 1.0}}"#
        );
        for k in [1, 2, 4] {
            let levels = cd.sampling_levels(k);
            let s = best(repeats, &|| sampler.sample_consistency(&cond, &levels, 0));
            println!(
                r#"{{"latent": "{name}", "shape": {shape:?}, "method": "cd{k}", "calls": {k}, "seconds": {s:.3}, "vs_heun18": {:.4}}}"#,
                s / heun
            );
        }
    }
}

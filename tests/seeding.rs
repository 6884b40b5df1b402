//! A run's randomness is a function of its seed alone: model initialisation
//! and every training and sampling draw come from Rust streams, so libtorch's
//! one global generator, reseeded or drawn from by any other thread (a test
//! running beside, a second trainer), changes nothing. Before this, tests
//! running in parallel in one process shifted each other's draws and an
//! exact-resume comparison failed on a fast CI machine.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use radvox::diffusion::EdmConfig;
use radvox::model::{Unet3d, UnetConfig, Vae3d, VaeConfig};
use tch::{nn, Device, Kind, Tensor};

/// Runs `f` while another thread keeps reseeding libtorch's global
/// generator and drawing from it.
fn under_noise<T>(f: impl FnOnce() -> T) -> T {
    let stop = Arc::new(AtomicBool::new(false));
    let spam = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut k = 0i64;
            while !stop.load(Ordering::Relaxed) {
                tch::manual_seed(k);
                let _ = Tensor::randn([64], (Kind::Float, Device::Cpu));
                k += 1;
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    spam.join().unwrap();
    out
}

fn weights(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn same(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((na, ta), (nb, tb))| na == nb && ta.equal(tb))
}

#[test]
fn model_initialisation_ignores_libtorch_global_generator() {
    let build = |seed: u64, vae: bool| {
        under_noise(|| {
            let vs = nn::VarStore::new(Device::Cpu);
            radvox::sys::with_init_seed(seed, || {
                if vae {
                    Vae3d::new(&vs.root(), &VaeConfig::ultra_lightweight()).map(|_| ()).unwrap()
                } else {
                    Unet3d::new(&vs.root(), &UnetConfig::default()).map(|_| ()).unwrap()
                }
            });
            weights(&vs)
        })
    };
    for vae in [true, false] {
        let a = build(4, vae);
        assert!(same(&a, &build(4, vae)), "same seed, different weights (vae {vae})");
        assert!(!same(&a, &build(5, vae)), "another seed, same weights (vae {vae})");
    }
}

#[test]
fn training_and_sampling_draws_ignore_libtorch_global_generator() {
    let edm = EdmConfig::default();
    let y = Tensor::zeros([3, 4, 2, 4, 4], (Kind::Float, Device::Cpu));
    let draw = || under_noise(|| edm.draw(&y, 11));
    let ((s1, n1), (s2, n2)) = (draw(), draw());
    assert!(s1.equal(&s2) && n1.equal(&n2));
    // a denoiser that halves its input: the path is a fixed multiple of the start noise
    let half = |x: &Tensor, _s: f64| x * 0.5;
    let sample = || {
        under_noise(|| {
            radvox::diffusion::sample(&edm, &[2, 8], 4, radvox::diffusion::Solver::Euler, 3, Device::Cpu, &half)
        })
    };
    let (a, b) = (sample(), sample());
    assert!(a.equal(&b));
    let ratio = &a / radvox::sys::normal(3, &[2, 8], Device::Cpu);
    let r0 = ratio.double_value(&[0, 0]);
    assert!(r0 > 0.0 && (ratio - r0).abs().max().double_value(&[]) < 1e-4 * r0);
}

/// The static half: outside test modules, no library code draws from or
/// seeds libtorch's global generator, or builds variables with tch's
/// initialisers (which draw from it).
#[test]
fn library_code_never_uses_libtorch_global_generator() {
    const FORBIDDEN: [&str; 12] = [
        "Tensor::randn",
        "Tensor::rand(",
        "Tensor::randint",
        "randn_like",
        "rand_like",
        "randint_like",
        "manual_seed",
        "uniform_(",
        "normal_(",
        "bernoulli",
        "Init::",
        "nn::linear(",
    ];
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (i, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for bad in FORBIDDEN {
                if line.contains(bad) {
                    found.push(format!("{}:{}: {bad}", f.display(), i + 1));
                }
            }
        }
    }
    assert!(found.len() < FORBIDDEN.len() * 100, "checker broken");
    assert!(found.is_empty(), "global-generator use in library code:\n{}", found.join("\n"));
}

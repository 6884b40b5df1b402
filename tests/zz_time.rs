use radvox::model::{Checkpointing, Vae3d, VaeConfig};
use tch::{nn, Device, Kind, Tensor};
#[test]
fn time_grids() {
    let vs = nn::VarStore::new(Device::Cpu);
    let vae = Vae3d::new(&vs.root(), &VaeConfig::ultra_lightweight()).unwrap();
    for (b, g) in [
        (1i64, [16i64, 64, 64]),
        (2, [16, 64, 64]),
        (4, [16, 64, 64]),
        (2, [8, 64, 32]),
        (4, [8, 64, 32]),
        (2, [16, 128, 64]),
        (2, [32, 128, 128]),
    ] {
        let shape = [b, 4, g[0], g[1], g[2]];
        let x = Tensor::rand(shape, (Kind::Float, Device::Cpu));
        let eps = Tensor::randn(vae.latent_shape(shape), (Kind::Float, Device::Cpu));
        let mse = |r: &Tensor, t: &Tensor| r.mse_loss(t, tch::Reduction::Mean);
        vae.backward(&x, Some(&eps), Checkpointing::Off, 1.0, &mse);
        let t = std::time::Instant::now();
        for _ in 0..2 {
            vae.backward(&x, Some(&eps), Checkpointing::Off, 1.0, &mse);
        }
        println!(
            "b{b} {g:?}: {:.2} s per micro-step, {:.2} s per frame",
            t.elapsed().as_secs_f64() / 2.0,
            t.elapsed().as_secs_f64() / 2.0 / b as f64
        );
    }
}

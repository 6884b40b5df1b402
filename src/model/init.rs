//! Seeded initialisation of model variables without libtorch's global
//! generator: each variable's values come from [`crate::sys::init_seed`] of
//! its full var-store path, so a model built under
//! [`crate::sys::with_init_seed`] has the same weights whatever else the
//! process draws, in any construction order, on a CPU or a GPU.

use tch::nn;
use tch::{Device, Tensor};

/// A trainable variable `name` of `shape` under `vs`, uniform in
/// `[-bound, bound)`: PyTorch's default for convolutions and linear layers
/// is `bound = 1 / sqrt(fan_in)`.
pub fn uniform_var(vs: &nn::Path, name: &str, shape: &[i64], bound: f64) -> Tensor {
    let seed = crate::sys::init_seed(&vs.path(name));
    vs.var_copy(name, &crate::sys::uniform(seed, shape, -bound, bound, Device::Cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_depend_on_seed_and_path_not_on_libtorch_or_order() {
        let build = |seed, first_a: bool| {
            tch::manual_seed(seed as i64 + 100);
            let vs = nn::VarStore::new(Device::Cpu);
            crate::sys::with_init_seed(seed, || {
                let (a, b) = if first_a {
                    let a = uniform_var(&(vs.root() / "a"), "weight", &[4, 5], 0.5);
                    (a, uniform_var(&(vs.root() / "b"), "weight", &[4, 5], 0.5))
                } else {
                    let b = uniform_var(&(vs.root() / "b"), "weight", &[4, 5], 0.5);
                    (uniform_var(&(vs.root() / "a"), "weight", &[4, 5], 0.5), b)
                };
                (a, b)
            })
        };
        let (a1, b1) = build(1, true);
        let (a2, b2) = build(1, false);
        assert!(a1.equal(&a2) && b1.equal(&b2));
        assert!(!a1.equal(&b1));
        assert!(!a1.equal(&build(2, true).0));
        assert!(a1.abs().max().double_value(&[]) <= 0.5);
        assert!(a1.requires_grad());
    }
}

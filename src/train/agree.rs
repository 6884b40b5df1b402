//! Ranks that agree: before a data-parallel run takes its first step, every
//! rank shows every other what must be identical (each recipe field, the
//! objective's metadata, the datasets, the resume checkpoint, the code's
//! version); the first difference from rank 0 stops every rank with the same
//! line, naming the field and both values. Without it, ranks given different
//! learning rates or data copies trained together, averaging gradients of
//! different problems.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use super::TrainError;
use crate::dist::{Dist, ReduceOp};
use crate::io::outputs::first_difference;

/// The code's version: the crate's, and the commit it was built from.
pub fn code_version() -> String {
    format!("{} ({})", env!("CARGO_PKG_VERSION"), option_env!("RADVOX_GIT_COMMIT").unwrap_or("commit unknown"))
}

/// Flattens a JSON value into `prefix.path = value` leaves.
pub fn leaves(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                leaves(&format!("{prefix}.{k}"), x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Every rank's `fields`, gathered by one broadcast per rank (the payload
/// is small): the bytes travel as f64s, which every backend reduces.
fn gather(dist: &Dist, text: &str) -> Result<Vec<String>, TrainError> {
    let mut len = [text.len() as f64];
    dist.all_reduce_f64(&mut len, ReduceOp::Max)?;
    let n = len[0] as usize + 1;
    let mut all = Vec::with_capacity(dist.world_size());
    for root in 0..dist.world_size() {
        let mut buf = vec![0f64; n];
        if root == dist.rank() {
            buf[0] = text.len() as f64;
            for (b, &x) in buf[1..].iter_mut().zip(text.as_bytes()) {
                *b = x as f64;
            }
        }
        let t = Tensor::from_slice(&buf).to_device(dist.device());
        dist.broadcast(&t, root)?;
        let v: Vec<f64> = Vec::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Double)).expect("1-d");
        let bytes: Vec<u8> = v[1..=(v[0] as usize).min(n - 1)].iter().map(|&x| x as u8).collect();
        all.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    Ok(all)
}

/// Checks that every rank holds the same `fields`; on one process, nothing.
pub fn agree(dist: &Dist, fields: &BTreeMap<String, String>) -> Result<(), TrainError> {
    if dist.world_size() == 1 {
        return Ok(());
    }
    let text = serde_json::to_string(fields).expect("strings serialise");
    let all = gather(dist, &text)?;
    let parse = |s: &str| serde_json::from_str::<BTreeMap<String, String>>(s).unwrap_or_default();
    let first = parse(&all[0]);
    for (rank, t) in all.iter().enumerate().skip(1) {
        if let Some((field, a, b)) = first_difference(&first, &parse(t)) {
            return Err(TrainError::RanksDisagree { rank, field, rank0: a, other: b });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_name_nested_fields_and_the_first_difference_is_found() {
        let mut a = BTreeMap::new();
        leaves("recipe", &serde_json::json!({"optim": {"lr": 0.001, "epochs": 2}, "vae": "small"}), &mut a);
        assert_eq!(a["recipe.optim.lr"], "0.001");
        let mut b = a.clone();
        assert_eq!(first_difference(&a, &b), None);
        b.insert("recipe.optim.lr".into(), "0.05".into());
        b.insert("recipe.vae".into(), "\"wide\"".into());
        assert_eq!(first_difference(&a, &b), Some(("recipe.optim.lr".into(), "0.001".into(), "0.05".into())));
        b.remove("recipe.optim.lr");
        b.remove("recipe.vae");
        assert_eq!(first_difference(&a, &b).map(|d| d.2), Some("(absent)".into()));
    }
}

//! Data parallelism on c10d (Gloo, CPU), with real processes: ranks started
//! with torchrun's environment variables (as torchrun does), and by torchrun
//! itself, single- and two-"node" on localhost.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::example;
use radvox::train::Checkpoint;

/// A simulated root: 5 scenes x 4 frames (16 train frames in 4 scenes, 4 val).
fn sim_root(dir: &Path) -> PathBuf {
    let out = Command::new(example("simulate"))
        .args(["--scenes", "5", "--frames", "4", "--seed", "5", "--no-progress", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "simulate: {}", String::from_utf8_lossy(&out.stderr));
    dir.join("ntu")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `world` ranks of `exe`, each with torchrun's variables; rank r writes to
/// `outs[r]` (rank 0's run and the others' would-be files told apart).
fn spawn_ranks(exe: &Path, args: &[String], outs: &[PathBuf], port: u16) -> Vec<Child> {
    let world = outs.len();
    (0..world)
        .map(|rank| {
            Command::new(exe)
                .args(args)
                .arg("--out")
                .arg(&outs[rank])
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("OMP_NUM_THREADS", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn succeed(out: Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned() + &err
}

/// Two runs' weights: `||a - b|| / ||a||` over the weights the loss
/// determines, and the largest element difference of those whose gradient
/// is rounding noise. A bias ahead of a GroupNorm has a gradient of exactly
/// zero in exact arithmetic; in float it is noise of ~1e-11 whose sign
/// depends on the summation order (ranks, threads), and AdamW, which
/// normalises each element, turns that sign into a step of up to `lr`. Such
/// tensors are told by their second moment (RMS gradient below 1e-8).
fn compare_runs(a: &Path, b: &Path, kind: &str) -> (f64, f64) {
    let (ca, cb) = (Checkpoint::read(a, kind).unwrap(), Checkpoint::read(b, kind).unwrap());
    let (wa, wb) = (ca.model_tensors(), cb.model_tensors());
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    let (mut num, mut den, mut noise_max, mut noise_count) = (0.0, 0.0, 0.0f64, 0);
    for (k, x) in &wa {
        let (x, y) = (x.to_kind(tch::Kind::Double), wb[k].to_kind(tch::Kind::Double));
        let rms = ca.tensors[&format!("adamw.v.{k}")].to_kind(tch::Kind::Double).sqrt().max().double_value(&[]);
        if rms < 1e-8 {
            noise_max = noise_max.max((&x - &y).abs().max().double_value(&[]));
            noise_count += 1;
            continue;
        }
        num += (&x - &y).norm().double_value(&[]).powi(2);
        den += x.norm().double_value(&[]).powi(2);
    }
    assert!(noise_count < wa.len() / 4, "{noise_count} of {} tensors without a gradient", wa.len());
    ((num / den).sqrt(), noise_max)
}

/// A column of a CSV log.
fn column(path: &Path, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let i = lines.next().unwrap().split(',').position(|c| c == name).unwrap();
    lines.map(|l| l.split(',').nth(i).unwrap().parse().unwrap()).collect()
}

/// One rank accumulating 4 micro-batches, and 2 ranks accumulating 2 each,
/// over the same frames; returns (one rank's dir, two ranks' rank-0 dir).
fn one_vs_two(exe: &Path, args: &[String], dir: &Path) -> (PathBuf, PathBuf) {
    let one = dir.join("one");
    let mut a1 = args.to_vec();
    a1.extend(["--grad-accum", "4", "--out"].map(String::from));
    a1.push(one.to_str().unwrap().into());
    let out = Command::new(exe).args(&a1).env("OMP_NUM_THREADS", "1").output().unwrap();
    succeed(out, "one rank");
    let mut a2 = args.to_vec();
    a2.extend(["--grad-accum", "2"].map(String::from));
    let outs = [dir.join("two"), dir.join("two_rank1")];
    let children = spawn_ranks(exe, &a2, &outs, free_port());
    for (r, c) in children.into_iter().enumerate() {
        succeed(c.wait_with_output().unwrap(), &format!("rank {r}"));
    }
    assert!(!outs[1].exists() || std::fs::read_dir(&outs[1]).unwrap().next().is_none(), "rank 1 writes no file");
    (one, outs[0].clone())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn two_ranks_equal_one_rank_accumulating_the_same_frames_vae_and_ldm() {
    let dir = tempfile::tempdir().unwrap();
    let root = sim_root(&dir.path().join("sim"));
    let root = root.to_str().unwrap();
    let common_args = ["--dataset-dir", root, "--resample", "8,32,16", "--epochs", "1", "--batch-size", "1"];
    let cpu = ["--device", "cpu", "--no-amp", "--no-progress"];

    // VAE: 16 train frames, 4 optimizer steps, validation on 4 frames
    let vae_exe = example("train_vae");
    let mut args = strings(&common_args);
    args.extend(strings(&cpu));
    let (one, two) = one_vs_two(&vae_exe, &args, &dir.path().join("vae"));
    // 4 steps at lr 1e-4: a noise-only element moves at most 4e-4
    let (rel, noise) = compare_runs(&one.join("last.safetensors"), &two.join("last.safetensors"), "vae");
    assert!(rel < 1e-5 && noise <= 4e-4 * 1.01, "VAE weights: relative difference {rel:e}, noise-only {noise:e}");
    let (g1, g2) = (column(&one.join("train_log.csv"), "grad_norm"), column(&two.join("train_log.csv"), "grad_norm"));
    assert_eq!(g1.len(), 4, "4 optimizer steps");
    assert_eq!(g2.len(), 4, "4 optimizer steps, one log row each (rank 0 alone writes)");
    for (a, b) in g1.iter().zip(&g2) {
        assert!((a - b).abs() <= 1e-6 * a.abs(), "averaged gradient norms {g1:?} vs {g2:?}");
    }
    // validation: 2 frames per rank, counts summed over ranks = 4 frames on one rank
    let (v1, v2) = (column(&one.join("val_log.csv"), "iou"), column(&two.join("val_log.csv"), "iou"));
    assert_eq!(v1.len(), 1);
    assert!((v1[0] - v2[0]).abs() < 1e-4, "validation IoU reduced over ranks: {v1:?} vs {v2:?}");
    let ckpt = Checkpoint::read(&two.join("last.safetensors"), "vae").unwrap();
    assert_eq!(ckpt.metadata.get("world_size").map(String::as_str), Some("2"));

    // LDM on the VAE's latents
    let vae = one.join("last.safetensors");
    let ldm_exe = example("train_ldm");
    let mut args = strings(&common_args);
    args.extend(strings(&cpu));
    args.extend(["--vae".into(), vae.to_str().unwrap().into()]);
    let (one, two) = one_vs_two(&ldm_exe, &args, &dir.path().join("ldm"));
    let (g1, g2) = (column(&one.join("train_log.csv"), "grad_norm"), column(&two.join("train_log.csv"), "grad_norm"));
    assert_eq!((g1.len(), g2.len()), (4, 4));
    for (a, b) in g1.iter().zip(&g2) {
        assert!((a - b).abs() <= 1e-6 * a.abs(), "averaged gradient norms {g1:?} vs {g2:?}");
    }
    let (rel, noise) = compare_runs(&one.join("last.safetensors"), &two.join("last.safetensors"), "ldm");
    assert!(rel < 1e-5 && noise <= 4e-4 * 1.01, "LDM weights: relative difference {rel:e}, noise-only {noise:e}");

    // resuming mid-epoch with another world size is refused, naming both
    let mid = dir.path().join("mid");
    let mut a = strings(&common_args);
    a.extend(strings(&cpu));
    a.extend(strings(&["--grad-accum", "2", "--max-steps", "1"]));
    let children = spawn_ranks(&vae_exe, &a, &[mid.clone(), mid.clone()], free_port());
    for c in children {
        succeed(c.wait_with_output().unwrap(), "2 ranks, 1 step");
    }
    let out = Command::new(&vae_exe)
        .args(strings(&cpu))
        .args(["--dataset-dir", root, "--resume"])
        .arg(mid.join("last.safetensors"))
        .arg("--out")
        .arg(&mid)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("saved by 2 rank(s) mid-epoch") && err.contains("resuming with 1"),
        "{err}"
    );
}

fn torchrun() -> PathBuf {
    // the PyTorch install scripts/libtorch.sh made, next to the libtorch radvox links
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".libtorch").canonicalize().unwrap();
    let venv = lib.ancestors().find(|p| p.join("bin/torchrun").exists()).expect("torchrun next to libtorch");
    venv.join("bin/torchrun")
}

#[test]
fn torchrun_launches_single_node_and_two_node_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = sim_root(&dir.path().join("sim"));
    let exe = example("train_vae");
    let train = |out: &Path| -> Vec<String> {
        let mut a = strings(&["--dataset-dir", root.to_str().unwrap(), "--resample", "8,32,16", "--epochs", "1"]);
        a.extend(strings(&["--batch-size", "1", "--grad-accum", "2", "--device", "cpu", "--no-amp", "--no-progress"]));
        a.extend(["--out".into(), out.to_str().unwrap().into()]);
        a
    };
    // single node, 2 processes
    let single = dir.path().join("single");
    let out = Command::new(torchrun())
        .args(["--no-python", "--nproc-per-node", "2", "--master-port", &free_port().to_string()])
        .arg(&exe)
        .args(train(&single))
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    succeed(out, "torchrun --nproc-per-node 2");
    assert_eq!(column(&single.join("train_log.csv"), "step"), vec![1.0, 2.0, 3.0, 4.0], "16 frames / (2 ranks x 2)");

    // two "nodes" on localhost, one process each
    let nodes = dir.path().join("nodes");
    let port = free_port().to_string();
    let children: Vec<Child> = (0..2)
        .map(|node| {
            Command::new(torchrun())
                .args(["--no-python", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", &node.to_string()])
                .args(["--master-addr", "127.0.0.1", "--master-port", &port])
                .arg(&exe)
                .args(train(&nodes))
                .env("OMP_NUM_THREADS", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (n, c) in children.into_iter().enumerate() {
        succeed(c.wait_with_output().unwrap(), &format!("torchrun node {n}"));
    }
    // the same world (2 ranks, same seed): the same run as on one node
    let (rel, _) = compare_runs(&single.join("last.safetensors"), &nodes.join("last.safetensors"), "vae");
    assert!(rel < 1e-6, "one node or two, the same 2-rank run: {rel:e}");
}

#[test]
fn a_killed_rank_stops_the_other_with_an_error_and_no_half_written_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = sim_root(&dir.path().join("sim"));
    let exe = example("train_vae");
    let out = dir.path().join("run");
    let mut args = strings(&["--dataset-dir", root.to_str().unwrap(), "--resample", "8,32,16", "--epochs", "50"]);
    args.extend(strings(&["--batch-size", "1", "--grad-accum", "1", "--save-every-steps", "1"]));
    args.extend(strings(&["--device", "cpu", "--no-amp", "--no-progress", "--dist-timeout", "60"]));
    let mut children = spawn_ranks(&exe, &args, &[out.clone(), out.clone()], free_port());
    // wait until training runs (rank 0 logged steps), then kill rank 1
    let t0 = Instant::now();
    while column_len(&out.join("train_log.csv")) < 3 {
        assert!(t0.elapsed() < Duration::from_secs(120), "training did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    children[1].kill().unwrap();
    children[1].wait().unwrap();
    let killed = Instant::now();
    let rank0 = children.remove(0);
    let result = rank0.wait_with_output().unwrap();
    let waited = killed.elapsed();
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "rank 0 must fail: {err}");
    assert!(waited < Duration::from_secs(60), "rank 0 stopped {waited:?} after its peer died (timeout 60 s)");
    assert!(err.contains("rank 0 of 2") && err.contains("a peer rank died"), "{err}");
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    // the checkpoint on disk is whole (every tensor and its checksum verify)
    Checkpoint::read(&out.join("last.safetensors"), "vae").unwrap();
}

fn column_len(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count().saturating_sub(1)).unwrap_or(0)
}

/// Rank side of `gradient_buckets_pack_reduce_and_unpack_every_shape`
/// (this test binary re-run with torchrun's variables set).
fn bucket_rank() {
    use radvox::dist::{Dist, GradBuckets, ReduceOp};
    use tch::{Kind, Tensor};
    let dist = Dist::from_env(Duration::from_secs(60), false).unwrap();
    let r = dist.rank() as f64;
    // rank r holds (r + 1) * base: the average is 1.5 * base
    let sizes = [10i64, 3000, 7, 500, 600];
    let base: Vec<Tensor> =
        sizes.iter().enumerate().map(|(i, &n)| Tensor::arange(n, (Kind::Float, tch::Device::Cpu)) + i as f64).collect();
    let grads: Vec<Tensor> = base.iter().map(|b| b * (r + 1.0)).collect();
    // 4 KiB buckets (1024 floats): [10], 3000 alone, [7, 500], [600]
    let done = GradBuckets::new(4096).average(&dist, &grads).unwrap();
    assert_eq!(done.calls, 4);
    assert_eq!(done.bytes, sizes.iter().sum::<i64>() as u64 * 4);
    for (g, b) in grads.iter().zip(&base) {
        assert!(g.allclose(&(b * 1.5), 1e-6, 1e-6, false), "averaged in place");
    }
    let w = Tensor::full([3], r, (Kind::Float, tch::Device::Cpu));
    dist.broadcast(&w, 0).unwrap();
    assert_eq!(Vec::<f32>::try_from(&w).unwrap(), vec![0.0; 3], "rank 0's values everywhere");
    let mut v = [r + 1.0, -r];
    dist.all_reduce_f64(&mut v, ReduceOp::Sum).unwrap();
    assert_eq!(v, [3.0, -1.0]);
    let mut m = [r];
    dist.all_reduce_f64(&mut m, ReduceOp::Max).unwrap();
    assert_eq!(m, [1.0]);
    dist.barrier().unwrap();
}

#[test]
fn gradient_buckets_pack_reduce_and_unpack_every_shape() {
    if std::env::var("RADVOX_BUCKET_RANK").is_ok() {
        return bucket_rank();
    }
    let port = free_port();
    let children: Vec<Child> = (0..2)
        .map(|rank| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "gradient_buckets_pack_reduce_and_unpack_every_shape", "--nocapture"])
                .env("RADVOX_BUCKET_RANK", "1")
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (r, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "rank {r}: {text}");
    }
}

#[test]
fn a_rank_whose_peers_never_arrive_stops_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let exe = example("train_vae");
    let mini = common::mini();
    let common_args = ["--dataset-dir", mini.to_str().unwrap(), "--device", "cpu", "--no-progress"];
    // rank 0 hosts the store and waits for rank 1, which never comes;
    // rank 1 of another world finds no store to connect to
    for rank in ["0", "1"] {
        let t0 = Instant::now();
        let out = Command::new(&exe)
            .args(common_args)
            .args(["--dist-timeout", "3", "--out"])
            .arg(dir.path().join(rank))
            .env("RANK", rank)
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", free_port().to_string())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "rank {rank} alone must fail");
        assert!(t0.elapsed() < Duration::from_secs(60), "rank {rank} gave up after {:?} (timeout 3 s)", t0.elapsed());
        assert!(err.contains(&format!("rank {rank} of 2 could not join the process group")), "{err}");
        assert!(!dir.path().join(rank).join("last.safetensors").exists(), "nothing written");
    }
}

/// Two ranks started with `args` plus each rank's own `extra`; both outputs.
fn two_ranks_each(exe: &Path, args: &[String], extra: [Vec<String>; 2], out: &Path) -> [Output; 2] {
    let port = free_port().to_string();
    let children: Vec<Child> = (0..2)
        .map(|rank| {
            Command::new(exe)
                .args(args)
                .args(&extra[rank])
                .arg("--out")
                .arg(out)
                .envs([("RANK", rank.to_string()), ("LOCAL_RANK", rank.to_string())])
                .envs([
                    ("WORLD_SIZE", "2"),
                    ("MASTER_ADDR", "127.0.0.1"),
                    ("MASTER_PORT", &port),
                    ("OMP_NUM_THREADS", "1"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    [outs[0].clone(), outs[1].clone()]
}

// Issue 25, cases 2 and 3: ranks given another learning rate, or a copy of
// the data with a frame fewer, trained together with rc 0.
#[test]
fn ranks_that_disagree_on_recipe_or_data_all_stop_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = sim_root(&dir.path().join("sim"));
    let exe = example("train_vae");
    let mut args = strings(&["--resample", "8,32,16", "--epochs", "1", "--batch-size", "1", "--grad-accum", "1"]);
    args.extend(strings(&["--device", "cpu", "--no-amp", "--no-progress", "--dist-timeout", "60"]));
    let with_root = |r: &Path, more: &[&str]| {
        let mut v = strings(&["--dataset-dir", r.to_str().unwrap()]);
        v.extend(strings(more));
        v
    };
    let check = |outs: &[Output; 2], field: &str, values: [&str; 2]| {
        for (rank, o) in outs.iter().enumerate() {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "rank {rank} must stop: {err}");
            assert!(err.contains(&format!("rank 1 disagrees with rank 0 on {field}")), "rank {rank}: {err}");
            assert!(err.contains(values[0]) && err.contains(values[1]), "rank {rank}: {err}");
        }
    };
    let lr = dir.path().join("lr");
    let outs =
        two_ranks_each(&exe, &args, [with_root(&root, &["--lr", "0.001"]), with_root(&root, &["--lr", "0.05"])], &lr);
    check(&outs, "recipe.lr", ["0.001", "0.05"]);
    assert!(!lr.join("last.safetensors").exists(), "no checkpoint from a refused run");

    // rank 1 reads a copy of the root with one training frame fewer
    let copy = dir.path().join("copy");
    common::copy_tree(&root, &copy);
    let mut scenes: Vec<PathBuf> = std::fs::read_dir(&copy).unwrap().map(|e| e.unwrap().path()).collect();
    scenes.sort();
    for m in ["radar_voxel", "target_voxel", "lidar_voxel"] {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(scenes[0].join(m)).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
        files.sort();
        if let Some(f) = files.first() {
            std::fs::remove_file(f).unwrap();
        }
    }
    let data = dir.path().join("data");
    let outs = two_ranks_each(&exe, &args, [with_root(&root, &[]), with_root(&copy, &[])], &data);
    check(&outs, "train data", ["16 frames", "15 frames"]);
}

//! The prefetching loader on the numpy fixtures: contents, order, bounded
//! and recycled memory, errors through the queue, prompt shutdown, sharding.
#![allow(clippy::result_large_err)]

use std::time::{Duration, Instant};

use radvox::data::augment::{Augmentation, VoxelAugmentation};
use radvox::data::loader::PoolStats;
use radvox::data::DataError;
use radvox::{Dataset, DatasetConfig, Loader, LoaderConfig, Modality, Split};
use tch::{Kind, Tensor};

mod common;
use common::{copy_tree, mini};

fn dataset(split: Split) -> Dataset {
    Dataset::open(mini(), split, &DatasetConfig::default()).unwrap()
}

fn loader(split: Split, config: LoaderConfig) -> Loader {
    Loader::new(dataset(split), config).unwrap()
}

fn bits(t: &Tensor) -> Vec<u16> {
    let t = t.contiguous();
    let n = t.numel();
    let mut v = vec![half::f16::ZERO; n];
    t.copy_data(&mut v, n);
    v.into_iter().map(|x| x.to_bits()).collect()
}

#[test]
fn batches_hold_the_frames_in_order() {
    let l = loader(Split::All, LoaderConfig { batch_size: 4, ..Default::default() });
    let ds = dataset(Split::All);
    let batches: Vec<_> = l.epoch(0).map(Result::unwrap).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].target.size(), [4, 4, 32, 64, 32]);
    assert_eq!(batches[1].target.size(), [2, 4, 32, 64, 32], "last partial batch kept");
    assert_eq!(batches[0].target.kind(), Kind::Half);
    let mut k = 0;
    for b in &batches {
        for s in 0..b.ids.len() {
            assert_eq!(b.ids[s], ds.frames()[k].id);
            for (t, m) in [(&b.target, Modality::Target), (&b.radar, Modality::Radar)] {
                let want: Vec<u16> = ds.read(k, m).unwrap().data.iter().map(|v| v.to_bits()).collect();
                assert!(bits(&t.get(s as i64)) == want, "frame {k} {m:?} differs");
            }
            k += 1;
        }
    }
    let dropped = loader(Split::All, LoaderConfig { batch_size: 4, drop_last: true, ..Default::default() });
    assert_eq!(dropped.epoch(0).count(), 1);
}

#[test]
fn shuffle_is_seeded_and_new_each_epoch() {
    let cfg = LoaderConfig { shuffle: true, seed: 7, ..Default::default() };
    let a = loader(Split::All, cfg.clone());
    let b = loader(Split::All, cfg.clone());
    assert_eq!(a.epoch_order(0), b.epoch_order(0));
    let mut sorted = a.epoch_order(0);
    sorted.sort();
    assert_eq!(sorted, (0..6).collect::<Vec<_>>());
    let orders: std::collections::HashSet<Vec<usize>> = (0..6).map(|e| a.epoch_order(e)).collect();
    assert!(orders.len() >= 4, "epochs should reshuffle: {orders:?}");
    let other = loader(Split::All, LoaderConfig { seed: 8, ..cfg });
    assert!((0..4).any(|e| other.epoch_order(e) != a.epoch_order(e)));
    let ids: Vec<usize> = a.epoch(3).flat_map(|b| b.unwrap().indices.clone()).collect();
    assert_eq!(ids, a.epoch_order(3));
}

fn augmented() -> Augmentation {
    let voxel = VoxelAugmentation { enable_rotate: false, ..VoxelAugmentation::default() };
    Augmentation { voxel: Some(voxel), cutout: Some(Default::default()), mixup: Some(Default::default()) }
}

#[test]
fn order_and_draws_do_not_depend_on_worker_count() {
    let run = |workers: usize| -> Vec<(Vec<usize>, Vec<u16>, Vec<u16>)> {
        let cfg = LoaderConfig {
            batch_size: 2,
            shuffle: true,
            seed: 3,
            num_workers: workers,
            augmentation: Some(augmented()),
            ..Default::default()
        };
        let l = loader(Split::Train, cfg);
        (0..2)
            .flat_map(|e| {
                l.epoch(e)
                    .map(|b| b.unwrap())
                    .map(|b| (b.indices.clone(), bits(&b.target), bits(&b.radar)))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let one = run(1);
    assert_eq!(one, run(3));
    // Augmentation really ran (train split): the radar differs from the raw frames somewhere.
    let raw = loader(Split::Train, LoaderConfig { batch_size: 2, shuffle: true, seed: 3, ..Default::default() });
    let plain: Vec<Vec<u16>> = raw.epoch(0).map(|b| bits(&b.unwrap().radar)).collect();
    assert!(plain.iter().zip(&one).any(|(p, a)| p != &a.2));
}

#[test]
fn augmentation_only_on_the_train_split() {
    let cfg = LoaderConfig { batch_size: 2, augmentation: Some(augmented()), ..Default::default() };
    let aug = loader(Split::Val, cfg);
    let plain = loader(Split::Val, LoaderConfig { batch_size: 2, ..Default::default() });
    let a: Vec<_> = aug.epoch(0).map(|b| bits(&b.unwrap().radar)).collect();
    let p: Vec<_> = plain.epoch(0).map(|b| bits(&b.unwrap().radar)).collect();
    assert_eq!(a, p);
}

#[test]
fn at_most_prefetch_plus_workers_batches_exist() {
    for (prefetch, workers) in [(1, 1), (2, 1), (1, 2), (4, 2)] {
        let cfg = LoaderConfig { prefetch, num_workers: workers, ..Default::default() };
        let l = loader(Split::All, cfg);
        for e in 0..2 {
            for b in l.epoch(e) {
                let b = b.unwrap();
                std::thread::sleep(Duration::from_millis(30)); // slow consumer: workers run ahead
                let s = l.pool_stats();
                assert!(s.outstanding <= prefetch + workers, "{s:?}");
                drop(b);
            }
        }
        let s: PoolStats = l.pool_stats();
        assert_eq!(s.capacity, prefetch + workers);
        assert!(s.max_outstanding <= s.capacity, "{s:?}");
        assert_eq!(s.max_outstanding, s.capacity.min(6), "the queue fills up while the consumer sleeps: {s:?}");
        // Recycled: 12 batches from at most `capacity` allocations.
        assert!(s.allocated <= s.capacity, "{s:?}");
        assert_eq!(s.reused + s.allocated, 12, "{s:?}");
        assert_eq!(s.outstanding, 0);
    }
}

#[test]
fn a_kept_view_is_never_overwritten() {
    let l = loader(Split::All, LoaderConfig { prefetch: 1, ..Default::default() });
    let mut epoch = l.epoch(0);
    let first = epoch.next().unwrap().unwrap();
    let kept = first.target.shallow_clone();
    let snapshot = bits(&kept);
    drop(first);
    for b in epoch {
        drop(b.unwrap());
    }
    assert!(bits(&kept) == snapshot, "pool reused memory a caller still referenced");
    assert_eq!(l.pool_stats().escaped, 1);
}

#[test]
fn holding_every_buffer_is_an_error_not_a_hang() {
    let l = loader(Split::All, LoaderConfig { prefetch: 1, num_workers: 1, ..Default::default() });
    let mut epoch = l.epoch(0);
    let held: Vec<_> = (0..2).map(|_| epoch.next().unwrap().unwrap()).collect();
    assert!(matches!(epoch.next(), Some(Err(DataError::AllBuffersHeld(2)))));
    drop(held);
}

#[test]
fn decode_errors_travel_through_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&mini(), tmp.path());
    let ds = Dataset::open(tmp.path(), Split::All, &DatasetConfig::default()).unwrap();
    // Corrupt frame 2's target after the dataset opened it.
    let victim = ds.frames()[2].target.path().to_path_buf();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let l = Loader::new(ds, LoaderConfig { num_workers: 2, ..Default::default() }).unwrap();
    // Keep only ids: holding the batches would hold every buffer.
    let results: Vec<_> = l.epoch(0).map(|r| r.map(|b| b.ids.clone())).collect();
    assert_eq!(results.len(), 6);
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (2, Err(e @ DataError::Batch { batch: 2, .. })) => {
                assert!(e.to_string().contains(victim.to_str().unwrap()), "{e}")
            }
            (2, other) => panic!("batch 2 should fail: {other:?}"),
            (_, r) => assert!(r.is_ok(), "batch {i}: {r:?}"),
        }
    }
}

#[test]
fn a_worker_panic_is_an_error_not_a_hang() {
    let cfg = LoaderConfig { num_workers: 2, fault_panic_on_frame: Some(3), ..Default::default() };
    let l = loader(Split::All, cfg);
    let results: Vec<_> = l.epoch(0).map(|r| r.map(|b| b.ids.clone())).collect();
    assert_eq!(results.len(), 6);
    match &results[3] {
        Err(DataError::WorkerPanic { batch: 3, message }) => assert!(message.contains("injected fault at frame 3")),
        other => panic!("{other:?}"),
    }
    assert!(results.iter().enumerate().all(|(i, r)| i == 3 || r.is_ok()));
    assert_eq!(l.pool_stats().outstanding, 0);
}

#[test]
fn dropping_mid_epoch_stops_workers_promptly() {
    let l = loader(Split::All, LoaderConfig { num_workers: 2, prefetch: 2, ..Default::default() });
    for _ in 0..3 {
        let mut epoch = l.epoch(0);
        let first = epoch.next().unwrap().unwrap();
        drop(first);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = Instant::now();
        std::thread::spawn(move || {
            drop(epoch);
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("dropping the epoch hung");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(l.pool_stats().outstanding, 0, "buffers lost: {:?}", l.pool_stats());
    }
    drop(l); // and the loader itself, with no epoch running
}

#[test]
fn ranks_get_disjoint_equal_slices() {
    let n = dataset(Split::All).len();
    for world in [2, 4, 5] {
        let orders: Vec<Vec<usize>> = (0..world)
            .map(|rank| {
                let cfg = LoaderConfig { shuffle: true, seed: 11, rank, world_size: world, ..Default::default() };
                loader(Split::All, cfg).epoch_order(2)
            })
            .collect();
        let per = n.div_ceil(world);
        assert!(orders.iter().all(|o| o.len() == per), "world {world}: {orders:?}");
        // Positions are disjoint: together they are the padded permutation.
        let full = loader(Split::All, LoaderConfig { shuffle: true, seed: 11, ..Default::default() }).epoch_order(2);
        for (rank, o) in orders.iter().enumerate() {
            for (k, &i) in o.iter().enumerate() {
                assert_eq!(i, full[(k * world + rank) % n]);
            }
        }
        let mut all: Vec<usize> = orders.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "every frame is seen by some rank");
    }
    assert!(matches!(
        Loader::new(dataset(Split::All), LoaderConfig { rank: 2, world_size: 2, ..Default::default() }),
        Err(DataError::Config(_))
    ));
}

#[test]
fn targets_only_when_radar_is_not_needed() {
    let l = loader(Split::All, LoaderConfig { batch_size: 4, load_radar: false, ..Default::default() });
    let full = loader(Split::All, LoaderConfig { batch_size: 4, ..Default::default() });
    assert_eq!(l.batch_bytes() * 2, full.batch_bytes());
    let (a, b): (Vec<_>, Vec<_>) =
        (l.epoch(0).map(|b| b.unwrap()).collect(), full.epoch(0).map(|b| b.unwrap()).collect());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.radar.numel(), 0);
        assert!(bits(&x.target) == bits(&y.target));
    }
    let aug = Augmentation { cutout: Some(Default::default()), ..Default::default() };
    let cfg = LoaderConfig { load_radar: false, augmentation: Some(aug), ..Default::default() };
    assert!(matches!(Loader::new(dataset(Split::Train), cfg), Err(DataError::Config(_))));
}

#[test]
fn bad_augmentation_for_the_grid_is_refused() {
    // The fixture grid pads to H x W = 64 x 32: 90-degree rotations would change its shape.
    let aug = Augmentation { voxel: Some(VoxelAugmentation::default()), ..Default::default() };
    let err =
        Loader::new(dataset(Split::Train), LoaderConfig { augmentation: Some(aug), ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("64 x 32"), "{err}");
    let mixup = Augmentation { mixup: Some(Default::default()), ..Default::default() };
    let err = Loader::new(dataset(Split::Train), LoaderConfig { augmentation: Some(mixup), ..Default::default() })
        .unwrap_err();
    assert!(err.to_string().contains("batch_size >= 2"), "{err}");
}

/// The sparse loader: every frame's occupied voxels in the sampler's seeded
/// order with their batch index, flips (as an augmentation) mirroring the
/// sites over the padded grid, and what sites or the grid cannot take
/// (mixup; quarter turns of the fixtures' 64 x 32 plane) refused by name.
#[test]
fn the_sparse_loader_batches_sites_in_order_and_flips_them() {
    use radvox::data::loader::{SparseLoader, SparseLoaderConfig};
    use std::collections::BTreeSet;
    let ds = || Dataset::open(mini(), Split::Train, &DatasetConfig::default()).unwrap();
    let cfg = SparseLoaderConfig { batch_size: 2, shuffle: true, seed: 3, num_workers: 2, ..Default::default() };
    let loader = SparseLoader::new(ds(), cfg.clone()).unwrap();
    let epoch = |l: &SparseLoader| l.epoch_from(1, 0).map(|b| b.unwrap()).collect::<Vec<_>>();
    let a = epoch(&loader);
    assert_eq!(a, epoch(&loader), "the same seed and epoch give the same batches");
    assert_eq!(a.len(), loader.len());
    let layout = ds().config().layout;
    for batch in &a {
        for (b, &i) in batch.indices.iter().enumerate() {
            let own = ds().file(i, Modality::Target).unwrap().read_sites(layout).unwrap();
            let got: BTreeSet<[i64; 4]> = batch.target.sites.iter().filter(|s| s[0] == b as i64).copied().collect();
            assert_eq!(got, own.batched(b as i64).collect::<BTreeSet<_>>(), "frame {i}");
        }
    }
    let off = VoxelAugmentation {
        enable_rotate: false,
        enable_noise: false,
        enable_dropout: false,
        enable_intensity_jitter: false,
        enable_doppler_jitter: false,
        ..Default::default()
    };
    let flips = Augmentation { voxel: Some(VoxelAugmentation { flip_prob: 1.0, ..off.clone() }), ..Default::default() };
    let flipped = SparseLoader::new(ds(), SparseLoaderConfig { augmentation: Some(flips), ..cfg.clone() }).unwrap();
    for (plain, flip) in a.iter().zip(epoch(&flipped)) {
        let [_, h, w] = plain.grid.map(|v| v as i64);
        let sites: BTreeSet<[i64; 4]> = flip.target.sites.iter().copied().collect();
        for b in 0..plain.ids.len() as i64 {
            let mine: BTreeSet<[i64; 4]> = sites.iter().filter(|s| s[0] == b).copied().collect();
            let of = |f: &dyn Fn([i64; 4]) -> [i64; 4]| -> BTreeSet<[i64; 4]> {
                plain.target.sites.iter().filter(|s| s[0] == b).map(|&s| f(s)).collect()
            };
            let along_w = of(&|[b, z, y, x]| [b, z, y, w - 1 - x]);
            let along_h = of(&|[b, z, y, x]| [b, z, h - 1 - y, x]);
            assert!(mine == along_w || mine == along_h, "frame {b} of {:?} is not a mirror image", plain.ids);
        }
    }
    let refused = |aug: Augmentation| {
        SparseLoader::new(ds(), SparseLoaderConfig { augmentation: Some(aug), ..cfg.clone() })
            .err()
            .unwrap()
            .to_string()
    };
    let turns = Augmentation { voxel: Some(VoxelAugmentation { enable_rotate: true, ..off }), ..Default::default() };
    assert!(refused(turns).contains("rotate_prob"));
    assert!(refused(Augmentation { mixup: Some(Default::default()), ..Default::default() }).contains("mixup"));
}

"""radvox's Python package against numpy's reference values and its own rules.

Run by `scripts/test.sh` (after `scripts/python.sh` installs the package):
`.venv/bin/python -m pytest python/tests` (this checkout's own environment).
"""
import gc
import json
import os
import pathlib

import numpy as np
import pytest
import torch

import radvox

REPO = pathlib.Path(__file__).resolve().parents[2]
MINI = REPO / "fixtures" / "ntu_mini"
EXPECTED = json.loads((REPO / "fixtures" / "expected.json").read_text())


def f16_bits(t):
    return t.contiguous().view(torch.int16).numpy().view(np.uint16).reshape(-1)


def assert_matches(t, want):
    """Every element of an f16 tensor equals numpy's (flat index, bits) record."""
    assert list(t.shape) == want["shape"]
    assert t.dtype == torch.float16
    bits = f16_bits(t)
    expected = np.zeros_like(bits)
    for i, b in want["nonzero"]:
        expected[i] = b
    # -0.0 and 0.0 are both "zero" in numpy's record (it keeps magnitude bits)
    np.testing.assert_array_equal(bits & 0x7FFF != 0, expected & 0x7FFF != 0)
    nz = expected & 0x7FFF != 0
    np.testing.assert_array_equal(bits[nz], expected[nz])


@pytest.mark.parametrize("layout", ["pad", "resample"])
def test_frames_equal_numpys_bit_for_bit(layout):
    resample = EXPECTED["resample"] if layout == "resample" else None
    ds = radvox.Dataset(MINI, "all", resample=resample)
    ids = [f"{s}/{t}" for s, t in ds.ids]
    assert ids == sorted(EXPECTED["frames"])
    for i, fid in enumerate(ids):
        target, radar = ds[i]
        assert_matches(target, EXPECTED["frames"][fid]["target"][layout])
        assert_matches(radar, EXPECTED["frames"][fid]["radar"][layout])
    assert ds.shape(0) == tuple(EXPECTED["frames"][ids[0]]["target"][layout]["shape"])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_loader_batches_equal_the_reader_and_shard_over_ranks():
    ds = radvox.Dataset(MINI, "all")
    loader = radvox.Loader(ds, batch_size=2, shuffle=True, seed=3, num_workers=2, prefetch=2)
    order = loader.order(0)
    seen = []
    for target, radar, ids in loader:
        assert target.dtype == torch.float16 and target.shape[1:] == (4, 32, 64, 32)
        for k, fid in enumerate(ids):
            i = [f"{s}/{t}" for s, t in ds.ids].index(fid)
            want_t, want_r = ds[i]
            assert torch.equal(target[k], want_t) and torch.equal(radar[k], want_r)
            seen.append(i)
    assert seen == order and sorted(seen) == list(range(len(ds)))
    shards = [radvox.Loader(ds, rank=r, world_size=2, shuffle=True, seed=3).order(0) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(len(ds)))


def test_a_kept_batch_is_never_overwritten():
    ds = radvox.Dataset(MINI, "all")
    loader = radvox.Loader(ds, batch_size=1, num_workers=1, prefetch=1)
    kept, copy = None, None
    for target, _radar, _ids in loader:
        if kept is None:
            kept, copy = target, target.clone()
    # the loop ran on: its buffers were recycled, but never the kept one
    assert torch.equal(kept, copy)
    stats = loader.pool_stats()
    assert stats["escaped"] >= 1, stats  # returned while shared: parked, not reused
    # the kept pair is out of circulation; the others were taken back once freed
    assert stats["allocated"] <= stats["capacity"] + 2, stats


def test_buffers_are_reused_when_not_kept():
    ds = radvox.Dataset(MINI, "all")
    loader = radvox.Loader(ds, batch_size=1, num_workers=1, prefetch=1)
    for epoch in range(2):
        for target, radar, ids in loader:
            del target, radar
    stats = loader.pool_stats()
    # the loop's variables hold one batch while the pool fills the prefetch: one pair more
    assert stats["reused"] > 0 and stats["allocated"] <= stats["capacity"] + 1, stats
    assert stats["outstanding"] == 0, stats


def test_a_plain_loop_recycles_its_buffers_and_a_list_keeps_every_batch():
    ds = radvox.Dataset(MINI, "all")
    loader = radvox.Loader(ds, batch_size=1, num_workers=1, prefetch=1)
    for _ in range(3):
        for target, radar, ids in loader:  # the previous batch is freed on rebinding
            pass
    stats = loader.pool_stats()
    assert stats["allocated"] <= stats["capacity"] + 1, stats  # + the batch the loop holds
    assert stats["reclaimed"] > 0, stats
    kept = list(loader)  # every batch kept: the pool allocates rather than wait forever
    assert len(kept) == len(ds)
    for (target, _, ids), i in zip(kept, loader.order(3)):  # none was overwritten
        assert ids == ["/".join(ds.ids[i])] and torch.equal(target[0], ds[i][0])


def threads():
    return len(os.listdir("/proc/self/task"))


def test_iteration_stopped_early_releases_everything():
    ds = radvox.Dataset(MINI, "all")
    loader = radvox.Loader(ds, batch_size=1, num_workers=2, prefetch=2)
    before = threads()
    it = iter(loader)
    target, radar, _ = next(it)
    assert threads() >= before + 2, "workers run"
    it.close()  # what `break` does to the loop's generator
    del target, radar, it
    gc.collect()
    assert threads() == before, "workers stopped"
    assert loader.pool_stats()["outstanding"] == 0, loader.pool_stats()


def test_bad_paths_and_configs_raise_with_the_file_or_key_named():
    with pytest.raises(ValueError, match="no_such_root"):
        radvox.Dataset("/no_such_root", "train")
    with pytest.raises(ValueError, match="unknown split"):
        radvox.Dataset(MINI, "test")
    ds = radvox.Dataset(MINI, "all")
    with pytest.raises(ValueError, match="flip_prob"):  # did-you-mean
        radvox.Loader(ds, augmentation={"voxel": {"flip_probb": 0.5}})
    with pytest.raises(ValueError, match="batch"):
        radvox.Loader(ds, batch_size=0)
    bad = REPO / "fixtures" / "bad"
    with pytest.raises(ValueError, match="radar_voxel/000000.npz"):
        radvox.Dataset(bad / "mismatch", "all")
    with pytest.raises(ValueError, match="precision"):
        radvox.memory.plan(precision="f16")


def test_unreadable_frames_raise_naming_the_file(tmp_path):
    import shutil

    root = tmp_path / "ntu"
    shutil.copytree(MINI, root)
    frame = root / "alpha" / "target_voxel" / "000000.npz"
    frame.unlink()
    frame.mkdir()  # a directory where the frame should be
    with pytest.raises(ValueError, match="alpha/target_voxel/000000.npz: not a regular file"):
        radvox.Dataset(root, "all")
    frame.rmdir()
    frame.symlink_to(tmp_path / "gone.npz")  # a dangling link: the open fails
    with pytest.raises(OSError, match="alpha/target_voxel/000000.npz"):
        radvox.Dataset(root, "all")[0]


def test_augmentation_dict_reaches_the_loader():
    ds = radvox.Dataset(MINI, "train")  # augmentation applies to the train split
    off = {k: False for k in ["enable_rotate", "enable_noise", "enable_dropout", "enable_intensity_jitter"]}
    aug = {"voxel": {"enable_flip": True, "flip_prob": 1.0, **off}}
    plain = next(iter(radvox.Loader(ds, batch_size=1)))[0]
    flipped = next(iter(radvox.Loader(ds, batch_size=1, augmentation=aug)))[0]
    assert not torch.equal(plain, flipped)
    assert torch.equal(plain.sum(), flipped.sum()), "a flip moves voxels, it does not change them"


def test_voxelizer_equals_the_numpy_reference():
    d = REPO / "fixtures" / "voxelize"
    points = np.load(d / "frame0_radar.npy")
    coords, features, stats = radvox.voxelize(points)
    np.testing.assert_array_equal(coords, np.load(d / "frame0_radar_coords.npy").astype(np.int64))
    want = np.load(d / "frame0_radar_features.npy").astype(np.float32)
    np.testing.assert_array_equal(features.view(np.uint32), want.view(np.uint32))
    assert stats["points"] == len(points) and stats["occupied"] == len(coords)
    with pytest.raises(ValueError, match="shape"):
        radvox.voxelize(np.zeros(5, np.float32))


def test_memory_plan_and_fit_are_dicts_of_bytes():
    p = radvox.memory.plan("ultra_lightweight", grid=(96, 608, 224), precision="amp", checkpointing="block")
    parts = ["params", "grads", "optimizer", "inputs", "amp_weights", "activations", "transient", "buckets", "runtime"]
    assert p["total"] == sum(p[k] for k in parts)  # the loader is host memory on CUDA
    assert p["parameter_count"] == 694788
    f = radvox.memory.fit(8.0, "seed_baseline", grid=(96, 608, 224))
    assert not f["fits"] and f["changes"] and f["suggested"]["total"] <= 8 * 2**30


def test_sparse_presets_are_planned_from_a_roots_site_counts():
    root = REPO / "fixtures" / "ntu_mini"
    small = radvox.memory.plan("sparse_small", dataset_dir=root, backend="cuda")
    wide = radvox.memory.plan("sparse_wide", dataset_dir=root, backend="cuda")
    assert small["model"] == "sparse_small" and 0 < small["total"] < wide["total"]
    assert radvox.memory.plan("sparse_small", dataset_dir=root, batch=4)["activations"] > small["activations"]
    assert radvox.memory.fit(24.0, "sparse_base", dataset_dir=root)["fits"]
    with pytest.raises(ValueError, match="dataset_dir"):
        radvox.memory.plan("sparse_small")
    with pytest.raises(ValueError, match="sparse presets"):
        radvox.memory.plan("ultra_lightweight", dataset_dir=root)


def test_the_example_trains_a_vae_in_plain_pytorch():
    import importlib.util

    path = REPO / "python" / "examples" / "train_vae_torch.py"
    spec = importlib.util.spec_from_file_location("train_vae_torch", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    losses = example.main(["--dataset-dir", str(MINI), "--resample", "4,8,8", "--epochs", "12", "--batch-size", "1"])
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0], losses


def test_the_package_is_this_checkouts_own_and_the_shared_env_holds_none():
    """Issue 25, case 6: python.sh installed radvox editable into the shared
    PyTorch environment, so a second clone's test command re-pointed every
    checkout's `import radvox` at itself (and deleting it broke the first)."""
    import subprocess
    import sys

    assert pathlib.Path(radvox.__file__).resolve().is_relative_to(REPO)
    assert pathlib.Path(sys.prefix).resolve() == (REPO / ".venv").resolve()
    shared = (REPO / ".venv-python").read_text().split('"')[1]
    probe = subprocess.run([shared, "-c", "import radvox"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'radvox'" in probe.stderr, probe.stderr


def test_the_map_equals_the_numpy_reference_and_answers_queries(tmp_path):
    """radvox.map.Map against fixtures/map/make_map_reference.py's cases."""
    cases = json.loads((REPO / "fixtures" / "map" / "map_reference.json").read_text())["cases"]
    for case in cases:
        c = case["config"]
        m = radvox.map.Map(voxel=c["voxel"], model=c["model"], decay_s=c["decay_s"], max_range=c["max_range"],
                           window=None)
        for f in case["frames"]:
            s = m.insert(np.array(f["points"]), f["origin"], f["time"], probs=np.array(f["probs"]),
                         reliability=f["reliability"])
            assert s["occupied"] + s["free"] > 0
        want = case["expected"]
        keys = np.array(want["voxels"])
        got = m.probability(m.centres(keys))
        np.testing.assert_allclose(got, want["probability"], atol=1e-5, err_msg=case["name"])
        occ, p = m.occupied()
        wp = np.array(want["probability"])
        np.testing.assert_array_equal(occ, keys[wp > 0.5])
        # the nearest occupied voxel from a point, against brute force
        q = np.array([0.1, -0.2, 0.3])
        d = np.linalg.norm(m.centres(occ) - q, axis=1)
        hit = m.nearest(q, 100.0)
        assert hit is not None and abs(hit[0] - d.min()) < 1e-9, case["name"]
        assert m.nearest(q, d.min() * 0.5) is None
        (near, known) = m.clearance(q, q + 1.0, 100.0)
        assert near is not None and near[0] <= hit[0] + 1e-12 and 0.0 <= known <= 1.0
    cols, mean, var, frames = m.dem()
    assert cols.shape[1] == 2 and len(mean) == len(var) == len(frames) > 0 and (var >= 0).all()
    assert m.write_ply(tmp_path / "m.ply") == len(occ)
    m.write_bev(tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0 and m.blocks > 0 and m.frames == len(case["frames"])
    with pytest.raises(ValueError, match="earlier"):
        m.insert(np.zeros((1, 3)), [0, 0, 0], -1e9)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        m.insert(np.zeros((2, 2)), [0, 0, 0], 1e9)
    with pytest.raises(ValueError, match="model"):
        radvox.map.Map(model="bayes")


def test_scene_frames_carry_voxel_centres_into_the_world(tmp_path):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(MINI, root)
    with pytest.raises(ValueError, match="poses.txt"):
        list(radvox.map.scene_frames(root, "alpha", "target"))
    # frame i: 10 m forward per frame, a quarter turn (x forward -> world +y)
    q = [0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)]
    lines = [f"{i} {10.0 * i} 0 1 {q[0]} {q[1]} {q[2]} {q[3]}" for i in range(4)]
    (root / "alpha" / "poses.txt").write_text("\n".join(lines) + "\n")
    ds = radvox.Dataset(root, split="all")
    frames = list(radvox.map.scene_frames(root, "alpha", "target"))
    assert [f[0] for f in frames] == ["000000", "000001", "000002", "000003"]
    for i, (stem, t, origin, pts, probs) in enumerate(frames):
        assert t == i and list(origin) == [10.0 * i, 0.0, 1.0] and len(pts) == len(probs)
        target, _ = ds[ds.ids.index(("alpha", stem))]
        occ = (target[0].float() > 0.5).nonzero().numpy()  # (z, x, y) of the padded grid
        assert len(pts) == len(occ)
        # sensor centre (x, y, z) = min + (i + 0.5) * 0.2; the turn maps (x, y) to (-y, x)
        sx, sy, sz = (occ[:, 1] + 0.5) * 0.2, -20 + (occ[:, 2] + 0.5) * 0.2, -6 + (occ[:, 0] + 0.5) * 0.2
        want = np.stack([10.0 * i - sy, sx, sz + 1.0], axis=1)
        np.testing.assert_allclose(np.sort(pts, axis=0), np.sort(want, axis=0), atol=1e-4)

//! Which frames each batch of an epoch holds: a seeded permutation per
//! epoch (or the natural order), sharded over ranks with PyTorch's
//! `DistributedSampler` contract, cut into batches.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::sys::mix;

/// The epoch plan's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampler {
    /// Frames in the dataset.
    pub frames: usize,
    /// Frames per batch.
    pub batch_size: usize,
    /// New seeded permutation each epoch.
    pub shuffle: bool,
    /// Seed of the permutation.
    pub seed: u64,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Pad the order by wrapping so every rank gets as many frames
    /// (training: DistributedSampler); without, rank `r` takes exactly the
    /// frames at `r, r + world_size, ...` (validation: each frame once).
    pub pad_shards: bool,
}

impl Sampler {
    /// Frame indices of this rank for `epoch`, in order (DistributedSampler
    /// contract: the permutation is padded by wrapping to a multiple of
    /// `world_size`, and rank `r` takes every `world_size`-th entry from `r`).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.frames;
        let mut perm: Vec<usize> = (0..n).collect();
        if self.shuffle {
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(self.seed, epoch, 0)));
        }
        let world = self.world_size;
        let total = if self.pad_shards { n.div_ceil(world) * world } else { n };
        let padded: Vec<usize> = perm.iter().copied().cycle().take(total).collect();
        padded.into_iter().skip(self.rank).step_by(world).collect()
    }

    /// Batches of frame indices for `epoch`.
    pub fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let b = self.batch_size;
        let mut batches: Vec<Vec<usize>> = self.order(epoch).chunks(b).map(<[usize]>::to_vec).collect();
        if self.drop_last && batches.last().is_some_and(|l| l.len() < b) {
            batches.pop();
        }
        batches
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        let per_rank = if self.pad_shards {
            self.frames.div_ceil(self.world_size)
        } else {
            self.frames.saturating_sub(self.rank).div_ceil(self.world_size) // rank, rank + world, ...
        };
        if self.drop_last {
            per_rank / self.batch_size
        } else {
            per_rank.div_ceil(self.batch_size)
        }
    }

    /// Whether an epoch yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn len_agrees_with_the_batches() {
        for frames in 0..12 {
            for (batch_size, world_size, drop_last) in [(1, 1, false), (3, 1, false), (3, 1, true), (2, 3, false)] {
                let mut seen = Vec::new();
                for rank in 0..world_size {
                    for pad_shards in [true, false] {
                        let s = Sampler {
                            frames,
                            batch_size,
                            shuffle: true,
                            seed: 3,
                            drop_last,
                            rank,
                            world_size,
                            pad_shards,
                        };
                        assert_eq!(s.len(), s.batches(0).len(), "{s:?}");
                        if !pad_shards && !drop_last {
                            seen.extend(s.order(0));
                        }
                    }
                }
                if !drop_last {
                    seen.sort();
                    assert_eq!(seen, (0..frames).collect::<Vec<_>>(), "unpadded shards hold each frame once");
                }
            }
        }
    }
}

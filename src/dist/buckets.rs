//! Gradient averaging over ranks in flat buckets: consecutive gradients of
//! one dtype and device are packed into a buffer of at most
//! [`DEFAULT_BUCKET_BYTES`], all-reduced as one tensor, divided by the world
//! size and unpacked; a gradient larger than the bucket is reduced in
//! place. One buffer is reused for every bucket, so the extra memory is one
//! bucket (what the memory planner counts).

use tch::Tensor;

use super::{Dist, DistError, ReduceOp};

/// PyTorch DDP's default bucket size (25 MiB).
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// Averages gradients; see the module docs.
#[derive(Debug)]
pub struct GradBuckets {
    bucket_bytes: usize,
    buffer: Option<Tensor>,
}

/// What one averaging moved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reduced {
    /// Gradient bytes all-reduced.
    pub bytes: u64,
    /// All-reduce calls.
    pub calls: usize,
}

impl GradBuckets {
    /// Buckets of at most `bucket_bytes`.
    pub fn new(bucket_bytes: usize) -> GradBuckets {
        GradBuckets { bucket_bytes: bucket_bytes.max(1), buffer: None }
    }

    /// The buffer's size for gradients of `grad_bytes` in all: the bucket,
    /// or less when every gradient fits in less.
    pub fn buffer_bytes(bucket_bytes: usize, grad_bytes: u64) -> u64 {
        (bucket_bytes as u64).min(grad_bytes)
    }

    /// Averages `grads` (defined, contiguous, the same on every rank in
    /// number, shapes and order) over the ranks of `dist`, in place.
    pub fn average(&mut self, dist: &Dist, grads: &[Tensor]) -> Result<Reduced, DistError> {
        let mut done = Reduced::default();
        if dist.world_size() == 1 {
            return Ok(done);
        }
        let scale = 1.0 / dist.world_size() as f64;
        let mut start = 0;
        while start < grads.len() {
            let g = &grads[start];
            let (kind, device, elem) = (g.kind(), g.device(), g.kind().elt_size_in_bytes());
            let bytes = g.numel() * elem;
            if bytes >= self.bucket_bytes || !g.is_contiguous() {
                let t = if g.is_contiguous() { g.shallow_clone() } else { g.contiguous() };
                dist.all_reduce(&t, ReduceOp::Sum)?;
                tch::no_grad(|| {
                    let mut g = g.shallow_clone();
                    g.copy_(&(&t * scale));
                });
                done.bytes += bytes as u64;
                done.calls += 1;
                start += 1;
                continue;
            }
            // the run of gradients that fits the bucket
            let (mut end, mut total) = (start, 0usize);
            while end < grads.len() {
                let h = &grads[end];
                let b = h.numel() * elem;
                if h.kind() != kind || h.device() != device || !h.is_contiguous() || total + b > self.bucket_bytes {
                    break;
                }
                total += b;
                end += 1;
            }
            let numel = (total / elem) as i64;
            let fits = self
                .buffer
                .as_ref()
                .is_some_and(|b| b.kind() == kind && b.device() == device && b.numel() as i64 >= numel);
            if !fits {
                self.buffer = Some(Tensor::empty([(self.bucket_bytes / elem) as i64], (kind, device)));
            }
            let flat = self.buffer.as_ref().expect("allocated above").narrow(0, 0, numel);
            tch::no_grad(|| {
                let mut at = 0;
                for h in &grads[start..end] {
                    let n = h.numel() as i64;
                    flat.narrow(0, at, n).copy_(&h.reshape([-1]));
                    at += n;
                }
            });
            dist.all_reduce(&flat, ReduceOp::Sum)?;
            tch::no_grad(|| {
                let _ = flat.shallow_clone().g_mul_scalar_(scale);
                let mut at = 0;
                for h in &grads[start..end] {
                    let n = h.numel() as i64;
                    h.shallow_clone().copy_(&flat.narrow(0, at, n).view(h.size().as_slice()));
                    at += n;
                }
            });
            done.bytes += total as u64;
            done.calls += 1;
            start = end;
        }
        Ok(done)
    }
}

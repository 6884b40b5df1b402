//! The process group handle the trainers hold: rank, world size and, when
//! the world is larger than one, a c10d backend (Gloo or NCCL) made by the
//! C++ shim. Collectives on a world of one return at once.

use std::ffi::CString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use super::{DistEnv, DistError};
use crate::sys::shim;

extern "C" {
    fn radvox_dist_init(
        host: *const libc::c_char,
        port: i32,
        rank: i32,
        world: i32,
        agent_store: bool,
        restart: i32,
        timeout_ms: i64,
        backend: i32,
        out: *mut *mut libc::c_void,
    ) -> bool;
    fn radvox_dist_allreduce(group: *mut libc::c_void, t: *const torch_sys::C_tensor, op: i32) -> bool;
    fn radvox_dist_broadcast(group: *mut libc::c_void, t: *const torch_sys::C_tensor, root: i32) -> bool;
    fn radvox_dist_barrier(group: *mut libc::c_void) -> bool;
    fn radvox_dist_free(group: *mut libc::c_void);
}

/// How an all-reduce combines the ranks' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise maximum.
    Max,
}

/// The shim's group. c10d backends are not tied to the thread that made
/// them; the mutex keeps this process's collectives in one order.
struct Group(*mut libc::c_void);

// SAFETY: the pointer is owned (freed once in Drop) and only used under the
// `Mutex` in `Dist`, so calls never overlap; the C++ object may move between
// threads (c10d backends do their work on their own threads).
unsafe impl Send for Group {}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: the pointer came from radvox_dist_init and is freed once here.
        unsafe { radvox_dist_free(self.0) }
    }
}

/// This process's place in a data-parallel run; see the module docs.
#[derive(Clone)]
pub struct Dist {
    rank: usize,
    world: usize,
    local_rank: usize,
    timeout: Duration,
    /// NCCL (tensors on `cuda:local_rank`) rather than Gloo.
    cuda: bool,
    group: Option<Arc<Mutex<Group>>>,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dist").field("rank", &self.rank).field("world", &self.world).finish()
    }
}

impl PartialEq for Dist {
    fn eq(&self, other: &Dist) -> bool {
        (self.rank, self.world, self.local_rank) == (other.rank, other.world, other.local_rank)
    }
}

impl Default for Dist {
    fn default() -> Dist {
        Dist::single()
    }
}

impl Dist {
    /// A world of one process: every collective is a no-op.
    pub fn single() -> Dist {
        Dist { rank: 0, world: 1, local_rank: 0, timeout: super::DEFAULT_TIMEOUT, cuda: false, group: None }
    }

    /// Joins the run torchrun's environment describes, with Gloo (`cuda`
    /// false) or NCCL; a plain run (no `WORLD_SIZE`), or a world of one, is
    /// [`Dist::single`]. `timeout` bounds the rendezvous and every collective.
    pub fn from_env(timeout: Duration, cuda: bool) -> Result<Dist, DistError> {
        Dist::for_env(DistEnv::from_env()?.as_ref(), timeout, cuda)
    }

    /// As [`Dist::from_env`], for an environment already read.
    pub fn for_env(env: Option<&DistEnv>, timeout: Duration, cuda: bool) -> Result<Dist, DistError> {
        match env {
            Some(env) if env.world_size > 1 => Dist::join(env, timeout, cuda),
            Some(env) => Ok(Dist { local_rank: env.local_rank, timeout, ..Dist::single() }),
            None => Ok(Dist { timeout, ..Dist::single() }),
        }
    }

    /// Joins the group `env` describes.
    pub fn join(env: &DistEnv, timeout: Duration, cuda: bool) -> Result<Dist, DistError> {
        let backend = if cuda { "nccl" } else { "gloo" };
        let init_err = |message: String| DistError::Init {
            rank: env.rank,
            world: env.world_size,
            addr: format!("{}:{}", env.master_addr, env.master_port),
            backend,
            timeout_s: timeout.as_secs_f64(),
            message,
        };
        let host = CString::new(env.master_addr.clone()).map_err(|_| init_err("MASTER_ADDR holds a NUL".into()))?;
        let mut out: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: `host` is a live NUL-terminated string and `out` a valid
        // slot; the shim catches every C++ exception and sets `out` only on
        // success.
        let ok = unsafe {
            radvox_dist_init(
                host.as_ptr(),
                env.master_port as i32,
                env.rank as i32,
                env.world_size as i32,
                env.agent_store,
                env.restart_count as i32,
                timeout.as_millis() as i64,
                cuda as i32,
                &mut out,
            )
        };
        if !ok || out.is_null() {
            return Err(init_err(shim::take_last_error()));
        }
        Ok(Dist {
            rank: env.rank,
            world: env.world_size,
            local_rank: env.local_rank,
            timeout,
            cuda,
            group: Some(Arc::new(Mutex::new(Group(out)))),
        })
    }

    /// Global rank.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }
    /// Rank on this node.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }
    /// Whether this is rank 0 (the one that writes files).
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }
    /// The timeout of every collective.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn call(&self, op: &'static str, f: impl FnOnce(*mut libc::c_void) -> bool) -> Result<(), DistError> {
        let Some(group) = &self.group else { return Ok(()) };
        let g = group.lock().unwrap_or_else(|e| e.into_inner());
        if f(g.0) {
            return Ok(());
        }
        Err(DistError::Collective {
            op,
            rank: self.rank,
            world: self.world,
            timeout_s: self.timeout.as_secs_f64(),
            message: shim::take_last_error(),
        })
    }

    /// All-reduces a contiguous tensor in place.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<(), DistError> {
        assert!(t.is_contiguous(), "all_reduce needs a contiguous tensor");
        let code = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
        };
        // SAFETY: `t` is a live tensor for the call; the shim catches every exception.
        self.call("all-reduce", |g| unsafe { radvox_dist_allreduce(g, t.as_ptr(), code) })
    }

    /// Overwrites a contiguous tensor with rank `root`'s.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<(), DistError> {
        assert!(t.is_contiguous(), "broadcast needs a contiguous tensor");
        // SAFETY: as in all_reduce.
        self.call("broadcast", |g| unsafe { radvox_dist_broadcast(g, t.as_ptr(), root as i32) })
    }

    /// Waits until every rank arrives.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: a call on the live group; the shim catches every exception.
        self.call("barrier", |g| unsafe { radvox_dist_barrier(g) })
    }

    /// All-reduces scalars (as f64 on the CPU; NCCL groups reduce on the GPU).
    pub fn all_reduce_f64(&self, values: &mut [f64], op: ReduceOp) -> Result<(), DistError> {
        if self.group.is_none() || values.is_empty() {
            return Ok(());
        }
        let t = Tensor::from_slice(values).to_device(self.device());
        self.all_reduce(&t, op)?;
        let back: Vec<f64> =
            Vec::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double)).expect("a 1-d f64 tensor converts");
        values.copy_from_slice(&back);
        Ok(())
    }

    /// Where this group's tensors must live: the rank's GPU under NCCL.
    pub fn device(&self) -> Device {
        if self.cuda {
            Device::Cuda(self.local_rank)
        } else {
            Device::Cpu
        }
    }
}

//! Bindings to `csrc/shim.cpp`: the few libtorch calls tch does not expose.
//! Every C++ entry point catches every exception (none may cross into
//! Rust); fallible ones return false and leave the message, which becomes a
//! [`SysError`].

use tch::Tensor;

use super::SysError;

extern "C" {
    fn radvox_memory_owners(t: *const torch_sys::C_tensor) -> i64;
    fn radvox_last_error(buf: *mut libc::c_char, n: usize) -> usize;
    fn radvox_set_cpu_autocast(enabled: bool) -> bool;
    fn radvox_cpu_autocast_enabled() -> bool;
    fn radvox_grad_enabled() -> bool;
    fn radvox_count_host_tensors() -> bool;
    fn radvox_host_tensor_bytes() -> i64;
    fn radvox_host_tensor_peak() -> i64;
    fn radvox_host_reset_peak();
    fn radvox_cuda_allocated(device: i64, current: *mut i64, peak: *mut i64) -> bool;
    fn radvox_cuda_reserved(device: i64, current: *mut i64, peak: *mut i64) -> bool;
    fn radvox_cuda_reset_peak(device: i64) -> bool;
    fn radvox_cuda_mem_info(free: *mut i64, total: *mut i64) -> bool;
    fn radvox_reset_autocast() -> bool;
}

/// How many handles reach this tensor's memory: shallow clones of it plus
/// views of its storage, counting `t` itself (1: `t` is the only one); -1
/// when it has no storage.
pub fn memory_owners(t: &Tensor) -> i64 {
    // SAFETY: `as_ptr` is a live `at::Tensor*` for as long as `t` is borrowed;
    // the shim only reads its refcount and catches every C++ exception.
    unsafe { radvox_memory_owners(t.as_ptr()) }
}

/// The message the shim left for a failed `call` on this thread.
fn last_error(call: &'static str) -> SysError {
    SysError::Torch { call, message: take_last_error() }
}

/// The message the last failed shim call left on this thread.
pub fn take_last_error() -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: the buffer is live and its length is passed; the shim writes
    // at most that many bytes, NUL-terminated.
    unsafe { radvox_last_error(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `t.backward()` keeping the graph, so other backward passes may still
/// traverse it (gradient checkpointing inside arbitrary graphs).
pub fn backward_keep_graph(t: &Tensor) -> Result<(), SysError> {
    // SAFETY: `as_ptr` is a live tensor for the borrow; at_backward does not
    // take ownership. Errors are reported through libtorch's last-error slot,
    // which we read and free exactly as tch does.
    unsafe {
        torch_sys::at_backward(t.as_ptr() as *mut _, 1, 0);
        let err = torch_sys::get_and_reset_last_err();
        if err.is_null() {
            Ok(())
        } else {
            let msg = std::ffi::CStr::from_ptr(err).to_string_lossy().into_owned();
            libc::free(err as *mut libc::c_void);
            Err(SysError::Torch { call: "backward", message: msg })
        }
    }
}

/// Turns libtorch's CPU autocast (bfloat16) on or off for this thread.
pub fn set_cpu_autocast(enabled: bool) -> Result<(), SysError> {
    // SAFETY: plain calls into libtorch's thread-local autocast state; the
    // shim catches every exception.
    if unsafe { radvox_set_cpu_autocast(enabled) } {
        Ok(())
    } else {
        Err(last_error("set_cpu_autocast"))
    }
}

/// Whether CPU autocast is on for this thread.
pub fn cpu_autocast_enabled() -> bool {
    // SAFETY: as above, a read of thread-local state.
    unsafe { radvox_cpu_autocast_enabled() }
}

/// Whether autograd records ops on this thread (false inside `tch::no_grad`).
pub fn grad_enabled() -> bool {
    // SAFETY: as above, a read of thread-local state.
    unsafe { radvox_grad_enabled() }
}

/// Routes every later libtorch CPU tensor allocation through a counting
/// allocator (process-wide). Returns whether it is in place.
pub fn count_host_tensors() -> bool {
    // SAFETY: the shim installs a static allocator and catches exceptions.
    unsafe { radvox_count_host_tensors() }
}

/// Host tensor bytes counted since [`count_host_tensors`]: `(current, peak)`.
pub fn host_tensor_bytes() -> (i64, i64) {
    // SAFETY: reads of two atomics.
    unsafe { (radvox_host_tensor_bytes(), radvox_host_tensor_peak()) }
}

/// Restarts the host peak at the current count.
pub fn host_reset_peak() {
    // SAFETY: stores to an atomic.
    unsafe { radvox_host_reset_peak() }
}

/// The CUDA caching allocator's `(current, peak)` allocated bytes on
/// `device`; `None` without CUDA.
pub fn cuda_allocated(device: usize) -> Option<(i64, i64)> {
    let (mut current, mut peak) = (0i64, 0i64);
    // SAFETY: the pointers are to live locals; the shim catches exceptions.
    unsafe { radvox_cuda_allocated(device as i64, &mut current, &mut peak) }.then_some((current, peak))
}

/// The CUDA caching allocator's reserved bytes `(current, peak)` on `device`
/// (`torch.cuda.memory_reserved` / `max_memory_reserved`); `None` without CUDA.
pub fn cuda_reserved(device: usize) -> Option<(i64, i64)> {
    let (mut current, mut peak) = (0i64, 0i64);
    // SAFETY: the pointers are to live locals; the shim catches exceptions.
    unsafe { radvox_cuda_reserved(device as i64, &mut current, &mut peak) }.then_some((current, peak))
}

/// Restarts the CUDA allocator's peak statistics; false without CUDA.
pub fn cuda_reset_peak(device: usize) -> bool {
    // SAFETY: as above.
    unsafe { radvox_cuda_reset_peak(device as i64) }
}

/// `(free, total)` bytes of the current CUDA device; `None` without CUDA.
pub fn cuda_mem_info() -> Option<(u64, u64)> {
    let (mut free, mut total) = (0i64, 0i64);
    // SAFETY: pointers to live locals; the shim checks the symbol exists.
    unsafe { radvox_cuda_mem_info(&mut free, &mut total) }.then_some((free as u64, total as u64))
}

/// Turns autocast off (CUDA and CPU), resets its nesting and clears its
/// cache; for recovery after a step unwound inside autocast.
pub fn reset_autocast() -> Result<(), SysError> {
    // SAFETY: plain calls into libtorch's thread-local autocast state; the
    // shim catches every exception.
    if unsafe { radvox_reset_autocast() } {
        Ok(())
    } else {
        Err(last_error("reset_autocast"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn use_count_sees_views_and_clones() {
        let t = Tensor::zeros([4, 4], (Kind::Half, Device::Cpu));
        assert_eq!(memory_owners(&t), 1);
        let view = t.narrow(0, 0, 2);
        assert!(memory_owners(&t) > 1, "a view shares the memory");
        drop(view);
        assert_eq!(memory_owners(&t), 1);
        let alias = t.shallow_clone();
        assert!(memory_owners(&t) > 1, "a shallow clone shares the memory");
        let view_of_alias = alias.get(1);
        drop(alias);
        assert!(memory_owners(&t) > 1, "a view of a dropped clone still does");
        drop(view_of_alias);
        assert_eq!(memory_owners(&t), 1);
        let copy = t.copy();
        assert_eq!(memory_owners(&t), 1);
        assert_eq!(memory_owners(&copy), 1);
    }

    #[test]
    fn cpu_autocast_switch_runs_matmul_in_bf16() {
        let a = Tensor::ones([8, 8], (Kind::Float, Device::Cpu));
        set_cpu_autocast(true).unwrap();
        assert!(cpu_autocast_enabled());
        let inside = a.matmul(&a).kind();
        set_cpu_autocast(false).unwrap();
        assert!(!cpu_autocast_enabled());
        assert_eq!(inside, Kind::BFloat16);
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
    }

    #[test]
    fn a_libtorch_error_becomes_a_typed_error() {
        // backward of a tensor that needs no gradient throws inside libtorch
        let t = Tensor::ones([2], (Kind::Float, Device::Cpu)).sum(Kind::Float);
        match backward_keep_graph(&t) {
            Err(SysError::Torch { call: "backward", message }) => assert!(message.contains("grad"), "{message}"),
            other => panic!("expected a typed error, got {other:?}"),
        }
        reset_autocast().unwrap();
        assert!(!cpu_autocast_enabled());
    }
}

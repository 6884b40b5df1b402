//! Tensors to Python without a copy: a DLPack capsule (`dltensor`) over a
//! tch tensor's memory, which `torch.from_dlpack` turns into a
//! `torch.Tensor` sharing it. The capsule's owner keeps a handle to the tch
//! tensor until PyTorch frees the tensor; a loader's pool sees that handle
//! and does not reuse the buffer meanwhile.

use std::ffi::{c_char, c_void, CStr};

use pyo3::prelude::*;
use pyo3::{ffi, PyErr};
use radvox::data::loader::PoolWaker;
use tch::{Device, Kind, Tensor};

#[repr(C)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

/// DLPack's `DLManagedTensor` (the unversioned ABI every PyTorch reads).
#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// What a capsule keeps alive: the tensor handle and the shape and strides
/// the DLTensor points into; once freed, it wakes the loader whose buffer
/// it held (a worker may be waiting to take it back).
struct Owner {
    tensor: Tensor,
    shape: Vec<i64>,
    strides: Vec<i64>,
    waker: Option<PoolWaker>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.tensor = Tensor::new(); // the buffer is the pool's again
        if let Some(w) = &self.waker {
            w.wake();
        }
    }
}

const NAME: &CStr = c"dltensor";

unsafe extern "C" fn delete_managed(m: *mut DLManagedTensor) {
    // SAFETY: `m` and its context were made by `export` with Box::into_raw
    // and the DLPack contract calls the deleter exactly once.
    unsafe {
        let m = Box::from_raw(m);
        drop(Box::from_raw(m.manager_ctx as *mut Owner));
    }
}

unsafe extern "C" fn capsule_destructor(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with the capsule; a capsule still named
    // `dltensor` was never consumed, so its tensor is ours to delete (a
    // consumer renames it `used_dltensor` and calls the deleter itself).
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, NAME.as_ptr()) == 1 {
            let m = ffi::PyCapsule_GetPointer(capsule, NAME.as_ptr()) as *mut DLManagedTensor;
            if !m.is_null() {
                delete_managed(m);
            }
        } else {
            ffi::PyErr_Clear();
        }
    }
}

fn dtype(kind: Kind) -> PyResult<DLDataType> {
    let (code, bits) = match kind {
        Kind::Half => (2, 16),
        Kind::Float => (2, 32),
        Kind::Double => (2, 64),
        Kind::BFloat16 => (4, 16),
        Kind::Int64 => (0, 64),
        Kind::Int => (0, 32),
        Kind::Uint8 => (1, 8),
        Kind::Bool => (6, 8),
        k => return Err(pyo3::exceptions::PyTypeError::new_err(format!("no DLPack export for {k:?}"))),
    };
    Ok(DLDataType { code, bits, lanes: 1 })
}

/// A `dltensor` capsule over `tensor`'s memory, which it holds until
/// PyTorch frees the tensor made from it (then `waker` wakes its loader).
pub fn export(py: Python<'_>, tensor: Tensor, waker: Option<PoolWaker>) -> PyResult<Py<PyAny>> {
    let dtype = dtype(tensor.kind())?;
    let device = match tensor.device() {
        Device::Cpu => DLDevice { device_type: 1, device_id: 0 },
        Device::Cuda(i) => DLDevice { device_type: 2, device_id: i as i32 },
        d => return Err(pyo3::exceptions::PyTypeError::new_err(format!("no DLPack export from {d:?}"))),
    };
    let mut owner = Box::new(Owner { shape: tensor.size(), strides: tensor.stride(), tensor, waker });
    let managed = Box::new(DLManagedTensor {
        dl_tensor: DLTensor {
            data: owner.tensor.data_ptr(),
            device,
            ndim: owner.shape.len() as i32,
            dtype,
            shape: owner.shape.as_mut_ptr(),
            strides: owner.strides.as_mut_ptr(),
            byte_offset: 0,
        },
        manager_ctx: std::ptr::null_mut(),
        deleter: Some(delete_managed),
    });
    let m = Box::into_raw(managed);
    // SAFETY: `m` is a fresh, valid DLManagedTensor; the Vec buffers its
    // shape/strides point into live in `owner`, which moves to the heap
    // unchanged (a Box's contents do not move) and is freed by the deleter.
    unsafe {
        (*m).manager_ctx = Box::into_raw(owner) as *mut c_void;
        let capsule = ffi::PyCapsule_New(m as *mut c_void, NAME.as_ptr() as *const c_char, Some(capsule_destructor));
        if capsule.is_null() {
            delete_managed(m);
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, capsule).unbind())
    }
}

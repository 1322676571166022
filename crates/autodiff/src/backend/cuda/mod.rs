//! The CUDA backend: hand-written PTX kernels (`kernels/cuda/*.ptx`) launched through the CUDA
//! driver API with `cudarc`, which loads `libcuda` at run time, so this builds with no CUDA
//! installed and reports a typed error, never a panic, where there is no driver or no device.
//!
//! A [`CudaContext`] is one device: its PTX modules are loaded on first use, once per device for
//! the whole process, then cached. [`CudaTensor`] is a device buffer with its dimensions. Each
//! kernel has one method with the semantics of the CPU kernel of the same name
//! (`backend::cpu`), taking the same geometry structs; `docs/cuda.md` lists them with their
//! expected agreement with the CPU. All work goes on the device's one stream, in order; a
//! download waits for it. In debug builds every launch is followed by a synchronize and an
//! error check, so a faulting kernel is named where it faults.
//!
//! ```no_run
//! use smoothgrad_autodiff::backend::cuda::CudaContext;
//! use smoothgrad_autodiff::Tensor;
//! let cuda = CudaContext::new(0)?;
//! let x = cuda.upload(&Tensor::<f32>::uniform(&[2, 3], -1.0, 1.0, 7)?)?;
//! let (y, mask) = cuda.relu_fwd(&x)?;
//! let dx = cuda.relu_bwd(&y, &mask, false)?;
//! assert_eq!(cuda.download(&dx)?.dims(), &[2, 3]);
//! # Ok::<(), smoothgrad_autodiff::Error>(())
//! ```

pub mod args;
mod conv;
mod copies;
mod elementwise;
pub mod kernels;
mod linalg;
mod pool;
mod tensor;

pub use elementwise::CudaBatchNorm;
pub use kernels::Kernel;
pub use tensor::{CudaIndices, CudaMask, CudaTensor};

use crate::error::{Error, Result};
use cudarc::driver::{self, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Threads per block of the 1-D kernels and of the tiled ones alike.
pub(crate) const BLOCK: u32 = 256;

/// One CUDA device, shared by every `CudaContext` of the same ordinal in the process.
struct Device {
    ordinal: usize,
    context: Arc<driver::CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<Kernel, CudaFunction>>,
}

/// The arithmetic of the GEMM-shaped kernels (`conv2d_fwd`, `conv2d_bwd_input`, `matmul` and
/// the linear layers): a setting of one [`CudaContext`] handle, chosen at run time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Math {
    /// FP32 FMA on the CUDA cores (the default): the CPU's precision, sums in another order.
    #[default]
    Fp32,
    /// Tensor cores: operands rounded to TF32 (`cvt.rna.tf32.f32`, 10-bit mantissa, relative
    /// rounding error ≤ 2⁻¹¹), products accumulated in FP32 by `mma.sync.aligned.m16n8k8`.
    /// A K-term dot product then differs from FP32 by about 2⁻¹⁰·Σ|aᵢbᵢ| at worst (≈ 1e-3
    /// relative, typically ≈ 1e-4). Depthwise convolutions and the fused SmoothGrad reduction
    /// are direct loops, not GEMMs: they stay FP32.
    Tf32,
}

impl Math {
    /// The kernels' `math` argument: 0 FP32 FMA, 1 TF32 tensor cores.
    pub(crate) fn flag(self) -> u32 {
        match self {
            Math::Fp32 => 0,
            Math::Tf32 => 1,
        }
    }
}

/// A handle on one CUDA device (cheap to clone): its stream and its loaded kernels.
#[derive(Clone)]
pub struct CudaContext {
    device: Arc<Device>,
    math: Math,
}

impl std::fmt::Debug for CudaContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaContext")
            .field("ordinal", &self.device.ordinal)
            .finish_non_exhaustive()
    }
}

/// The typed error of this backend.
pub(crate) fn device_error(reason: impl Into<String>) -> Error {
    Error::Device {
        device: "cuda",
        reason: reason.into(),
    }
}

fn driver_error(what: &str, e: driver::DriverError) -> Error {
    let name = e
        .error_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{e:?}"));
    device_error(format!("{what}: {name}"))
}

/// The devices opened so far, by ordinal.
fn devices() -> &'static Mutex<HashMap<usize, Arc<Device>>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<Device>>>> = OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

impl CudaContext {
    /// Opens device `ordinal`. Without a CUDA driver (`libcuda`) or without such a device this
    /// is an [`Error::Device`] saying which; it never panics. Opening an ordinal again returns
    /// the same device, with the kernels it has loaded.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only tries to dlopen the driver library; without this check cudarc panics.
        if !unsafe { driver::sys::is_culib_present() } {
            return Err(device_error(
                "no CUDA driver: the library libcuda could not be loaded",
            ));
        }
        let mut open = devices()
            .lock()
            .map_err(|_| device_error("the device table is poisoned"))?;
        if let Some(device) = open.get(&ordinal) {
            return Ok(CudaContext {
                device: device.clone(),
                math: Math::Fp32,
            });
        }
        let context = driver::CudaContext::new(ordinal)
            .map_err(|e| driver_error(&format!("device {ordinal}"), e))?;
        let stream = context.default_stream();
        let device = Arc::new(Device {
            ordinal,
            context,
            stream,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        });
        open.insert(ordinal, device.clone());
        Ok(CudaContext {
            device,
            math: Math::Fp32,
        })
    }

    /// The number of CUDA devices (0 without a driver).
    pub fn device_count() -> usize {
        // SAFETY: as in `new`.
        if !unsafe { driver::sys::is_culib_present() } {
            return 0;
        }
        driver::CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
    }

    /// Chooses the arithmetic of this handle's convolution and matrix kernels (other handles on
    /// the same device keep theirs). Tensor cores need compute capability 8.0 or newer, which
    /// the PTX's `.target sm_80` already requires of every kernel.
    pub fn set_math(&mut self, math: Math) {
        self.math = math;
    }

    /// This handle with `math` (see [`set_math`](Self::set_math)).
    pub fn with_math(mut self, math: Math) -> Self {
        self.math = math;
        self
    }

    /// The arithmetic of this handle's convolution and matrix kernels.
    pub fn math(&self) -> Math {
        self.math
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.device.ordinal
    }

    /// The device's name, as the driver reports it.
    pub fn name(&self) -> Result<String> {
        self.device
            .context
            .name()
            .map_err(|e| driver_error("device name", e))
    }

    /// (major, minor) compute capability.
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        self.device
            .context
            .compute_capability()
            .map_err(|e| driver_error("compute capability", e))
    }

    /// Waits until every queued kernel and copy has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.device
            .stream
            .synchronize()
            .map_err(|e| driver_error("synchronize", e))
    }

    /// Loads every PTX module now (each is loaded on first use otherwise): a driver that
    /// rejects a module fails here, naming the file.
    pub fn load_all(&self) -> Result<()> {
        for k in kernels::KERNELS {
            self.function(*k)?;
        }
        Ok(())
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.device.stream
    }

    /// The loaded function of `kernel`, loading its module on first use.
    pub(crate) fn function(&self, kernel: Kernel) -> Result<CudaFunction> {
        if let Some(f) = self.lock_functions()?.get(&kernel) {
            return Ok(f.clone());
        }
        let module = {
            let mut modules = self
                .device
                .modules
                .lock()
                .map_err(|_| device_error("the module cache is poisoned"))?;
            match modules.get(kernel.file) {
                Some(m) => m.clone(),
                None => {
                    let text = kernels::source(kernel.file).ok_or_else(|| {
                        device_error(format!("no PTX file {} is compiled in", kernel.file))
                    })?;
                    let m = self
                        .device
                        .context
                        .load_module(Ptx::from_src(text))
                        .map_err(|e| driver_error(&format!("loading {}", kernel.file), e))?;
                    modules.insert(kernel.file, m.clone());
                    m
                }
            }
        };
        let f = module
            .load_function(kernel.entry)
            .map_err(|e| driver_error(&format!("{} in {}", kernel.entry, kernel.file), e))?;
        self.lock_functions()?.insert(kernel, f.clone());
        Ok(f)
    }

    fn lock_functions(&self) -> Result<std::sync::MutexGuard<'_, HashMap<Kernel, CudaFunction>>> {
        self.device
            .functions
            .lock()
            .map_err(|_| device_error("the kernel cache is poisoned"))
    }

    /// After a launch: the launch error if any, and in debug builds the kernel's own fault.
    pub(crate) fn check_launch(
        &self,
        kernel: Kernel,
        launched: std::result::Result<
            Option<(driver::CudaEvent, driver::CudaEvent)>,
            driver::DriverError,
        >,
    ) -> Result<()> {
        launched.map_err(|e| driver_error(&format!("launching {}", kernel.entry), e))?;
        #[cfg(debug_assertions)]
        self.device
            .stream
            .synchronize()
            .map_err(|e| driver_error(&format!("running {}", kernel.entry), e))?;
        Ok(())
    }

    /// A device buffer of `len` zeros (at least one element is allocated, so empty tensors work).
    pub(crate) fn alloc_zeros<T>(&self, len: usize) -> Result<CudaSlice<T>>
    where
        T: driver::DeviceRepr + driver::ValidAsZeroBits,
    {
        self.device
            .stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(|e| driver_error(&format!("allocating {len} elements"), e))
    }

    /// Copies host values into a new device buffer (at least one element long).
    pub(crate) fn upload_slice<T>(&self, values: &[T]) -> Result<CudaSlice<T>>
    where
        T: driver::DeviceRepr + driver::ValidAsZeroBits + Copy,
    {
        if values.is_empty() {
            return self.alloc_zeros(0);
        }
        self.device
            .stream
            .clone_htod(values)
            .map_err(|e| driver_error(&format!("uploading {} elements", values.len()), e))
    }

    /// Copies the first `len` elements of a device buffer to the host (waits for the stream).
    pub(crate) fn download_slice<T>(&self, buffer: &CudaSlice<T>, len: usize) -> Result<Vec<T>>
    where
        T: driver::DeviceRepr + Copy + Default,
    {
        let mut out = vec![T::default(); buffer.len()];
        self.device
            .stream
            .memcpy_dtoh(buffer, out.as_mut_slice())
            .map_err(|e| driver_error("downloading", e))?;
        self.synchronize()?;
        out.truncate(len);
        Ok(out)
    }
}

/// The raw device address of a buffer, passed to kernels as a `.u64` parameter. All work runs
/// on the device's single stream, so stream order alone orders every read and write (cudarc's
/// cross-stream events are inactive with one stream), and buffers are freed stream-ordered.
pub(crate) fn address<T>(buffer: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    use cudarc::driver::DevicePtr;
    let (ptr, _record) = buffer.device_ptr(stream);
    ptr
}

/// A 1-D launch of `BLOCK`-thread blocks covering `threads` threads (at least one block).
pub(crate) fn grid_1d(threads: usize) -> LaunchConfig {
    let blocks = threads.div_ceil(BLOCK as usize).max(1) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A launch of `BLOCK`-thread blocks on a 3-D grid, checking the driver's limits on y and z.
pub(crate) fn grid_3d(op: &'static str, x: usize, y: usize, z: usize) -> Result<LaunchConfig> {
    if x >= (1 << 31) || y > 65_535 || z > 65_535 {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("launch grid ({x}, {y}, {z}) exceeds CUDA's limits"),
        });
    }
    Ok(LaunchConfig {
        grid_dim: (x as u32, y as u32, z as u32),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Launches `kernel` with the arguments listed (each `&` a `DeviceRepr` value: sizes, device
/// addresses from [`address`], argument blocks), then checks it.
macro_rules! launch {
    ($ctx:expr, $kernel:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let ctx: &$crate::backend::cuda::CudaContext = $ctx;
        let kernel: $crate::backend::cuda::Kernel = $kernel;
        let function = ctx.function(kernel)?;
        let mut builder = ctx.stream().launch_builder(&function);
        use cudarc::driver::PushKernelArg as _;
        // One expression, so the argument temporaries live until the launch is queued.
        // SAFETY: the arguments match the kernel's `.param` list in order and type (see the
        // PTX file), every address is a live buffer of the size the kernel indexes, and the
        // grid covers exactly the threads the kernel expects (each checks its own bounds).
        let launched = unsafe { builder $( .arg($arg) )+ .launch($cfg) };
        ctx.check_launch(kernel, launched)
    }};
}
pub(crate) use launch;

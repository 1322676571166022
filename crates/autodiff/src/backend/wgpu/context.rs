//! The device and everything built once for it: queue, compute pipelines (compiled on first use,
//! cached by entry-point name), the buffer pool, and the command encoder that kernel calls are
//! recorded into until the next submission.

use super::kernels::{self, Kernel};
use super::tensor::{BufferPool, POOLED_USAGE, Precision};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use wgpu::util::DeviceExt;

/// The name errors of this backend carry.
pub(crate) const DEVICE: &str = "wgpu";

/// Invocations of every 1-D kernel's workgroup.
pub(crate) const WORKGROUP: u32 = 256;

/// Most workgroups along one dimension of a dispatch (WebGPU's default limit).
pub(crate) const MAX_GROUPS: u32 = 65_535;

/// Idle bytes the buffer pool keeps at most.
const POOL_CAPACITY: u64 = 512 << 20;

/// Recorded dispatches after which the encoder is submitted without waiting for a download, so
/// a long batch starts running early.
const AUTO_SUBMIT: usize = 512;

/// A WebGPU device with the smoothgrad kernels.
///
/// Kernel methods take `&GpuTensor` inputs and return new `GpuTensor`s. They record into one
/// command encoder that is submitted by the next download, [`submit`](Self::submit) or
/// [`sync`](Self::sync) (or after many dispatches), so a chain of kernels is one submission:
///
/// ```no_run
/// use smoothgrad_autodiff::backend::wgpu::WgpuContext;
/// use smoothgrad_autodiff::Tensor;
/// let ctx = WgpuContext::new()?;
/// let x = ctx.upload(&Tensor::<f32>::uniform(&[2, 8], -1.0, 1.0, 7)?)?;
/// let (y, mask) = ctx.relu_fwd(&x)?;
/// let dx = ctx.relu_bwd(&y, &mask, false)?; // still the same submission
/// let host = ctx.download(&dx)?; // submits, waits, reads back
/// assert_eq!(host.dims(), &[2, 8]);
/// # Ok::<(), smoothgrad_autodiff::Error>(())
/// ```
pub struct WgpuContext {
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(super) limits: wgpu::Limits,
    modules: Mutex<HashMap<(&'static str, Precision), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(&'static str, Precision), wgpu::ComputePipeline>>,
    pub(super) pool: Arc<BufferPool>,
    pub(super) recorder: Mutex<Recorder>,
    /// Bound where a kernel declares an input the call does not have (a missing bias).
    pub(super) placeholder: wgpu::Buffer,
}

#[derive(Default)]
pub(super) struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    dispatches: usize,
}

/// How a kernel's workgroups are laid out.
pub(crate) enum Grid {
    /// `groups` workgroups of a 1-D kernel, folded into (x, y) when past 65535; the kernel
    /// recovers its flat index as (wid.y · nwg.x + wid.x).
    Flat(u64),
    /// (x, y, z) workgroups of a tiled kernel; z is split into dispatches of at most 65535, each
    /// told its first z through the parameter word at index `z_base`.
    Tiled {
        x: u64,
        y: u64,
        z: u64,
        z_base: usize,
    },
    /// One dispatch of exactly (x, y, 1) workgroups.
    Exact { x: u32, y: u32 },
}

/// A buffer bound at a binding index of a kernel.
pub(crate) type Binding<'a> = (u32, &'a wgpu::Buffer);

impl WgpuContext {
    /// Opens the default adapter and its device: high performance unless `WGPU_POWER_PREF` says
    /// otherwise, on the backends `WGPU_BACKEND` allows (all by default).
    ///
    /// # Errors
    /// [`Error::Device`] when no adapter is found (the message lists the adapters each backend
    /// reported), or when the adapter cannot run compute shaders or the device request fails.
    /// There is no CPU fallback.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::open())
    }

    async fn open() -> Result<Self> {
        let descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let backends = descriptor.backends;
        let instance = wgpu::Instance::new(descriptor);
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::from_env()
                .unwrap_or(wgpu::PowerPreference::HighPerformance),
            ..Default::default()
        };
        let adapter = match instance.request_adapter(&options).await {
            Ok(adapter) => adapter,
            Err(e) => {
                // List what every backend reports, not only the enabled ones.
                let all =
                    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
                let found = all.enumerate_adapters(wgpu::Backends::all()).await;
                let found: Vec<String> = found.iter().map(|a| describe(&a.get_info())).collect();
                let found = if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(", ")
                };
                return Err(device_error(format!(
                    "no adapter ({e}); backends enabled: {backends:?}; adapters on any backend: \
                     {found}"
                )));
            }
        };
        let info = adapter.get_info();
        let downlevel = adapter.get_downlevel_capabilities();
        if !downlevel
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        {
            return Err(device_error(format!(
                "adapter {} cannot run compute shaders",
                describe(&info)
            )));
        }
        let limits = adapter.limits();
        let needed = wgpu::Limits::default();
        if limits.max_compute_invocations_per_workgroup < WORKGROUP
            || limits.max_compute_workgroup_storage_size < needed.max_compute_workgroup_storage_size
            || limits.max_storage_buffers_per_shader_stage < 7
        {
            return Err(device_error(format!(
                "adapter {} is below the kernels' needs (256 invocations per workgroup, 16 KiB \
                 workgroup memory, 7 storage buffers per stage): {limits:?}",
                describe(&info)
            )));
        }
        // f16 storage is offered where the adapter has it; nothing else beyond the defaults.
        let features = adapter.features() & wgpu::Features::SHADER_F16;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("smoothgrad"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| device_error(format!("device request on {}: {e}", describe(&info))))?;
        let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("placeholder"),
            size: 16,
            usage: POOLED_USAGE,
            mapped_at_creation: false,
        });
        Ok(WgpuContext {
            device,
            queue,
            info,
            limits,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            pool: Arc::new(BufferPool::new(POOL_CAPACITY)),
            recorder: Mutex::new(Recorder::default()),
            placeholder,
        })
    }

    /// The adapter in use: name, backend (Vulkan, Metal, Dx12, Gl), device type, driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The device's limits (lavapipe: 128 MiB per storage binding).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Whether the device stores tensors as f16 ([`Precision::F16Storage`]): the adapter has
    /// `SHADER_F16`.
    pub fn supports_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    /// `Ok` when tensors can be stored as `precision` on this device, else an
    /// [`Error::Device`] naming the adapter and the missing `SHADER_F16` feature.
    pub fn check_precision(&self, precision: Precision) -> Result<()> {
        if precision == Precision::F16Storage && !self.supports_f16() {
            return Err(device_error(format!(
                "adapter {} lacks the SHADER_F16 feature: f16 storage is unavailable (use f32)",
                describe(&self.info)
            )));
        }
        Ok(())
    }

    /// The wgpu device, for callers that add their own kernels.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// Submits the kernels recorded so far, without waiting for them.
    pub fn submit(&self) {
        let mut rec = lock(&self.recorder);
        if let Some(encoder) = rec.encoder.take() {
            self.queue.submit([encoder.finish()]);
        }
        rec.dispatches = 0;
    }

    /// Submits the kernels recorded so far and waits until the device has run them.
    pub fn sync(&self) -> Result<()> {
        self.submit();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| device_error(format!("waiting for the device: {e}")))
    }

    /// Runs `f`, then submits what it recorded: the kernels `f` launches form one submission.
    pub fn batch<R>(&self, f: impl FnOnce(&Self) -> Result<R>) -> Result<R> {
        let result = f(self);
        self.submit();
        result
    }

    /// Compiles every kernel's f32 variant now rather than on first use (the first call of each
    /// is otherwise slower by its pipeline build).
    pub fn warm_up(&self) -> Result<()> {
        self.warm_up_precision(Precision::F32)
    }

    /// Compiles every kernel's variant storing tensors as `precision`.
    pub fn warm_up_precision(&self, precision: Precision) -> Result<()> {
        self.check_precision(precision)?;
        for kernel in kernels::ALL {
            self.pipeline(kernel.with(precision))?;
        }
        Ok(())
    }

    /// Releases the idle buffers of the pool.
    pub fn release_idle_buffers(&self) {
        self.pool.clear();
    }

    /// (bytes held idle by the buffer pool, buffers reused from it so far).
    pub fn pool_stats(&self) -> (u64, u64) {
        self.pool.stats()
    }

    // ---- pipelines and dispatch ------------------------------------------------------------

    /// The pipeline of `kernel`, compiled on first use.
    fn pipeline(&self, kernel: Kernel) -> Result<wgpu::ComputePipeline> {
        let key = (kernel.entry, kernel.precision);
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(p.clone());
        }
        self.check_precision(kernel.precision)?;
        let module = self.module(kernel.file, kernel.precision)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: None,
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    // Every kernel writes its workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                    ..Default::default()
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(device_error(format!(
                "building kernel {}: {e}",
                kernel.entry
            )));
        }
        lock(&self.pipelines).insert(key, pipeline.clone());
        Ok(pipeline)
    }

    fn module(&self, file: &'static str, precision: Precision) -> Result<wgpu::ShaderModule> {
        if let Some(m) = lock(&self.modules).get(&(file, precision)) {
            return Ok(m.clone());
        }
        let source = kernels::source_for(file, precision).ok_or_else(|| {
            device_error(format!(
                "no kernel file {file}.wgsl with a {} storage variant",
                precision.name()
            ))
        })?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(file),
                source: wgpu::ShaderSource::Wgsl(source),
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(device_error(format!(
                "compiling {file}.wgsl ({} storage): {e}",
                precision.name()
            )));
        }
        lock(&self.modules).insert((file, precision), module.clone());
        Ok(module)
    }

    pub(super) fn encoder<'a>(
        &self,
        rec: &'a mut MutexGuard<'_, Recorder>,
    ) -> &'a mut wgpu::CommandEncoder {
        rec.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("smoothgrad"),
                })
        })
    }

    /// Records `kernel` over `grid` with uniform parameters `params` (binding 0) and storage
    /// buffers `bindings`.
    pub(crate) fn launch(
        &self,
        kernel: Kernel,
        params: &[u32],
        bindings: &[Binding<'_>],
        grid: Grid,
    ) -> Result<()> {
        let pipeline = self.pipeline(kernel)?;
        let layout = pipeline.get_bind_group_layout(0);
        // (x, y, z, params) per dispatch.
        let mut dispatches: Vec<(u32, u32, u32, Vec<u32>)> = Vec::new();
        match grid {
            Grid::Flat(0) => {}
            Grid::Flat(groups) => {
                let x = groups.min(MAX_GROUPS as u64);
                let y = groups.div_ceil(x);
                if y > MAX_GROUPS as u64 {
                    return Err(too_large(kernel, groups));
                }
                dispatches.push((x as u32, y as u32, 1, params.to_vec()));
            }
            Grid::Tiled { x, y, z, z_base } => {
                if x > MAX_GROUPS as u64 || y > MAX_GROUPS as u64 {
                    return Err(too_large(kernel, x.max(y)));
                }
                if x == 0 || y == 0 {
                    return Ok(());
                }
                let mut first = 0u64;
                while first < z {
                    let count = (z - first).min(MAX_GROUPS as u64);
                    let mut p = params.to_vec();
                    p[z_base] = to_u32(first as usize, kernel.entry)?;
                    dispatches.push((x as u32, y as u32, count as u32, p));
                    first += count;
                }
            }
            Grid::Exact { x, y } => {
                if x > MAX_GROUPS || y > MAX_GROUPS {
                    return Err(too_large(kernel, x.max(y) as u64));
                }
                if x > 0 && y > 0 {
                    dispatches.push((x, y, 1, params.to_vec()));
                }
            }
        }
        if dispatches.is_empty() {
            return Ok(());
        }
        let groups: Vec<wgpu::BindGroup> =
            dispatches
                .iter()
                .map(|(_, _, _, p)| {
                    let uniform = self.uniform(p);
                    let mut entries = vec![wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniform.as_entire_binding(),
                    }];
                    entries.extend(bindings.iter().map(|&(binding, buffer)| {
                        wgpu::BindGroupEntry {
                            binding,
                            resource: buffer.as_entire_binding(),
                        }
                    }));
                    self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(kernel.entry),
                        layout: &layout,
                        entries: &entries,
                    })
                })
                .collect();
        let mut rec = lock(&self.recorder);
        {
            let encoder = self.encoder(&mut rec);
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            for ((x, y, z, _), group) in dispatches.iter().zip(&groups) {
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(*x, *y, *z);
            }
        }
        rec.dispatches += dispatches.len();
        if rec.dispatches >= AUTO_SUBMIT {
            let encoder = rec.encoder.take();
            rec.dispatches = 0;
            drop(rec);
            if let Some(encoder) = encoder {
                self.queue.submit([encoder.finish()]);
            }
        }
        Ok(())
    }

    fn uniform(&self, words: &[u32]) -> wgpu::Buffer {
        // Uniform structs are padded to 16 bytes.
        let mut padded = words.to_vec();
        padded.resize(words.len().div_ceil(4).max(1) * 4, 0);
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&padded),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }
}

impl std::fmt::Debug for WgpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuContext({})", describe(&self.info))
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves nothing half-updated that matters here.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} ({:?}, {:?}, driver {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    )
}

/// An [`Error::Device`] of this backend.
pub(crate) fn device_error(reason: String) -> Error {
    Error::Device {
        device: DEVICE,
        reason,
    }
}

fn too_large(kernel: Kernel, groups: u64) -> Error {
    device_error(format!(
        "{}: {groups} workgroups do not fit one dispatch (at most 65535 per dimension)",
        kernel.entry
    ))
}

/// `v` as a kernel parameter word.
pub(crate) fn to_u32(v: usize, op: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::InvalidArgument {
        op,
        reason: format!("size {v} does not fit the kernels' 32-bit indices"),
    })
}

/// The storage type shared by a kernel's tensor operands; operands stored differently are an
/// [`Error::InvalidArgument`] naming the kernel.
pub(crate) fn precision_of(
    op: &'static str,
    tensors: &[&super::tensor::GpuTensor],
) -> Result<Precision> {
    let first = tensors.first().map_or(Precision::F32, |t| t.precision());
    if let Some(t) = tensors.iter().find(|t| t.precision() != first) {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "operands are stored as {} and {}: convert them to one precision first",
                first.name(),
                t.precision().name()
            ),
        });
    }
    Ok(first)
}

/// Checks that an accumulator (Σ and Σ² over copies) is stored as f32.
pub(crate) fn expect_f32(op: &'static str, t: &super::tensor::GpuTensor) -> Result<()> {
    if t.precision() != Precision::F32 {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "accumulators must be stored as f32, got {}",
                t.precision().name()
            ),
        });
    }
    Ok(())
}

/// Workgroups for `n` invocations of a 1-D kernel.
pub(crate) fn flat_groups(n: usize) -> Grid {
    Grid::Flat((n as u64).div_ceil(WORKGROUP as u64))
}

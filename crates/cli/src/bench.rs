//! `smoothgrad bench`: end-to-end timing of one explanation (by default one n = 50 SmoothGrad
//! map) of a model file, on the CPU (with its FLOP rate against this machine's measured sgemm
//! rate and the resident memory it takes) or, in binaries built with the `wgpu` / `cuda`
//! features, on a GPU through `WgpuExplainer` / `CudaExplainer` (the time runs from the host
//! image to the map back on the host, so it includes the device's whole work). `bench/peers/run.sh` reads its `--json` beside PyTorch, Captum and
//! JAX timed on the same model, input and noise.

use crate::common::{self, ConvChoice, MethodName};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use smoothgrad_autodiff::Tensor;
use smoothgrad_autodiff::backend::cpu::gemm::{MatRef, Threads, matmul};
use smoothgrad_saliency::{Explainer, IgConfig, Method, NoiseLevel, SaliencyMap, Smoothing, npy};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The model: an .onnx file, or a .safetensors file (with --arch).
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// The JSON architecture of a .safetensors model ("smoothgrad-arch/1").
    #[arg(long, value_name = "FILE")]
    arch: Option<PathBuf>,
    /// A NumPy .npy input [C,H,W] or [1,C,H,W] [default: uniform in [0, 1) from --seed].
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// The attribution method timed.
    #[arg(long, value_enum, default_value_t = MethodName::Smoothgrad)]
    method: MethodName,
    /// Number of noisy copies n [default: 50, or the first dimension of --noise].
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// Standard normal noise draws [N,C,H,W] (.npy) to use instead of the built-in generator.
    #[arg(long, value_name = "FILE")]
    noise: Option<PathBuf>,
    /// Noise σ in input units, instead of --noise-level.
    #[arg(long, value_name = "SIGMA", conflicts_with = "noise_level")]
    sigma: Option<f64>,
    /// Noise σ as a fraction of the input's range (max − min) [default: 0.15].
    #[arg(long, value_name = "LEVEL")]
    noise_level: Option<f64>,
    /// Seed of the random input and of the built-in noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The class to explain [default: the top prediction].
    #[arg(long, value_name = "K")]
    target: Option<usize>,
    /// Timed runs; the median and the minimum are reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Working memory of the noisy copies in flight, in MiB (CPU: all chunks running side by
    /// side; GPU: one chunk) [default: 256 on the CPU, 128 on a GPU].
    #[arg(long, value_name = "MB")]
    memory_budget: Option<usize>,
    /// Where to compute: cpu, or wgpu / cuda in a binary built with that feature (an error,
    /// never a CPU fallback, when the device is missing).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    /// Arithmetic of the convolutions and matrix products on CUDA: fp32, or tf32 on tensor
    /// cores.
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    precision: Precision,
    /// Convolution algorithm on the CPU: winograd (the default: Winograd F(2×2,3×3) forward,
    /// rounding close to im2col's, and F(4×4,3×3) input gradient), winograd-backward (im2col
    /// forward: the same ReLU decisions as im2col), im2col (+ GEMM both ways, PyTorch's
    /// summation-order class) or fastest (F(4×4,3×3) forward too: ≈ 10× the f32 rounding per
    /// layer, which flips near-zero ReLUs).
    #[arg(long, value_enum, default_value_t = ConvChoice::Winograd)]
    conv: ConvChoice,
    /// Write the measurements as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the last run's attribution [C,H,W] as float32 .npy.
    #[arg(long, value_name = "FILE")]
    npy: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Device {
    Cpu,
    Cuda,
    Wgpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Precision {
    Fp32,
    Tf32,
}

/// The explainer being timed.
enum Engine<'m> {
    Cpu(Explainer<'m, f32>),
    #[cfg(feature = "wgpu")]
    Wgpu(Box<smoothgrad_saliency::WgpuExplainer<'m>>),
    #[cfg(feature = "cuda")]
    Cuda(Box<smoothgrad_saliency::CudaExplainer<'m>>),
}

impl<'m> Engine<'m> {
    /// The explainer of `args.device`, and a line naming the device.
    fn new(
        args: &BenchArgs,
        model: &'m smoothgrad_layers::Model<f32>,
        budget: usize,
    ) -> Result<(Self, String)> {
        if args.precision != Precision::Fp32 && args.device != Device::Cuda {
            bail!("--precision tf32 applies to --device cuda only");
        }
        if args.conv != ConvChoice::Winograd && args.device != Device::Cpu {
            bail!("--conv applies to --device cpu only");
        }
        args.conv.apply();
        match args.device {
            Device::Cpu => Ok((
                Engine::Cpu(Explainer::new(model).memory_budget(budget)),
                format!("cpu, {} threads", threads()),
            )),
            #[cfg(feature = "wgpu")]
            Device::Wgpu => {
                let e = smoothgrad_saliency::WgpuExplainer::new(model)
                    .context("--device wgpu")?
                    .memory_budget(budget);
                let info = e.adapter_info();
                let name = format!("wgpu, {} ({:?})", info.name, info.backend);
                Ok((Engine::Wgpu(Box::new(e)), name))
            }
            #[cfg(feature = "cuda")]
            Device::Cuda => {
                use smoothgrad_autodiff::backend::cuda::Math;
                let math = match args.precision {
                    Precision::Fp32 => Math::Fp32,
                    Precision::Tf32 => Math::Tf32,
                };
                let e = smoothgrad_saliency::CudaExplainer::new(model, 0)
                    .context("--device cuda")?
                    .memory_budget(budget)
                    .math(math);
                let ctx = e.context();
                let gpu = ctx.name().context("--device cuda: the device's name")?;
                let (major, minor) = ctx
                    .compute_capability()
                    .context("--device cuda: the compute capability")?;
                let name = format!("cuda 0, {gpu} (sm_{major}{minor}), {math:?}");
                Ok((Engine::Cuda(Box::new(e)), name))
            }
            #[allow(unreachable_patterns)]
            other => {
                let name = other
                    .to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default();
                bail!(
                    "device {name} is not built into this binary (available: {})",
                    built()
                )
            }
        }
    }

    fn explain(
        &self,
        image: &Tensor<f32>,
        target: Option<usize>,
        method: &Method,
        smoothing: Option<&Smoothing>,
    ) -> smoothgrad_saliency::Result<SaliencyMap<f32>> {
        match self {
            Engine::Cpu(e) => e.explain(image, target, method, smoothing),
            #[cfg(feature = "wgpu")]
            Engine::Wgpu(e) => e.explain(image, target, method, smoothing),
            #[cfg(feature = "cuda")]
            Engine::Cuda(e) => e.explain(image, target, method, smoothing),
        }
    }
}

/// The devices this binary was built with.
fn built() -> &'static str {
    match (cfg!(feature = "wgpu"), cfg!(feature = "cuda")) {
        (true, true) => "cpu, wgpu, cuda",
        (true, false) => "cpu, wgpu",
        (false, true) => "cpu, cuda",
        (false, false) => "cpu",
    }
}

/// What one benchmark measured.
struct Measurement {
    /// Seconds per explanation, in run order.
    times: Vec<f64>,
    /// Forward and input-gradient backward passes of one sample per explanation.
    passes: usize,
    forward_flops: u64,
    backward_flops: u64,
    /// GFLOP/s of a 1024³ f32 multiply on the rayon pool, the median of a few (CPU runs only).
    sgemm_gflops: Option<f64>,
    /// The device, in words.
    device: String,
    /// (VmRSS before the first run, VmHWM after the last), bytes; `None` off Linux.
    rss: Option<(u64, u64)>,
    map: SaliencyMap<f32>,
}

impl Measurement {
    fn median(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        let m = t.len() / 2;
        if t.len() % 2 == 1 {
            t[m]
        } else {
            0.5 * (t[m - 1] + t[m])
        }
    }

    fn min(&self) -> f64 {
        self.times.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn flops_per_image(&self) -> u64 {
        self.passes as u64 * (self.forward_flops + self.backward_flops)
    }

    fn gflops(&self) -> f64 {
        self.flops_per_image() as f64 / self.median() / 1e9
    }

    fn rss_growth(&self) -> Option<u64> {
        self.rss.map(|(before, peak)| peak.saturating_sub(before))
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let model = common::load_model(&args.model, args.arch.as_deref())?;
    let (method, smoothing) = recipe(args)?;
    let image = match &args.input {
        Some(path) => {
            let x = npy::read_npy(path)?;
            match x.dims() {
                [1, rest @ ..] if rest.len() == 3 => x.reshape(rest)?,
                _ => x,
            }
        }
        None => Tensor::<f32>::uniform(model.input_dims(), 0.0, 1.0, args.seed)?,
    };
    let budget = match args.memory_budget {
        Some(mb) => mb
            .checked_mul(1 << 20)
            .context("--memory-budget is too large")?,
        None if args.device == Device::Cpu => smoothgrad_saliency::DEFAULT_MEMORY_BUDGET,
        None => smoothgrad_saliency::DEFAULT_GPU_MEMORY_BUDGET,
    };
    let (explainer, device) = Engine::new(args, &model, budget)?;
    let explain = || {
        explainer
            .explain(&image, args.target, &method, smoothing.as_ref())
            .with_context(|| args.model.display().to_string())
    };

    let rss_before = proc_status_bytes("VmRSS");
    // The peak so far includes loading the model; start counting from here.
    let peak_was_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    for _ in 0..args.warmup {
        explain()?;
    }
    let mut times = Vec::with_capacity(args.runs as usize);
    let mut last = None;
    for _ in 0..args.runs {
        let start = Instant::now();
        let map = explain()?;
        times.push(start.elapsed().as_secs_f64());
        last = Some(map);
    }
    let rss = match (rss_before, proc_status_bytes("VmHWM"), peak_was_reset) {
        (Some(before), Some(peak), true) => Some((before, peak)),
        _ => None,
    };
    let map = last.context("no run was made")?;
    let flops = model.flops_per_sample();
    let copies = smoothing.as_ref().map_or(1, |s| s.samples);
    let points = match &method {
        Method::IntegratedGradients(c) => c.steps,
        _ => 1,
    };
    let measured = Measurement {
        times,
        passes: copies * points,
        forward_flops: flops.forward,
        backward_flops: flops.input_backward,
        sgemm_gflops: (args.device == Device::Cpu).then(sgemm_gflops),
        device,
        rss,
        map,
    };

    print!("{}", report(args, &model, &method, &measured));
    if let Some(path) = &args.npy {
        npy::write_npy(path, &measured.map.attribution)?;
    }
    if let Some(path) = &args.json {
        let text = json(args, &model, &measured);
        npy::write_atomically(path, |w| w.write_all(text.as_bytes()))?;
    }
    Ok(())
}

/// The timed method and its smoothing, from the flags.
fn recipe(args: &BenchArgs) -> Result<(Method, Option<Smoothing>)> {
    let (method, aggregate) = args.method.base(&IgConfig::default());
    let Some(aggregate) = aggregate else {
        let given = [
            args.samples.map(|_| "--samples"),
            args.noise.as_ref().map(|_| "--noise"),
            args.sigma.map(|_| "--sigma"),
            args.noise_level.map(|_| "--noise-level"),
        ];
        if let Some(flag) = given.into_iter().flatten().next() {
            bail!("{flag} only applies to smoothed methods (smoothgrad, smoothgrad-sq, vargrad)");
        }
        return Ok((method, None));
    };
    let noise = match (args.sigma, args.noise_level) {
        (Some(sigma), _) => NoiseLevel::Absolute(sigma),
        (None, Some(level)) => NoiseLevel::Relative(level),
        (None, None) => NoiseLevel::Relative(0.15),
    };
    let mut smoothing = Smoothing {
        samples: args.samples.unwrap_or(50),
        noise,
        seed: args.seed,
        given_noise: None,
        aggregate,
    };
    if let Some(path) = &args.noise {
        let draws = npy::read_npy(path)?;
        let dims = draws.dims();
        if dims.len() != 4 {
            bail!(
                "{}: noise has shape {dims:?}; it must be [N, C, H, W] standard normal draws",
                path.display()
            );
        }
        match args.samples {
            Some(n) if n != dims[0] => bail!(
                "{}: holds {} noise draws but --samples is {n}",
                path.display(),
                dims[0]
            ),
            _ => smoothing.samples = dims[0],
        }
        smoothing.given_noise = Some(draws);
    }
    Ok((method, Some(smoothing)))
}

/// GFLOP/s of a 1024×1024×1024 f32 multiply on the rayon pool: the median of 5 after one
/// warm-up, the rate the convolutions (im2col + GEMM) could at best reach here.
fn sgemm_gflops() -> f64 {
    const N: usize = 1024;
    let a: Vec<f32> = (0..N * N)
        .map(|i| ((i % 61) as f32 - 30.0) / 30.0)
        .collect();
    let b: Vec<f32> = (0..N * N)
        .map(|i| ((i % 53) as f32 - 26.0) / 26.0)
        .collect();
    let mut c = vec![0f32; N * N];
    let mut once = || {
        let start = Instant::now();
        matmul(
            N,
            N,
            N,
            MatRef::row_major(&a, 0, N),
            MatRef::row_major(&b, 0, N),
            &mut c,
            0,
            N,
            false,
            Threads::Pool,
        );
        start.elapsed()
    };
    once();
    let mut times: Vec<Duration> = (0..5).map(|_| once()).collect();
    times.sort();
    2.0 * (N * N * N) as f64 / times[times.len() / 2].as_secs_f64() / 1e9
}

/// A `kB` field of `/proc/self/status` in bytes (Linux only).
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kb * 1024)
    })
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// The text printed for a benchmark.
fn report(
    args: &BenchArgs,
    model: &smoothgrad_layers::Model<f32>,
    method: &Method,
    m: &Measurement,
) -> String {
    let map = &m.map;
    let mut out = format!(
        "{}: input {:?} -> {:?}, {} on {}\n",
        args.model.display(),
        model.input_dims(),
        model.output_dims(),
        args.method.cli_name(),
        m.device,
    );
    let copies = |k: usize| format!("{k} {}", if k == 1 { "copy" } else { "copies" });
    let passes = match method {
        Method::IntegratedGradients(c) => {
            format!("{} x {} path points", copies(m.passes / c.steps), c.steps)
        }
        _ => copies(m.passes),
    };
    let noise = if map.sigma > 0.0 {
        format!("sigma {:.6}", map.sigma)
    } else {
        "no noise".to_string()
    };
    let lanes = if map.lanes > 1 {
        format!(" ({} chunks at once, one per thread)", map.lanes)
    } else {
        String::new()
    };
    out.push_str(&format!(
        "  {passes}, chunk {} per forward/backward{lanes}, {noise}, target class {}\n",
        map.chunk, map.target
    ));
    out.push_str(&format!(
        "  FLOPs per sample: {:.4} G forward + {:.4} G input backward; {:.3} GFLOP per image\n",
        m.forward_flops as f64 / 1e9,
        m.backward_flops as f64 / 1e9,
        m.flops_per_image() as f64 / 1e9
    ));
    out.push_str(&format!(
        "  time per image: median {:.3} ms, min {:.3} ms ({} runs after {} warm-up)\n",
        m.median() * 1e3,
        m.min() * 1e3,
        m.times.len(),
        args.warmup
    ));
    match m.sgemm_gflops {
        Some(sgemm) => out.push_str(&format!(
            "  {:.3} images/s, {:.2} GFLOP/s = {:.1}% of this machine's sgemm ({:.1} GFLOP/s, 1024^3 f32)\n",
            1.0 / m.median(),
            m.gflops(),
            100.0 * m.gflops() / sgemm,
            sgemm
        )),
        None => out.push_str(&format!(
            "  {:.3} images/s, {:.2} GFLOP/s ({} copies/s)\n",
            1.0 / m.median(),
            m.gflops(),
            (m.passes as f64 / m.median()).round()
        )),
    }
    match (m.rss, m.rss_growth()) {
        (Some((before, peak)), Some(growth)) => out.push_str(&format!(
            "  RSS growth: {:.1} MiB (peak {:.1} MiB, {:.1} MiB before the first run)\n",
            mib(growth),
            mib(peak),
            mib(before)
        )),
        _ => out.push_str("  RSS growth: n/a (needs Linux /proc)\n"),
    }
    out
}

/// The measurements as one JSON object.
fn json(args: &BenchArgs, model: &smoothgrad_layers::Model<f32>, m: &Measurement) -> String {
    let dims = |d: &[usize]| {
        let items: Vec<String> = d.iter().map(ToString::to_string).collect();
        format!("[{}]", items.join(", "))
    };
    let times: Vec<String> = m.times.iter().map(|t| format!("{t:e}")).collect();
    let optional = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    let optional_f = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:e}"));
    let device = args
        .device
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    let precision = args
        .precision
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    let fields = [
        ("model", json_string(&args.model.display().to_string())),
        ("device", json_string(&device)),
        ("device_name", json_string(&m.device)),
        ("precision", json_string(&precision)),
        (
            "conv",
            json_string(&format!("{:?}", args.conv).to_lowercase()),
        ),
        ("input_dims", dims(model.input_dims())),
        ("output_dims", dims(model.output_dims())),
        ("method", json_string(&args.method.cli_name())),
        ("passes", m.passes.to_string()),
        ("chunk", m.map.chunk.to_string()),
        ("lanes", m.map.lanes.to_string()),
        ("sigma", format!("{:e}", m.map.sigma)),
        ("target", m.map.target.to_string()),
        ("threads", threads().to_string()),
        ("warmup", args.warmup.to_string()),
        ("times_s", format!("[{}]", times.join(", "))),
        ("median_s", format!("{:e}", m.median())),
        ("min_s", format!("{:e}", m.min())),
        ("images_per_s", format!("{:e}", 1.0 / m.median())),
        ("forward_flops_per_sample", m.forward_flops.to_string()),
        (
            "input_backward_flops_per_sample",
            m.backward_flops.to_string(),
        ),
        ("flops_per_image", m.flops_per_image().to_string()),
        ("gflops_per_s", format!("{:e}", m.gflops())),
        ("sgemm_gflops_per_s", optional_f(m.sgemm_gflops)),
        (
            "fraction_of_sgemm",
            optional_f(m.sgemm_gflops.map(|s| m.gflops() / s)),
        ),
        ("rss_before_bytes", optional(m.rss.map(|r| r.0))),
        ("rss_peak_bytes", optional(m.rss.map(|r| r.1))),
        ("rss_growth_bytes", optional(m.rss_growth())),
    ];
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("  \"{k}\": {v}"))
        .collect();
    format!("{{\n{}\n}}\n", body.join(",\n"))
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn proc_status_reads_kilobytes() {
        if cfg!(target_os = "linux") {
            let rss = proc_status_bytes("VmRSS").expect("Linux has VmRSS");
            assert!(rss > 0 && rss.is_multiple_of(1024));
        }
        assert_eq!(proc_status_bytes("NoSuchField"), None);
    }
}

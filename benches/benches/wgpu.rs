//! WGSL kernels through wgpu (feature `wgpu`): convolution forward and input gradient, the
//! fused SmoothGrad reduction, and matmul, each beside its CPU kernel as the peer in the same
//! run. Every timed iteration ends with the device drained (`iter_custom` + `sync`), so times
//! are of finished work, not of recording.
//!
//! Throughput is FLOPs (2 per multiply-add): criterion's "elements/s" reads as FLOP/s.
//! With no adapter the bench prints why and registers nothing. On a CPU adapter (Mesa
//! lavapipe) only the smallest shape runs: there it is a smoke test, not a measurement.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smoothgrad_autodiff::backend::cpu::conv::{conv2d_bwd_input, conv2d_fwd};
use smoothgrad_autodiff::backend::cpu::copies::conv2d_bwd_input_reduce_copies;
use smoothgrad_autodiff::backend::cpu::gemm::{MatRef, Threads, matmul};
use smoothgrad_autodiff::backend::wgpu::{WgpuContext, wgpu::DeviceType};
use smoothgrad_autodiff::{Conv2dGeometry, Conv2dParams, Tensor};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A benchmarked convolution: its id, input dims, weight dims and parameters.
struct ConvShape {
    id: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    params: Conv2dParams,
}

fn shapes(software: bool) -> Vec<ConvShape> {
    let pad1 = Conv2dParams::new().padding(1);
    let small = ConvShape {
        id: "3to16x16x16_k3_b4",
        x: [4, 3, 16, 16],
        w: [16, 3, 3, 3],
        params: pad1,
    };
    if software {
        return vec![small];
    }
    vec![
        small,
        ConvShape {
            id: "64x56x56_k3_b8",
            x: [8, 64, 56, 56],
            w: [64, 64, 3, 3],
            params: pad1,
        },
        ConvShape {
            id: "3to32x32x32_k3_b50",
            x: [50, 3, 32, 32],
            w: [32, 3, 3, 3],
            params: pad1,
        },
        ConvShape {
            id: "128x28x28_k3_b8",
            x: [8, 128, 28, 28],
            w: [128, 128, 3, 3],
            params: pad1,
        },
        ConvShape {
            id: "dw64x56x56_k3_b8",
            x: [8, 64, 56, 56],
            w: [64, 1, 3, 3],
            params: pad1.groups(64),
        },
    ]
}

fn uniform(dims: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::<f32>::uniform(dims, -1.0, 1.0, seed).expect("bench shapes are valid")
}

fn short(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
}

/// Times `iters` runs of `launch`, from an idle device to a drained one.
fn timed(ctx: &WgpuContext, iters: u64, mut launch: impl FnMut()) -> Duration {
    ctx.sync().expect("device stays up");
    let start = Instant::now();
    for _ in 0..iters {
        launch();
    }
    ctx.sync().expect("device stays up");
    start.elapsed()
}

fn context() -> Option<WgpuContext> {
    match WgpuContext::new() {
        Ok(ctx) => {
            ctx.warm_up().expect("kernels build");
            Some(ctx)
        }
        Err(e) => {
            eprintln!("skipped: no wgpu adapter ({e})");
            None
        }
    }
}

fn conv2d(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    let software = ctx.adapter_info().device_type == DeviceType::Cpu;
    for kernel in [
        "conv2d_fwd",
        "conv2d_bwd_input",
        "conv2d_bwd_input_reduce_copies",
    ] {
        let mut group = c.benchmark_group(format!("wgpu/{kernel}"));
        short(&mut group);
        for s in shapes(software) {
            let g = Conv2dGeometry::new(&s.x, &s.w, &s.params).expect("bench shapes are valid");
            let (x, w) = (uniform(&g.in_dims(), 1), uniform(&g.weight_dims(), 2));
            let (bias, dy) = (uniform(&[g.out_channels], 3), uniform(&g.out_dims(), 4));
            let gpu = |t: &Tensor<f32>| ctx.upload(t).expect("bench tensors fit the device");
            let (gx, gw, gb, gdy) = (gpu(&x), gpu(&w), gpu(&bias), gpu(&dy));
            let one = [1, g.in_channels, g.in_h, g.in_w];
            let (mut sum, mut sumsq) = (
                ctx.zeros(&one).expect("fits"),
                ctx.zeros(&one).expect("fits"),
            );
            group.throughput(Throughput::Elements(2 * g.macs()));
            group.bench_function(s.id, |b| {
                b.iter_custom(|iters| {
                    timed(&ctx, iters, || match kernel {
                        "conv2d_fwd" => drop(ctx.conv2d_fwd(&g, &gx, &gw, Some(&gb))),
                        "conv2d_bwd_input" => drop(ctx.conv2d_bwd_input(&g, &gdy, &gw)),
                        _ => ctx
                            .conv2d_bwd_input_reduce_copies(&g, &gdy, &gw, &mut sum, &mut sumsq)
                            .expect("fused kernel runs"),
                    })
                })
            });
            // The CPU kernel on the same shape: the peer.
            let (xs, ws, dys) = (x.as_slice(), w.as_slice(), dy.as_slice());
            let mut out = vec![0f32; g.out_dims().iter().product()];
            let mut dx = vec![0f32; xs.len()];
            let (mut s1, mut s2) = (
                vec![0f32; one.iter().product()],
                vec![0f32; one.iter().product()],
            );
            group.bench_function(format!("{}/cpu", s.id), |b| match kernel {
                "conv2d_fwd" => {
                    b.iter(|| conv2d_fwd(&g, black_box(xs), ws, Some(bias.as_slice()), &mut out))
                }
                "conv2d_bwd_input" => b.iter(|| conv2d_bwd_input(&g, black_box(dys), ws, &mut dx)),
                _ => b.iter(|| {
                    conv2d_bwd_input_reduce_copies(&g, black_box(dys), ws, &mut s1, &mut s2)
                }),
            });
        }
        group.finish();
    }
}

fn sgemm(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    let software = ctx.adapter_info().device_type == DeviceType::Cpu;
    let n = if software { 256 } else { 1024 };
    let (a, b) = (uniform(&[n, n], 5), uniform(&[n, n], 6));
    let (ga, gb) = (ctx.upload(&a).expect("fits"), ctx.upload(&b).expect("fits"));
    let mut group = c.benchmark_group("wgpu/matmul_fwd");
    short(&mut group);
    group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
    let id = format!("{n}x{n}x{n}");
    group.bench_function(&id, |bench| {
        bench.iter_custom(|iters| timed(&ctx, iters, || drop(ctx.matmul_fwd(&ga, &gb))))
    });
    let mut out = vec![0f32; n * n];
    group.bench_function(format!("{id}/cpu"), |bench| {
        bench.iter(|| {
            matmul(
                n,
                n,
                n,
                MatRef::row_major(black_box(a.as_slice()), 0, n),
                MatRef::row_major(b.as_slice(), 0, n),
                &mut out,
                0,
                n,
                false,
                Threads::Pool,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, sgemm, conv2d);
criterion_main!(benches);

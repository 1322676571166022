//! CPU convolution kernels (f32) against the machine's own sgemm rate, in one run.
//!
//! Throughput is FLOPs (2 per multiply-add), so criterion's "elements/s" reads as FLOP/s; the
//! `sgemm` group is the peer: a conv kernel built on im2col + GEMM should approach it.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smoothgrad_autodiff::backend::cpu::conv::{
    ConvAlgorithm, conv2d_bwd_input, conv2d_bwd_weight, conv2d_fwd, set_conv_algorithm,
};
use smoothgrad_autodiff::backend::cpu::gemm::{MatRef, Threads, matmul};
use smoothgrad_autodiff::{Conv2dGeometry, Conv2dParams, Tensor};
use std::hint::black_box;
use std::time::Duration;

/// A benchmarked convolution: its id, input dims, weight dims and parameters.
struct ConvShape {
    id: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    params: Conv2dParams,
}

fn shapes() -> Vec<ConvShape> {
    let pad1 = Conv2dParams::new().padding(1);
    vec![
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
            id: "256x14x14_k3_b8",
            x: [8, 256, 14, 14],
            w: [256, 256, 3, 3],
            params: pad1,
        },
        // A ResNet-18 14² layer for one copy (`medium` runs one copy per chunk): too few 4×4
        // tiles for F(4×4), enough 2×2 ones for F(2×2).
        ConvShape {
            id: "256x14x14_k3_b1",
            x: [1, 256, 14, 14],
            w: [256, 256, 3, 3],
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

fn uniform(dims: &[usize], seed: u64) -> Vec<f32> {
    Tensor::<f32>::uniform(dims, -1.0, 1.0, seed)
        .expect("bench shapes are valid")
        .into_vec()
}

fn short(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
}

fn conv2d(c: &mut Criterion) {
    let kernels = ["conv2d_fwd", "conv2d_bwd_input", "conv2d_bwd_weight"];
    for kernel in kernels {
        let mut group = c.benchmark_group(format!("cpu/{kernel}"));
        short(&mut group);
        for s in shapes() {
            let g = Conv2dGeometry::new(&s.x, &s.w, &s.params).expect("bench shapes are valid");
            let x = uniform(&g.in_dims(), 1);
            let w = uniform(&g.weight_dims(), 2);
            let bias = uniform(&[g.out_channels], 3);
            let dy = uniform(&g.out_dims(), 4);
            let mut dx = vec![0f32; x.len()];
            let mut dw = vec![0f32; w.len()];
            let mut y = vec![0f32; dy.len()];
            group.throughput(Throughput::Elements(2 * g.macs()));
            // The forward and input gradient run side by side: im2col + GEMM, and the fastest
            // algorithm for the shape (Winograd F(4×4,3×3) where it applies); the forward also
            // as the default takes it (Winograd F(2×2,3×3)).
            let algorithms: &[(&str, ConvAlgorithm)] = match kernel {
                "conv2d_bwd_weight" => &[("", ConvAlgorithm::Im2col)],
                "conv2d_fwd" => &[
                    ("/im2col", ConvAlgorithm::Im2col),
                    ("/winograd", ConvAlgorithm::Winograd),
                    ("/fastest", ConvAlgorithm::Fastest),
                ],
                _ => &[
                    ("/im2col", ConvAlgorithm::Im2col),
                    ("/fastest", ConvAlgorithm::Fastest),
                ],
            };
            for &(suffix, algorithm) in algorithms {
                set_conv_algorithm(algorithm);
                group.bench_function(format!("{}{suffix}", s.id), |b| match kernel {
                    "conv2d_fwd" => {
                        b.iter(|| conv2d_fwd(&g, black_box(&x), &w, Some(&bias), &mut y))
                    }
                    "conv2d_bwd_input" => {
                        b.iter(|| conv2d_bwd_input(&g, black_box(&dy), &w, &mut dx))
                    }
                    _ => b.iter(|| conv2d_bwd_weight(&g, black_box(&dy), &x, &mut dw)),
                });
            }
            set_conv_algorithm(ConvAlgorithm::Winograd);
        }
        group.finish();
    }
}

fn sgemm(c: &mut Criterion) {
    let n = 1024;
    let a = uniform(&[n, n], 5);
    let b = uniform(&[n, n], 6);
    let mut out = vec![0f32; n * n];
    let mut group = c.benchmark_group("cpu/sgemm");
    short(&mut group);
    group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
    group.bench_function("1024x1024x1024", |bench| {
        bench.iter(|| {
            matmul(
                n,
                n,
                n,
                MatRef::row_major(black_box(&a), 0, n),
                MatRef::row_major(&b, 0, n),
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

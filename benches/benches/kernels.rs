//! Every CPU kernel outside the convolutions, forward and backward, on the layer shapes of the
//! `small` (VGG on 3×32×32, 50 copies per chunk) and `medium` (ResNet-18 on 3×224×224) models.
//!
//! Throughput: memory-bound kernels (ReLU, clamp, pools, batch norm, add, sum, softmax, the
//! noisy copies and their reduction) report **bytes/s**, counting each input read once and
//! each output written once (f32, 4 bytes; ReLU's and clamp's masks 1 bit per element, max
//! pool's argmax 4 bytes per output); the GEMM-shaped kernels (linear, the fused
//! `conv2d_bwd_input_reduce_copies` and `conv2d_bwd_input_sum_copies`, and `tiny`'s fused
//! convolution + 2×2 max pool) report **FLOP/s** as criterion's "elements/s" (2 per
//! multiply-add, of the work each kernel does: the `_sum` kernels run the convolution once). Kernels the tape wraps with no public slice entry point (clamp, global average
//! pool, batch norm, linear, softmax, add, sum) run through a one-op tape: forward on a fresh
//! tape per iteration, backward as `Tape::backward_from` of a tape recorded once (it takes
//! `&self`), so only that op's backward runs.
//!
//! `cargo bench -p smoothgrad-benches --bench kernels` (a few minutes; a name filter after `--`
//! runs one group, e.g. `-- cpu/maxpool2d`).

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use smoothgrad_autodiff::backend::cpu::conv::{
    conv2d_max_pool2d_bwd_input, conv2d_max_pool2d_bwd_input_sum, conv2d_max_pool2d_fwd,
    conv2d_max_pool2d_path,
};
use smoothgrad_autodiff::backend::cpu::copies::{
    NoiseSource, conv2d_bwd_input_reduce_copies, conv2d_bwd_input_sum_copies, noisy_copies_fwd,
    reduce_copies,
};
use smoothgrad_autodiff::backend::cpu::elementwise::relu_fwd_masked_in_place;
use smoothgrad_autodiff::backend::cpu::pool::{
    avgpool2d_bwd, avgpool2d_fwd, maxpool2d_bwd, maxpool2d_fwd,
};
use smoothgrad_autodiff::ops::activation::relu_fwd_masked;
use smoothgrad_autodiff::{
    Conv2dGeometry, Conv2dParams, Pool2dGeometry, Pool2dParams, Tape, Tensor, Var,
};
use std::hint::black_box;
use std::time::Duration;

const F32: u64 = 4;

fn uniform(dims: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::<f32>::uniform(dims, -1.0, 1.0, seed).expect("bench shapes are valid")
}

fn short(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
}

/// Bytes of `n` f32 elements.
fn bytes(n: usize) -> u64 {
    n as u64 * F32
}

/// Activation shapes: small's first convolution output (50 copies) and medium's first stage
/// (one 8-copy chunk).
fn activations() -> [(&'static str, [usize; 4]); 2] {
    [
        ("small_50x32x32x32", [50, 32, 32, 32]),
        ("medium_8x64x56x56", [8, 64, 56, 56]),
    ]
}

/// One-op tape: records `op` on a tracked input and returns the tape, the output and a seed of
/// the output's shape, for timing the backward alone.
fn recorded(
    x: &Tensor<f32>,
    op: impl Fn(&mut Tape<f32>, &Var<f32>) -> Var<f32>,
) -> (Tape<f32>, Var<f32>, Tensor<f32>) {
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let y = op(&mut tape, &xv);
    let seed = uniform(y.dims(), 99);
    (tape, y, seed)
}

/// Forward on a fresh tape per iteration (tracked input, so masks and indices are made) and
/// backward of a tape recorded once, as groups `cpu/{name}_fwd` and `cpu/{name}_bwd`.
fn tape_pair(
    c: &mut Criterion,
    name: &str,
    cases: &[(&str, Tensor<f32>, u64, u64)],
    op: impl Fn(&mut Tape<f32>, &Var<f32>) -> Var<f32> + Copy,
) {
    let mut fwd = c.benchmark_group(format!("cpu/{name}_fwd"));
    short(&mut fwd);
    for (id, x, fwd_bytes, _) in cases {
        fwd.throughput(Throughput::Bytes(*fwd_bytes));
        fwd.bench_function(*id, |b| {
            b.iter(|| {
                let mut tape = Tape::new();
                let xv = tape.var(black_box(x).clone());
                op(&mut tape, &xv)
            })
        });
    }
    fwd.finish();
    let mut bwd = c.benchmark_group(format!("cpu/{name}_bwd"));
    short(&mut bwd);
    for (id, x, _, bwd_bytes) in cases {
        let (tape, y, seed) = recorded(x, op);
        bwd.throughput(Throughput::Bytes(*bwd_bytes));
        bwd.bench_function(*id, |b| {
            b.iter(|| tape.backward_from(&y, black_box(&seed)).expect("backward"))
        });
    }
    bwd.finish();
}

fn relu(c: &mut Criterion) {
    let mut fwd = c.benchmark_group("cpu/relu_fwd");
    short(&mut fwd);
    for (id, dims) in activations() {
        let x = uniform(&dims, 1);
        let n = x.numel();
        // Reads x, writes y and the 1-bit mask.
        fwd.throughput(Throughput::Bytes(2 * bytes(n) + n as u64 / 8));
        fwd.bench_function(id, |b| b.iter(|| relu_fwd_masked(black_box(x.as_slice()))));
        // What a ReLU does to a value it takes over (`Tape::relu_owned`); ReLU twice gives the
        // same values, so every iteration does the same work.
        let (mut owned, mut words) = (x.as_slice().to_vec(), vec![0u64; n.div_ceil(64)]);
        fwd.bench_function(format!("{id}/in_place"), |b| {
            b.iter(|| relu_fwd_masked_in_place(black_box(owned.as_mut_slice()), &mut words))
        });
    }
    fwd.finish();
    let mut bwd = c.benchmark_group("cpu/relu_bwd");
    short(&mut bwd);
    for (id, dims) in activations() {
        let x = uniform(&dims, 1);
        let g = uniform(&dims, 2);
        let (_, mask) = relu_fwd_masked(x.as_slice());
        let n = x.numel();
        bwd.throughput(Throughput::Bytes(2 * bytes(n) + n as u64 / 8));
        bwd.bench_function(id, |b| {
            b.iter(|| mask.apply(black_box(g.as_slice()), false))
        });
        bwd.bench_function(format!("{id}/guided"), |b| {
            b.iter(|| mask.apply(black_box(g.as_slice()), true))
        });
        // What the tape runs on a gradient it owns (masking twice gives the same values, so
        // every iteration does the same work).
        let mut owned = g.as_slice().to_vec();
        bwd.bench_function(format!("{id}/in_place"), |b| {
            b.iter(|| mask.apply_in_place(black_box(owned.as_mut_slice()), false))
        });
    }
    bwd.finish();
}

fn clamp(c: &mut Criterion) {
    let cases: Vec<_> = activations()
        .iter()
        .map(|&(id, dims)| {
            let x = uniform(&dims, 3);
            let n = x.numel();
            let traffic = 2 * bytes(n) + n as u64 / 8;
            (id, x, traffic, traffic)
        })
        .collect();
    // ReLU6, as MobileNet uses it.
    tape_pair(c, "clamp", &cases, |tape, x| {
        tape.clamp(x, 0.0, 6.0).expect("clamp")
    });
}

/// Pool geometries: small's three 2×2 pools (first one here, 50 copies) and medium's stem
/// 3×3 stride 2 pad 1 pool (8 copies).
fn max_pools() -> [(&'static str, Pool2dGeometry); 3] {
    let g = |x: [usize; 4], p: Pool2dParams| {
        Pool2dGeometry::new("bench", &x, &p).expect("bench shapes are valid")
    };
    [
        (
            "small_2x2s2_50x32x32x32",
            g([50, 32, 32, 32], Pool2dParams::new(2)),
        ),
        (
            "small_2x2s2_50x128x8x8",
            g([50, 128, 8, 8], Pool2dParams::new(2)),
        ),
        (
            "medium_3x3s2p1_8x64x112x112",
            g([8, 64, 112, 112], Pool2dParams::new(3).stride(2).padding(1)),
        ),
    ]
}

fn maxpool(c: &mut Criterion) {
    let mut fwd = c.benchmark_group("cpu/maxpool2d_fwd");
    short(&mut fwd);
    for (id, g) in max_pools() {
        let x = uniform(&g.in_dims(), 4);
        let outputs = g.out_dims().iter().product::<usize>();
        let (mut out, mut arg) = (vec![0f32; outputs], vec![0u32; outputs]);
        fwd.throughput(Throughput::Bytes(bytes(x.numel()) + 2 * bytes(outputs)));
        fwd.bench_function(id, |b| {
            b.iter(|| maxpool2d_fwd(&g, black_box(x.as_slice()), &mut out, &mut arg))
        });
    }
    fwd.finish();
    let mut bwd = c.benchmark_group("cpu/maxpool2d_bwd");
    short(&mut bwd);
    for (id, g) in max_pools() {
        let x = uniform(&g.in_dims(), 4);
        let dy = uniform(&g.out_dims(), 5);
        let (mut out, mut arg) = (vec![0f32; dy.numel()], vec![0u32; dy.numel()]);
        maxpool2d_fwd(&g, x.as_slice(), &mut out, &mut arg);
        let mut dx = vec![0f32; x.numel()];
        bwd.throughput(Throughput::Bytes(2 * bytes(dy.numel()) + bytes(x.numel())));
        bwd.bench_function(id, |b| {
            b.iter(|| maxpool2d_bwd(&g, black_box(dy.as_slice()), &arg, &mut dx))
        });
    }
    bwd.finish();
}

fn avgpool(c: &mut Criterion) {
    let g = |x: [usize; 4], p: Pool2dParams| {
        Pool2dGeometry::new("bench", &x, &p).expect("bench shapes are valid")
    };
    let pools = [
        (
            "2x2s2_50x64x16x16",
            g([50, 64, 16, 16], Pool2dParams::new(2)),
        ),
        (
            "3x3s1p1_8x64x56x56",
            g([8, 64, 56, 56], Pool2dParams::new(3).stride(1).padding(1)),
        ),
    ];
    let mut fwd = c.benchmark_group("cpu/avgpool2d_fwd");
    short(&mut fwd);
    for (id, g) in &pools {
        let x = uniform(&g.in_dims(), 6);
        let mut out = vec![0f32; g.out_dims().iter().product()];
        fwd.throughput(Throughput::Bytes(bytes(x.numel()) + bytes(out.len())));
        fwd.bench_function(*id, |b| {
            b.iter(|| avgpool2d_fwd(g, black_box(x.as_slice()), &mut out))
        });
    }
    fwd.finish();
    let mut bwd = c.benchmark_group("cpu/avgpool2d_bwd");
    short(&mut bwd);
    for (id, g) in &pools {
        let dy = uniform(&g.out_dims(), 7);
        let mut dx = vec![0f32; g.in_dims().iter().product()];
        bwd.throughput(Throughput::Bytes(bytes(dy.numel()) + bytes(dx.len())));
        bwd.bench_function(*id, |b| {
            b.iter(|| avgpool2d_bwd(g, black_box(dy.as_slice()), &mut dx))
        });
    }
    bwd.finish();
}

fn global_avg_pool(c: &mut Criterion) {
    // medium's last stage, one 50-copy batch.
    let x = uniform(&[50, 512, 7, 7], 8);
    let n = x.numel();
    let planes = 50 * 512;
    let cases = [(
        "medium_50x512x7x7",
        x,
        bytes(n) + bytes(planes),
        bytes(planes) + bytes(n),
    )];
    tape_pair(c, "global_avg_pool2d", &cases, |tape, x| {
        tape.global_avg_pool2d(x).expect("global_avg_pool2d")
    });
}

fn batch_norm(c: &mut Criterion) {
    let x = uniform(&[8, 64, 56, 56], 9);
    let n = x.numel();
    let channels = 64;
    let gamma = Var::constant(uniform(&[channels], 10));
    let beta = Var::constant(uniform(&[channels], 11));
    let mean = uniform(&[channels], 12);
    let var = Tensor::<f32>::uniform(&[channels], 0.5, 2.0, 13).expect("valid");
    let cases = [("medium_8x64x56x56", x, 2 * bytes(n), 2 * bytes(n))];
    tape_pair(c, "batch_norm", &cases, |tape, x| {
        tape.batch_norm(x, &gamma, &beta, &mean, &var, 1e-5)
            .expect("batch_norm")
    });
}

fn linear(c: &mut Criterion) {
    // small's first classifier layer and medium's fc, over one 50-copy batch.
    let layers = [
        ("small_50x2048to256", 50, 2048, 256),
        ("medium_50x512to1000", 50, 512, 1000),
    ];
    let mut fwd = c.benchmark_group("cpu/linear_fwd");
    short(&mut fwd);
    let mut bwd_input = Vec::new();
    let mut bwd_weight = Vec::new();
    for (id, batch, inputs, outputs) in layers {
        let x = uniform(&[batch, inputs], 14);
        let w = uniform(&[outputs, inputs], 15);
        let bias = Var::constant(uniform(&[outputs], 16));
        let flops = 2 * (batch * inputs * outputs) as u64;
        fwd.throughput(Throughput::Elements(flops));
        let wv = Var::constant(w.clone());
        fwd.bench_function(id, |b| {
            b.iter(|| {
                let mut tape = Tape::new();
                let xv = tape.var(black_box(&x).clone());
                tape.linear(&xv, &wv, Some(&bias)).expect("linear")
            })
        });
        // dX only: x tracked, w constant.
        let mut tape = Tape::new();
        let xv = tape.var(x.clone());
        let y = tape.linear(&xv, &wv, Some(&bias)).expect("linear");
        bwd_input.push((id, flops, tape, y));
        // dW only: w tracked, x constant.
        let mut tape = Tape::new();
        let wt = tape.var(w);
        let y = tape.linear(&Var::constant(x), &wt, None).expect("linear");
        bwd_weight.push((id, flops, tape, y));
    }
    fwd.finish();
    for (name, cases) in [
        ("linear_bwd_input", bwd_input),
        ("linear_bwd_weight", bwd_weight),
    ] {
        let mut group = c.benchmark_group(format!("cpu/{name}"));
        short(&mut group);
        for (id, flops, tape, y) in cases {
            let seed = uniform(y.dims(), 17);
            group.throughput(Throughput::Elements(flops));
            group.bench_function(id, |b| {
                b.iter(|| tape.backward_from(&y, black_box(&seed)).expect("backward"))
            });
        }
        group.finish();
    }
}

fn softmax(c: &mut Criterion) {
    // medium's 1000 classes over a 50-copy batch.
    let x = uniform(&[50, 1000], 18);
    let n = x.numel();
    let cases = [("50x1000", x, 2 * bytes(n), 3 * bytes(n))];
    tape_pair(c, "softmax", &cases, |tape, x| {
        tape.softmax(x, 1).expect("softmax")
    });
    tape_pair(c, "log_softmax", &cases, |tape, x| {
        tape.log_softmax(x, 1).expect("log_softmax")
    });
}

fn add(c: &mut Criterion) {
    // A residual sum of medium's first stage; the second operand is tracked too, as in a
    // ResNet block.
    let dims = [8, 64, 56, 56];
    let other = uniform(&dims, 19);
    let x = uniform(&dims, 20);
    let n = x.numel();
    let cases = [("medium_8x64x56x56", x, 3 * bytes(n), 3 * bytes(n))];
    tape_pair(c, "add", &cases, |tape, x| {
        let o = tape.var(other.clone());
        tape.add(x, &o).expect("add")
    });
}

fn sum(c: &mut Criterion) {
    // Per-plane sums of small's first activations.
    let x = uniform(&[50, 32, 32, 32], 21);
    let n = x.numel();
    let cases = [("small_50x32x32x32_hw", x, bytes(n), bytes(n))];
    tape_pair(c, "sum", &cases, |tape, x| {
        tape.sum(x, &[2, 3], false).expect("sum")
    });
}

fn noisy_copies(c: &mut Criterion) {
    let cases = [
        ("small_50x3x32x32", 50, [3, 32, 32]),
        ("medium_8x3x224x224", 8, [3, 224, 224]),
    ];
    let mut fwd = c.benchmark_group("cpu/noisy_copies_fwd");
    short(&mut fwd);
    let noise = NoiseSource::Philox { seed: 7 };
    for (id, copies, dims) in cases {
        let x = uniform(&dims, 22);
        let mut out = vec![0f32; copies * x.numel()];
        fwd.throughput(Throughput::Bytes(bytes(x.numel()) + bytes(out.len())));
        fwd.bench_function(id, |b| {
            b.iter(|| noisy_copies_fwd(black_box(x.as_slice()), &noise, 0.15, 0, &mut out))
        });
    }
    fwd.finish();
    // The backward: the sum and sum of squares over copies.
    let mut bwd = c.benchmark_group("cpu/noisy_copies_bwd");
    short(&mut bwd);
    for (id, copies, dims) in cases {
        let per_copy: usize = dims.iter().product();
        let g = uniform(&[copies, per_copy], 23);
        let (mut sum, mut sumsq) = (vec![0f32; per_copy], vec![0f32; per_copy]);
        bwd.throughput(Throughput::Bytes(bytes(g.numel()) + 2 * bytes(per_copy)));
        bwd.bench_function(id, |b| {
            b.iter(|| reduce_copies(black_box(g.as_slice()), &mut sum, &mut sumsq))
        });
    }
    bwd.finish();
}

fn reduce_copies_conv(c: &mut Criterion) {
    // The first convolution's input gradient reduced over copies: small's 3→32 3×3 on 50
    // copies, medium's 7×7 stride 2 stem on 8.
    let convs = [
        (
            "small_50x3to32x32x32_k3",
            [50, 3, 32, 32],
            [32, 3, 3, 3],
            Conv2dParams::new().padding(1),
        ),
        (
            "medium_8x3to64x224x224_k7s2",
            [8, 3, 224, 224],
            [64, 3, 7, 7],
            Conv2dParams::new().stride(2).padding(3),
        ),
    ];
    let mut group = c.benchmark_group("cpu/conv2d_bwd_input_reduce_copies");
    short(&mut group);
    for &(id, x, w, params) in &convs {
        let g = Conv2dGeometry::new(&x, &w, &params).expect("bench shapes are valid");
        let dy = uniform(&g.out_dims(), 24);
        let w = uniform(&g.weight_dims(), 25);
        let per_copy = x[1] * x[2] * x[3];
        let (mut sum, mut sumsq) = (vec![0f32; per_copy], vec![0f32; per_copy]);
        group.throughput(Throughput::Elements(2 * g.macs()));
        group.bench_function(id, |b| {
            b.iter(|| {
                conv2d_bwd_input_reduce_copies(
                    &g,
                    black_box(dy.as_slice()),
                    w.as_slice(),
                    &mut sum,
                    &mut sumsq,
                )
            })
        });
    }
    group.finish();

    // Without squares (SmoothGrad's mean): dY summed over the copies, one convolution.
    let mut group = c.benchmark_group("cpu/conv2d_bwd_input_sum_copies");
    short(&mut group);
    for (id, x, w, params) in convs {
        let g = Conv2dGeometry::new(&x, &w, &params).expect("bench shapes are valid");
        let dy = uniform(&g.out_dims(), 24);
        let w = uniform(&g.weight_dims(), 25);
        let mut dx = vec![0f32; x[1] * x[2] * x[3]];
        group.throughput(Throughput::Elements(
            2 * g.macs() / x[0] as u64 + dy.numel() as u64,
        ));
        group.bench_function(id, |b| {
            b.iter(|| {
                conv2d_bwd_input_sum_copies(&g, black_box(dy.as_slice()), w.as_slice(), &mut dx)
            })
        });
    }
    group.finish();
}

fn conv_max_pool(c: &mut Criterion) {
    // `tiny`'s two convolutions with their 2×2 max pools, 50 copies (direct loops), and
    // `small`'s second, 25 copies (Winograd F(2×2)): the fused forward, the input gradient per
    // copy, and summed over the copies.
    let convs = [
        ("tiny1_50x1to8x28x28_k3", [50, 1, 28, 28], [8, 1, 3, 3]),
        ("tiny2_50x8to16x14x14_k3", [50, 8, 14, 14], [16, 8, 3, 3]),
        (
            "small2_25x32to32x32x32_k3",
            [25, 32, 32, 32],
            [32, 32, 3, 3],
        ),
    ];
    let mut group = c.benchmark_group("cpu/conv2d_max_pool2d");
    short(&mut group);
    for (id, x, w) in convs {
        let g = Conv2dGeometry::new(&x, &w, &Conv2dParams::new().padding(1))
            .expect("bench shapes are valid");
        let pg = Pool2dGeometry::new("max_pool2d", &g.out_dims(), &Pool2dParams::new(2))
            .expect("bench shapes are valid");
        let path = conv2d_max_pool2d_path::<f32>(&g, &pg).expect("bench shapes fuse");
        let (xv, w, bias) = (uniform(&x, 26), uniform(&w, 27), uniform(&[w[0]], 28));
        let pooled_len = pg.batch * pg.channels * pg.out_h * pg.out_w;
        let (mut pooled, mut argmax) = (vec![0f32; pooled_len], vec![0u32; pooled_len]);
        let dy = uniform(&[pooled_len], 29);
        let mut dx = vec![0f32; xv.numel()];
        let flops = 2 * g.macs();
        group.throughput(Throughput::Elements(flops));
        group.bench_function(format!("fwd/{id}"), |b| {
            b.iter(|| {
                conv2d_max_pool2d_fwd(
                    path,
                    &g,
                    &pg,
                    black_box(xv.as_slice()),
                    w.as_slice(),
                    Some(bias.as_slice()),
                    &mut pooled,
                    &mut argmax,
                )
            })
        });
        group.bench_function(format!("bwd_input/{id}"), |b| {
            b.iter(|| {
                conv2d_max_pool2d_bwd_input(
                    path,
                    &g,
                    &pg,
                    black_box(dy.as_slice()),
                    &argmax,
                    w.as_slice(),
                    &mut dx,
                )
            })
        });
        group.throughput(Throughput::Elements(
            flops / x[0] as u64 + pooled_len as u64,
        ));
        let per_copy = xv.numel() / x[0];
        group.bench_function(format!("bwd_input_sum/{id}"), |b| {
            b.iter(|| {
                conv2d_max_pool2d_bwd_input_sum(
                    path,
                    &g,
                    &pg,
                    black_box(dy.as_slice()),
                    &argmax,
                    w.as_slice(),
                    &mut dx[..per_copy],
                )
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    relu,
    clamp,
    maxpool,
    avgpool,
    global_avg_pool,
    batch_norm,
    linear,
    softmax,
    add,
    sum,
    noisy_copies,
    reduce_copies_conv,
    conv_max_pool
);
criterion_main!(benches);

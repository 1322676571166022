//! The WGSL kernels against the CPU backend.
//!
//! `every_wgsl_file_parses_and_validates` runs in every build, with or without the `wgpu`
//! feature and with no adapter: it checks each `kernels/wgsl/*.wgsl` with naga's parser and
//! validator. The rest (feature `wgpu`) runs every kernel on the device and compares it with the
//! CPU kernel on seeded random inputs, forward and backward. Tolerances are on
//! `|gpu − cpu| <= tol · max(|cpu|, 1)`: 1e-5 for elementwise ops, pools, softmax and batch norm,
//! 1e-4 for sums of products (convolutions, matmul, reductions over copies); integers (Philox,
//! argmax, mask bits) must match exactly.
//!
//! With no adapter each device test prints `skipped: no wgpu adapter (<reason>)` and passes,
//! unless `SMOOTHGRAD_REQUIRE_GPU` is `wgpu` or `all`. Run on Mesa lavapipe with
//! `XDG_RUNTIME_DIR=/tmp WGPU_BACKEND=vulkan SMOOTHGRAD_REQUIRE_GPU=wgpu cargo test -p
//! smoothgrad-autodiff --features wgpu`.

use std::path::PathBuf;

/// The storage declaration of every kernel file and its f16 replacement (the backend's
/// `kernels::STORED_F32` / `STORED_F16`, checked equal in the device tests).
const STORED_F32: &str = "alias stored = f32;";
const STORED_F16: &str = "enable f16;\nalias stored = f16;";

fn wgsl_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../kernels/wgsl")
}

#[test]
fn every_wgsl_file_parses_and_validates() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(wgsl_dir())
        .expect("kernels/wgsl exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 13,
        "expected the kernel files, found {files:?}"
    );
    for path in files {
        let name = path.display().to_string();
        let f32_source = std::fs::read_to_string(&path).expect("readable kernel file");
        assert!(
            f32_source.starts_with("//"),
            "{name}: a kernel file opens with a comment giving its launch shape"
        );
        // The f16-storage variant the host makes (kernels::source_for): one declaration swapped.
        assert_eq!(
            f32_source.matches(STORED_F32).count(),
            1,
            "{name}: declares its storage type once, as `{STORED_F32}`"
        );
        let f16_source = f32_source.replacen(STORED_F32, STORED_F16, 1);
        let mut entries = Vec::new();
        for (variant, source) in [("f32", &f32_source), ("f16", &f16_source)] {
            let name = format!("{name} ({variant} storage)");
            let module = naga::front::wgsl::parse_str(source)
                .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(source, &name)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(source, &name)));
            entries.push(module.entry_points);
        }
        assert_eq!(
            entries[0].iter().map(|e| &e.name).collect::<Vec<_>>(),
            entries[1].iter().map(|e| &e.name).collect::<Vec<_>>(),
            "{name}: both variants have the same entry points"
        );
        for entry in &entries[0] {
            assert!(
                entry.name.contains("_fwd") || entry.name.contains("_bwd"),
                "{name}: entry point {} is not named <op>_fwd / <op>_bwd...",
                entry.name
            );
        }
    }
}

#[cfg(feature = "wgpu")]
mod device {
    use smoothgrad_autodiff::backend::cpu::{conv, copies, pool};
    use smoothgrad_autodiff::backend::wgpu::{GpuMask, GpuTensor, WgpuContext};
    use smoothgrad_autodiff::ops::activation::{BitMask, relu_fwd};
    use smoothgrad_autodiff::{
        Conv2dGeometry, Conv2dParams, Error, NoiseSource, NoiseSpec, Pool2dGeometry, Pool2dParams,
        Tape, Tensor, Var, rng,
    };
    use std::sync::OnceLock;

    /// The shared device, or `None` (after printing why) when there is none and none is
    /// required.
    fn gpu() -> Option<&'static WgpuContext> {
        static CTX: OnceLock<Result<WgpuContext, String>> = OnceLock::new();
        match CTX.get_or_init(|| WgpuContext::new().map_err(|e| e.to_string())) {
            Ok(ctx) => {
                let backend = std::env::var("WGPU_BACKEND").unwrap_or_default();
                if backend.eq_ignore_ascii_case("vulkan") {
                    assert_eq!(
                        ctx.adapter_info().backend,
                        wgpu::Backend::Vulkan,
                        "WGPU_BACKEND=vulkan but the adapter is {:?}",
                        ctx.adapter_info()
                    );
                }
                Some(ctx)
            }
            Err(reason) => {
                let required = std::env::var("SMOOTHGRAD_REQUIRE_GPU").unwrap_or_default();
                if required
                    .split(',')
                    .any(|v| matches!(v.trim(), "wgpu" | "all"))
                {
                    panic!(
                        "SMOOTHGRAD_REQUIRE_GPU={required} but there is no wgpu adapter: {reason}"
                    );
                }
                println!("skipped: no wgpu adapter ({reason})");
                None
            }
        }
    }

    macro_rules! gpu_or_skip {
        () => {
            match gpu() {
                Some(ctx) => ctx,
                None => return,
            }
        };
    }

    fn uniform(dims: &[usize], seed: u64) -> Tensor<f32> {
        Tensor::<f32>::uniform(dims, -1.0, 1.0, seed).unwrap()
    }

    fn up(ctx: &WgpuContext, t: &Tensor<f32>) -> GpuTensor {
        ctx.upload(t).unwrap()
    }

    fn down(ctx: &WgpuContext, t: &GpuTensor) -> Vec<f32> {
        ctx.download(t).unwrap().into_vec()
    }

    /// Asserts `|got − want| <= tol · max(|want|, 1)` elementwise (NaN matches NaN); returns the
    /// largest difference.
    fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) -> f32 {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let mut worst = 0.0f32;
        for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
            if a.is_nan() && b.is_nan() || a == b {
                continue;
            }
            let diff = (a - b).abs();
            assert!(
                diff <= tol * b.abs().max(1.0),
                "{what}: element {k}: gpu {a}, cpu {b} (tolerance {tol})"
            );
            worst = worst.max(diff);
        }
        worst
    }

    fn bit(words: &[u32], i: usize) -> bool {
        (words[i / 32] >> (i % 32)) & 1 == 1
    }

    fn mask_bits(ctx: &WgpuContext, m: &GpuMask) -> Vec<u32> {
        ctx.download_mask(m).unwrap()
    }

    // ---- convolution -----------------------------------------------------------------------

    fn params(s: [usize; 2], pad: [usize; 4], d: [usize; 2], groups: usize) -> Conv2dParams {
        Conv2dParams {
            stride: s,
            padding: pad,
            dilation: d,
            groups,
        }
    }

    /// (x dims, w dims, params, what it covers): the CPU conv tests' cases.
    fn conv_cases() -> Vec<([usize; 4], [usize; 4], Conv2dParams, &'static str)> {
        let p = Conv2dParams::new;
        vec![
            ([1, 3, 7, 5], [4, 3, 3, 3], p(), "odd 7x5, valid, batch 1"),
            (
                [3, 3, 7, 5],
                [4, 3, 3, 2],
                p().stride(2).padding(1),
                "stride 2, pad 1, batch 3",
            ),
            (
                [2, 2, 7, 5],
                [3, 2, 3, 3],
                params([1, 2], [1, 0, 2, 1], [1, 1], 1),
                "asymmetric pad",
            ),
            (
                [3, 2, 9, 8],
                [3, 2, 3, 3],
                p().padding(2).dilation(2),
                "dilation 2",
            ),
            (
                [1, 3, 7, 6],
                [2, 3, 2, 3],
                params([2, 1], [0; 4], [2, 1], 1),
                "mixed stride/dilation",
            ),
            (
                [3, 4, 7, 5],
                [6, 2, 3, 3],
                p().padding(1).groups(2),
                "groups 2",
            ),
            (
                [3, 3, 7, 5],
                [6, 1, 3, 3],
                p().stride(2).padding(1).groups(3),
                "depthwise x2, stride 2",
            ),
            (
                [1, 4, 8, 7],
                [4, 1, 3, 3],
                p().padding(2).dilation(2).groups(4),
                "depthwise, dilation 2",
            ),
            (
                [3, 1, 6, 5],
                [4, 1, 3, 3],
                p().padding(1),
                "one input channel (direct)",
            ),
            ([3, 5, 7, 5], [4, 5, 1, 1], p(), "1x1 pointwise, batch 3"),
            ([1, 4, 6, 5], [6, 2, 1, 1], p().groups(2), "1x1 groups 2"),
            (
                [2, 2, 3, 3],
                [2, 2, 5, 5],
                p().padding(2),
                "kernel as large as the padded input",
            ),
            (
                [1, 70, 9, 9],
                [66, 70, 3, 3],
                p().padding(1),
                "more than one 64-tile in M, N, K",
            ),
        ]
    }

    struct ConvCase {
        g: Conv2dGeometry,
        x: Tensor<f32>,
        w: Tensor<f32>,
        b: Tensor<f32>,
        dy: Tensor<f32>,
        name: String,
    }

    fn conv_case(
        k: usize,
        xd: [usize; 4],
        wd: [usize; 4],
        p: Conv2dParams,
        name: &str,
    ) -> ConvCase {
        let g = Conv2dGeometry::new(&xd, &wd, &p).unwrap();
        let seed = 100 * k as u64;
        ConvCase {
            x: uniform(&xd, seed + 1),
            w: uniform(&wd, seed + 2),
            b: uniform(&[wd[0]], seed + 3),
            dy: uniform(&g.out_dims(), seed + 4),
            name: format!("{name} {xd:?} {wd:?}"),
            g,
        }
    }

    #[test]
    fn conv2d_fwd_and_fused_relu_match_cpu() {
        let ctx = gpu_or_skip!();
        for (k, (xd, wd, p, name)) in conv_cases().into_iter().enumerate() {
            let c = conv_case(k, xd, wd, p, name);
            let (x, w, b) = (up(ctx, &c.x), up(ctx, &c.w), up(ctx, &c.b));
            let mut want = vec![0f32; c.dy.numel()];
            conv::conv2d_fwd(
                &c.g,
                c.x.as_slice(),
                c.w.as_slice(),
                Some(c.b.as_slice()),
                &mut want,
            );
            let y = ctx.conv2d_fwd(&c.g, &x, &w, Some(&b)).unwrap();
            assert_close(
                &down(ctx, &y),
                &want,
                1e-4,
                &format!("conv2d_fwd {}", c.name),
            );

            let (y, mask) = ctx.conv2d_fwd_relu(&c.g, &x, &w, Some(&b)).unwrap();
            let (y, words) = (down(ctx, &y), mask_bits(ctx, &mask));
            assert_close(
                &y,
                &relu_fwd(&want),
                1e-4,
                &format!("conv2d_fwd_relu {}", c.name),
            );
            let cpu_mask = BitMask::positive(&want);
            for (i, &v) in want.iter().enumerate() {
                // Signs of values within rounding of 0 may differ between backends.
                if v.abs() > 1e-4 {
                    assert_eq!(bit(&words, i), cpu_mask.get(i), "{}: mask bit {i}", c.name);
                }
            }

            let mut want = vec![0f32; c.dy.numel()];
            conv::conv2d_fwd(&c.g, c.x.as_slice(), c.w.as_slice(), None, &mut want);
            let y = ctx.conv2d_fwd(&c.g, &x, &w, None).unwrap();
            assert_close(
                &down(ctx, &y),
                &want,
                1e-4,
                &format!("conv2d_fwd no bias {}", c.name),
            );
        }
    }

    #[test]
    fn conv2d_backward_kernels_match_cpu() {
        let ctx = gpu_or_skip!();
        for (k, (xd, wd, p, name)) in conv_cases().into_iter().enumerate() {
            let c = conv_case(k, xd, wd, p, name);
            let (x, w, dy) = (up(ctx, &c.x), up(ctx, &c.w), up(ctx, &c.dy));

            let mut want = vec![0f32; c.x.numel()];
            conv::conv2d_bwd_input(&c.g, c.dy.as_slice(), c.w.as_slice(), &mut want);
            let dx = ctx.conv2d_bwd_input(&c.g, &dy, &w).unwrap();
            assert_close(
                &down(ctx, &dx),
                &want,
                1e-4,
                &format!("conv2d_bwd_input {}", c.name),
            );

            let mut want = vec![0f32; c.w.numel()];
            conv::conv2d_bwd_weight(&c.g, c.dy.as_slice(), c.x.as_slice(), &mut want);
            let dw = ctx.conv2d_bwd_weight(&c.g, &dy, &x).unwrap();
            assert_close(
                &down(ctx, &dw),
                &want,
                1e-4,
                &format!("conv2d_bwd_weight {}", c.name),
            );

            let mut want = vec![0f32; c.g.out_channels];
            conv::conv2d_bwd_bias(&c.g, c.dy.as_slice(), &mut want);
            let db = ctx.conv2d_bwd_bias(&c.g, &dy).unwrap();
            assert_close(
                &down(ctx, &db),
                &want,
                1e-4,
                &format!("conv2d_bwd_bias {}", c.name),
            );
        }
    }

    #[test]
    fn conv2d_rejects_tensors_that_disagree_with_the_geometry() {
        let ctx = gpu_or_skip!();
        let g = Conv2dGeometry::new(&[1, 3, 7, 5], &[4, 3, 3, 3], &Conv2dParams::new()).unwrap();
        let x = up(ctx, &uniform(&[1, 3, 7, 6], 1));
        let w = up(ctx, &uniform(&[4, 3, 3, 3], 2));
        assert!(matches!(
            ctx.conv2d_fwd(&g, &x, &w, None),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    // ---- SmoothGrad: noise and reductions --------------------------------------------------

    /// Distance in units in the last place between two finite f32 values.
    fn ulps(a: f32, b: f32) -> u32 {
        let key = |v: f32| {
            let bits = v.to_bits() as i32;
            if bits < 0 { i32::MIN - bits } else { bits }
        };
        key(a).abs_diff(key(b))
    }

    #[test]
    fn philox_is_bit_identical_to_the_cpu() {
        let ctx = gpu_or_skip!();
        // Random123's known answers, then counters laid out as the noise uses them, then
        // counters and keys drawn from Philox itself.
        let mut cases: Vec<([u32; 4], [u32; 2])> = vec![
            ([0; 4], [0; 2]),
            ([u32::MAX; 4], [u32::MAX; 2]),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
            ),
        ];
        for block in 0..512u32 {
            cases.push(([block, 0, block % 7, 0], [42, 0]));
        }
        for i in 0..1024u32 {
            let r = rng::philox4x32_10([i, 0, 0, 9], [1, 2]);
            let k = rng::philox4x32_10([i, 1, 0, 9], [1, 2]);
            cases.push((r, [k[0], k[1]]));
        }
        // One launch per key.
        let mut keys: Vec<[u32; 2]> = cases.iter().map(|c| c.1).collect();
        keys.sort();
        keys.dedup();
        let mut checked = 0;
        for key in keys {
            let counters: Vec<[u32; 4]> =
                cases.iter().filter(|c| c.1 == key).map(|c| c.0).collect();
            let got = ctx.philox(&counters, key).unwrap();
            for (c, g) in counters.iter().zip(&got) {
                assert_eq!(
                    *g,
                    rng::philox4x32_10(*c, key),
                    "counter {c:x?} key {key:x?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, cases.len());
        assert_eq!(
            ctx.philox(&[[0; 4]], [0; 2]).unwrap(),
            [[0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]]
        );
    }

    #[test]
    fn normals_match_the_cpu_to_a_few_ulps() {
        let ctx = gpu_or_skip!();
        let n = 1 << 18;
        let mut worst = (0u32, 0.0f32);
        let mut histogram = [0usize; 5];
        for seed in [0u64, 42, 0x1234_5678_9abc_def0] {
            let want = Tensor::<f32>::randn(&[n], seed).unwrap().into_vec();
            let got = down(ctx, &ctx.randn(&[n], seed).unwrap());
            for (&a, &b) in got.iter().zip(&want) {
                assert!(a.is_finite(), "non-finite normal");
                let d = ulps(a, b) as usize;
                histogram[d.min(histogram.len() - 1)] += 1;
                worst.0 = worst.0.max(ulps(a, b));
                worst.1 = worst.1.max((a - b).abs());
            }
        }
        println!(
            "normals: max difference {} ulp, {:e} absolute over {} draws; draws at 0, 1, 2, 3, \
             4+ ulp: {histogram:?}",
            worst.0,
            worst.1,
            3 * n
        );
        // Both sides round log, sin/cos and sqrt within about 1 ulp, in different ways.
        assert!(worst.0 <= 3, "normals differ by {} ulp", worst.0);
    }

    #[test]
    fn noisy_copies_match_the_cpu() {
        let ctx = gpu_or_skip!();
        let x = uniform(&[1, 3, 7, 5], 5);
        let gx = up(ctx, &x);
        for (first, count, seed) in [(0usize, 4usize, 9u64), (3, 5, u64::MAX - 1)] {
            let spec = NoiseSpec {
                sigma: 0.15,
                first,
                count,
                source: NoiseSource::Philox { seed },
            };
            let mut want = vec![0f32; count * x.numel()];
            copies::noisy_copies_fwd(x.as_slice(), &spec.source, 0.15f32, first, &mut want);
            let got = ctx.noisy_copies(&gx, &spec).unwrap();
            assert_eq!(got.dims(), &[count, 3, 7, 5]);
            assert_close(&down(ctx, &got), &want, 1e-6, "noisy_copies (philox)");
        }
        // Replayed noise: rows first..first + count of the given draws.
        let given = uniform(&[6, 3, 7, 5], 77);
        let source = NoiseSource::Given(given.clone());
        let spec = NoiseSpec {
            sigma: 0.5,
            first: 2,
            count: 3,
            source: source.clone(),
        };
        let mut want = vec![0f32; 3 * x.numel()];
        copies::noisy_copies_fwd(x.as_slice(), &source, 0.5f32, 2, &mut want);
        let got = ctx.noisy_copies(&gx, &spec).unwrap();
        assert_close(&down(ctx, &got), &want, 1e-6, "noisy_copies (given)");
    }

    #[test]
    fn reduce_copies_matches_the_cpu_and_accumulates() {
        let ctx = gpu_or_skip!();
        for (n, dims) in [(5usize, [1usize, 3, 7, 5]), (1, [1, 2, 20, 20])] {
            let e: usize = dims.iter().product();
            let g = uniform(&[n, e], 11);
            let (sum0, sq0) = (uniform(&dims, 12), uniform(&dims, 13));
            let (mut sum, mut sumsq) = (sum0.clone().into_vec(), sq0.clone().into_vec());
            copies::reduce_copies(g.as_slice(), &mut sum, &mut sumsq);
            let (mut gs, mut gq) = (up(ctx, &sum0), up(ctx, &sq0));
            ctx.reduce_copies(&up(ctx, &g), &mut gs, &mut gq).unwrap();
            assert_close(&down(ctx, &gs), &sum, 1e-5, "reduce_copies sum");
            assert_close(&down(ctx, &gq), &sumsq, 1e-5, "reduce_copies sumsq");
        }
    }

    #[test]
    fn fused_bwd_input_reduce_copies_matches_the_cpu() {
        let ctx = gpu_or_skip!();
        let p = Conv2dParams::new;
        let cases = [
            ([5, 3, 7, 5], [4, 3, 3, 3], p().padding(1), "3x3 pad 1"),
            (
                [4, 3, 9, 8],
                [6, 3, 3, 2],
                p().stride(2).padding(1).dilation(2),
                "stride 2 dilation 2",
            ),
            (
                [3, 4, 7, 5],
                [6, 2, 3, 3],
                p().padding(1).groups(2),
                "groups 2",
            ),
            (
                [3, 3, 7, 5],
                [6, 1, 3, 3],
                p().stride(2).padding(1).groups(3),
                "depthwise x2",
            ),
            (
                [2, 2, 5, 4],
                [350, 2, 3, 3],
                p().padding(1),
                "weights past the workgroup cache",
            ),
            (
                [2, 1, 20, 17],
                [3, 1, 5, 5],
                p().padding(2),
                "more than 256 pixels",
            ),
        ];
        for (k, (xd, wd, p, name)) in cases.into_iter().enumerate() {
            let g = Conv2dGeometry::new(&xd, &wd, &p).unwrap();
            let seed = 300 + 10 * k as u64;
            let (w, dy) = (uniform(&wd, seed), uniform(&g.out_dims(), seed + 1));
            let one = [1, xd[1], xd[2], xd[3]];
            let (sum0, sq0) = (uniform(&one, seed + 2), uniform(&one, seed + 3));
            let (mut sum, mut sumsq) = (sum0.clone().into_vec(), sq0.clone().into_vec());
            copies::conv2d_bwd_input_reduce_copies(
                &g,
                dy.as_slice(),
                w.as_slice(),
                &mut sum,
                &mut sumsq,
            );
            let (mut gs, mut gq) = (up(ctx, &sum0), up(ctx, &sq0));
            ctx.conv2d_bwd_input_reduce_copies(&g, &up(ctx, &dy), &up(ctx, &w), &mut gs, &mut gq)
                .unwrap();
            assert_close(&down(ctx, &gs), &sum, 1e-4, &format!("fused sum, {name}"));
            assert_close(
                &down(ctx, &gq),
                &sumsq,
                1e-4,
                &format!("fused sumsq, {name}"),
            );
        }
    }

    #[test]
    fn the_f16_substitution_is_the_one_the_validation_test_checks() {
        use smoothgrad_autodiff::backend::wgpu::{Precision, kernels};
        assert_eq!(kernels::STORED_F32, super::STORED_F32);
        assert_eq!(kernels::STORED_F16, super::STORED_F16);
        for (file, source) in kernels::SOURCES {
            let f16 = kernels::source_for(file, Precision::F16Storage).expect("an f16 variant");
            assert!(f16.starts_with("//") && f16.contains("alias stored = f16;"));
            assert_eq!(kernels::source_for(file, Precision::F32).unwrap(), *source);
        }
    }

    // ---- concat and the attribution kernels -------------------------------------------------

    #[test]
    fn concat_fwd_and_bwd_match_the_tape_exactly() {
        let ctx = gpu_or_skip!();
        let cases: [(&[[usize; 4]], usize); 4] = [
            (&[[2, 3, 4, 5], [2, 1, 4, 5]], 1),
            (&[[2, 3, 4, 5], [2, 3, 2, 5], [2, 3, 1, 5]], 2),
            (&[[1, 2, 3, 1], [1, 2, 3, 4], [1, 2, 3, 1]], 3),
            (&[[3, 2, 1, 1]], 1),
        ];
        for (k, (dims, axis)) in cases.into_iter().enumerate() {
            let parts: Vec<Tensor<f32>> = dims
                .iter()
                .enumerate()
                .map(|(i, d)| uniform(d, 900 + 10 * k as u64 + i as u64))
                .collect();
            let mut tape = Tape::new();
            let vars: Vec<Var<f32>> = parts.iter().map(|t| tape.var(t.clone())).collect();
            let refs: Vec<&Var<f32>> = vars.iter().collect();
            let y = tape.concat(&refs, axis).unwrap();
            let dy = uniform(y.dims(), 950 + k as u64);
            let grads = tape.backward_from(&y, &dy).unwrap();
            let gpu_parts: Vec<GpuTensor> = parts.iter().map(|t| up(ctx, t)).collect();
            let gpu_refs: Vec<&GpuTensor> = gpu_parts.iter().collect();
            let got = ctx.concat_fwd(&gpu_refs, axis).unwrap();
            assert_eq!(got.dims(), y.dims(), "case {k}");
            assert_eq!(down(ctx, &got), y.value().as_slice(), "concat_fwd case {k}");
            let lengths: Vec<usize> = dims.iter().map(|d| d[axis]).collect();
            let dxs = ctx.concat_bwd(&up(ctx, &dy), axis, &lengths).unwrap();
            for (i, (dx, v)) in dxs.iter().zip(&vars).enumerate() {
                assert_eq!(dx.dims(), v.dims(), "case {k} part {i}");
                let want = grads.get(v).unwrap();
                assert_eq!(
                    down(ctx, dx),
                    want.as_slice(),
                    "concat_bwd case {k} part {i}"
                );
            }
        }
        let a = up(ctx, &uniform(&[2, 3, 4, 5], 1));
        let b = up(ctx, &uniform(&[2, 3, 5, 5], 2));
        assert!(matches!(
            ctx.concat_fwd(&[&a, &b], 1),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            ctx.concat_fwd(&[&a], 4),
            Err(Error::InvalidAxis { .. })
        ));
    }

    #[test]
    fn grad_x_input_reduce_copies_matches_the_cpu_and_accumulates() {
        let ctx = gpu_or_skip!();
        for (n, dims) in [(5usize, [1usize, 3, 7, 5]), (1, [1, 2, 20, 20])] {
            let e: usize = dims.iter().product();
            let (x, g) = (uniform(&[n, e], 21), uniform(&[n, e], 22));
            let (sum0, sq0) = (uniform(&dims, 23), uniform(&dims, 24));
            let (mut sum, mut sumsq) = (sum0.clone().into_vec(), sq0.clone().into_vec());
            for i in 0..n {
                for j in 0..e {
                    let a = x.as_slice()[i * e + j] * g.as_slice()[i * e + j];
                    sum[j] += a;
                    sumsq[j] += a * a;
                }
            }
            let (mut gs, mut gq) = (up(ctx, &sum0), up(ctx, &sq0));
            ctx.grad_x_input_reduce_copies(&up(ctx, &x), &up(ctx, &g), &mut gs, &mut gq)
                .unwrap();
            assert_close(&down(ctx, &gs), &sum, 1e-5, "grad_x_input sum");
            assert_close(&down(ctx, &gq), &sumsq, 1e-5, "grad_x_input sumsq");
        }
    }

    /// The CPU explainer's Integrated Gradients loop over points `p0..p0 + count` (copy-major),
    /// on the host: the path points, and the sums after accumulating `g`.
    #[allow(clippy::type_complexity)]
    fn ig_reference(
        copies: &[f32],
        first_copy: usize,
        baseline: &[f32],
        (alphas, weights): (&[f32], &[f32]),
        (p0, count): (usize, usize),
        g: &[f32],
        (integral, sum, sumsq): (&mut [f32], &mut [f32], &mut [f32]),
    ) -> Vec<f32> {
        let (e, steps) = (baseline.len(), alphas.len());
        let mut points = Vec::with_capacity(count * e);
        for j in 0..count {
            let q = p0 + j;
            let x = &copies[(q / steps - first_copy) * e..][..e];
            let a = alphas[q % steps];
            points.extend(x.iter().zip(baseline).map(|(&x, &b)| b + a * (x - b)));
            for i in 0..e {
                integral[i] += weights[q % steps] * g[j * e + i];
            }
            if q % steps == steps - 1 {
                for i in 0..e {
                    let a = (x[i] - baseline[i]) * integral[i];
                    sum[i] += a;
                    sumsq[i] += a * a;
                    integral[i] = 0.0;
                }
            }
        }
        points
    }

    #[test]
    fn integrated_gradients_kernels_match_the_cpu_loop() {
        use smoothgrad_autodiff::backend::wgpu::{IgPath, IgPoints};
        let ctx = gpu_or_skip!();
        let dims = [1usize, 2, 5, 3];
        let e: usize = dims.iter().product();
        let (steps, copies_n) = (4usize, 3usize);
        let copies = uniform(&[copies_n, 2, 5, 3], 31);
        let baseline = uniform(&dims, 32);
        let alphas = [0.1f32, 0.4, 0.6, 0.9];
        let weights = [0.2f32, 0.3, 0.3, 0.2];
        let (ga, gw) = (
            ctx.upload_slice(&alphas, &[steps]).unwrap(),
            ctx.upload_slice(&weights, &[steps]).unwrap(),
        );
        let gb = up(ctx, &baseline);
        let path = IgPath {
            baseline: &gb,
            alphas: &ga,
            weights: &gw,
        };
        let (mut integral, mut sum, mut sumsq) = (vec![0f32; e], vec![0f32; e], vec![0f32; e]);
        let (mut gi, mut gs, mut gq) = (
            ctx.zeros(&dims).unwrap(),
            ctx.zeros(&dims).unwrap(),
            ctx.zeros(&dims).unwrap(),
        );
        // Chunks of 5 and 7 points over 3 copies of 4 steps: copies straddle chunks.
        let mut p0 = 0;
        for (k, count) in [5usize, 7].into_iter().enumerate() {
            let (c0, c1) = (p0 / steps, (p0 + count - 1) / steps);
            let held = &copies.as_slice()[c0 * e..(c1 + 1) * e];
            let held_gpu = ctx.upload_slice(held, &[c1 - c0 + 1, 2, 5, 3]).unwrap();
            let points = IgPoints {
                copies: &held_gpu,
                first_copy: c0,
                first_point: p0,
                count,
            };
            let g = uniform(&[count, 2, 5, 3], 40 + k as u64);
            let want_points = ig_reference(
                copies.as_slice(),
                0,
                baseline.as_slice(),
                (&alphas, &weights),
                (p0, count),
                g.as_slice(),
                (&mut integral, &mut sum, &mut sumsq),
            );
            let got = ctx.ig_path_fwd(&path, &points).unwrap();
            assert_eq!(got.dims(), &[count, 2, 5, 3]);
            assert_close(&down(ctx, &got), &want_points, 1e-6, "ig_path_fwd");
            ctx.ig_accumulate_bwd(&path, &points, &up(ctx, &g), &mut gi, &mut gs, &mut gq)
                .unwrap();
            assert_close(&down(ctx, &gi), &integral, 1e-5, "ig integral carried");
            assert_close(&down(ctx, &gs), &sum, 1e-5, "ig sum");
            assert_close(&down(ctx, &gq), &sumsq, 1e-5, "ig sumsq");
            p0 += count;
        }
        assert!(sum.iter().any(|&v| v != 0.0), "every copy completed");
        // Points whose copies the batch does not hold are refused.
        let held_gpu = up(ctx, &uniform(&[1, 2, 5, 3], 50));
        let points = IgPoints {
            copies: &held_gpu,
            first_copy: 0,
            first_point: 2,
            count: 3,
        };
        assert!(matches!(
            ctx.ig_path_fwd(&path, &points),
            Err(Error::InvalidArgument { .. })
        ));
    }

    // ---- matmul and linear -----------------------------------------------------------------

    #[test]
    fn linear_fwd_and_backward_match_the_tape() {
        let ctx = gpu_or_skip!();
        for (k, (xd, out_f)) in [
            (vec![3usize, 7], 5usize),
            (vec![2, 3, 70], 65),
            (vec![1, 5], 1),
        ]
        .into_iter()
        .enumerate()
        {
            let in_f = xd[xd.len() - 1];
            let seed = 500 + 10 * k as u64;
            let (x, w, b) = (
                uniform(&xd, seed),
                uniform(&[out_f, in_f], seed + 1),
                uniform(&[out_f], seed + 2),
            );
            let mut tape = Tape::<f32>::new();
            let (vx, vw, vb) = (
                tape.var(x.clone()),
                tape.var(w.clone()),
                tape.var(b.clone()),
            );
            let y = tape.linear(&vx, &vw, Some(&vb)).unwrap();
            let dy = uniform(y.dims(), seed + 3);
            let grads = tape.backward_from(&y, &dy).unwrap();
            let (gx, gw, gb, gdy) = (up(ctx, &x), up(ctx, &w), up(ctx, &b), up(ctx, &dy));
            let what = format!("{xd:?} x [{out_f}, {in_f}]");
            let got = ctx.linear_fwd(&gx, &gw, Some(&gb)).unwrap();
            assert_eq!(got.dims(), y.dims());
            assert_close(
                &down(ctx, &got),
                y.value().as_slice(),
                1e-4,
                &format!("linear_fwd {what}"),
            );
            let got = ctx.linear_fwd(&gx, &gw, None).unwrap();
            let mut tape = Tape::<f32>::new();
            let nb = tape
                .linear(&Var::constant(x.clone()), &Var::constant(w.clone()), None)
                .unwrap();
            assert_close(
                &down(ctx, &got),
                nb.value().as_slice(),
                1e-4,
                &format!("linear_fwd no bias {what}"),
            );
            let dx = ctx.linear_bwd_input(&gdy, &gw).unwrap();
            assert_close(
                &down(ctx, &dx),
                grads.get(&vx).unwrap().as_slice(),
                1e-4,
                &format!("linear_bwd_input {what}"),
            );
            let dw = ctx.linear_bwd_weight(&gdy, &gx).unwrap();
            assert_close(
                &down(ctx, &dw),
                grads.get(&vw).unwrap().as_slice(),
                1e-4,
                &format!("linear_bwd_weight {what}"),
            );
            let db = ctx.linear_bwd_bias(&gdy).unwrap();
            assert_close(
                &down(ctx, &db),
                grads.get(&vb).unwrap().as_slice(),
                1e-4,
                &format!("linear_bwd_bias {what}"),
            );
        }
    }

    #[test]
    fn matmul_fwd_and_backward_match_the_tape() {
        let ctx = gpu_or_skip!();
        let cases: [(&[usize], &[usize]); 4] = [
            (&[7, 5], &[5, 3]),
            (&[2, 7, 5], &[2, 5, 3]),
            (&[3, 4, 6], &[6, 5]),
            (&[4, 6], &[3, 6, 5]),
        ];
        for (k, (ad, bd)) in cases.into_iter().enumerate() {
            let seed = 600 + 10 * k as u64;
            let (a, b) = (uniform(ad, seed), uniform(bd, seed + 1));
            let mut tape = Tape::<f32>::new();
            let (va, vb) = (tape.var(a.clone()), tape.var(b.clone()));
            let y = tape.matmul(&va, &vb).unwrap();
            let dy = uniform(y.dims(), seed + 2);
            let grads = tape.backward_from(&y, &dy).unwrap();
            let (ga, gb, gdy) = (up(ctx, &a), up(ctx, &b), up(ctx, &dy));
            let what = format!("{ad:?} @ {bd:?}");
            let got = ctx.matmul_fwd(&ga, &gb).unwrap();
            assert_eq!(got.dims(), y.dims(), "{what}");
            assert_close(
                &down(ctx, &got),
                y.value().as_slice(),
                1e-4,
                &format!("matmul_fwd {what}"),
            );
            let da = ctx.matmul_bwd_lhs(&gdy, &gb, ad).unwrap();
            assert_eq!(da.dims(), ad);
            assert_close(
                &down(ctx, &da),
                grads.get(&va).unwrap().as_slice(),
                1e-4,
                &format!("matmul_bwd_lhs {what}"),
            );
            let db = ctx.matmul_bwd_rhs(&ga, &gdy, bd).unwrap();
            assert_eq!(db.dims(), bd);
            assert_close(
                &down(ctx, &db),
                grads.get(&vb).unwrap().as_slice(),
                1e-4,
                &format!("matmul_bwd_rhs {what}"),
            );
        }
    }

    // ---- elementwise -----------------------------------------------------------------------

    /// Uniform values with a few special ones planted: exact zeros, -0, NaN.
    fn with_specials(dims: &[usize], seed: u64) -> Tensor<f32> {
        let mut t = uniform(dims, seed);
        let data = t.data_mut();
        let n = data.len();
        for (k, v) in [0.0f32, -0.0, f32::NAN, 0.0].into_iter().enumerate() {
            data[(k * 37 + 3) % n] = v;
        }
        t
    }

    #[test]
    fn relu_and_clamp_match_the_cpu_with_masks() {
        let ctx = gpu_or_skip!();
        for (k, dims) in [vec![3usize, 7, 5], vec![2, 300], vec![1]]
            .into_iter()
            .enumerate()
        {
            let x = with_specials(&dims, 700 + k as u64);
            let dy = uniform(&dims, 710 + k as u64);
            let (gx, gdy) = (up(ctx, &x), up(ctx, &dy));
            let xs = x.as_slice();

            let (y, mask) = ctx.relu_fwd(&gx).unwrap();
            assert_close(&down(ctx, &y), &relu_fwd(xs), 0.0, "relu_fwd");
            let words = mask_bits(ctx, &mask);
            let cpu = BitMask::positive(xs);
            for i in 0..xs.len() {
                assert_eq!(bit(&words, i), cpu.get(i), "relu mask bit {i} of {dims:?}");
            }
            for guided in [false, true] {
                let dx = ctx.relu_bwd(&gdy, &mask, guided).unwrap();
                let want = cpu.apply(dy.as_slice(), guided);
                assert_close(
                    &down(ctx, &dx),
                    &want,
                    0.0,
                    &format!("relu_bwd guided={guided}"),
                );
            }

            let (lo, hi) = (-0.5f32, 0.25f32);
            let (y, mask) = ctx.clamp_fwd(&gx, lo, hi).unwrap();
            let mut tape = Tape::<f32>::new();
            let vx = tape.var(x.clone());
            let vy = tape.clamp(&vx, lo as f64, hi as f64).unwrap();
            assert_close(&down(ctx, &y), vy.value().as_slice(), 0.0, "clamp_fwd");
            let cpu = BitMask::from_predicate(xs, |v| v > lo && v < hi);
            let words = mask_bits(ctx, &mask);
            for i in 0..xs.len() {
                assert_eq!(bit(&words, i), cpu.get(i), "clamp mask bit {i}");
            }
            let grads = tape.backward_from(&vy, &dy).unwrap();
            let dx = ctx.clamp_bwd(&gdy, &mask, false).unwrap();
            assert_close(
                &down(ctx, &dx),
                grads.get(&vx).unwrap().as_slice(),
                0.0,
                "clamp_bwd",
            );
        }
    }

    #[test]
    fn add_and_sum_batch_match_the_cpu() {
        let ctx = gpu_or_skip!();
        let (a, b) = (uniform(&[3, 7, 5], 801), uniform(&[3, 7, 5], 802));
        let want: Vec<f32> = a
            .as_slice()
            .iter()
            .zip(b.as_slice())
            .map(|(x, y)| x + y)
            .collect();
        let got = ctx.add(&up(ctx, &a), &up(ctx, &b)).unwrap();
        assert_close(&down(ctx, &got), &want, 0.0, "add");

        let mut tape = Tape::<f32>::new();
        let s = tape.sum(&Var::constant(a.clone()), &[0], false).unwrap();
        let got = ctx.sum_batch(&up(ctx, &a)).unwrap();
        assert_eq!(got.dims(), &[7, 5]);
        assert_close(&down(ctx, &got), s.value().as_slice(), 1e-5, "sum_batch");
    }

    #[test]
    fn batch_norm_matches_the_tape() {
        let ctx = gpu_or_skip!();
        for (k, dims) in [vec![3usize, 4, 7, 5], vec![2, 3]].into_iter().enumerate() {
            let c = dims[1];
            let seed = 900 + 10 * k as u64;
            let x = uniform(&dims, seed);
            let (gamma, beta, mean) = (
                uniform(&[c], seed + 1),
                uniform(&[c], seed + 2),
                uniform(&[c], seed + 3),
            );
            let var = Tensor::<f32>::uniform(&[c], 0.1, 2.0, seed + 4).unwrap();
            let eps = 1e-5;
            let mut tape = Tape::<f32>::new();
            let vx = tape.var(x.clone());
            let y = tape
                .batch_norm(
                    &vx,
                    &Var::constant(gamma.clone()),
                    &Var::constant(beta.clone()),
                    &mean,
                    &var,
                    eps,
                )
                .unwrap();
            let dy = uniform(&dims, seed + 5);
            let grads = tape.backward_from(&y, &dy).unwrap();
            let (gg, gv) = (up(ctx, &gamma), up(ctx, &var));
            let got = ctx
                .batch_norm_fwd(
                    &up(ctx, &x),
                    &gg,
                    &up(ctx, &beta),
                    &up(ctx, &mean),
                    &gv,
                    eps as f32,
                )
                .unwrap();
            assert_close(
                &down(ctx, &got),
                y.value().as_slice(),
                1e-5,
                "batch_norm_fwd",
            );
            let dx = ctx
                .batch_norm_bwd(&up(ctx, &dy), &gg, &gv, eps as f32)
                .unwrap();
            assert_close(
                &down(ctx, &dx),
                grads.get(&vx).unwrap().as_slice(),
                1e-5,
                "batch_norm_bwd",
            );
        }
    }

    #[test]
    fn softmax_matches_the_tape() {
        let ctx = gpu_or_skip!();
        for (k, dims) in [vec![3usize, 10], vec![2, 300], vec![1, 1], vec![2, 3, 7]]
            .into_iter()
            .enumerate()
        {
            let seed = 1000 + 10 * k as u64;
            let x = Tensor::<f32>::uniform(&dims, -4.0, 4.0, seed).unwrap();
            let mut tape = Tape::<f32>::new();
            let vx = tape.var(x.clone());
            let y = tape.softmax(&vx, dims.len() - 1).unwrap();
            let dy = uniform(&dims, seed + 1);
            let grads = tape.backward_from(&y, &dy).unwrap();
            let gy = ctx.softmax_fwd(&up(ctx, &x)).unwrap();
            assert_close(
                &down(ctx, &gy),
                y.value().as_slice(),
                1e-5,
                &format!("softmax_fwd {dims:?}"),
            );
            let dx = ctx.softmax_bwd(&gy, &up(ctx, &dy)).unwrap();
            assert_close(
                &down(ctx, &dx),
                grads.get(&vx).unwrap().as_slice(),
                1e-5,
                &format!("softmax_bwd {dims:?}"),
            );
        }
    }

    // ---- pooling ---------------------------------------------------------------------------

    fn max_cases() -> Vec<([usize; 4], Pool2dParams)> {
        let p = Pool2dParams::new;
        let mut rect = p(3);
        rect.kernel = [3, 2];
        rect.stride = [2, 1];
        rect.padding = [1, 0];
        vec![
            ([1, 2, 7, 5], p(2)),
            ([3, 2, 7, 5], p(3).stride(2).padding(1)),
            ([2, 3, 7, 5], p(2).ceil_mode(true)),
            ([2, 1, 5, 5], p(2).padding(1).ceil_mode(true)),
            ([1, 2, 8, 7], p(3).stride(1).padding(1).dilation(2)),
            (
                [2, 2, 9, 6],
                p(3).stride(2).padding(1).dilation(2).ceil_mode(true),
            ),
            ([1, 3, 7, 5], rect),
            ([1, 1, 2, 2], p(2).padding(1).dilation(3)),
        ]
    }

    #[test]
    fn maxpool2d_matches_the_cpu_exactly() {
        let ctx = gpu_or_skip!();
        for (k, (xd, p)) in max_cases().into_iter().enumerate() {
            let g = Pool2dGeometry::new("test", &xd, &p).unwrap();
            // Rounded values make ties; a planted NaN and -inf test their rules.
            let mut x = uniform(&xd, 1100 + k as u64).map(|v| (v * 4.0).round() / 4.0);
            let n = x.numel();
            x.data_mut()[n / 2] = f32::NAN;
            x.data_mut()[n / 3] = f32::NEG_INFINITY;
            let dy = uniform(&g.out_dims(), 1150 + k as u64);
            let m = g.out_dims().iter().product();
            let (mut want, mut want_arg) = (vec![0f32; m], vec![0u32; m]);
            pool::maxpool2d_fwd(&g, x.as_slice(), &mut want, &mut want_arg);
            let gx = up(ctx, &x);
            let (y, arg) = ctx.maxpool2d_fwd(&g, &gx).unwrap();
            let what = format!("case {k} {xd:?} {p:?}");
            assert_close(&down(ctx, &y), &want, 0.0, &format!("maxpool2d_fwd {what}"));
            assert_eq!(
                ctx.download_indices(&arg).unwrap(),
                want_arg,
                "argmax {what}"
            );
            let mut want = vec![0f32; n];
            pool::maxpool2d_bwd(&g, dy.as_slice(), &want_arg, &mut want);
            let dx = ctx.maxpool2d_bwd(&g, &up(ctx, &dy), &arg).unwrap();
            assert_close(
                &down(ctx, &dx),
                &want,
                0.0,
                &format!("maxpool2d_bwd {what}"),
            );
        }
        // All equal: every window reports its top-left element.
        let g = Pool2dGeometry::new("test", &[1, 1, 4, 4], &Pool2dParams::new(2)).unwrap();
        let (_, arg) = ctx
            .maxpool2d_fwd(&g, &ctx.upload_slice(&[1.0; 16], &[1, 1, 4, 4]).unwrap())
            .unwrap();
        assert_eq!(ctx.download_indices(&arg).unwrap(), [0, 2, 8, 10]);
    }

    fn avg_cases() -> Vec<([usize; 4], Pool2dParams)> {
        let mut cases = Vec::new();
        for include in [true, false] {
            let p = |k| Pool2dParams::new(k).count_include_pad(include);
            let mut rect = p(3).padding(1);
            rect.kernel = [3, 2];
            rect.stride = [2, 1];
            rect.padding = [1, 1];
            cases.extend([
                ([1, 2, 7, 5], p(2)),
                ([3, 2, 7, 5], p(3).stride(2).padding(1)),
                ([2, 3, 7, 5], p(2).ceil_mode(true)),
                ([2, 1, 5, 5], p(2).padding(1).ceil_mode(true)),
                ([1, 2, 6, 6], p(3).stride(2).padding(1).ceil_mode(true)),
                ([1, 3, 7, 5], rect),
            ]);
        }
        cases
    }

    #[test]
    fn avgpool2d_matches_the_cpu() {
        let ctx = gpu_or_skip!();
        for (k, (xd, p)) in avg_cases().into_iter().enumerate() {
            let g = Pool2dGeometry::new("test", &xd, &p).unwrap();
            let x = uniform(&xd, 1200 + k as u64);
            let dy = uniform(&g.out_dims(), 1250 + k as u64);
            let what = format!("case {k} {xd:?} {p:?}");
            let mut want = vec![0f32; dy.numel()];
            pool::avgpool2d_fwd(&g, x.as_slice(), &mut want);
            let y = ctx.avgpool2d_fwd(&g, &up(ctx, &x)).unwrap();
            assert_close(
                &down(ctx, &y),
                &want,
                1e-5,
                &format!("avgpool2d_fwd {what}"),
            );
            let mut want = vec![0f32; x.numel()];
            pool::avgpool2d_bwd(&g, dy.as_slice(), &mut want);
            let dx = ctx.avgpool2d_bwd(&g, &up(ctx, &dy)).unwrap();
            assert_close(
                &down(ctx, &dx),
                &want,
                1e-5,
                &format!("avgpool2d_bwd {what}"),
            );
        }
    }

    #[test]
    fn global_avgpool2d_matches_the_tape() {
        let ctx = gpu_or_skip!();
        for (k, dims) in [[3usize, 4, 7, 5], [1, 2, 20, 20]].into_iter().enumerate() {
            let x = uniform(&dims, 1300 + k as u64);
            let mut tape = Tape::<f32>::new();
            let vx = tape.var(x.clone());
            let y = tape.global_avg_pool2d(&vx).unwrap();
            let dy = uniform(y.dims(), 1310 + k as u64);
            let grads = tape.backward_from(&y, &dy).unwrap();
            let gy = ctx.global_avgpool2d_fwd(&up(ctx, &x)).unwrap();
            assert_eq!(gy.dims(), y.dims());
            assert_close(
                &down(ctx, &gy),
                y.value().as_slice(),
                1e-5,
                "global_avgpool2d_fwd",
            );
            let dx = ctx.global_avgpool2d_bwd(&up(ctx, &dy), &dims).unwrap();
            assert_close(
                &down(ctx, &dx),
                grads.get(&vx).unwrap().as_slice(),
                1e-5,
                "global_avgpool2d_bwd",
            );
        }
    }

    // ---- the context -----------------------------------------------------------------------

    #[test]
    fn dispatches_past_65535_workgroups_are_split() {
        let ctx = gpu_or_skip!();
        // A 1-D kernel over 65536 + 1 workgroups (folded into two rows of workgroups).
        let n = 65_536 * 256 + 3;
        let x: Vec<f32> = (0..n)
            .map(|i| if i % 3 == 0 { -1.0 } else { (i % 1000) as f32 })
            .collect();
        let (y, _) = ctx.relu_fwd(&ctx.upload_slice(&x, &[n]).unwrap()).unwrap();
        let y = down(ctx, &y);
        assert_eq!(y.len(), n);
        assert!(y.iter().zip(&x).all(|(&a, &b)| a == b.max(0.0)));
        // A tiled kernel over 65536 + 4 batches along z (two dispatches).
        let batches = 65_540;
        let a = uniform(&[batches, 1, 2], 1400);
        let b = uniform(&[batches, 2, 1], 1401);
        let got = down(ctx, &ctx.matmul_fwd(&up(ctx, &a), &up(ctx, &b)).unwrap());
        let (av, bv) = (a.as_slice(), b.as_slice());
        for i in [0, 65_534, 65_535, 65_536, batches - 1] {
            let want = av[2 * i] * bv[2 * i] + av[2 * i + 1] * bv[2 * i + 1];
            assert!(
                (got[i] - want).abs() <= 1e-6,
                "batch {i}: {} vs {want}",
                got[i]
            );
        }
    }

    #[test]
    fn oversized_buffers_are_a_device_error_and_buffers_are_reused() {
        let ctx = gpu_or_skip!();
        let limit = ctx.limits().max_storage_buffer_binding_size;
        let too_many = (limit / 4 + 1) as usize;
        assert!(matches!(ctx.zeros(&[too_many]), Err(Error::Device { .. })));
        let (_, before) = ctx.pool_stats();
        for _ in 0..3 {
            let t = ctx.zeros(&[12_345]).unwrap();
            ctx.sync().unwrap();
            drop(t);
        }
        assert!(
            ctx.pool_stats().1 >= before + 2,
            "dropped buffers are reused"
        );
    }

    #[test]
    fn a_batch_of_kernels_is_one_submission_and_equals_separate_calls() {
        let ctx = gpu_or_skip!();
        let x = uniform(&[2, 3, 9, 8], 1500);
        let w = uniform(&[4, 3, 3, 3], 1501);
        let g = Conv2dGeometry::new(x.dims(), w.dims(), &Conv2dParams::new().padding(1)).unwrap();
        let pg = Pool2dGeometry::new("t", &g.out_dims(), &Pool2dParams::new(2)).unwrap();
        let (gx, gw) = (up(ctx, &x), up(ctx, &w));
        let batched = ctx
            .batch(|ctx| {
                let (y, mask) = ctx.conv2d_fwd_relu(&g, &gx, &gw, None)?;
                let (p, arg) = ctx.maxpool2d_fwd(&pg, &y)?;
                let dp = ctx.maxpool2d_bwd(&pg, &p, &arg)?;
                let dy = ctx.relu_bwd(&dp, &mask, false)?;
                ctx.conv2d_bwd_input(&g, &dy, &gw)
            })
            .unwrap();
        let (y, mask) = ctx.conv2d_fwd_relu(&g, &gx, &gw, None).unwrap();
        ctx.sync().unwrap();
        let (p, arg) = ctx.maxpool2d_fwd(&pg, &y).unwrap();
        ctx.sync().unwrap();
        let dp = ctx.maxpool2d_bwd(&pg, &p, &arg).unwrap();
        let dy = ctx.relu_bwd(&dp, &mask, false).unwrap();
        let separate = ctx.conv2d_bwd_input(&g, &dy, &gw).unwrap();
        assert_eq!(down(ctx, &batched), down(ctx, &separate));
    }
}

//! The CUDA backend's tests.
//!
//! Without a GPU (any build): every `kernels/cuda/*.ptx` assembles with ptxas for sm_80 and
//! sm_90 (ptxas from `$PTXAS`, the `nvidia-cuda-nvcc-cu12` wheel, or `PATH`; prints
//! `skipped: ptxas not found` without one, unless `SMOOTHGRAD_REQUIRE_PTXAS=1`), follows the
//! file conventions. With feature `cuda` the launcher's table is checked against the
//! files on disk and, on a CUDA device, every kernel is checked against the CPU backend on seeded
//! random data; without a device those print `skipped: no CUDA device (<reason>)`, unless
//! `SMOOTHGRAD_REQUIRE_GPU` is `cuda` or `all`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `kernels/cuda`: `$SMOOTHGRAD_KERNEL_DIR` when set (a prebuilt test binary run from another
/// checkout, as `scripts/gpu-check.sh` does), else the source tree this was built from.
fn kernel_dir() -> PathBuf {
    match std::env::var_os("SMOOTHGRAD_KERNEL_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels/cuda"),
    }
}

fn ptx_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kernel_dir())
        .expect("kernels/cuda exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "ptx"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no PTX files in kernels/cuda");
    files
}

/// ptxas: `$PTXAS`, else the one in the `nvidia-cuda-nvcc-cu12` wheel, else `ptxas` on PATH.
fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PTXAS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let wheel = Command::new("python3")
        .args(["-c", "import nvidia.cuda_nvcc as m; print(m.__path__[0])"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("bin/ptxas"))
        .filter(|p| p.is_file());
    if wheel.is_some() {
        return wheel;
    }
    Command::new("ptxas")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("ptxas"))
}

fn ptxas_or_skip() -> Option<PathBuf> {
    let found = find_ptxas();
    if found.is_none() {
        if std::env::var("SMOOTHGRAD_REQUIRE_PTXAS").is_ok_and(|v| v == "1") {
            panic!(
                "SMOOTHGRAD_REQUIRE_PTXAS=1 but no ptxas (set PTXAS, or pip install nvidia-cuda-nvcc-cu12)"
            );
        }
        println!("skipped: ptxas not found");
    }
    found
}

#[test]
fn every_ptx_file_assembles_for_sm80_and_sm90() {
    let Some(ptxas) = ptxas_or_skip() else { return };
    let out = std::env::temp_dir().join(format!("smoothgrad-ptxas-{}.cubin", std::process::id()));
    let mut failures = Vec::new();
    for file in ptx_files() {
        for arch in ["sm_80", "sm_90"] {
            let result = Command::new(&ptxas)
                .arg(format!("-arch={arch}"))
                .arg(&file)
                .arg("-o")
                .arg(&out)
                .output()
                .expect("ptxas runs");
            if !result.status.success() {
                failures.push(format!(
                    "{} ({arch}):\n{}",
                    file.display(),
                    String::from_utf8_lossy(&result.stderr)
                ));
            }
        }
    }
    let _ = std::fs::remove_file(&out);
    assert!(
        failures.is_empty(),
        "ptxas rejected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn ptx_files_follow_the_conventions() {
    for file in ptx_files() {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).expect("readable PTX");
        // ptxas rejects any byte above 127, even in comments.
        assert!(text.is_ascii(), "{name}: not ASCII");
        assert!(text.starts_with("// "), "{name}: must open with a comment");
        let header: String = text.lines().take_while(|l| l.starts_with("//")).collect();
        assert!(
            header.contains("Launch"),
            "{name}: the header must give the launch shape"
        );
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix(".version "))
            .unwrap_or_else(|| panic!("{name}: no .version"));
        let (major, minor) = version.trim().split_once('.').expect("major.minor");
        let v: (u32, u32) = (major.parse().unwrap(), minor.parse().unwrap());
        assert!(v <= (8, 0), "{name}: .version {version} (8.0 or lower)");
        assert!(text.contains("\n.target sm_80\n"), "{name}: .target sm_80");
        assert!(
            text.contains("\n.address_size 64\n"),
            "{name}: .address_size 64"
        );
        for line in text.lines().filter(|l| l.starts_with(".visible .entry ")) {
            let entry = line["visible .entry ".len() + 1..]
                .split('(')
                .next()
                .unwrap_or("");
            assert!(
                entry.ends_with("_f32") || entry.ends_with("_u32"),
                "{name}: entry {entry} is not <op>_..._f32 / _u32"
            );
        }
    }
}

/// Parity of every CUDA kernel with the CPU backend (feature `cuda`; needs a CUDA device).
///
/// Tolerances: kernels that do the CPU's operations in the CPU's order are compared bit for bit
/// (ReLU, clamp, masks, add, sum over the batch, batch norm, max and average pooling, depthwise
/// forward and input gradient, the copies' backward, Philox). Sums in another order (GEMM tiles,
/// warp trees) are compared with |gpu - cpu| <= tol · max(1, |cpu|), tol = 1e-4 for convolutions
/// and matrix products of a few hundred terms, 1e-5 for softmax and the global average pool.
#[cfg(feature = "cuda")]
mod gpu {
    use smoothgrad_autodiff::backend::cpu::{conv, copies, pool};
    use smoothgrad_autodiff::backend::cuda::{CudaContext, CudaTensor, Math, kernels};
    use smoothgrad_autodiff::ops::activation::{BitMask, relu_fwd_masked};
    use smoothgrad_autodiff::{
        Conv2dGeometry, Conv2dParams, NoiseSource, Pool2dGeometry, Pool2dParams, Tape, Tensor, Var,
        rng,
    };

    /// The device, or `None` after printing why the test is skipped (a failure instead when
    /// `SMOOTHGRAD_REQUIRE_GPU` is `cuda` or `all`).
    fn cuda() -> Option<CudaContext> {
        match CudaContext::new(0) {
            Ok(c) => Some(c),
            Err(e) => {
                let required = std::env::var("SMOOTHGRAD_REQUIRE_GPU").unwrap_or_default();
                if required == "cuda" || required == "all" {
                    panic!("SMOOTHGRAD_REQUIRE_GPU={required} but there is no CUDA device: {e}");
                }
                println!("skipped: no CUDA device ({e})");
                None
            }
        }
    }

    fn data(dims: &[usize], seed: u64) -> Tensor<f32> {
        Tensor::<f32>::uniform(dims, -1.0, 1.0, seed).unwrap()
    }

    fn up(c: &CudaContext, t: &Tensor<f32>) -> CudaTensor {
        c.upload(t).unwrap()
    }

    fn down(c: &CudaContext, t: &CudaTensor) -> Vec<f32> {
        c.download(t).unwrap().into_vec()
    }

    fn assert_bits(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (k, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{what}: element {k}: gpu {a:e}, cpu {b:e} (expected the same bits)"
            );
        }
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let mut worst = 0f32;
        for (k, (a, b)) in got.iter().zip(want).enumerate() {
            let err = (a - b).abs() / b.abs().max(1.0);
            assert!(
                err <= tol || (a.is_nan() && b.is_nan()),
                "{what}: element {k}: gpu {a:e}, cpu {b:e}"
            );
            worst = worst.max(err);
        }
        println!("{what}: max scaled difference {worst:e}");
    }

    #[test]
    fn modules_load_and_every_table_entry_resolves() {
        for k in kernels::KERNELS {
            let text = std::fs::read_to_string(super::kernel_dir().join(k.file)).unwrap();
            assert!(kernels::entries(&text).contains(&k.entry), "{k:?} on disk");
            assert_eq!(
                kernels::source(k.file),
                Some(text.as_str()),
                "{} is stale",
                k.file
            );
        }
        let Some(c) = cuda() else { return };
        println!(
            "device {}: {:?}",
            c.name().unwrap(),
            c.compute_capability().unwrap()
        );
        c.load_all().unwrap();
    }

    #[test]
    fn without_a_device_new_is_a_typed_error() {
        if CudaContext::device_count() > 0 {
            return;
        }
        let e = CudaContext::new(0).expect_err("no device here");
        assert!(
            matches!(e, smoothgrad_autodiff::Error::Device { device: "cuda", .. }),
            "{e}"
        );
    }

    /// Values with exact zeros, a NaN and both signs, across several warps and a partial word.
    fn relu_input(len: usize, seed: u64) -> Tensor<f32> {
        let mut v = data(&[len], seed).into_vec();
        for (i, x) in v.iter_mut().enumerate() {
            if i % 7 == 3 {
                *x = 0.0;
            }
            if i % 97 == 50 {
                *x = f32::NAN;
            }
        }
        Tensor::from_vec(v, &[len]).unwrap()
    }

    #[test]
    fn relu_clamp_and_masks_match_the_cpu_bit_for_bit() {
        let Some(c) = cuda() else { return };
        for len in [1, 31, 32, 33, 257, 4099] {
            let x = relu_input(len, len as u64);
            let (want_y, want_mask) = relu_fwd_masked(x.as_slice());
            let (y, mask) = c.relu_fwd(&up(&c, &x)).unwrap();
            assert_bits(&down(&c, &y), &want_y, &format!("relu_fwd {len}"));
            let bits = c.download_mask(&mask).unwrap();
            assert!(
                (0..len).all(|e| bits[e] == want_mask.get(e)),
                "relu mask {len}"
            );
            assert_bits(
                &down(&c, &c.relu(&up(&c, &x)).unwrap()),
                &want_y,
                "relu unmasked",
            );

            let dy = data(&[len], 100 + len as u64);
            for guided in [false, true] {
                let want = want_mask.apply(dy.as_slice(), guided);
                let dx = c.relu_bwd(&up(&c, &dy), &mask, guided).unwrap();
                assert_bits(&down(&c, &dx), &want, &format!("relu_bwd {len} {guided}"));
            }

            let (low, high) = (-0.25f32, 0.5f32);
            let want_y: Vec<f32> = x
                .as_slice()
                .iter()
                .map(|&v| {
                    if v < low {
                        low
                    } else if v > high {
                        high
                    } else {
                        v
                    }
                })
                .collect();
            let want_mask = BitMask::from_predicate(x.as_slice(), |v| v > low && v < high);
            let (y, mask) = c.clamp_fwd(&up(&c, &x), low, high).unwrap();
            assert_bits(&down(&c, &y), &want_y, &format!("clamp_fwd {len}"));
            let bits = c.download_mask(&mask).unwrap();
            assert!(
                (0..len).all(|e| bits[e] == want_mask.get(e)),
                "clamp mask {len}"
            );
        }
    }

    #[test]
    fn add_and_sum_over_the_batch_match_the_cpu_bit_for_bit() {
        let Some(c) = cuda() else { return };
        let (a, b) = (data(&[3, 5, 7], 1), data(&[3, 5, 7], 2));
        let want: Vec<f32> = a
            .as_slice()
            .iter()
            .zip(b.as_slice())
            .map(|(x, y)| x + y)
            .collect();
        assert_bits(
            &down(&c, &c.add(&up(&c, &a), &up(&c, &b)).unwrap()),
            &want,
            "add",
        );
        let s = c.sum_batch(&up(&c, &a)).unwrap();
        assert_eq!(s.dims(), &[1, 5, 7]);
        let mut want = vec![0f32; 35];
        for row in a.as_slice().chunks(35) {
            want.iter_mut().zip(row).for_each(|(w, v)| *w += v);
        }
        assert_bits(&down(&c, &s), &want, "sum_batch");
    }

    fn p(
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
    ) -> Conv2dParams {
        Conv2dParams {
            stride,
            padding,
            dilation,
            groups,
        }
    }

    /// (x dims, w dims, params, what it covers): the CPU tests' shapes, plus ones spanning
    /// several 64-wide tiles and 16-deep steps, and one whose weight gradient is split.
    fn conv_cases() -> Vec<([usize; 4], [usize; 4], Conv2dParams, &'static str)> {
        let n = Conv2dParams::new;
        vec![
            ([1, 3, 7, 5], [4, 3, 3, 3], n(), "odd 7x5, valid, batch 1"),
            (
                [3, 3, 7, 5],
                [4, 3, 3, 2],
                n().stride(2).padding(1),
                "stride 2, pad 1, batch 3",
            ),
            (
                [2, 2, 7, 5],
                [3, 2, 3, 3],
                p([1, 2], [1, 0, 2, 1], [1, 1], 1),
                "asymmetric padding",
            ),
            (
                [3, 2, 9, 8],
                [3, 2, 3, 3],
                n().padding(2).dilation(2),
                "dilation 2",
            ),
            (
                [1, 3, 7, 6],
                [2, 3, 2, 3],
                p([2, 1], [0; 4], [2, 1], 1),
                "mixed stride, dilation",
            ),
            (
                [3, 4, 7, 5],
                [6, 2, 3, 3],
                n().padding(1).groups(2),
                "groups 2",
            ),
            (
                [3, 3, 7, 5],
                [6, 1, 3, 3],
                n().stride(2).padding(1).groups(3),
                "depthwise x2, stride 2",
            ),
            (
                [1, 4, 8, 7],
                [4, 1, 3, 3],
                n().padding(2).dilation(2).groups(4),
                "depthwise, dilation 2",
            ),
            (
                [3, 1, 6, 5],
                [4, 1, 3, 3],
                n().padding(1),
                "one input channel",
            ),
            ([3, 5, 7, 5], [4, 5, 1, 1], n(), "1x1, batch 3"),
            ([2, 3, 7, 5], [4, 3, 1, 1], n().stride(2), "1x1 stride 2"),
            (
                [2, 2, 3, 3],
                [2, 2, 5, 5],
                n().padding(2),
                "kernel as large as the padded input",
            ),
            (
                [3, 20, 13, 11],
                [70, 20, 3, 3],
                n().padding(1),
                "several tiles: K 180, og 70, P 429",
            ),
            (
                [2, 40, 9, 9],
                [68, 20, 3, 3],
                n().stride(2).padding(1).groups(2),
                "tiles, groups 2, stride 2",
            ),
            (
                [8, 4, 40, 40],
                [8, 4, 3, 3],
                n().padding(1),
                "long reduction: split weight gradient",
            ),
        ]
    }

    #[test]
    fn conv2d_matches_the_cpu_forward_and_backward() {
        let Some(c) = cuda() else { return };
        for (k, (xd, wd, params, name)) in conv_cases().into_iter().enumerate() {
            let g = Conv2dGeometry::new(&xd, &wd, &params).unwrap();
            let seed = 1000 * k as u64;
            let (x, w, b) = (
                data(&xd, seed + 1),
                data(&wd, seed + 2),
                data(&[wd[0]], seed + 3),
            );
            let dy = data(&g.out_dims(), seed + 4);
            let (xg, wg, bg, dyg) = (up(&c, &x), up(&c, &w), up(&c, &b), up(&c, &dy));
            let name = format!("{name} {xd:?} {wd:?}");

            let mut want = vec![0f32; g.out_dims().iter().product()];
            conv::conv2d_fwd(
                &g,
                x.as_slice(),
                w.as_slice(),
                Some(b.as_slice()),
                &mut want,
            );
            let y = c.conv2d_fwd(&g, &xg, &wg, Some(&bg)).unwrap();
            assert_close(&down(&c, &y), &want, 1e-4, &format!("conv fwd {name}"));

            let (y, mask) = c.conv2d_fwd_relu(&g, &xg, &wg, Some(&bg)).unwrap();
            let (want_relu, want_mask) = relu_fwd_masked(&want);
            assert_close(
                &down(&c, &y),
                &want_relu,
                1e-4,
                &format!("conv fwd relu {name}"),
            );
            let bits = c.download_mask(&mask).unwrap();
            for (e, &v) in want.iter().enumerate() {
                if v.abs() > 1e-4 {
                    assert_eq!(bits[e], want_mask.get(e), "{name}: fused mask bit {e}");
                }
            }

            let mut want_nb = vec![0f32; want.len()];
            conv::conv2d_fwd(&g, x.as_slice(), w.as_slice(), None, &mut want_nb);
            let y = c.conv2d_fwd(&g, &xg, &wg, None).unwrap();
            assert_close(
                &down(&c, &y),
                &want_nb,
                1e-4,
                &format!("conv fwd no bias {name}"),
            );

            let mut want = vec![0f32; x.numel()];
            conv::conv2d_bwd_input(&g, dy.as_slice(), w.as_slice(), &mut want);
            let dx = c.conv2d_bwd_input(&g, &dyg, &wg).unwrap();
            assert_close(
                &down(&c, &dx),
                &want,
                1e-4,
                &format!("conv bwd_input {name}"),
            );

            let mut want = vec![0f32; w.numel()];
            conv::conv2d_bwd_weight(&g, dy.as_slice(), x.as_slice(), &mut want);
            let dw = c.conv2d_bwd_weight(&g, &dyg, &xg).unwrap();
            assert_close(
                &down(&c, &dw),
                &want,
                1e-4,
                &format!("conv bwd_weight {name}"),
            );

            let mut want = vec![0f32; wd[0]];
            conv::conv2d_bwd_bias(&g, dy.as_slice(), &mut want);
            let db = c.conv2d_bwd_bias(&g, &dyg).unwrap();
            assert_close(
                &down(&c, &db),
                &want,
                1e-4,
                &format!("conv bwd_bias {name}"),
            );
        }
    }

    #[test]
    fn depthwise_forward_and_input_gradient_are_bit_identical_to_the_cpu() {
        let Some(c) = cuda() else { return };
        for (k, (xd, wd, params, name)) in conv_cases().into_iter().enumerate() {
            if wd[1] != 1 {
                continue;
            }
            let g = Conv2dGeometry::new(&xd, &wd, &params).unwrap();
            let (x, w, b) = (
                data(&xd, k as u64),
                data(&wd, 50 + k as u64),
                data(&[wd[0]], 9),
            );
            let dy = data(&g.out_dims(), 70 + k as u64);
            let mut want = vec![0f32; g.out_dims().iter().product()];
            conv::conv2d_fwd(
                &g,
                x.as_slice(),
                w.as_slice(),
                Some(b.as_slice()),
                &mut want,
            );
            let y = c
                .conv2d_fwd(&g, &up(&c, &x), &up(&c, &w), Some(&up(&c, &b)))
                .unwrap();
            assert_bits(&down(&c, &y), &want, &format!("depthwise fwd {name}"));
            let mut want = vec![0f32; x.numel()];
            conv::conv2d_bwd_input(&g, dy.as_slice(), w.as_slice(), &mut want);
            let dx = c.conv2d_bwd_input(&g, &up(&c, &dy), &up(&c, &w)).unwrap();
            assert_bits(
                &down(&c, &dx),
                &want,
                &format!("depthwise bwd_input {name}"),
            );
        }
    }

    #[test]
    fn fused_input_gradient_reduced_over_copies_matches_the_cpu() {
        let Some(c) = cuda() else { return };
        let n = Conv2dParams::new;
        for (xd, wd, params) in [
            ([5, 3, 9, 7], [8, 3, 3, 3], n().padding(1)),
            (
                [4, 4, 8, 9],
                [6, 2, 3, 3],
                n().stride(2).padding(1).groups(2),
            ),
            ([3, 2, 7, 7], [4, 2, 3, 3], n().padding(2).dilation(2)),
            ([6, 3, 6, 5], [3, 1, 3, 3], n().padding(1).groups(3)),
        ] {
            let g = Conv2dGeometry::new(&xd, &wd, &params).unwrap();
            let (w, dy) = (data(&wd, 5), data(&g.out_dims(), 6));
            let per = xd[1] * xd[2] * xd[3];
            let start = data(&[per], 7).into_vec(); // sums accumulate into what is there
            let (mut sum, mut sumsq) = (
                start.clone(),
                start.iter().map(|v| v * v).collect::<Vec<_>>(),
            );
            let one = [1, xd[1], xd[2], xd[3]];
            let mut gs = c.upload_vec(&sum, &one).unwrap();
            let mut gq = c.upload_vec(&sumsq, &one).unwrap();
            copies::conv2d_bwd_input_reduce_copies(
                &g,
                dy.as_slice(),
                w.as_slice(),
                &mut sum,
                &mut sumsq,
            );
            c.conv2d_bwd_input_reduce_copies(&g, &up(&c, &dy), &up(&c, &w), &mut gs, &mut gq)
                .unwrap();
            assert_close(
                &down(&c, &gs),
                &sum,
                1e-4,
                &format!("fused sum {xd:?} {wd:?}"),
            );
            assert_close(
                &down(&c, &gq),
                &sumsq,
                1e-4,
                &format!("fused sumsq {xd:?} {wd:?}"),
            );
        }
    }

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
            ([1, 1, 2, 2], p(2).padding(1).dilation(3)), // a window with no input element
        ]
    }

    #[test]
    fn maxpool_matches_the_cpu_bit_for_bit_with_ties_and_nan() {
        let Some(c) = cuda() else { return };
        for (k, (xd, params)) in max_cases().into_iter().enumerate() {
            let g = Pool2dGeometry::new("test", &xd, &params).unwrap();
            let mut x = data(&xd, 300 + k as u64).into_vec();
            // Ties (quantised values) and a NaN.
            x.iter_mut().for_each(|v| *v = (*v * 4.0).round() / 4.0);
            if x.len() > 5 {
                x[5] = f32::NAN;
            }
            let x = Tensor::from_vec(x, &xd).unwrap();
            let len: usize = g.out_dims().iter().product();
            let (mut want, mut want_arg) = (vec![0f32; len], vec![0u32; len]);
            pool::maxpool2d_fwd(&g, x.as_slice(), &mut want, &mut want_arg);
            let (y, arg) = c.maxpool2d_fwd(&g, &up(&c, &x)).unwrap();
            assert_bits(&down(&c, &y), &want, &format!("maxpool fwd {k}"));
            assert_eq!(
                c.download_indices(&arg).unwrap(),
                want_arg,
                "maxpool argmax {k}"
            );

            let dy = data(&g.out_dims(), 400 + k as u64);
            let mut want = vec![0f32; x.numel()];
            pool::maxpool2d_bwd(&g, dy.as_slice(), &want_arg, &mut want);
            let dx = c.maxpool2d_bwd(&g, &up(&c, &dy), &arg).unwrap();
            assert_bits(&down(&c, &dx), &want, &format!("maxpool bwd {k}"));
        }
    }

    #[test]
    fn avgpool_matches_the_cpu_bit_for_bit() {
        let Some(c) = cuda() else { return };
        for include in [true, false] {
            let p = |k| Pool2dParams::new(k).count_include_pad(include);
            let mut rect = p(3).padding(1);
            rect.kernel = [3, 2];
            rect.stride = [2, 1];
            rect.padding = [1, 1];
            for (k, (xd, params)) in [
                ([1, 2, 7, 5], p(2)),
                ([3, 2, 7, 5], p(3).stride(2).padding(1)),
                ([2, 3, 7, 5], p(2).ceil_mode(true)),
                ([2, 1, 5, 5], p(2).padding(1).ceil_mode(true)),
                ([1, 2, 6, 6], p(3).stride(2).padding(1).ceil_mode(true)),
                ([1, 3, 7, 5], rect),
            ]
            .into_iter()
            .enumerate()
            {
                let g = Pool2dGeometry::new("test", &xd, &params).unwrap();
                let x = data(&xd, 500 + k as u64);
                let mut want = vec![0f32; g.out_dims().iter().product()];
                pool::avgpool2d_fwd(&g, x.as_slice(), &mut want);
                let y = c.avgpool2d_fwd(&g, &up(&c, &x)).unwrap();
                assert_bits(&down(&c, &y), &want, &format!("avgpool fwd {k} {include}"));
                let dy = data(&g.out_dims(), 600 + k as u64);
                let mut want = vec![0f32; x.numel()];
                pool::avgpool2d_bwd(&g, dy.as_slice(), &mut want);
                let dx = c.avgpool2d_bwd(&g, &up(&c, &dy)).unwrap();
                assert_bits(&down(&c, &dx), &want, &format!("avgpool bwd {k} {include}"));
            }
        }
    }

    /// Forward value and input gradient of a one-input op through the CPU tape.
    fn tape_op(
        x: &Tensor<f32>,
        dy: &Tensor<f32>,
        f: impl Fn(&mut Tape<f32>, &Var<f32>) -> Var<f32>,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut tape = Tape::new();
        let xv = tape.var(x.clone());
        let y = f(&mut tape, &xv);
        let grads = tape.backward_from(&y, dy).unwrap();
        (
            y.value().as_slice().to_vec(),
            grads.get(&xv).unwrap().as_slice().to_vec(),
        )
    }

    #[test]
    fn global_avg_pool_batch_norm_and_softmax_match_the_cpu() {
        let Some(c) = cuda() else { return };
        for xd in [[1, 3, 5, 7], [3, 4, 1, 1], [2, 5, 33, 3]] {
            let x = data(&xd, 7);
            let dy = data(&[xd[0], xd[1], 1, 1], 8);
            let (want_y, want_dx) = tape_op(&x, &dy, |t, v| t.global_avg_pool2d(v).unwrap());
            let y = c.global_avg_pool_fwd(&up(&c, &x)).unwrap();
            assert_close(
                &down(&c, &y),
                &want_y,
                1e-5,
                &format!("global avg pool {xd:?}"),
            );
            let dx = c.global_avg_pool_bwd(&up(&c, &dy), &xd).unwrap();
            assert_bits(
                &down(&c, &dx),
                &want_dx,
                &format!("global avg pool bwd {xd:?}"),
            );

            let ch = xd[1];
            let (gamma, beta, mean) = (data(&[ch], 1), data(&[ch], 2), data(&[ch], 3));
            let var = data(&[ch], 4).map(|v| v.abs() + 0.1);
            let dy = data(&xd, 9);
            let (want_y, want_dx) = tape_op(&x, &dy, |t, v| {
                let (g, b) = (Var::constant(gamma.clone()), Var::constant(beta.clone()));
                t.batch_norm(v, &g, &b, &mean, &var, 1e-5).unwrap()
            });
            let bn = smoothgrad_autodiff::backend::cuda::CudaBatchNorm::new(
                &c, &gamma, &beta, &mean, &var, 1e-5,
            )
            .unwrap();
            let xg = up(&c, &x);
            assert_bits(
                &down(&c, &c.batch_norm_fwd(&xg, &bn).unwrap()),
                &want_y,
                "batch norm",
            );
            let dx = c.batch_norm_bwd(&up(&c, &dy), &bn).unwrap();
            assert_bits(&down(&c, &dx), &want_dx, "batch norm bwd");
        }
        for sd in [[1, 10], [3, 1000], [17, 33], [4, 1]] {
            let x = data(&sd, 11).map(|v| v * 8.0);
            let dy = data(&sd, 12);
            let (want_y, want_dx) = tape_op(&x, &dy, |t, v| t.softmax(v, 1).unwrap());
            let y = c.softmax_fwd(&up(&c, &x)).unwrap();
            assert_close(&down(&c, &y), &want_y, 1e-5, &format!("softmax {sd:?}"));
            let dx = c.softmax_bwd(&y, &up(&c, &dy)).unwrap();
            assert_close(
                &down(&c, &dx),
                &want_dx,
                1e-5,
                &format!("softmax bwd {sd:?}"),
            );
        }
    }

    #[test]
    fn linear_and_matmul_match_the_cpu() {
        let Some(c) = cuda() else { return };
        for (rows, in_f, out_f) in [(1, 3, 2), (3, 70, 10), (50, 129, 65), (7, 16, 64)] {
            let (x, w, b) = (
                data(&[rows, in_f], 1),
                data(&[out_f, in_f], 2),
                data(&[out_f], 3),
            );
            let dy = data(&[rows, out_f], 4);
            let mut tape = Tape::new();
            let (xv, wv, bv) = (
                tape.var(x.clone()),
                tape.var(w.clone()),
                tape.var(b.clone()),
            );
            let y = tape.linear(&xv, &wv, Some(&bv)).unwrap();
            let grads = tape.backward_from(&y, &dy).unwrap();
            let (xg, wg, dyg) = (up(&c, &x), up(&c, &w), up(&c, &dy));
            let name = format!("linear {rows}x{in_f}->{out_f}");
            let yg = c.linear_fwd(&xg, &wg, Some(&up(&c, &b))).unwrap();
            assert_close(&down(&c, &yg), y.value().as_slice(), 1e-4, &name);
            let dx = c.linear_bwd_input(&dyg, &wg).unwrap();
            assert_close(
                &down(&c, &dx),
                grads.get(&xv).unwrap().as_slice(),
                1e-4,
                &format!("{name} dX"),
            );
            let dw = c.linear_bwd_weight(&dyg, &xg).unwrap();
            assert_close(
                &down(&c, &dw),
                grads.get(&wv).unwrap().as_slice(),
                1e-4,
                &format!("{name} dW"),
            );
            let db = c.linear_bwd_bias(&dyg).unwrap();
            assert_bits(
                &down(&c, &db),
                grads.get(&bv).unwrap().as_slice(),
                &format!("{name} db"),
            );
        }
        for (ad, bd) in [
            (vec![5, 7], vec![7, 3]),
            (vec![2, 3, 33, 17], vec![2, 3, 17, 65]),
            (vec![4, 9, 20], vec![20, 6]),
            (vec![9, 20], vec![3, 20, 6]),
        ] {
            let (a, b) = (data(&ad, 21), data(&bd, 22));
            let mut tape = Tape::<f32>::new();
            let want = tape
                .matmul(&Var::constant(a.clone()), &Var::constant(b.clone()))
                .unwrap();
            let got = c.matmul(&up(&c, &a), &up(&c, &b)).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_close(
                &down(&c, &got),
                want.value().as_slice(),
                1e-4,
                &format!("matmul {ad:?} {bd:?}"),
            );
        }
    }

    /// `v` rounded as `cvt.rna.tf32.f32`: 10 mantissa bits, nearest, ties away from zero.
    fn tf32(v: f32) -> f32 {
        if v.is_nan() {
            v
        } else {
            f32::from_bits((v.to_bits() + 0x1000) & 0xffff_e000)
        }
    }

    fn tf32_tensor(t: &Tensor<f32>) -> Tensor<f32> {
        Tensor::from_vec(t.as_slice().iter().map(|&v| tf32(v)).collect(), t.dims()).unwrap()
    }

    /// The tensor-core paths (Math::Tf32) against the CPU on TF32-rounded operands (only the
    /// accumulation order differs: 1e-4 as the FP32 kernels), and against the plain FP32 CPU
    /// result within the TF32 error stated in docs/cuda.md (5e-3 of max(1, |y|) here: inputs
    /// in [-1, 1], K <= 180).
    #[test]
    fn tensor_core_convolutions_and_matmul_match_tf32_references() {
        let Some(c) = cuda() else { return };
        let c = c.with_math(Math::Tf32);
        assert_eq!(c.math(), Math::Tf32);
        for (k, (xd, wd, params, name)) in conv_cases().into_iter().enumerate() {
            let g = Conv2dGeometry::new(&xd, &wd, &params).unwrap();
            if g.in_channels / g.groups == 1 {
                continue; // depthwise: direct kernels, FP32 in every mode
            }
            let seed = 7000 + 1000 * k as u64;
            let (x, w, b) = (
                data(&xd, seed + 1),
                data(&wd, seed + 2),
                data(&[wd[0]], seed + 3),
            );
            let dy = data(&g.out_dims(), seed + 4);
            let (xr, wr, dyr) = (tf32_tensor(&x), tf32_tensor(&w), tf32_tensor(&dy));
            let name = format!("tf32 {name} {xd:?} {wd:?}");
            let out: usize = g.out_dims().iter().product();
            let (mut want, mut want32) = (vec![0f32; out], vec![0f32; out]);
            conv::conv2d_fwd(
                &g,
                xr.as_slice(),
                wr.as_slice(),
                Some(b.as_slice()),
                &mut want,
            );
            conv::conv2d_fwd(
                &g,
                x.as_slice(),
                w.as_slice(),
                Some(b.as_slice()),
                &mut want32,
            );
            let y = down(
                &c,
                &c.conv2d_fwd(&g, &up(&c, &x), &up(&c, &w), Some(&up(&c, &b)))
                    .unwrap(),
            );
            assert_close(&y, &want, 1e-4, &format!("conv fwd {name}"));
            assert_close(&y, &want32, 5e-3, &format!("conv fwd {name} vs fp32"));
            let (y, mask) = c
                .conv2d_fwd_relu(&g, &up(&c, &x), &up(&c, &w), Some(&up(&c, &b)))
                .unwrap();
            let (want_relu, want_mask) = relu_fwd_masked(&want);
            assert_close(
                &down(&c, &y),
                &want_relu,
                1e-4,
                &format!("conv fwd relu {name}"),
            );
            let bits = c.download_mask(&mask).unwrap();
            for (e, &v) in want.iter().enumerate() {
                if v.abs() > 1e-4 {
                    assert_eq!(bits[e], want_mask.get(e), "{name}: fused mask bit {e}");
                }
            }
            let (mut want, mut want32) = (vec![0f32; x.numel()], vec![0f32; x.numel()]);
            conv::conv2d_bwd_input(&g, dyr.as_slice(), wr.as_slice(), &mut want);
            conv::conv2d_bwd_input(&g, dy.as_slice(), w.as_slice(), &mut want32);
            let dx = down(
                &c,
                &c.conv2d_bwd_input(&g, &up(&c, &dy), &up(&c, &w)).unwrap(),
            );
            assert_close(&dx, &want, 1e-4, &format!("conv bwd_input {name}"));
            assert_close(
                &dx,
                &want32,
                5e-3,
                &format!("conv bwd_input {name} vs fp32"),
            );
        }
        for (ad, bd) in [
            (vec![5, 7], vec![7, 3]),
            (vec![2, 3, 33, 17], vec![2, 3, 17, 65]),
            (vec![70, 130], vec![130, 66]),
        ] {
            let (a, b) = (data(&ad, 41), data(&bd, 42));
            let mut tape = Tape::<f32>::new();
            let want = tape
                .matmul(
                    &Var::constant(tf32_tensor(&a)),
                    &Var::constant(tf32_tensor(&b)),
                )
                .unwrap();
            let got = down(&c, &c.matmul(&up(&c, &a), &up(&c, &b)).unwrap());
            assert_close(
                &got,
                want.value().as_slice(),
                1e-4,
                &format!("tf32 matmul {ad:?} {bd:?}"),
            );
        }
        // The FP32 default is untouched by another handle's setting.
        assert_eq!(CudaContext::new(0).unwrap().math(), Math::Fp32);
    }

    /// Given noise replayed on the device: the CPU's bits; and a device copy is a copy.
    #[test]
    fn given_noise_copies_and_duplicates_match_the_cpu_bits() {
        let Some(c) = cuda() else { return };
        let x = data(&[1, 3, 5, 7], 51);
        let noise = Tensor::<f32>::randn(&[4, 3, 5, 7], 52).unwrap();
        let sigma = 0.3f32;
        let mut want = vec![0f32; noise.numel()];
        copies::noisy_copies_fwd(
            x.as_slice(),
            &NoiseSource::Given(noise.clone()),
            sigma,
            0,
            &mut want,
        );
        let got = c
            .noisy_copies_given(&up(&c, &x), &up(&c, &noise), sigma)
            .unwrap();
        assert_eq!(got.dims(), &[4, 3, 5, 7]);
        assert_bits(&down(&c, &got), &want, "noisy copies (given noise)");
        let copy = c.duplicate(&got).unwrap();
        assert_bits(&down(&c, &copy), &want, "duplicate");
        let wrong = Tensor::<f32>::zeros(&[4, 3, 5, 6]).unwrap();
        assert!(
            c.noisy_copies_given(&up(&c, &x), &up(&c, &wrong), sigma)
                .is_err()
        );
    }

    #[test]
    fn philox_is_bit_identical_and_normals_follow_the_model() {
        let Some(c) = cuda() else { return };
        let mut counters = vec![
            [0, 0, 0, 0],
            [u32::MAX; 4],
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
        ];
        let keys = [[0, 0], [u32::MAX; 2], [0xa4093822, 0x299f31d0]];
        let r = data(&[4000], 31).into_vec();
        counters.extend(
            r.chunks_exact(4)
                .map(|q| std::array::from_fn(|i| q[i].to_bits().wrapping_mul(2_654_435_761))),
        );
        for key in keys {
            let got = c.philox(&counters, key).unwrap();
            for (ctr, g) in counters.iter().zip(&got) {
                assert_eq!(
                    *g,
                    rng::philox4x32_10(*ctr, key),
                    "counter {ctr:x?} key {key:x?}"
                );
            }
        }
        for (seed, stream) in [(0u64, 0u32), (42, 7), (u64::MAX, u32::MAX), (1 << 40, 3)] {
            let len = 10_001;
            let got = c.normal(seed, stream, len).unwrap();
            let mut cpu = vec![0f32; len];
            rng::fill_normal(seed, stream, 0, &mut cpu);
            // The kernel runs rng.rs's Box–Muller step for step (Cephes ln/sin/cos with the
            // same fused multiply-adds): the same bits.
            for (e, (&g, &w)) in got.iter().zip(&cpu).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "draw {e}: device {g}, cpu {w}");
            }
            println!("normal seed {seed} stream {stream}: {len} draws, bit-identical");
        }
    }

    #[test]
    fn noisy_copies_and_their_backward_match_the_cpu() {
        let Some(c) = cuda() else { return };
        for (dims, first, count) in [
            (vec![1, 3, 7, 5], 0, 4),
            (vec![1, 2, 1, 3], 5, 3),
            (vec![1, 9], 1, 1),
        ] {
            let x = data(&dims, 13);
            let (sigma, seed) = (0.3f32, 1234u64);
            let e = x.numel();
            let mut want = vec![0f32; e * count];
            copies::noisy_copies_fwd(
                x.as_slice(),
                &NoiseSource::Philox { seed },
                sigma,
                first,
                &mut want,
            );
            let got = c
                .noisy_copies(&up(&c, &x), sigma, seed, first, count)
                .unwrap();
            let got = down(&c, &got);
            for (k, (&g, &w)) in got.iter().zip(&want).enumerate() {
                // Same draws; x + σ·z may round once (fma) or twice.
                let bound = 2.0 * f32::EPSILON * w.abs().max(1.0);
                assert!(
                    (g - w).abs() <= bound,
                    "noisy copy element {k}: gpu {g}, cpu {w}"
                );
            }

            let grad = data(&[count, e], 14);
            let start = data(&[e], 15).into_vec();
            let (mut sum, mut sumsq) = (start.clone(), start.clone());
            copies::reduce_copies(grad.as_slice(), &mut sum, &mut sumsq);
            let (mut gs, mut gq) = (
                c.upload_vec(&start, &[e]).unwrap(),
                c.upload_vec(&start, &[e]).unwrap(),
            );
            c.noisy_copies_bwd(&up(&c, &grad), &mut gs, &mut gq)
                .unwrap();
            assert_bits(&down(&c, &gs), &sum, "copies bwd sum");
            assert_bits(&down(&c, &gq), &sumsq, "copies bwd sumsq");
        }
    }
}

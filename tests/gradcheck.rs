//! Finite-difference gradient checks in f64 for every op, through a random upstream gradient.

use smoothgrad_autodiff::{Conv2dParams, Pool2dParams};
use smoothgrad_tests::{Wrt, away_from_zero, distinct, gradcheck, positive, uniform};

use Wrt::{Const, Grad};

#[test]
fn add_sub_with_broadcasting() {
    for (da, db) in [
        (vec![2, 3, 4], vec![2, 3, 4]),
        (vec![2, 3, 4], vec![3, 1]),
        (vec![1, 4], vec![3, 1]),
        (vec![2, 3, 4], vec![]),
    ] {
        let ins = [(uniform(&da, 1), Grad), (uniform(&db, 2), Grad)];
        gradcheck("add", &ins, |t, v| t.add(&v[0], &v[1]));
        gradcheck("sub", &ins, |t, v| t.sub(&v[0], &v[1]));
    }
}

#[test]
fn mul_div_with_broadcasting() {
    for (da, db) in [
        (vec![2, 3, 4], vec![2, 3, 4]),
        (vec![2, 3, 4], vec![3, 1]),
        (vec![4], vec![3, 1]),
    ] {
        let ins = [(uniform(&da, 3), Grad), (positive(&db, 4), Grad)];
        gradcheck("mul", &ins, |t, v| t.mul(&v[0], &v[1]));
        gradcheck("div", &ins, |t, v| t.div(&v[0], &v[1]));
    }
    // Only one side tracked.
    let ins = [(uniform(&[3, 4], 5), Const), (positive(&[4], 6), Grad)];
    gradcheck("div (rhs only)", &ins, |t, v| t.div(&v[0], &v[1]));
}

#[test]
fn scalar_ops_exp_log() {
    let x = [(positive(&[2, 5], 7), Grad)];
    gradcheck("add_scalar", &x, |t, v| t.add_scalar(&v[0], 0.7));
    gradcheck("mul_scalar", &x, |t, v| t.mul_scalar(&v[0], -1.3));
    gradcheck("pow_scalar", &x, |t, v| t.pow_scalar(&v[0], 2.5));
    gradcheck("exp", &x, |t, v| t.exp(&v[0]));
    gradcheck("log", &x, |t, v| t.log(&v[0]));
}

#[test]
fn relu_away_from_kink() {
    gradcheck(
        "relu",
        &[(away_from_zero(&[2, 3, 5, 4], 8), Grad)],
        |t, v| t.relu(&v[0]),
    );
}

#[test]
fn clamp_away_from_bounds() {
    // Values in ±[0.1, 1.1) against bounds at -0.05 and 0.6: none within 0.05 of a bound.
    let x = away_from_zero(&[3, 7], 45).map(|v| if (v - 0.6).abs() < 0.05 { v + 0.1 } else { v });
    gradcheck("clamp", &[(x, Grad)], |t, v| t.clamp(&v[0], -0.05, 0.6));
}

#[test]
fn matmul_plain_and_batched() {
    for (da, db) in [
        (vec![3, 4], vec![4, 5]),
        (vec![2, 3, 4], vec![2, 4, 5]),
        (vec![2, 3, 4], vec![4, 5]),
        (vec![3, 4], vec![2, 4, 5]),
    ] {
        let ins = [(uniform(&da, 9), Grad), (uniform(&db, 10), Grad)];
        gradcheck("matmul", &ins, |t, v| t.matmul(&v[0], &v[1]));
    }
}

#[test]
fn linear_with_and_without_bias() {
    let ins = [
        (uniform(&[3, 5], 11), Grad),
        (uniform(&[4, 5], 12), Grad),
        (uniform(&[4], 13), Grad),
    ];
    gradcheck("linear", &ins, |t, v| t.linear(&v[0], &v[1], Some(&v[2])));
    gradcheck("linear (no bias)", &ins[..2], |t, v| {
        t.linear(&v[0], &v[1], None)
    });
    let ins3 = [
        (uniform(&[2, 3, 5], 14), Grad),
        (uniform(&[4, 5], 15), Grad),
    ];
    gradcheck("linear (3-d input)", &ins3, |t, v| {
        t.linear(&v[0], &v[1], None)
    });
}

#[test]
fn conv2d_every_option() {
    let cases: Vec<(&str, [usize; 4], [usize; 4], Conv2dParams)> = vec![
        ("plain", [2, 3, 6, 5], [4, 3, 3, 3], Conv2dParams::new()),
        (
            "stride 2 pad 1",
            [2, 3, 7, 6],
            [4, 3, 3, 3],
            Conv2dParams::new().stride(2).padding(1),
        ),
        (
            "dilation 2",
            [1, 2, 7, 7],
            [3, 2, 3, 3],
            Conv2dParams::new().dilation(2).padding(2),
        ),
        (
            "groups 2",
            [2, 4, 5, 5],
            [6, 2, 3, 3],
            Conv2dParams::new().groups(2).padding(1),
        ),
        (
            "depthwise x2",
            [1, 3, 6, 5],
            [6, 1, 3, 3],
            Conv2dParams::new().groups(3).stride(2).padding(1),
        ),
        ("1x1", [2, 4, 3, 5], [3, 4, 1, 1], Conv2dParams::new()),
        (
            "asymmetric padding, rectangular kernel",
            [1, 2, 5, 6],
            [3, 2, 2, 3],
            Conv2dParams {
                stride: [1, 2],
                padding: [1, 0, 0, 2],
                dilation: [1, 1],
                groups: 1,
            },
        ),
    ];
    for (name, xd, wd, p) in cases {
        let ins = [
            (uniform(&xd, 16), Grad),
            (uniform(&wd, 17), Grad),
            (uniform(&[wd[0]], 18), Grad),
        ];
        gradcheck(&format!("conv2d {name}"), &ins, |t, v| {
            t.conv2d(&v[0], &v[1], Some(&v[2]), &p)
        });
    }
}

#[test]
fn max_pool2d_options() {
    for (name, xd, p) in [
        ("2x2", [2, 2, 6, 6], Pool2dParams::new(2)),
        (
            "3 stride 2 pad 1",
            [1, 2, 7, 5],
            Pool2dParams::new(3).stride(2).padding(1),
        ),
        (
            "ceil mode",
            [1, 2, 6, 7],
            Pool2dParams::new(3).stride(2).ceil_mode(true),
        ),
        (
            "dilation 2",
            [1, 1, 7, 7],
            Pool2dParams::new(2).stride(1).dilation(2),
        ),
    ] {
        gradcheck(
            &format!("max_pool2d {name}"),
            &[(distinct(&xd, 19), Grad)],
            |t, v| t.max_pool2d(&v[0], &p),
        );
    }
}

#[test]
fn avg_pool2d_options() {
    for (name, xd, p) in [
        ("2x2", [2, 2, 6, 6], Pool2dParams::new(2)),
        (
            "3 stride 2 pad 1",
            [1, 2, 7, 5],
            Pool2dParams::new(3).stride(2).padding(1),
        ),
        (
            "exclude pad, ceil",
            [1, 2, 6, 7],
            Pool2dParams::new(3)
                .stride(2)
                .padding(1)
                .ceil_mode(true)
                .count_include_pad(false),
        ),
    ] {
        gradcheck(
            &format!("avg_pool2d {name}"),
            &[(uniform(&xd, 20), Grad)],
            |t, v| t.avg_pool2d(&v[0], &p),
        );
    }
}

#[test]
fn global_avg_pool() {
    gradcheck(
        "global_avg_pool2d",
        &[(uniform(&[2, 3, 4, 5], 21), Grad)],
        |t, v| t.global_avg_pool2d(&v[0]),
    );
}

#[test]
fn batch_norm_inference() {
    let mean = uniform(&[3], 22);
    let var = positive(&[3], 23);
    let ins = [
        (uniform(&[2, 3, 4, 2], 24), Grad),
        (uniform(&[3], 25), Grad),
        (uniform(&[3], 26), Grad),
    ];
    gradcheck("batch_norm", &ins, |t, v| {
        t.batch_norm(&v[0], &v[1], &v[2], &mean, &var, 1e-5)
    });
}

#[test]
fn reshape_flatten_concat() {
    let x = [(uniform(&[2, 3, 4], 27), Grad)];
    gradcheck("reshape", &x, |t, v| t.reshape(&v[0], &[4, 6]));
    gradcheck("flatten", &x, |t, v| t.flatten(&v[0], 1));
    let ins = [
        (uniform(&[2, 3, 4], 28), Grad),
        (uniform(&[2, 1, 4], 29), Const),
        (uniform(&[2, 2, 4], 30), Grad),
    ];
    gradcheck("concat axis 1", &ins, |t, v| {
        t.concat(&[&v[0], &v[1], &v[2]], 1)
    });
    let ins = [(uniform(&[2, 3], 31), Grad), (uniform(&[1, 3], 32), Grad)];
    gradcheck("concat axis 0", &ins, |t, v| t.concat(&[&v[0], &v[1]], 0));
}

#[test]
fn sum_and_mean_over_axes() {
    let x = [(uniform(&[2, 3, 4], 33), Grad)];
    for axes in [vec![0], vec![1], vec![2], vec![0, 2], vec![0, 1, 2]] {
        for keep in [false, true] {
            gradcheck("sum", &x, |t, v| t.sum(&v[0], &axes, keep));
            gradcheck("mean", &x, |t, v| t.mean(&v[0], &axes, keep));
        }
    }
}

#[test]
fn softmax_log_softmax_each_axis() {
    let x = [(uniform(&[2, 3, 4], 34), Grad)];
    for axis in 0..3 {
        gradcheck("softmax", &x, |t, v| t.softmax(&v[0], axis));
        gradcheck("log_softmax", &x, |t, v| t.log_softmax(&v[0], axis));
    }
}

#[test]
fn cross_entropy_mean() {
    gradcheck("cross_entropy", &[(uniform(&[4, 5], 35), Grad)], |t, v| {
        t.cross_entropy(&v[0], &[0, 4, 2, 2])
    });
}

/// A value used twice (a residual connection) accumulates both paths' gradients.
#[test]
fn residual_reuse_accumulates() {
    let ins = [
        (uniform(&[1, 2, 5, 5], 36), Grad),
        (uniform(&[2, 2, 3, 3], 37), Const),
    ];
    gradcheck("residual", &ins, |t, v| {
        let p = Conv2dParams::new().padding(1);
        let y = t.conv2d(&v[0], &v[1], None, &p)?;
        let y = t.mul(&y, &y)?; // y used twice in one op
        t.add(&y, &v[0]) // x used by two ops
    });
}

/// A small CNN end to end: conv, BN, ReLU, pool, linear, log-softmax.
#[test]
fn small_network_end_to_end() {
    let mean = uniform(&[4], 38);
    let var = positive(&[4], 39);
    let ins = [
        (uniform(&[2, 2, 6, 6], 40), Grad),
        (uniform(&[4, 2, 3, 3], 41), Grad),
        (uniform(&[4], 42), Grad),
        (uniform(&[4], 43), Grad),
        (uniform(&[3, 36], 44), Grad),
    ];
    gradcheck("cnn", &ins, |t, v| {
        let y = t.conv2d(&v[0], &v[1], None, &Conv2dParams::new().padding(1))?;
        let y = t.batch_norm(&y, &v[2], &v[3], &mean, &var, 1e-5)?;
        let y = t.exp(&y)?; // smooth and positive: keeps the check away from kinks
        let y = t.avg_pool2d(&y, &Pool2dParams::new(2))?;
        let y = t.flatten(&y, 1)?;
        let y = t.linear(&y, &v[4], None)?;
        t.log_softmax(&y, 1)
    });
}

//! PyTorch golden values (tests/fixtures/ops.json, made by tests/fixtures/make_fixtures.py):
//! forward outputs and gradients, in f64 to ~1e-12 and in f32 to 1e-5.

use serde_json::Value;
use smoothgrad_autodiff::{Conv2dParams, Float, Pool2dParams, Tape, Tensor, Var};
use std::collections::BTreeMap;

fn tensor<T: Float>(v: &Value) -> Tensor<T> {
    let dims: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let data: Vec<T> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| T::from_f64(x.as_f64().expect("number")))
        .collect();
    Tensor::from_vec(data, &dims).expect("fixture tensor")
}

fn pair(v: &Value) -> [usize; 2] {
    let a = v.as_array().expect("pair");
    [
        a[0].as_u64().unwrap() as usize,
        a[1].as_u64().unwrap() as usize,
    ]
}

/// Runs one fixture case on a tape of `T`, returning (output, gradients by input name).
fn run<T: Float>(case: &Value) -> (Tensor<T>, BTreeMap<String, Tensor<T>>) {
    let p = &case["params"];
    let grad_of: Vec<&str> = case["grad_of"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let mut tape = Tape::<T>::new();
    let mut vars: BTreeMap<String, Var<T>> = BTreeMap::new();
    for (name, v) in case["inputs"].as_object().unwrap() {
        let t = tensor::<T>(v);
        let var = if grad_of.contains(&name.as_str()) {
            tape.var(t)
        } else {
            Var::constant(t)
        };
        vars.insert(name.clone(), var);
    }
    let v = |n: &str| &vars[n];
    let op = case["op"].as_str().unwrap();
    let y = match op {
        "conv2d" => {
            let pad = p["padding"].as_array().unwrap();
            let params = Conv2dParams {
                stride: pair(&p["stride"]),
                padding: [0, 1, 2, 3].map(|i| pad[i].as_u64().unwrap() as usize),
                dilation: pair(&p["dilation"]),
                groups: p["groups"].as_u64().unwrap() as usize,
            };
            tape.conv2d(v("x"), v("w"), vars.get("b"), &params)
        }
        "max_pool2d" | "avg_pool2d" => {
            let mut params = Pool2dParams::new(1);
            params.kernel = pair(&p["kernel"]);
            params.stride = pair(&p["stride"]);
            params.padding = pair(&p["padding"]);
            params.ceil_mode = p["ceil_mode"].as_bool().unwrap();
            if op == "max_pool2d" {
                params.dilation = pair(&p["dilation"]);
                tape.max_pool2d(v("x"), &params)
            } else {
                params.count_include_pad = p["count_include_pad"].as_bool().unwrap();
                tape.avg_pool2d(v("x"), &params)
            }
        }
        "global_avg_pool2d" => tape.global_avg_pool2d(v("x")),
        "linear" => tape.linear(v("x"), v("w"), vars.get("b")),
        "matmul" => tape.matmul(v("a"), v("b")),
        "softmax" => tape.softmax(v("x"), p["axis"].as_u64().unwrap() as usize),
        "log_softmax" => tape.log_softmax(v("x"), p["axis"].as_u64().unwrap() as usize),
        "cross_entropy" => {
            let targets: Vec<usize> = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as usize)
                .collect();
            tape.cross_entropy(v("x"), &targets)
        }
        "batch_norm" => tape.batch_norm(
            v("x"),
            v("gamma"),
            v("beta"),
            &tensor(&p["running_mean"]),
            &tensor(&p["running_var"]),
            p["eps"].as_f64().unwrap(),
        ),
        other => panic!("fixture op {other} has no runner"),
    }
    .unwrap_or_else(|e| panic!("{}: {e}", case["name"]));
    let upstream = tensor::<T>(&case["upstream"]);
    // PyTorch's cross-entropy is a 0-d tensor; ours is too.
    let grads = tape.backward_from(&y, &upstream).expect("backward");
    let out = grad_of
        .iter()
        .map(|n| {
            (
                n.to_string(),
                grads.get(&vars[*n]).expect("gradient").clone(),
            )
        })
        .collect();
    (y.into_value(), out)
}

/// Relative L2 error ‖a − b‖ / max(‖b‖, tiny), after checking shapes.
fn rel_l2<T: Float>(a: &Tensor<T>, b: &Value, what: &str) -> f64 {
    let b = tensor::<f64>(b);
    assert_eq!(a.dims(), b.dims(), "{what}: shape");
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
        num += (x.as_f64() - y).powi(2);
        den += y * y;
    }
    num.sqrt() / den.sqrt().max(1e-300)
}

fn check_all<T: Float>(tol: f64) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/ops.json"))
        .expect("tests/fixtures/ops.json (regenerate with tests/fixtures/make_fixtures.py)");
    let doc: Value = serde_json::from_str(&text).expect("fixture JSON");
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= 30, "fixture has only {} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (y, grads) = run::<T>(case);
        let e = rel_l2(&y, &case["output"], name);
        assert!(
            e <= tol,
            "{name}: forward relative error {e:.3e} > {tol:.0e}"
        );
        for (input, g) in &grads {
            let e = rel_l2(g, &case["grads"][input], name);
            assert!(
                e <= tol,
                "{name}: d/d{input} relative error {e:.3e} > {tol:.0e}"
            );
        }
    }
}

#[test]
fn ops_match_pytorch_in_f64() {
    check_all::<f64>(1e-12);
}

#[test]
fn ops_match_pytorch_in_f32() {
    check_all::<f32>(1e-5);
}

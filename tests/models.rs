//! Every fixture model (tests/fixtures/models, made by make_models.py), loaded from ONNX and from
//! safetensors + JSON, computes PyTorch's logits and input gradient: in f32 to a relative L2
//! error of 1e-5 (logits) and 1e-4 (gradient), and cast to f64 to 1e-12, as PyTorch's float64
//! reference ran the same f32 weights widened to f64.
//!
//! Run with `--nocapture` to see the measured errors.

use safetensors::{Dtype, SafeTensors};
use smoothgrad_autodiff::{Float, Tape, Tensor};
use smoothgrad_layers::onnx::{build_model_unfolded, load_onnx_file, load_onnx_model};
use smoothgrad_layers::{Model, load_safetensors_model};
use std::path::PathBuf;

const LOGITS_F32: f64 = 1e-5;
const GRAD_F32: f64 = 1e-4;
const F64: f64 = 1e-12;

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models")
        .join(file)
}

/// What PyTorch computed for one model.
struct Expected {
    /// f32 [1, C, H, W].
    input: Tensor<f32>,
    logits: Vec<f64>,
    top_class: usize,
    /// d logits[top_class] / d input, in float64.
    input_grad: Vec<f64>,
}

fn expected(name: &str) -> Expected {
    let bytes = std::fs::read(fixture(&format!("{name}.expected.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let values = |key: &str, dtype: Dtype| {
        let view = st.tensor(key).unwrap();
        assert_eq!(view.dtype(), dtype, "{name}: {key}");
        (view.shape().to_vec(), view.data().to_vec())
    };
    let f64s = |data: Vec<u8>| -> Vec<f64> {
        data.chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let (input_dims, input) = values("input", Dtype::F32);
    let input = input
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let (_, top) = values("top_class", Dtype::I64);
    Expected {
        input: Tensor::from_vec(input, &input_dims).unwrap(),
        logits: f64s(values("logits", Dtype::F64).1),
        top_class: i64::from_le_bytes(top[..8].try_into().unwrap()) as usize,
        input_grad: f64s(values("input_grad", Dtype::F64).1),
    }
}

/// ‖got − want‖₂ / ‖want‖₂.
fn relative_l2(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diff: f64 = got.iter().zip(want).map(|(g, w)| (g - w).powi(2)).sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    (diff / norm).sqrt()
}

/// Logits and d logits[class] / d input of `model` on `input`, as f64.
fn logits_and_grad<T: Float>(
    model: &Model<T>,
    input: &Tensor<f32>,
    class: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut tape = Tape::new();
    let x = tape.var(input.cast::<T>());
    let logits = model.forward(&mut tape, &x).unwrap();
    let classes = logits.dims()[1];
    let mut seed = vec![T::zero(); classes];
    seed[class] = T::one();
    let seed = Tensor::from_vec(seed, &[1, classes]).unwrap();
    let grads = tape.backward_from(&logits, &seed).unwrap();
    let as_f64 = |t: &Tensor<T>| t.as_slice().iter().map(|v| v.as_f64()).collect();
    (as_f64(logits.value()), as_f64(grads.get(&x).unwrap()))
}

/// The errors of one model against PyTorch: (logits, gradient).
fn errors<T: Float>(model: &Model<T>, want: &Expected) -> (f64, f64) {
    let (logits, grad) = logits_and_grad(model, &want.input, want.top_class);
    (
        relative_l2(&logits, &want.logits),
        relative_l2(&grad, &want.input_grad),
    )
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

/// Checks one model from both formats, in f32 and in f64.
fn check_model(name: &str) {
    let want = expected(name);
    let onnx_path = fixture(&format!("{name}.onnx"));
    let from_onnx = load_onnx_model(&onnx_path).unwrap_or_else(|e| panic!("{e}"));
    let onnx_unfolded = build_model_unfolded(&load_onnx_file(&onnx_path).unwrap()).unwrap();
    let from_safetensors = load_safetensors_model(
        &fixture(&format!("{name}.safetensors")),
        &fixture(&format!("{name}.arch.json")),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    for (format, model, model_f64) in [
        ("onnx", &from_onnx, onnx_unfolded.cast::<f64>()),
        (
            "safetensors",
            &from_safetensors,
            from_safetensors.cast::<f64>(),
        ),
    ] {
        assert_eq!(
            model.input_dims(),
            &want.input.dims()[1..],
            "{name} {format}"
        );
        assert_eq!(model.output_dims(), &[want.logits.len()], "{name} {format}");
        let (logits, _) = logits_and_grad(model, &want.input, want.top_class);
        assert_eq!(
            argmax(&logits),
            want.top_class,
            "{name} {format}: top class"
        );

        let (logits_f32, grad_f32) = errors(model, &want);
        let (logits_f64, grad_f64) = errors(&model_f64, &want);
        eprintln!(
            "{name:>10} {format:<11} f32: logits {logits_f32:.2e} grad {grad_f32:.2e} | \
             f64: logits {logits_f64:.2e} grad {grad_f64:.2e}"
        );
        assert!(
            logits_f32 <= LOGITS_F32,
            "{name} {format}: f32 logits {logits_f32:e}"
        );
        assert!(
            grad_f32 <= GRAD_F32,
            "{name} {format}: f32 gradient {grad_f32:e}"
        );
        assert!(
            logits_f64 <= F64,
            "{name} {format}: f64 logits {logits_f64:e}"
        );
        assert!(
            grad_f64 <= F64,
            "{name} {format}: f64 gradient {grad_f64:e}"
        );
    }

    // Folding batch norms rounds the folded weights to f32: the folded model in f64 is only as
    // close as f32 allows.
    let (folded_logits, folded_grad) = errors(&from_onnx.cast::<f64>(), &want);
    eprintln!("{name:>10} onnx folded, f64: logits {folded_logits:.2e} grad {folded_grad:.2e}");
    assert!(folded_logits <= LOGITS_F32 && folded_grad <= GRAD_F32);
}

/// A batch of two gives each sample the logits it gets alone: no layer mixes the batch.
fn check_batch_independence(name: &str) {
    let want = expected(name);
    let model = load_onnx_model(&fixture(&format!("{name}.onnx"))).unwrap();
    let x = want.input.as_slice();
    let mut batch: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    batch.extend(x.iter().map(|&v| f64::from(v) * -0.5));
    let mut dims = want.input.dims().to_vec();
    dims[0] = 2;
    let model = model.cast::<f64>();
    let mut tape = Tape::new();
    let x = tape.var(Tensor::from_vec(batch, &dims).unwrap());
    let logits = model.forward(&mut tape, &x).unwrap();
    let classes = want.logits.len();
    let first = &logits.value().as_slice()[..classes];
    assert!(
        relative_l2(first, &want.logits) < 1e-6,
        "{name}: batch row 0"
    );
}

#[test]
fn lenet_matches_pytorch() {
    check_model("lenet");
    check_batch_independence("lenet");
}

#[test]
fn vgg_matches_pytorch() {
    check_model("vgg");
    check_batch_independence("vgg");
}

#[test]
fn resnet_matches_pytorch() {
    check_model("resnet");
    check_batch_independence("resnet");
}

#[test]
fn squeezenet_matches_pytorch() {
    check_model("squeezenet");
    check_batch_independence("squeezenet");
}

#[test]
fn mobilenet_matches_pytorch() {
    check_model("mobilenet");
    check_batch_independence("mobilenet");
}

/// The two loaders build the same layers (up to batch-norm folding) from the two files.
#[test]
fn onnx_and_safetensors_models_agree() {
    for name in ["lenet", "vgg", "resnet", "squeezenet", "mobilenet"] {
        let want = expected(name);
        let onnx =
            build_model_unfolded(&load_onnx_file(&fixture(&format!("{name}.onnx"))).unwrap())
                .unwrap()
                .cast::<f64>();
        let st = load_safetensors_model(
            &fixture(&format!("{name}.safetensors")),
            &fixture(&format!("{name}.arch.json")),
        )
        .unwrap()
        .cast::<f64>();
        let (a, ga) = logits_and_grad(&onnx, &want.input, want.top_class);
        let (b, gb) = logits_and_grad(&st, &want.input, want.top_class);
        assert!(relative_l2(&a, &b) < 1e-12, "{name}: logits");
        assert!(relative_l2(&ga, &gb) < 1e-12, "{name}: gradient");
    }
}

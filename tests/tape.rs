//! Properties of the tape itself: what is recorded, which backward kernels run, seeds, reuse.

use smoothgrad_autodiff::{Conv2dParams, Error, Pool2dParams, Tape, Tensor, Var};
use smoothgrad_tests::uniform;

/// conv → ReLU → max-pool → flatten → linear, with the given weights.
fn net(tape: &mut Tape<f64>, x: &Var<f64>, w1: &Var<f64>, w2: &Var<f64>) -> Var<f64> {
    let y = tape
        .conv2d(x, w1, None, &Conv2dParams::new().padding(1))
        .unwrap();
    let y = tape.relu(&y).unwrap();
    let y = tape.max_pool2d(&y, &Pool2dParams::new(2)).unwrap();
    let y = tape.flatten(&y, 1).unwrap();
    tape.linear(&y, w2, None).unwrap()
}

#[test]
fn constant_weights_get_no_weight_gradient_kernels() {
    let mut tape = Tape::new();
    let x = tape.var(uniform(&[2, 3, 8, 8], 1));
    let w1 = Var::constant(uniform(&[4, 3, 3, 3], 2));
    let w2 = Var::constant(uniform(&[5, 64], 3));
    let y = net(&mut tape, &x, &w1, &w2);
    let grads = tape.backward_from(&y, &uniform(&[2, 5], 4)).unwrap();
    assert_eq!(
        grads.kernels(),
        &[
            "linear_bwd_input",
            "maxpool2d_bwd",
            "relu_bwd",
            "conv2d_bwd_input"
        ]
    );
    assert!(grads.get(&x).is_some());
    assert!(grads.get(&w1).is_none());
}

#[test]
fn trainable_weights_get_weight_gradients_and_the_input_none() {
    let mut tape = Tape::new();
    let x = Var::constant(uniform(&[2, 3, 8, 8], 1));
    let w1 = tape.var(uniform(&[4, 3, 3, 3], 2));
    let w2 = tape.var(uniform(&[5, 64], 3));
    let y = net(&mut tape, &x, &w1, &w2);
    let grads = tape.backward_from(&y, &uniform(&[2, 5], 4)).unwrap();
    let k = grads.kernels();
    assert!(k.contains(&"conv2d_bwd_weight") && k.contains(&"linear_bwd_weight"));
    // The first layer's input is data: its dX is never computed.
    assert!(!k.contains(&"conv2d_bwd_input"));
    assert_eq!(grads.get(&w1).unwrap().dims(), &[4, 3, 3, 3]);
}

#[test]
fn constants_record_nothing() {
    let mut tape = Tape::<f32>::new();
    let a = Var::constant(Tensor::ones(&[3]).unwrap());
    let b = tape.add(&a, &a).unwrap();
    let c = tape.exp(&b).unwrap();
    assert!(tape.is_empty());
    assert!(!c.requires_grad());
    let seed = Tensor::ones(&[3]).unwrap();
    assert_eq!(
        tape.backward_from(&c, &seed).unwrap_err(),
        Error::NotDifferentiable
    );
}

#[test]
fn seed_must_match_the_output_shape() {
    let mut tape = Tape::<f32>::new();
    let x = tape.var(Tensor::ones(&[2, 3]).unwrap());
    let y = tape.mul_scalar(&x, 2.0).unwrap();
    let err = tape
        .backward_from(&y, &Tensor::ones(&[3, 2]).unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let one_hot = Tensor::from_vec(vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0], &[2, 3]).unwrap();
    let g = tape.backward_from(&y, &one_hot).unwrap();
    assert_eq!(
        g.get(&x).unwrap().as_slice(),
        &[0.0, 2.0, 0.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn variables_of_another_tape_are_rejected() {
    let mut t1 = Tape::<f32>::new();
    let mut t2 = Tape::<f32>::new();
    let x = t1.var(Tensor::ones(&[2]).unwrap());
    assert!(matches!(
        t2.relu(&x).unwrap_err(),
        Error::ForeignVariable { .. }
    ));
}

#[test]
fn backward_can_run_twice_and_f32_matches_f64() {
    let x64 = uniform(&[1, 2, 6, 6], 9);
    let w64 = uniform(&[3, 2, 3, 3], 10);
    let run = |x: Tensor<f64>, w: Tensor<f64>| {
        let mut tape = Tape::new();
        let xv = tape.var(x);
        let wv = Var::constant(w);
        let y = tape
            .conv2d(&xv, &wv, None, &Conv2dParams::new().stride(2))
            .unwrap();
        let s = tape.sum(&y, &[1, 2, 3], false).unwrap();
        let g1 = tape
            .backward_from(&s, &Tensor::ones(&[1]).unwrap())
            .unwrap();
        let g2 = tape
            .backward_from(&s, &Tensor::ones(&[1]).unwrap())
            .unwrap();
        assert_eq!(
            g1.get(&xv).unwrap().as_slice(),
            g2.get(&xv).unwrap().as_slice()
        );
        g1.get(&xv).unwrap().clone()
    };
    let g64 = run(x64.clone(), w64.clone());
    let mut t32 = Tape::<f32>::new();
    let x32 = t32.var(x64.cast());
    let w32 = Var::constant(w64.cast());
    let y = t32
        .conv2d(&x32, &w32, None, &Conv2dParams::new().stride(2))
        .unwrap();
    let s = t32.sum(&y, &[1, 2, 3], false).unwrap();
    let g32 = t32.backward_from(&s, &Tensor::ones(&[1]).unwrap()).unwrap();
    let g32 = g32.get(&x32).unwrap().cast::<f64>();
    for (a, b) in g32.as_slice().iter().zip(g64.as_slice()) {
        assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()));
    }
}

#[test]
fn bad_shapes_are_typed_errors() {
    let mut tape = Tape::<f32>::new();
    let x = tape.var(Tensor::ones(&[1, 3, 8, 8]).unwrap());
    let w = Var::constant(Tensor::ones(&[4, 2, 3, 3]).unwrap());
    assert!(matches!(
        tape.conv2d(&x, &w, None, &Conv2dParams::new()),
        Err(Error::ShapeMismatch { .. })
    ));
    let w = Var::constant(Tensor::ones(&[4, 3, 3, 3]).unwrap());
    assert!(matches!(
        tape.conv2d(&x, &w, None, &Conv2dParams::new().stride(0)),
        Err(Error::InvalidArgument { .. })
    ));
    let a = Var::constant(Tensor::ones(&[2, 3]).unwrap());
    let b = Var::constant(Tensor::ones(&[2, 3]).unwrap());
    assert!(matches!(
        tape.matmul(&a, &b),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        tape.softmax(&a, 2),
        Err(Error::InvalidAxis { .. })
    ));
    assert!(matches!(
        tape.cross_entropy(&a, &[0, 3]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        tape.max_pool2d(&x, &Pool2dParams::new(9)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        tape.add(&a, &Var::constant(Tensor::ones(&[4]).unwrap())),
        Err(Error::ShapeMismatch { .. })
    ));
}

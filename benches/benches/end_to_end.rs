//! One SmoothGrad map (n = 50, noise 15% of the range) end to end on the CPU: the `tiny` and
//! `small` models of `bench/peers` (same layers, seeded He-normal weights built here).
//!
//! Throughput is FLOPs per map (forward + input-gradient backward of every copy), so criterion's
//! "elements/s" reads as FLOP/s, comparable with `cpu/sgemm` in the `conv` bench and with the
//! GFLOP/s that `bench/peers/run.sh` reports for PyTorch, Captum and JAX.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smoothgrad_autodiff::{Conv2dParams, Pool2dParams, Tensor};
use smoothgrad_layers::{Layer, Model, Node};
use smoothgrad_saliency::{Explainer, Method, Smoothing};
use std::hint::black_box;
use std::time::Duration;

/// A sequential model under construction: node k reads value k (the previous node's output).
struct Sequential {
    nodes: Vec<Node<f32>>,
    seed: u64,
}

impl Sequential {
    fn new(seed: u64) -> Self {
        Sequential {
            nodes: Vec::new(),
            seed,
        }
    }

    fn push(&mut self, name: String, layer: Layer<f32>) -> &mut Self {
        let input = self.nodes.len();
        self.nodes.push(Node {
            name,
            layer,
            inputs: vec![input],
        });
        self
    }

    /// He-normal weights (std √(2 / fan-in)), so activations stay near unit scale.
    fn weight(&mut self, dims: &[usize]) -> Tensor<f32> {
        self.seed += 1;
        let fan_in: usize = dims[1..].iter().product();
        let scale = (2.0 / fan_in as f32).sqrt();
        Tensor::randn(dims, self.seed)
            .expect("bench shapes are valid")
            .map(|v| v * scale)
    }

    fn bias(&mut self, n: usize) -> Tensor<f32> {
        self.seed += 1;
        Tensor::uniform(&[n], -0.1, 0.1, self.seed).expect("bench shapes are valid")
    }

    /// conv 3×3 pad 1 + ReLU.
    fn conv_relu(&mut self, cin: usize, cout: usize) -> &mut Self {
        let k = self.nodes.len();
        let layer = Layer::Conv2d {
            weight: self.weight(&[cout, cin, 3, 3]),
            bias: Some(self.bias(cout)),
            params: Conv2dParams::new().padding(1),
        };
        self.push(format!("conv{k}"), layer)
            .push(format!("relu{}", k + 1), Layer::Relu)
    }

    fn max_pool(&mut self) -> &mut Self {
        let k = self.nodes.len();
        self.push(format!("pool{k}"), Layer::MaxPool2d(Pool2dParams::new(2)))
    }

    fn flatten(&mut self) -> &mut Self {
        let k = self.nodes.len();
        self.push(format!("flatten{k}"), Layer::Flatten { start_dim: 1 })
    }

    fn linear(&mut self, inputs: usize, outputs: usize) -> &mut Self {
        let k = self.nodes.len();
        let layer = Layer::Linear {
            weight: self.weight(&[outputs, inputs]),
            bias: Some(self.bias(outputs)),
        };
        self.push(format!("linear{k}"), layer)
    }

    fn build(&mut self, name: &str, input: &[usize]) -> Model<f32> {
        let output = self.nodes.len();
        Model::new(name, input, std::mem::take(&mut self.nodes), output)
            .expect("the bench models are valid")
    }
}

/// 1×28×28: conv(1→8)+ReLU+pool, conv(8→16)+ReLU+pool, linear 784→10.
fn tiny() -> Model<f32> {
    Sequential::new(2001)
        .conv_relu(1, 8)
        .max_pool()
        .conv_relu(8, 16)
        .max_pool()
        .flatten()
        .linear(784, 10)
        .build("tiny", &[1, 28, 28])
}

/// 3×32×32 VGG-style: 3→32, 32→32, pool, 32→64, 64→64, pool, 64→128, pool, 2048→256→10.
fn small() -> Model<f32> {
    let mut s = Sequential::new(2002);
    s.conv_relu(3, 32).conv_relu(32, 32).max_pool();
    s.conv_relu(32, 64).conv_relu(64, 64).max_pool();
    s.conv_relu(64, 128).max_pool().flatten();
    s.linear(2048, 256);
    let k = s.nodes.len();
    s.push(format!("relu{k}"), Layer::Relu)
        .linear(256, 10)
        .build("small", &[3, 32, 32])
}

fn smoothgrad(c: &mut Criterion) {
    let smoothing = Smoothing::default();
    let mut group = c.benchmark_group("cpu/smoothgrad_n50");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, model) in [("tiny", tiny()), ("small", small())] {
        let flops = model.flops_per_sample();
        let per_map = smoothing.samples as u64 * (flops.forward + flops.input_backward);
        let image = Tensor::<f32>::uniform(model.input_dims(), 0.0, 1.0, 7)
            .expect("bench shapes are valid");
        let explainer = Explainer::new(&model);
        group.throughput(Throughput::Elements(per_map));
        group.bench_function(name, |b| {
            b.iter(|| {
                explainer
                    .explain(black_box(&image), None, &Method::Gradient, Some(&smoothing))
                    .expect("the bench models explain")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, smoothgrad);
criterion_main!(benches);

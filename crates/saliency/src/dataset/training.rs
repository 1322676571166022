//! Training the benchmark's CNN on fresh samples of the training stream.

use super::{CLASSES, ShapesConfig, TEST_SEED, TRAIN_SEED};
use crate::error::Result;
use smoothgrad_layers::Model;
use smoothgrad_layers::train::{
    GlobalPool, Optimizer, Trainer, accuracy, cosine_learning_rate, small_cnn,
};
use std::time::Instant;

/// How the benchmark's CNN is trained (fresh samples every step: the stream never repeats).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The images.
    pub data: ShapesConfig,
    /// Channels of the convolution blocks and the global pooling (see [`small_cnn`]).
    pub widths: Vec<usize>,
    pub pool: GlobalPool,
    /// Optimisation steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam's peak learning rate (warm-up, then cosine decay).
    pub learning_rate: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the initial weights.
    pub seed: u64,
    /// Images of the test stream ([`TEST_SEED`]) to measure accuracy on.
    pub test_images: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: ShapesConfig::default(),
            widths: vec![16, 32, 64],
            pool: GlobalPool::Max,
            steps: 3000,
            batch_size: 32,
            learning_rate: 1e-2,
            weight_decay: 1e-4,
            seed: 0,
            test_images: 1000,
        }
    }
}

/// Progress of training, reported every few steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainProgress {
    pub step: usize,
    pub steps: usize,
    /// Mean loss and training accuracy over the steps since the last report.
    pub loss: f64,
    pub train_accuracy: f64,
    pub seconds: f64,
}

/// What training produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Accuracy on the first `test_images` images of the test stream.
    pub test_accuracy: f64,
    /// Mean training loss over the last 50 steps.
    pub final_loss: f64,
    /// Wall-clock seconds of training (data generation included, test excluded).
    pub train_seconds: f64,
    pub steps: usize,
}

/// Trains the benchmark's CNN with Adam on fresh samples of the training stream and measures
/// its accuracy on the test stream. `progress` is called every 50 steps.
pub fn train_shapes_cnn(
    config: &TrainConfig,
    mut progress: impl FnMut(&TrainProgress),
) -> Result<(Model<f32>, TrainReport)> {
    let s = config.data.size;
    let model = small_cnn::<f32>(
        &[3, s, s],
        &config.widths,
        config.pool,
        CLASSES.len(),
        config.seed,
    )?;
    let optimizer = Optimizer::Adam {
        learning_rate: config.learning_rate,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: config.weight_decay,
    };
    let mut trainer = Trainer::new(model, optimizer);
    let start = Instant::now();
    let (mut loss_sum, mut hits, mut seen) = (0.0, 0, 0);
    let mut recent = Vec::new();
    let warmup = (config.steps / 20).max(1);
    for step in 0..config.steps {
        trainer.set_learning_rate(cosine_learning_rate(
            config.learning_rate,
            step,
            config.steps,
            warmup,
        ));
        let first = (step * config.batch_size) as u64;
        let batch = config
            .data
            .batch(TRAIN_SEED, first..first + config.batch_size as u64);
        let stats = trainer.step(&batch.images, &batch.labels)?;
        loss_sum += stats.loss;
        hits += stats.correct;
        seen += stats.batch;
        recent.push(stats.loss);
        if (step + 1).is_multiple_of(50) || step + 1 == config.steps {
            let reported = step % 50 + 1;
            progress(&TrainProgress {
                step: step + 1,
                steps: config.steps,
                loss: loss_sum / reported as f64,
                train_accuracy: hits as f64 / seen.max(1) as f64,
                seconds: start.elapsed().as_secs_f64(),
            });
            (loss_sum, hits, seen) = (0.0, 0, 0);
        }
    }
    let train_seconds = start.elapsed().as_secs_f64();
    let model = trainer.into_model();
    let test = config.data.batch(TEST_SEED, 0..config.test_images as u64);
    let test_accuracy = accuracy(&model, &test.images, &test.labels, 100)?;
    let tail = &recent[recent.len().saturating_sub(50)..];
    Ok((
        model,
        TrainReport {
            test_accuracy,
            final_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
            train_seconds,
            steps: config.steps,
        },
    ))
}

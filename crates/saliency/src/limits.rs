//! Limits on what one explanation may cost, checked before anything is allocated: an explainer
//! that serves requests from users must refuse an absurd `n` or a model too large for its
//! memory with a clear message, not try and run out of memory or time.

use crate::error::{Result, SaliencyError};
use smoothgrad_autodiff::Float;
use smoothgrad_layers::Model;

/// What one explanation may cost. Each limit is checked before anything is allocated;
/// [`Limits::default`] allows any ordinary request (n up to 10 000, a few minutes of CPU work)
/// and refuses the absurd.
///
/// ```
/// use smoothgrad_saliency::Limits;
/// let strict = Limits { max_copies: 100, ..Limits::default() };
/// assert!(strict.max_copies < Limits::default().max_copies);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most noisy copies n of one explanation.
    pub max_copies: usize,
    /// The most points on one Integrated Gradients path.
    pub max_ig_steps: usize,
    /// The most floating-point operations of one explanation: the model's
    /// [`flops_per_sample`](Model::flops_per_sample) (forward and input backward) times the
    /// forward/backward passes it needs (copies × IG points), plus the forward of the clean input.
    pub max_work_flops: u64,
    /// The most working memory of one explanation, in bytes. Copies run in chunks sized from the
    /// explainer's memory budget but never above this; a model whose single copy needs more
    /// (values, saved tensors and gradients of one forward/backward) is refused.
    pub max_memory_bytes: u64,
}

impl Limits {
    /// Default [`max_copies`](Limits::max_copies): 10 000 (the SmoothGrad paper uses 50).
    pub const DEFAULT_MAX_COPIES: usize = 10_000;
    /// Default [`max_ig_steps`](Limits::max_ig_steps): 10 000 (Captum's default is 50).
    pub const DEFAULT_MAX_IG_STEPS: usize = 10_000;
    /// Default [`max_work_flops`](Limits::max_work_flops): 10 TFLOP, minutes on a CPU.
    pub const DEFAULT_MAX_WORK_FLOPS: u64 = 10_000_000_000_000;
    /// Default [`max_memory_bytes`](Limits::max_memory_bytes): 4 GiB.
    pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 4 << 30;

    /// Checks a request of `copies` noisy copies (1 without smoothing) with `ig_steps` points per
    /// Integrated Gradients path (`None` for other methods) on `model`, and returns its cost.
    ///
    /// ```
    /// # use smoothgrad_autodiff::Tensor;
    /// # use smoothgrad_layers::{Layer, Model, Node};
    /// use smoothgrad_saliency::{Limit, Limits, SaliencyError};
    /// # let w = Tensor::<f32>::randn(&[10, 64], 1)?;
    /// # let nodes = vec![
    /// #     Node { name: "flat".into(), layer: Layer::Flatten { start_dim: 1 }, inputs: vec![0] },
    /// #     Node { name: "fc".into(), layer: Layer::Linear { weight: w, bias: None }, inputs: vec![1] },
    /// # ];
    /// # let model = Model::new("example", &[1, 8, 8], nodes, 2)?;
    /// let cost = Limits::default().check(&model, 50, None)?;
    /// assert_eq!(cost.passes, 50);
    /// let tight = Limits { max_work_flops: 1_000, ..Limits::default() };
    /// match tight.check(&model, 50, None) {
    ///     Err(SaliencyError::LimitExceeded { limit: Limit::Work, .. }) => {}
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check<T: Float>(
        &self,
        model: &Model<T>,
        copies: usize,
        ig_steps: Option<usize>,
    ) -> Result<Cost> {
        if copies > self.max_copies {
            return Err(SaliencyError::LimitExceeded {
                limit: Limit::Copies,
                message: format!(
                    "{copies} noisy copies requested, more than the limit of {}",
                    self.max_copies
                ),
            });
        }
        let points = ig_steps.unwrap_or(1);
        if points > self.max_ig_steps {
            return Err(SaliencyError::LimitExceeded {
                limit: Limit::IgSteps,
                message: format!(
                    "{points} Integrated Gradients steps requested, more than the limit of {}",
                    self.max_ig_steps
                ),
            });
        }
        let bytes_per_copy = bytes_per_copy(model)?;
        if bytes_per_copy > self.max_memory_bytes {
            return Err(SaliencyError::LimitExceeded {
                limit: Limit::Memory,
                message: format!(
                    "one copy of the input needs {} of working memory through the model's forward \
                     and backward, more than the limit of {}",
                    human_bytes(bytes_per_copy),
                    human_bytes(self.max_memory_bytes)
                ),
            });
        }
        let flops = model.flops_per_sample();
        let per_pass = flops.forward.saturating_add(flops.input_backward);
        // The passes fit in u128 exactly (both factors are at most usize::MAX); a count of
        // passes the explainer could not even index is refused whatever the work limit says.
        let passes = (copies as u128) * (points as u128);
        if usize::try_from(passes).is_err() {
            return Err(SaliencyError::LimitExceeded {
                limit: Limit::Work,
                message: format!(
                    "{copies} copies × {points} Integrated Gradients points is more passes than \
                     this machine can count"
                ),
            });
        }
        let work = (per_pass as u128)
            .saturating_mul(passes)
            .saturating_add(flops.forward as u128);
        if work > self.max_work_flops as u128 {
            let path = match ig_steps {
                Some(s) => format!(" × {s} Integrated Gradients points"),
                None => String::new(),
            };
            return Err(SaliencyError::LimitExceeded {
                limit: Limit::Work,
                message: format!(
                    "the explanation needs {} ({copies} copies{path} × {} per forward and \
                     backward), more than the limit of {}",
                    human_flops(work),
                    human_flops(per_pass as u128),
                    human_flops(self.max_work_flops as u128)
                ),
            });
        }
        Ok(Cost {
            passes: u64::try_from(passes).unwrap_or(u64::MAX),
            work_flops: u64::try_from(work).unwrap_or(u64::MAX),
            bytes_per_copy,
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_copies: Self::DEFAULT_MAX_COPIES,
            max_ig_steps: Self::DEFAULT_MAX_IG_STEPS,
            max_work_flops: Self::DEFAULT_MAX_WORK_FLOPS,
            max_memory_bytes: Self::DEFAULT_MAX_MEMORY_BYTES,
        }
    }
}

/// The cost of a request that passed [`Limits::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Forward/backward passes of one sample: copies × IG points.
    pub passes: u64,
    /// Floating-point operations of the whole explanation.
    pub work_flops: u64,
    /// Working memory of one copy through forward and backward, in bytes.
    pub bytes_per_copy: u64,
}

/// Which of the [`Limits`] a request exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::max_copies`].
    Copies,
    /// [`Limits::max_ig_steps`].
    IgSteps,
    /// [`Limits::max_work_flops`].
    Work,
    /// [`Limits::max_memory_bytes`].
    Memory,
}

impl Limit {
    /// The field of [`Limits`] that sets this limit.
    pub fn field(self) -> &'static str {
        match self {
            Limit::Copies => "max_copies",
            Limit::IgSteps => "max_ig_steps",
            Limit::Work => "max_work_flops",
            Limit::Memory => "max_memory_bytes",
        }
    }
}

/// Memory one copy holds through forward and backward: every value of the graph, with what the
/// backward saves and the gradients, estimated as three times the values' elements. Computed
/// from the inferred shapes, so nothing is allocated.
pub(crate) fn bytes_per_copy<T: Float>(model: &Model<T>) -> Result<u64> {
    let overflow = || SaliencyError::LimitExceeded {
        limit: Limit::Memory,
        message: "the model's values for one copy hold more elements than a 64-bit count".into(),
    };
    let mut elements: u64 = 0;
    for dims in model.value_dims() {
        let numel = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(overflow)?;
        elements = elements.checked_add(numel).ok_or_else(overflow)?;
    }
    elements
        .checked_mul(3 * std::mem::size_of::<T>() as u64)
        .ok_or_else(overflow)
}

/// "12.3 GFLOP".
fn human_flops(flops: u128) -> String {
    let units = [
        (1e15, "PFLOP"),
        (1e12, "TFLOP"),
        (1e9, "GFLOP"),
        (1e6, "MFLOP"),
        (1e3, "kFLOP"),
    ];
    let f = flops as f64;
    units.iter().find(|(scale, _)| f >= *scale).map_or_else(
        || format!("{flops} FLOP"),
        |(scale, unit)| format!("{:.1} {unit}", f / scale),
    )
}

/// "1.5 GiB".
fn human_bytes(bytes: u64) -> String {
    let units = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    units.iter().find(|(scale, _)| bytes >= *scale).map_or_else(
        || format!("{bytes} bytes"),
        |(scale, unit)| format!("{:.1} {unit}", bytes as f64 / *scale as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoothgrad_autodiff::Tensor;
    use smoothgrad_layers::{Layer, Node};

    /// Flatten [1, 8, 8] then a 64 → 10 linear layer: 1 280 FLOP forward, as many backward.
    fn model() -> Model<f32> {
        let w = Tensor::<f32>::zeros(&[10, 64]).unwrap();
        let nodes = vec![
            Node {
                name: "flat".into(),
                layer: Layer::Flatten { start_dim: 1 },
                inputs: vec![0],
            },
            Node {
                name: "fc".into(),
                layer: Layer::Linear {
                    weight: w,
                    bias: None,
                },
                inputs: vec![1],
            },
        ];
        Model::new("limits-test", &[1, 8, 8], nodes, 2).unwrap()
    }

    #[test]
    fn cost_counts_passes_work_and_memory() {
        let m = model();
        let cost = Limits::default().check(&m, 50, Some(20)).unwrap();
        assert_eq!(cost.passes, 1000);
        assert_eq!(cost.work_flops, 1000 * 2560 + 1280);
        // Values: input 64, flattened 64, logits 10; three times, four bytes each.
        assert_eq!(cost.bytes_per_copy, 3 * 138 * 4);
    }

    #[test]
    fn each_limit_names_itself_and_its_numbers() {
        let m = model();
        let over = |limits: Limits, copies, steps| match limits.check(&m, copies, steps) {
            Err(SaliencyError::LimitExceeded { limit, message }) => (limit, message),
            other => panic!("{other:?}"),
        };
        let (l, msg) = over(Limits::default(), 10_001, None);
        assert_eq!(l, Limit::Copies);
        assert_eq!(
            msg,
            "10001 noisy copies requested, more than the limit of 10000"
        );
        let (l, msg) = over(Limits::default(), 1, Some(20_000));
        assert_eq!(l, Limit::IgSteps);
        assert!(msg.starts_with("20000 Integrated Gradients steps"), "{msg}");
        let tight = Limits {
            max_work_flops: 100_000,
            ..Limits::default()
        };
        let (l, msg) = over(tight, 50, None);
        assert_eq!(l, Limit::Work);
        assert_eq!(
            msg,
            "the explanation needs 129.3 kFLOP (50 copies × 2.6 kFLOP per forward and backward), \
             more than the limit of 100.0 kFLOP"
        );
        let small = Limits {
            max_memory_bytes: 1000,
            ..Limits::default()
        };
        let (l, msg) = over(small, 1, None);
        assert_eq!(l, Limit::Memory);
        assert!(
            msg.contains("1.6 KiB") && msg.contains("1000 bytes"),
            "{msg}"
        );
        assert_eq!(Limit::Work.field(), "max_work_flops");
    }

    #[test]
    fn absurd_requests_do_not_overflow() {
        let m = model();
        let huge = Limits {
            max_copies: usize::MAX,
            max_ig_steps: usize::MAX,
            ..Limits::default()
        };
        let (l, _) = match huge.check(&m, usize::MAX, Some(usize::MAX)) {
            Err(SaliencyError::LimitExceeded { limit, message }) => (limit, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(l, Limit::Work);
        // Even a model that costs nothing per pass cannot ask for more passes than a usize.
        let free = Model::<f32>::new(
            "free",
            &[1, 2, 2],
            vec![Node {
                name: "flat".into(),
                layer: Layer::Flatten { start_dim: 1 },
                inputs: vec![0],
            }],
            1,
        )
        .unwrap();
        let unlimited = Limits {
            max_work_flops: u64::MAX,
            ..huge
        };
        match unlimited.check(&free, usize::MAX, Some(2)) {
            Err(SaliencyError::LimitExceeded { limit, message }) => {
                assert_eq!(limit, Limit::Work);
                assert!(message.contains("more passes than"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

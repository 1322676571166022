//! Saliency methods for smoothgrad.
